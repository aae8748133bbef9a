"""The Feast feature store of argusrank: config, apply, materialize, online and offline reads.

argusrank builds a programmatic ``RepoConfig`` with absolute paths under the
configured home (``cfg.paths.feature_repo``: registry + SQLite online store;
``cfg.paths.vectors_dir`` and ``cfg.paths.baseline_dir``: offline parquet), and the
Feast objects from ``features/definitions.py``. Redis replaces SQLite when
``cfg.features.online_store == "redis"`` (``ARGUSRANK_REDIS_URL`` sets it).

Version guard: user and item vectors used together must carry the same model
version (``features.vectors.check_versions``). Feast is imported lazily (it costs seconds).
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features.argus_features import features_of_rows, kinds_for
from argusrank.features.baseline import DOT_FEATURE, RAW_REFS, USER_ITEM_PRIORS, VIEWS
from argusrank.features.config import StoreConfig
from argusrank.features.io import atomic_write_text
from argusrank.features.materialize import materialize_view
from argusrank.features.vectors import (
    DOT_VIEW, ITEM_VECTORS, USER_VECTORS, USER_VECTORS_PUSH, VIEW_OF, check_versions, to_matrix, to_versions,
)

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore, RepoConfig

PROJECT = "argusrank"
USER_VEC_REFS = [f"{USER_VECTORS}:user_vector", f"{USER_VECTORS}:user_model_version"]
ITEM_VEC_REFS = [f"{ITEM_VECTORS}:item_vector", f"{ITEM_VECTORS}:item_model_version"]
VERSION_REFS = [f"{USER_VECTORS}:user_model_version", f"{ITEM_VECTORS}:item_model_version"]
DOT_REF = f"{DOT_VIEW}:{DOT_FEATURE}"
_STATE_FILE = "materialize_state.json"


def view_dirs(cfg: StoreConfig) -> dict[str, Path]:
    """Offline parquet directory of every batch feature view."""
    out = {view: cfg.paths.vectors_dir / view for view in VIEW_OF.values()}
    out.update({v.name: cfg.paths.baseline_dir / v.name for v in (*VIEWS, USER_ITEM_PRIORS)})
    return out


def repo_config(cfg: StoreConfig) -> "RepoConfig":
    """Programmatic Feast config: absolute registry / online-store paths under ``cfg.paths.feature_repo``."""
    from feast import RepoConfig

    repo = cfg.paths.feature_repo
    repo.mkdir(parents=True, exist_ok=True)
    if cfg.features.online_store == "redis":
        online = {"type": "redis", "connection_string": cfg.features.redis_url}
    else:
        online = {"type": "sqlite", "path": str(repo / "online_store.db")}
    offline, engine = {"type": "file"}, {}
    if cfg.features.offline_engine == "ray":  # Feast's Ray offline store + compute engine (point-in-time, materialize)
        # on a cluster (``ray.address`` of the argusrank config, else RAY_ADDRESS) Feast joins it, with no local
        # resources of its own (Ray refuses num_cpus when it connects); else a local Ray of ray_cpus CPUs
        address = getattr(getattr(cfg, "ray", None), "address", None) or os.environ.get("RAY_ADDRESS")
        conf = {"include_dashboard": False} if address else {"num_cpus": cfg.features.ray_cpus, "include_dashboard": False}
        where = {"ray_address": address} if address else {}
        offline = {"type": "ray", "ray_conf": conf, "storage_path": str(repo / "ray_staging"), **where}
        engine = {"batch_engine": {"type": "ray.engine", "ray_conf": conf, "staging_location": str(repo / "ray_staging"),
                                   "write_concurrency": 1 if cfg.features.online_store == "sqlite" else 8, **where}}
    return RepoConfig(
        project=PROJECT, provider="local", registry={"registry_type": "file", "path": str(repo / "registry.db")},
        online_store=online, offline_store=offline, entity_key_serialization_version=3, repo_path=repo,
        materialization={"online_write_batch_size": cfg.features.online_write_rows}, **engine,
    )


_STORES: dict[tuple, "FeatureStore"] = {}


def get_store(cfg: StoreConfig) -> "FeatureStore":
    """A FeatureStore for this config's home and online store (one per process, reused)."""
    key = (str(cfg.paths.home), cfg.features.online_store, cfg.features.redis_url, cfg.features.offline_engine,
           cfg.features.online_write_rows)
    if key not in _STORES:
        from feast import FeatureStore

        _STORES[key] = FeatureStore(config=repo_config(cfg))
    return _STORES[key]


def definitions(cfg: StoreConfig) -> dict[str, Any]:
    """The Feast objects of features/definitions.py, sourced from this config's parquet directories."""
    from argusrank.features.definitions import build_definitions

    return build_definitions(cfg.paths.vectors_dir, cfg.paths.baseline_dir)


def apply(cfg: StoreConfig) -> dict[str, Any]:
    """Register entities and views (``feast apply``); returns the names applied."""
    objs = definitions(cfg)
    store = get_store(cfg)
    store.apply(list(objs.values()))
    store.refresh_registry()
    (cfg.paths.feature_repo / "feature_store.yaml").write_text(_yaml(cfg))
    (cfg.paths.feature_repo / "definitions.py").write_text(_REPO_DEFINITIONS.format(
        vectors=cfg.paths.vectors_dir, baseline=cfg.paths.baseline_dir))
    return {"applied": sorted(objs), "registry": str(cfg.paths.feature_repo / "registry.db")}


_REPO_DEFINITIONS = '''"""The Feast objects of this argusrank home, for Feast's own CLI (`feast -c <this folder> apply`).
Written by argusrank (features/store.py); the objects are declared once, in argusrank.features.definitions."""
from argusrank.features.definitions import build_definitions

globals().update(build_definitions(r"{vectors}", r"{baseline}"))
'''


def _yaml(cfg: StoreConfig) -> str:
    """A feature_store.yaml mirroring the programmatic config (for ``feast -c <home>/feature_repo`` reads)."""
    rc = repo_config(cfg)
    online = rc.online_store.model_dump(exclude_none=True) if hasattr(rc.online_store, "model_dump") else {}
    import yaml

    return yaml.safe_dump({
        "project": PROJECT, "provider": "local", "registry": str(cfg.paths.feature_repo / "registry.db"),
        "online_store": {k: v for k, v in online.items() if k in ("type", "path", "connection_string")},
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
    }, sort_keys=False)


def _ts(sec: float) -> datetime:
    return datetime.fromtimestamp(sec, tz=timezone.utc)


def _new_rows(path: Path, watermark_us: int) -> tuple[int, int | None, int | None, int]:
    """Rows of a view's parquet created after the watermark: (n, min event us, max event us, max created us).
    Scanned batch by batch: memory one record batch, whatever the view's size."""
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return 0, None, None, watermark_us
    n, lows, highs, wm = 0, [], [], watermark_us
    new = ds.field("created").cast(pa.int64()) > pa.scalar(watermark_us, pa.int64())
    for b in ds.dataset(path, format="parquet").to_batches(columns=["event_timestamp", "created"], filter=new):
        if b.num_rows:
            ev = pc.min_max(b.column(0).cast(pa.int64())).as_py()
            n, wm = n + b.num_rows, max(wm, pc.max(b.column(1).cast(pa.int64())).as_py())
            lows.append(ev["min"])
            highs.append(ev["max"])
    return (n, min(lows), max(highs), wm) if n else (0, None, None, watermark_us)


def online_holds(cfg: StoreConfig, view: str, path: Path) -> bool:
    """Whether the online store holds view ``view``: the entity of its newest offline row is read back
    (one online read); False when the store was emptied or lost (e.g. a Redis restart). The files are scanned
    batch by batch for that row."""
    store = get_store(cfg)
    fv = store.get_feature_view(view)
    keys = list(fv.join_keys)
    newest, row = None, None
    for b in ds.dataset(path, format="parquet").to_batches(columns=[*keys, "event_timestamp"]):
        if b.num_rows == 0:
            continue
        ts = b.column(len(keys)).cast(pa.int64())
        top = pc.max(ts).as_py()
        if newest is None or top > newest:
            i = pc.index(ts, top).as_py()
            newest, row = top, {k: b.column(j)[i].as_py() for j, k in enumerate(keys)}
    if row is None:
        return True
    feature = fv.features[0].name
    got = store.get_online_features(features=[f"{view}:{feature}"], entity_rows=[row]).to_dict()
    return got[feature][0] is not None


def materialize(cfg: StoreConfig, full: bool = False) -> dict[str, Any]:
    """Apply, then load new offline rows into the online store, incrementally.

    Incremental by the ``created`` column: per view, only rows created after the
    previous run's watermark are materialized (over their event-time range), so
    a re-export of an old ``as_of`` with a new model version is picked up too.
    A view the online store no longer holds (emptied, or a new store) is loaded in full
    (:func:`online_holds`), and so is every view with ``full``. With the file offline store a view goes one
    entity bucket at a time (``features.materialize_engine=buckets``, the default: features/materialize.py);
    ``feast`` and the Ray engine use ``FeatureStore.materialize``. Views of ``features.offline_only`` are left
    out (their rows stay offline: point-in-time joins read them). Returns rows, seconds and
    rows/s per view and in all, and ``reloaded``: the views found missing online.
    """
    apply(cfg)
    store = get_store(cfg)
    state_path = cfg.paths.feature_repo / _STATE_FILE
    state = {} if full or not state_path.is_file() else json.loads(state_path.read_text())
    report: dict[str, Any] = {"views": {}, "reloaded": []}
    by_bucket = cfg.features.offline_engine == "file" and cfg.features.materialize_engine == "buckets"
    total_rows, t_all = 0, time.perf_counter()
    dirs = view_dirs(cfg)
    unknown = sorted(set(cfg.features.offline_only) - set(dirs))
    if unknown:
        raise ValueError(f"features.offline_only: unknown view(s) {unknown}; views: {sorted(dirs)}")
    for name, path in dirs.items():
        if name in cfg.features.offline_only:
            report["views"][name] = {"rows": 0, "seconds": 0.0, "offline_only": True}
            continue
        if name in state and path.is_dir() and any(path.glob("*.parquet")) and not online_holds(cfg, name, path):
            state.pop(name)
            report["reloaded"].append(name)
        n, lo, hi, wm = _new_rows(path, int(state.get(name, -1)))
        if n == 0:
            report["views"][name] = {"rows": 0, "seconds": 0.0}
            continue
        t0, start, end = time.perf_counter(), _ts(lo / 1e6), _ts(hi / 1e6 + 1)
        if by_bucket:
            extra = materialize_view(store, name, path, start, end, cfg.features.materialize_bucket_rows,
                                     cfg.features.online_write_rows, mb_per_bucket=cfg.features.bucket_mb)
        else:
            store.materialize(start_date=start, end_date=end, feature_views=[name])
            extra = {}
        dt = time.perf_counter() - t0
        report["views"][name] = {"rows": n, "seconds": round(dt, 3), "rows_per_s": round(n / max(dt, 1e-9), 1), **extra}
        total_rows += n
        state[name] = wm
    seconds = time.perf_counter() - t_all
    atomic_write_text(json.dumps(state), state_path)
    report.update(rows=total_rows, seconds=round(seconds, 3), rows_per_s=round(total_rows / max(seconds, 1e-9), 1),
                  online_store=cfg.features.online_store)
    return report


# --- online reads --------------------------------------------------------------------------

_USER_VIEW_WRITERS: dict[tuple[int, str], tuple[Any, Any]] = {}


def _user_view_writer(fs: "FeatureStore", kind: str) -> tuple[Any, Any]:
    """(view, provider) of a user-vector space, resolved once per process. On SQLite the writing connection
    runs in WAL mode with ``synchronous=NORMAL``: a commit no longer waits for the disk (~2 ms of each fresh
    vector's write here). The online store is derived state — an event's durable record is the online event
    log (``features/online_events.py``, synchronous=FULL) — so an OS crash can lose the last written vectors
    (the user's next event or the next materialization writes them again), never an accepted event."""
    if (id(fs), kind) not in _USER_VIEW_WRITERS:
        provider = fs._get_provider()
        if getattr(fs.config.online_store, "type", "") == "sqlite":
            conn = provider.online_store._get_conn(fs.config)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        _USER_VIEW_WRITERS[(id(fs), kind)] = (fs.get_feature_view(VIEW_OF[kind]), provider)
    return _USER_VIEW_WRITERS[(id(fs), kind)]


def push_user_vectors(cfg: StoreConfig, table: pa.Table, via_push: bool = False, kind: str = "user") -> None:
    """Write user vectors (``vectors.vector_table("user", ...)`` rows) to the online store now: the next online
    read sees them. A row replaces the user's older vector.

    Default: the user-vector view is resolved once per process and the rows go to the provider's
    ``online_write_batch``, the call Feast's ``push`` ends in (~5 ms per call here). ``via_push=True`` takes
    ``FeatureStore.push`` through the view's push source, which re-reads every feature view from the
    registry on each call (~30-50 ms per call here: bench/README.md, fresh vectors). ``kind``: the user-vector
    space (``user``; ``user_nip``: NIP queries, written the default way only: their view has no push source)."""
    fs = get_store(cfg)
    if via_push and kind != "user":
        raise ValueError(f"push_user_vectors: only the user view has a push source, not {kind!r}")
    if via_push:
        from feast.data_source import PushMode

        fs.push(USER_VECTORS_PUSH, table.to_pandas(), to=PushMode.ONLINE)
        return
    from feast import ValueType
    from feast.utils import _convert_arrow_to_proto

    view, provider = _user_view_writer(fs, kind)
    rows = _convert_arrow_to_proto(table.combine_chunks(), view, {"user_id": ValueType.INT64})
    provider.online_write_batch(fs.config, view, rows, None)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _online(cfg: StoreConfig, refs: list[str], rows: dict[str, list]) -> dict[str, list]:
    return get_store(cfg).get_online_features(features=refs, entity_rows=rows).to_dict()


def read_user_vectors(cfg: StoreConfig, user_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Online user vectors: ((N, d) float32 with NaN rows where missing, (N,) model versions, -1 where missing)."""
    return read_user_spaces(cfg, user_ids, ("tower",))["tower"]


def read_user_spaces(cfg: StoreConfig, user_ids: Sequence[int],
                     spaces: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Online user vectors of several spaces (``tower``, ``nip``) in ONE Feast read:
    ``{space: ((N, d) float32, NaN rows where missing; (N,) model versions, -1 where missing)}``."""
    kinds = {space: "user" if space == "tower" else f"user_{space}" for space in spaces}
    refs = [f"{VIEW_OF[k]}:{k}_{col}" for k in kinds.values() for col in ("vector", "model_version")]
    r = _online(cfg, refs, {"user_id": [int(u) for u in user_ids]})
    return {space: (to_matrix(r[f"{k}_vector"]), to_versions(r[f"{k}_model_version"])) for space, k in kinds.items()}


def read_item_vectors(cfg: StoreConfig, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Online item vectors: ((N, d) float32 with NaN rows where missing, (N,) model versions, -1 where missing)."""
    r = _online(cfg, ITEM_VEC_REFS, {"item_id": [int(i) for i in item_ids]})
    return to_matrix(r["item_vector"]), to_versions(r["item_model_version"])


def online_features(
    cfg: StoreConfig, user_id: int, item_ids: Sequence[int], mode: str | None = None,
    argus: Sequence[str] = (DOT_FEATURE,),
) -> dict[str, np.ndarray]:
    """Every raw ranker feature for one user and N candidate items, in ONE batched Feast call.

    Returns ``{feature: (N,) array}`` for the baseline views plus ``argus_dot``, the other
    ARGUS features named in ``argus`` (``features/argus_features.py``) and ``model_version``.
    ``mode`` (default ``cfg.features.dot_product_mode``): ``"caller"`` reads the vectors and
    computes the dot products here (vectorized), ``"on_demand"`` lets Feast's on-demand view
    compute ``argus_dot``. Raises VectorVersionMismatch when the vectors disagree.
    """
    mode = mode or cfg.features.dot_product_mode
    items = [int(i) for i in item_ids]
    rows = {"user_id": [int(user_id)] * len(items), "item_id": items}
    extra = [f for f in dict.fromkeys(argus) if f != DOT_FEATURE]
    kinds = list(dict.fromkeys(["user", "item", *kinds_for(extra)] if mode == "caller" else kinds_for(extra)))
    vec_refs = [f"{VIEW_OF[k]}:{k}_{c}" for k in kinds for c in ("vector", "model_version")]
    vec_refs += [] if mode == "caller" else [ref for ref in VERSION_REFS + [DOT_REF] if ref not in vec_refs]
    r = _online(cfg, list(RAW_REFS) + vec_refs, rows)
    ver = {k: to_versions(r[f"{k}_model_version"]) for k in dict.fromkeys(["user", "item", *kinds])}
    version = check_versions(np.concatenate([v for k, v in ver.items() if k.startswith("user")]),
                             np.concatenate([v for k, v in ver.items() if k.startswith("item")]))
    out = {ref.split(":")[1]: _floats(r[ref.split(":")[1]]) for ref in RAW_REFS}
    names = [DOT_FEATURE, *extra] if mode == "caller" else extra
    out.update(features_of_rows(cfg, names, {k: to_matrix(r[f"{k}_vector"]) for k in kinds},
                                np.full(len(items), -1 if version is None else version)))
    if mode != "caller":
        out[DOT_FEATURE] = _floats(r[DOT_FEATURE])
    out["model_version"] = np.full(len(items), -1 if version is None else version, dtype=np.int64)
    return out


# --- offline: point-in-time training sets ----------------------------------------------------

def _join_plan(cfg: StoreConfig, with_vectors: bool, argus: Sequence[str]):
    """What a point-in-time join reads: the (view, keys, refs) groups with offline rows (and as the bucket join's
    :class:`point_in_time.ViewJoin`), the feature columns (vectors aside), the vector kinds and ``finish`` (the
    columns of views with no offline rows, NaN, and the ARGUS features of rows from their vector matrices)."""
    from argusrank.features.point_in_time import ViewJoin

    groups = [(v.name, list(v.keys), [f"{v.name}:{f}" for f in v.features]) for v in VIEWS]
    kinds = ("user", "item", *(k for k in kinds_for(argus) if k not in ("user", "item"))) if with_vectors else ()
    groups += [(VIEW_OF[k], [f"{k.split('_')[0]}_id"], [f"{VIEW_OF[k]}:{k}_{c}" for c in ("vector", "model_version")])
               for k in kinds]
    dirs = view_dirs(cfg)
    columns = [r.split(":")[1] for _, _, refs in groups for r in refs if not r.endswith("_vector")]
    empty = [r.split(":")[1] for view, _, refs in groups if not any(dirs[view].glob("*.parquet")) for r in refs]
    groups = [g for g in groups if any(dirs[g[0]].glob("*.parquet"))]
    names = list(dict.fromkeys([DOT_FEATURE, *argus]))

    def finish(frame: pd.DataFrame, matrices: dict[str, np.ndarray]) -> pd.DataFrame:
        frame = frame.assign(**{c: np.nan for c in empty if not c.endswith("_vector")})  # nothing exported
        if with_vectors:
            none = np.full((len(frame), 0), np.nan, dtype=np.float32)
            vecs = {k: matrices.get(f"{k}_vector", none) for k in kinds}
            for f, x in features_of_rows(cfg, names, vecs, _row_versions(frame, kinds)).items():
                frame[f] = x
        return frame

    views = [ViewJoin(dirs[view], tuple(keys), tuple(r.split(":")[1] for r in refs)) for view, keys, refs in groups]
    return groups, views, columns, kinds, finish


def historical_feature_parts(cfg: StoreConfig, n_rows: int, rows_of, argus: Sequence[str] = (DOT_FEATURE,),
                             progress: bool = True):
    """:func:`historical_features` one user bucket at a time, for entity rows too many to hold: yields
    ``(bucket, rows with features)`` per non-empty bucket, ``rows_of(n, b)`` giving the entity rows with
    ``user_id % n == b`` (of ``n_rows`` in all). The file offline store's bucket join only
    (``features.historical_engine=buckets``, ``features/point_in_time.py``)."""
    from argusrank.features.point_in_time import join_buckets

    if cfg.features.offline_engine != "file" or cfg.features.historical_engine != "buckets":
        raise ValueError("point-in-time features by user bucket need features.offline_engine=file and "
                         f"features.historical_engine=buckets (got {cfg.features.offline_engine}, "
                         f"{cfg.features.historical_engine})")
    groups, views, columns, kinds, finish = _join_plan(cfg, True, argus)
    for b, frame in join_buckets(n_rows, rows_of, views, cfg.features.materialize_bucket_rows, finish,
                                 cfg.features.bucket_mb, progress):
        _row_versions(frame, kinds, check=True)
        yield b, frame


def historical_features(cfg: StoreConfig, entity_df: pd.DataFrame, with_vectors: bool = True,
                        argus: Sequence[str] = (DOT_FEATURE,)) -> pd.DataFrame:
    """Point-in-time join for impressions, one output row per input row (input order).

    ``entity_df``: columns user_id, item_id, event_timestamp (tz-aware UTC, the
    impression time) plus anything to carry along. Every feature row used was
    valid at or before the impression time; features missing then are NaN.
    Adds ``argus_dot`` and the other ARGUS features named in ``argus``
    (``features/argus_features.py``, from every vector kind the export wrote; vectorized) and checks
    that a row's vectors share one model version.

    With the file offline store the join runs one user bucket at a time (``features.historical_engine=buckets``,
    the default: ``features/point_in_time.py``, memory bounded by a bucket; :func:`historical_feature_parts`
    writes such a join bucket by bucket); ``feast`` (or the Ray offline store) calls
    ``get_historical_features``. Feast 0.67's file (Dask) store collapses entity rows that share join keys
    and timestamp (feast-dev/feast#6787: every impression of one request!) and drops rows whose only feature rows
    are newer than them, so there each view is queried with its own unique (keys, timestamp) rows and merged back.
    """
    out = entity_df.reset_index(drop=True).copy()
    groups, views, columns, kinds, finish = _join_plan(cfg, with_vectors, argus)
    if cfg.features.offline_engine == "file" and cfg.features.historical_engine == "buckets":
        from argusrank.features.point_in_time import joined_by_bucket

        out = joined_by_bucket(out, views, cfg.features.materialize_bucket_rows, finish, cfg.features.bucket_mb)
        _row_versions(out, kinds, check=True)
    else:
        store = get_store(cfg)
        if not {view for view, _, _ in groups} <= {v.name for v in store.list_feature_views()}:
            apply(cfg)  # Feast joins only views in its registry (the home may not have been materialized yet)
        for view, keys, refs in groups:
            uniq = out[keys + ["event_timestamp"]].drop_duplicates(ignore_index=True)
            got = store.get_historical_features(entity_df=uniq, features=refs).to_df()
            got = got[keys + ["event_timestamp"] + [r.split(":")[1] for r in refs]]
            out = out.merge(got, on=keys + ["event_timestamp"], how="left", validate="many_to_one")
        _row_versions(out, kinds, check=True)
        vec_cols = [f"{k}_vector" for k in kinds if f"{k}_vector" in out]
        matrices = {c: to_matrix(out[c].tolist()) for c in vec_cols}
        out = finish(out.drop(columns=vec_cols), matrices)
    carried = [*entity_df.columns, *columns]
    return out[[*carried, *(c for c in out.columns if c not in set(carried))]]


def _row_versions(frame: pd.DataFrame, kinds: Sequence[str], check: bool = False) -> np.ndarray:
    """Each row's model version (-1: no vector); ``check``: refuse rows whose vectors differ in version."""
    ver = {k: frame[f"{k}_model_version"].fillna(-1).astype(np.int64).to_numpy() for k in kinds}
    if check:
        for i, a in enumerate(kinds):  # every pair of a row's vectors: one model version
            for b in kinds[i + 1:]:
                check_versions(ver[a], ver[b], per_row=True)
    return np.max(np.stack(list(ver.values())), axis=0) if ver else np.full(len(frame), -1)
