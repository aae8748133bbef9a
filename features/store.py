"""The Feast feature store of argusrank: config, apply, materialize, online and offline reads.

argusrank builds a programmatic ``RepoConfig`` with absolute paths under the
configured home (``cfg.paths.feature_repo``: registry + SQLite online store;
``cfg.paths.vectors_dir`` and ``<home>/baseline``: offline parquet), and the
Feast objects from ``features/definitions.py``. Redis replaces SQLite when
``cfg.features.online_store == "redis"`` (``ARGUSRANK_REDIS_URL`` sets it).

Version guard: user and item vectors used together must carry the same model
version; :func:`check_versions` raises :class:`VectorVersionMismatch` otherwise.
Feast is imported lazily (it costs seconds).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features.baseline import DOT_FEATURE, RAW_REFS, USER_ITEM_PRIORS, VIEWS
from argusrank.platform.config import ArgusrankConfig

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore, RepoConfig

PROJECT = "argusrank"
USER_VECTORS, ITEM_VECTORS, DOT_VIEW = "user_vectors", "item_vectors", "argus_dot_view"
USER_VEC_REFS = [f"{USER_VECTORS}:user_vector", f"{USER_VECTORS}:user_model_version"]
ITEM_VEC_REFS = [f"{ITEM_VECTORS}:item_vector", f"{ITEM_VECTORS}:item_model_version"]
VERSION_REFS = [f"{USER_VECTORS}:user_model_version", f"{ITEM_VECTORS}:item_model_version"]
DOT_REF = f"{DOT_VIEW}:{DOT_FEATURE}"
_STATE_FILE = "materialize_state.json"


class VectorVersionMismatch(ValueError):
    """User and item vectors come from different model versions."""


def baseline_dir(cfg: ArgusrankConfig) -> Path:
    """Offline parquet of the baseline feature views."""
    return cfg.paths.home / "baseline"


def view_dirs(cfg: ArgusrankConfig) -> dict[str, Path]:
    """Offline parquet directory of every batch feature view."""
    out = {USER_VECTORS: cfg.paths.vectors_dir / USER_VECTORS, ITEM_VECTORS: cfg.paths.vectors_dir / ITEM_VECTORS}
    out.update({v.name: baseline_dir(cfg) / v.name for v in (*VIEWS, USER_ITEM_PRIORS)})
    return out


def repo_config(cfg: ArgusrankConfig) -> "RepoConfig":
    """Programmatic Feast config: absolute registry / online-store paths under ``cfg.paths.feature_repo``."""
    from feast import RepoConfig

    repo = cfg.paths.feature_repo
    repo.mkdir(parents=True, exist_ok=True)
    if cfg.features.online_store == "redis":
        online = {"type": "redis", "connection_string": cfg.features.redis_url}
    else:
        online = {"type": "sqlite", "path": str(repo / "online_store.db")}
    return RepoConfig(
        project=PROJECT, provider="local", registry={"registry_type": "file", "path": str(repo / "registry.db")},
        online_store=online, offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=repo,
    )


_STORES: dict[tuple[str, str, str], "FeatureStore"] = {}


def get_store(cfg: ArgusrankConfig) -> "FeatureStore":
    """A FeatureStore for this config's home and online store (one per process, reused)."""
    key = (str(cfg.paths.home), cfg.features.online_store, cfg.features.redis_url)
    if key not in _STORES:
        from feast import FeatureStore

        _STORES[key] = FeatureStore(config=repo_config(cfg))
    return _STORES[key]


def definitions(cfg: ArgusrankConfig) -> dict[str, Any]:
    """The Feast objects of features/definitions.py, sourced from this config's parquet directories."""
    from argusrank.features.definitions import build_definitions

    return build_definitions(cfg.paths.vectors_dir, baseline_dir(cfg))


def apply(cfg: ArgusrankConfig) -> dict[str, Any]:
    """Register entities and views (``feast apply``); returns the names applied."""
    objs = definitions(cfg)
    store = get_store(cfg)
    store.apply(list(objs.values()))
    store.refresh_registry()
    (cfg.paths.feature_repo / "feature_store.yaml").write_text(_yaml(cfg))
    return {"applied": sorted(objs), "registry": str(cfg.paths.feature_repo / "registry.db")}


def _yaml(cfg: ArgusrankConfig) -> str:
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
    """Rows of a view's parquet created after the watermark: (n, min event us, max event us, max created us)."""
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return 0, None, None, watermark_us
    t = ds.dataset(path, format="parquet").to_table(columns=["event_timestamp", "created"])
    created = t["created"].cast(pa.int64())
    mask = pc.greater(created, pa.scalar(watermark_us, pa.int64()))
    ev = pc.filter(t["event_timestamp"].cast(pa.int64()), mask)
    if len(ev) == 0:
        return 0, None, None, watermark_us
    return len(ev), pc.min(ev).as_py(), pc.max(ev).as_py(), max(watermark_us, pc.max(created).as_py())


def materialize(cfg: ArgusrankConfig, full: bool = False) -> dict[str, Any]:
    """Apply, then load new offline rows into the online store, incrementally.

    Incremental by the ``created`` column: per view, only rows created after the
    previous run's watermark are materialized (over their event-time range), so
    a re-export of an old ``as_of`` with a new model version is picked up too.
    ``full`` ignores the watermarks. Returns rows, seconds and rows/s per view and in all.
    """
    apply(cfg)
    store = get_store(cfg)
    state_path = cfg.paths.feature_repo / _STATE_FILE
    state = {} if full or not state_path.is_file() else json.loads(state_path.read_text())
    report: dict[str, Any] = {"views": {}}
    total_rows, t_all = 0, time.perf_counter()
    for name, path in view_dirs(cfg).items():
        n, lo, hi, wm = _new_rows(path, int(state.get(name, -1)))
        if n == 0:
            report["views"][name] = {"rows": 0, "seconds": 0.0}
            continue
        t0 = time.perf_counter()
        store.materialize(start_date=_ts(lo / 1e6), end_date=_ts(hi / 1e6 + 1), feature_views=[name])
        dt = time.perf_counter() - t0
        report["views"][name] = {"rows": n, "seconds": round(dt, 3), "rows_per_s": round(n / max(dt, 1e-9), 1)}
        total_rows += n
        state[name] = wm
    seconds = time.perf_counter() - t_all
    state_path.write_text(json.dumps(state))
    report.update(rows=total_rows, seconds=round(seconds, 3), rows_per_s=round(total_rows / max(seconds, 1e-9), 1),
                  online_store=cfg.features.online_store)
    return report


# --- offline writes ----------------------------------------------------------------------

def vector_table(kind: str, ids: np.ndarray, vectors: np.ndarray, model_version: int,
                 event_ts_s: np.ndarray | int, created_s: float) -> pa.Table:
    """The offline schema of a vector view: ``<kind>_id, <kind>_vector, <kind>_model_version, event_timestamp, created``.

    ``ids`` (N,) int64, ``vectors`` (N, d) float32, ``event_ts_s`` scalar or (N,) seconds, ``created_s`` seconds.
    """
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{kind} vectors: {len(ids)} ids but {n} vectors")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise ValueError(f"{kind} vector of {kind}_id={int(ids[row])} (row {row}) is not finite")
    ev = np.broadcast_to(np.asarray(event_ts_s, dtype=np.float64), (n,))
    us = pa.timestamp("us", tz="UTC")
    return pa.table({
        f"{kind}_id": pa.array(np.asarray(ids, dtype=np.int64)),
        f"{kind}_vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d).cast(pa.list_(pa.float32())),
        f"{kind}_model_version": pa.array(np.full(n, int(model_version), dtype=np.int64)),
        "event_timestamp": pa.array((ev * 1e6).astype(np.int64)).cast(us),
        "created": pa.array(np.full(n, int(created_s * 1e6), dtype=np.int64)).cast(us),
    })


def cfg_vector_path(cfg: ArgusrankConfig, kind: str, tag: str) -> Path:
    """``<vectors_dir>/<kind>_vectors/<tag>.parquet`` (one file per export)."""
    return cfg.paths.vectors_dir / (USER_VECTORS if kind == "user" else ITEM_VECTORS) / f"{tag}.parquet"


def write_vectors(cfg: ArgusrankConfig, kind: str, table: pa.Table, tag: str) -> Path:
    """Write a vector table (:func:`vector_table`) as one export file; returns its path."""
    import pyarrow.parquet as pq

    path = cfg_vector_path(cfg, kind, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --- online reads --------------------------------------------------------------------------

def _vectors(values: Sequence[Any]) -> np.ndarray:
    """Feast list values (lists / arrays, None or NaN where missing) -> (N, d) float32, NaN rows where missing."""
    arr = pa.array(pd.Series(list(values), dtype=object), type=pa.list_(pa.float32()), from_pandas=True)
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    d = int(lens.max()) if len(lens) else 0
    ok = lens == d
    if d and not ok[lens > 0].all():
        row = int(np.flatnonzero((lens > 0) & ~ok)[0])
        raise ValueError(f"vector at row {row} has {lens[row]} dims, others {d}")
    out = np.full((len(arr), d), np.nan, dtype=np.float32)
    if d:
        out[ok] = arr.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    return out


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _versions(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([-1 if v is None else int(v) for v in values], dtype=np.int64)


def _online(cfg: ArgusrankConfig, refs: list[str], rows: dict[str, list]) -> dict[str, list]:
    return get_store(cfg).get_online_features(features=refs, entity_rows=rows).to_dict()


def read_user_vectors(cfg: ArgusrankConfig, user_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Online user vectors: ((N, d) float32 with NaN rows where missing, (N,) model versions, -1 where missing)."""
    r = _online(cfg, USER_VEC_REFS, {"user_id": [int(u) for u in user_ids]})
    return _vectors(r["user_vector"]), _versions(r["user_model_version"])


def read_item_vectors(cfg: ArgusrankConfig, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Online item vectors: ((N, d) float32 with NaN rows where missing, (N,) model versions, -1 where missing)."""
    r = _online(cfg, ITEM_VEC_REFS, {"item_id": [int(i) for i in item_ids]})
    return _vectors(r["item_vector"]), _versions(r["item_model_version"])


def check_versions(user_versions: np.ndarray, item_versions: np.ndarray, per_row: bool = False) -> int | None:
    """Refuse user/item vectors of different model versions (VectorVersionMismatch); -1 = missing vector.

    ``per_row=False``: all present vectors must share one version, which is returned.
    ``per_row=True`` (point-in-time training sets spanning a model upgrade): each row's
    user and item vector must match; returns None if rows differ between them.
    """
    uv, iv = np.asarray(user_versions), np.asarray(item_versions)
    present = np.unique(np.concatenate([uv[uv >= 0], iv[iv >= 0]]))
    bad = np.flatnonzero((uv >= 0) & (iv >= 0) & (uv != iv)) if uv.shape == iv.shape else np.array([], int)
    if len(bad) or (len(present) > 1 and not per_row):
        where = f" (first mismatching row {int(bad[0])}: user v{uv[bad[0]]} vs item v{iv[bad[0]]})" if len(bad) else ""
        raise VectorVersionMismatch(
            f"user and item vectors come from different model versions {present.tolist()}{where}: "
            "export and materialize both from one model version before using them together"
        )
    return int(present[0]) if len(present) == 1 else None


def dot_products(user_vecs: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """Row-wise dot products, (N, d) x (N, d) or (1, d) x (N, d) -> (N,) float64; NaN where a vector is missing."""
    if user_vecs.shape[-1] == 0 or item_vecs.shape[-1] == 0:  # no vectors at all
        return np.full(max(len(user_vecs), len(item_vecs)), np.nan)
    return np.einsum("nd,nd->n", np.broadcast_to(user_vecs, item_vecs.shape).astype(np.float64),
                     item_vecs.astype(np.float64))


def online_features(
    cfg: ArgusrankConfig, user_id: int, item_ids: Sequence[int], mode: str | None = None,
) -> dict[str, np.ndarray]:
    """Every raw ranker feature for one user and N candidate items, in ONE batched Feast call.

    Returns ``{feature: (N,) array}`` for the baseline views plus ``argus_dot``
    and ``model_version``. ``mode`` (default ``cfg.features.dot_product_mode``):
    ``"caller"`` reads both vectors and computes the dot products here
    (vectorized), ``"on_demand"`` lets Feast's on-demand view compute them.
    Raises VectorVersionMismatch when user and item vectors disagree.
    """
    mode = mode or cfg.features.dot_product_mode
    items = [int(i) for i in item_ids]
    rows = {"user_id": [int(user_id)] * len(items), "item_id": items}
    vec_refs = USER_VEC_REFS + ITEM_VEC_REFS if mode == "caller" else VERSION_REFS + [DOT_REF]
    r = _online(cfg, list(RAW_REFS) + vec_refs, rows)
    version = check_versions(_versions(r["user_model_version"]), _versions(r["item_model_version"]))
    out = {ref.split(":")[1]: _floats(r[ref.split(":")[1]]) for ref in RAW_REFS}
    if mode == "caller":
        out[DOT_FEATURE] = dot_products(_vectors(r["user_vector"]), _vectors(r["item_vector"]))
    else:
        out[DOT_FEATURE] = _floats(r[DOT_FEATURE])
    out["model_version"] = np.full(len(items), -1 if version is None else version, dtype=np.int64)
    return out


# --- offline: point-in-time training sets ----------------------------------------------------

def historical_features(cfg: ArgusrankConfig, entity_df: pd.DataFrame, with_vectors: bool = True) -> pd.DataFrame:
    """Point-in-time join for impressions (``get_historical_features``), one output row per input row.

    ``entity_df``: columns user_id, item_id, event_timestamp (tz-aware UTC, the
    impression time) plus anything to carry along. Every feature row used was
    valid at or before the impression time; features missing then are NaN.
    Adds ``argus_dot`` (vectorized here) and checks that user and item vectors
    share one model version.

    Feast 0.67's file (Dask) store collapses entity rows that share join keys
    and timestamp (feast-dev/feast#6787: every impression of one request!) and
    drops rows whose only feature rows are newer than them, so each view is
    queried with its own unique (keys, timestamp) rows and merged back here.
    """
    store = get_store(cfg)
    out = entity_df.reset_index(drop=True).copy()
    groups = [(v.name, list(v.keys), [f"{v.name}:{f}" for f in v.features]) for v in VIEWS]
    if with_vectors:
        groups += [(USER_VECTORS, ["user_id"], USER_VEC_REFS), (ITEM_VECTORS, ["item_id"], ITEM_VEC_REFS)]
    dirs = view_dirs(cfg)
    for view, keys, refs in groups:
        if not any(dirs[view].glob("*.parquet")):  # nothing exported for this view: all missing
            out = out.assign(**{r.split(":")[1]: np.nan for r in refs})
            continue
        uniq = out[keys + ["event_timestamp"]].drop_duplicates(ignore_index=True)
        got = store.get_historical_features(entity_df=uniq, features=refs).to_df()
        got = got[keys + ["event_timestamp"] + [r.split(":")[1] for r in refs]]
        out = out.merge(got, on=keys + ["event_timestamp"], how="left", validate="many_to_one")
    if with_vectors:
        uv = out["user_model_version"].fillna(-1).astype(np.int64).to_numpy()
        iv = out["item_model_version"].fillna(-1).astype(np.int64).to_numpy()
        check_versions(uv, iv, per_row=True)
        out[DOT_FEATURE] = dot_products(_vectors(out["user_vector"].tolist()), _vectors(out["item_vector"].tolist()))
        out = out.drop(columns=["user_vector", "item_vector"])
    return out


# --- offline: latest vectors straight from parquet (serving RAM / ANN index) ----------------

def latest_vectors(cfg: ArgusrankConfig, kind: str = "item") -> tuple[np.ndarray, np.ndarray, int]:
    """Latest exported vectors from the offline parquet: ``(ids (N,), vectors (N, d) float32, model_version)``.

    Takes the newest export (max ``created``) and, per entity, its latest row.
    """
    view = ITEM_VECTORS if kind == "item" else USER_VECTORS
    key, col, ver = f"{kind}_id", f"{kind}_vector", f"{kind}_model_version"
    path = cfg.paths.vectors_dir / view
    if not path.is_dir():
        raise FileNotFoundError(f"no exported {kind} vectors under {path}: run `argusrank export` first")
    t = ds.dataset(path, format="parquet").to_table()
    newest = pc.max(t["created"])
    t = t.filter(pc.equal(t["created"], newest)).sort_by([(key, "ascending"), ("event_timestamp", "descending")])
    ids = t[key].to_numpy()
    first = np.r_[True, ids[1:] != ids[:-1]]
    t = t.filter(pa.array(first))
    versions = np.unique(t[ver].to_numpy())
    if len(versions) != 1:
        raise VectorVersionMismatch(f"newest {kind} export holds several model versions {versions.tolist()}")
    vecs = np.asarray(t[col].combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(t.num_rows, -1)
    return t[key].to_numpy(), vecs, int(versions[0])
