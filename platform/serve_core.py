"""The online recommendation pipeline as plain Python: what each Serve deployment runs.

``platform/serve_app.py`` wraps these pieces in Ray Serve deployments; the
benchmark runs them in-process (no Serve, no HTTP) for comparison, and tests
use them as the reference. Steps, for one request:

1. :class:`CandidateState` (CandidateGenerator): user vector from Feast -> ANN
   top-N over the item vectors of ONE model version held in RAM.
2. :func:`raw_features` (FeatureService): baseline + vector features for
   (user, candidates) from the Feast online store in one batched call
   (``features.store.online_features``; dot products vectorized there).
3. :class:`RankerState` (Ranker): ``features.baseline.ranker_features`` turns
   them into the ranker's matrix, ``booster.inplace_predict`` scores all rows.

A *bundle* pins the versions one request uses: the ranker version behind the
registry alias and the ARGUS (vector) version that ranker was trained on.
Hot swap builds a complete new :class:`CandidateState` off the request path and
swaps one reference; requests carry the bundle to the other deployments, which
check the vectors they read carry the same version and never mix two.

Cold start / fallback (documented in the README): a user with no vector in the
online store, or whose vector is from another model version than the served
bundle (while an alias move is in flight), gets the **most popular items**:
items of the served catalog ordered by 7-day popularity (``item_pop_7d``, ties
by ``item_pop_30d``) at the latest baseline snapshot, minus ``exclude``; the
response says ``"fallback": "unknown_user"`` / ``"version_mismatch"``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.models.ann import AnnIndex, build_index
from argusrank.platform.config import ArgusrankConfig

#: model-version tag / run param naming the ARGUS version a ranker was trained with
ARGUS_VERSION_KEYS = ("argus_version", "argus_model_version", "model_version")


class NothingToServe(RuntimeError):
    """No registered ranker / exported vectors yet: tells the user what to run."""


class VersionMismatch(RuntimeError):
    """Vectors read online carry another model version than the pinned bundle."""


@dataclass(frozen=True)
class Bundle:
    """The model versions one request uses."""

    argus_version: int
    ranker_version: int

    def as_dict(self) -> dict[str, int]:
        return {"argus": self.argus_version, "ranker": self.ranker_version}


def one_thread_per_request() -> None:
    """Limit BLAS (numpy matmul) and faiss to one thread in this process.

    A request's work is small (one user x N items); on a busy box extra pool threads
    only spin and contend with the other replicas (a 2-core box measured 3 ms vs
    8-16 ms for the same /recommend). Scale with replicas instead.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------- registry
def _client(cfg: ArgusrankConfig):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)


def resolve_bundle(cfg: ArgusrankConfig, ranker_ref: str | int | None = None) -> Bundle:
    """Versions to serve: the ranker behind ``cfg.serve.ranker_alias`` (or ``ranker_ref``) and its ARGUS version.

    The ARGUS version comes from the ranker version's tags (``argus_version``) or
    its training run's params; without either, from the newest item-vector export.
    Raises :class:`NothingToServe` when nothing is registered yet.
    """
    import mlflow

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise NothingToServe(f"no MLflow registry at {uri}: run `argusrank demo --no-serve` (or the pipeline) first")
    client = _client(cfg)
    name, ref = cfg.mlflow.ranker_model_name, str(ranker_ref or cfg.serve.ranker_alias)
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except mlflow.exceptions.MlflowException as exc:
        raise NothingToServe(
            f"no ranker registered as {name!r}@{ref} in {cfg.tracking_uri}: run `argusrank demo --no-serve` "
            "(or the pipeline: export, materialize, `argusrank ranker train`) first"
        ) from exc
    tags = dict(mv.tags or {})
    if not any(k in tags for k in ARGUS_VERSION_KEYS) and mv.run_id:
        try:
            tags.update(client.get_run(mv.run_id).data.params)
        except mlflow.exceptions.MlflowException:
            pass
    argus = next((int(float(tags[k])) for k in ARGUS_VERSION_KEYS if str(tags.get(k, "")).strip() not in ("", "None")), None)
    if argus is None:
        argus = newest_item_version(cfg)
    return Bundle(argus_version=argus, ranker_version=int(mv.version))


# --------------------------------------------------------------------------- vectors
def _item_dir(cfg: ArgusrankConfig):
    return cfg.paths.vectors_dir / "item_vectors"


def newest_item_version(cfg: ArgusrankConfig) -> int:
    """Model version of the newest item-vector export (max ``created``)."""
    path = _item_dir(cfg)
    if not path.is_dir() or not any(path.glob("*.parquet")):
        raise NothingToServe(f"no exported item vectors under {path}: run `argusrank export` first")
    t = ds.dataset(path, format="parquet").to_table(columns=["item_model_version", "created"])
    return int(t["item_model_version"][pc.index(t["created"], pc.max(t["created"])).as_py()].as_py())


def item_vectors(cfg: ArgusrankConfig, version: int) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors of exactly one model version from the export parquet: ids (N,) int64, vectors (N, d) float32.

    Per item the newest row (``created``, then ``event_timestamp``) of that version.
    """
    path = _item_dir(cfg)
    if not path.is_dir():
        raise NothingToServe(f"no exported item vectors under {path}: run `argusrank export` first")
    files = [str(f) for d in (path, cfg.paths.vectors_dir / "archive" / "item_vectors") if d.is_dir()
             for f in sorted(d.glob("*.parquet"))]  # export archives other versions (platform/export.py)
    t = ds.dataset(files, format="parquet").to_table(filter=ds.field("item_model_version") == int(version))
    if t.num_rows == 0:
        raise NothingToServe(f"no item vectors of model version {version} under {path}: export that version first")
    t = t.sort_by([("item_id", "ascending"), ("created", "descending"), ("event_timestamp", "descending")])
    ids = t["item_id"].to_numpy()
    first = np.r_[True, ids[1:] != ids[:-1]]
    t = t.filter(pa.array(first))
    vecs = np.asarray(t["item_vector"].combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(t.num_rows, -1)
    return t["item_id"].to_numpy().astype(np.int64), vecs


def popular_items(cfg: ArgusrankConfig, catalog: np.ndarray) -> np.ndarray:
    """Popularity (M, 2) float64 of the sorted ``catalog`` (M,): ``item_pop_7d``, ``item_pop_30d``.

    Read from the latest ``item_stats`` baseline snapshot (offline parquet); items not
    in the snapshot (or no snapshot at all) get 0.
    """
    from argusrank.features.store import baseline_dir

    pop = np.zeros((len(catalog), 2))
    path = baseline_dir(cfg) / "item_stats"
    if len(catalog) and path.is_dir() and any(path.glob("*.parquet")):
        t = ds.dataset(path, format="parquet").to_table(columns=["item_id", "event_timestamp", "item_pop_7d", "item_pop_30d"])
        t = t.filter(pc.equal(t["event_timestamp"], pc.max(t["event_timestamp"])))
        from argusrank.features.baseline import lookup_sorted

        pos, ok = lookup_sorted(catalog, t["item_id"].to_numpy())
        for j, col in enumerate(("item_pop_7d", "item_pop_30d")):
            pop[pos[ok], j] = np.nan_to_num(t[col].to_numpy(zero_copy_only=False).astype(np.float64))[ok]
    return pop


# --------------------------------------------------------------------------- candidates
@dataclass
class CandidateState:
    """Everything the CandidateGenerator needs for one bundle; replaced whole on hot swap."""

    bundle: Bundle
    index: AnnIndex  # item ids sorted ascending
    popularity: np.ndarray  # (N, 2) float64 aligned with index.item_ids: item_pop_7d, item_pop_30d
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        ids, pop = self.index.item_ids, self.popularity
        self.popular_order = np.lexsort((ids, -pop[:, 1], -pop[:, 0]))  # (N,) fallback order; last key primary

    def info(self) -> dict[str, Any]:
        return {"model_versions": self.bundle.as_dict(), "index": {"kind": self.index.kind, "items": self.index.size,
                "dim": self.index.dim}, "loaded_at": self.loaded_at}

    def popular(self, k: int, exclude: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the fallback order minus ``exclude``: ids (k,), scores (= item_pop_7d) (k,)."""
        top = self.popular_order[: k + (len(exclude) if exclude is not None else 0)]
        ids = self.index.item_ids[top]
        keep = ~np.isin(ids, np.asarray(exclude if exclude is not None else [], np.int64))
        top = top[keep][:k]
        return self.index.item_ids[top], self.popularity[top, 0].astype(np.float32)

    def popularity_of(self, item_ids: np.ndarray) -> np.ndarray:
        """item_pop_7d of arbitrary items (N,), 0 for items outside the catalog."""
        pos = self.index.positions(item_ids)
        return np.where(pos >= 0, self.popularity[np.maximum(pos, 0), 0], 0.0).astype(np.float32)


def load_candidate_state(cfg: ArgusrankConfig, bundle: Bundle | None = None) -> CandidateState:
    """Resolve the bundle (unless given), load its item vectors and build the ANN index and fallback order."""
    bundle = bundle or resolve_bundle(cfg)
    ids, vecs = item_vectors(cfg, bundle.argus_version)  # ids sorted ascending
    s = cfg.serve
    index = build_index(ids, vecs, s.ann, exact_max_items=s.exact_max_items, hnsw_m=s.hnsw_m,
                        ef_construction=s.hnsw_ef_construction, ef_search=s.hnsw_ef_search,
                        model_version=str(bundle.argus_version))
    return CandidateState(bundle, index, popular_items(cfg, ids))


def generate_candidates(
    cfg: ArgusrankConfig, state: CandidateState, requests: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Candidates for a batch of requests: one Feast read of the user vectors, one ANN search.

    A request is ``{user_id, n, exclude?}`` (top-n by ANN) or ``{user_id, items}`` (score exactly
    these items); ``force_fallback`` (a reason) asks for the fallback answer. Each answer:
    ``{item_ids, scores, model_versions, fallback, ranked}``; ``fallback`` is None, ``"unknown_user"``
    or ``"version_mismatch"``, and then the items are the popular ones best first (``ranked``), or
    the given items scored by popularity: never scored with another version's vectors.
    """
    from argusrank.features.store import read_user_vectors

    users = [int(r["user_id"]) for r in requests]
    vecs, versions = read_user_vectors(cfg, users)  # (B, d) NaN rows when missing, (B,) -1 when missing
    known = (versions >= 0) & (np.isfinite(vecs).all(axis=1) if vecs.size else False)
    forced = np.array([bool(r.get("force_fallback")) for r in requests])
    ok = known & (versions == state.bundle.argus_version) & ~forced
    out: list[dict[str, Any]] = [{} for _ in requests]
    search = [i for i in np.flatnonzero(ok) if requests[i].get("items") is None]
    if search:
        n = max(int(requests[i]["n"]) for i in search)
        ids, sc = state.index.search(vecs[search], n, [requests[i].get("exclude") for i in search])  # (b, n)
        for row, i in enumerate(search):
            m = int(requests[i]["n"])
            keep = ids[row, :m] >= 0
            out[i] = {"item_ids": ids[row, :m][keep], "scores": sc[row, :m][keep]}
    for i, r in enumerate(requests):
        items = r.get("items")
        if ok[i] and items is not None:  # /rank: exact dot products from RAM, NaN outside the catalog
            pos = state.index.positions(items)
            dots = state.index.vectors[np.maximum(pos, 0)] @ vecs[i]
            out[i] = {"item_ids": np.asarray(items, np.int64), "scores": np.where(pos >= 0, dots, np.nan).astype(np.float32)}
        elif not ok[i] and items is not None:
            out[i] = {"item_ids": np.asarray(items, np.int64), "scores": state.popularity_of(np.asarray(items, np.int64))}
        elif not ok[i]:
            ids, sc = state.popular(int(r["n"]), r.get("exclude"))
            out[i] = {"item_ids": ids, "scores": sc, "ranked": True}
        reason = r.get("force_fallback") or ("version_mismatch" if known[i] else "unknown_user")
        out[i]["fallback"] = None if ok[i] else reason
        out[i]["model_versions"] = state.bundle.as_dict()
        if known[i] and not ok[i]:
            out[i]["user_vector_version"] = int(versions[i])
    return out


# --------------------------------------------------------------------------- features
def raw_features(cfg: ArgusrankConfig, user_id: int, item_ids: Sequence[int], argus_version: int) -> dict[str, np.ndarray]:
    """Raw ranker features (baseline + ``argus_dot``) of (user, items) in ONE batched Feast call
    (``features.store.online_features``: vectors read from Feast, dot products vectorized there).

    Raises :class:`VersionMismatch` when the vectors read carry another version than ``argus_version``.
    """
    from argusrank.features.store import VectorVersionMismatch, online_features

    try:
        raw = online_features(cfg, int(user_id), [int(i) for i in item_ids])
    except VectorVersionMismatch as exc:
        raise VersionMismatch(str(exc)) from exc
    got = np.unique(raw.pop("model_version"))
    got = got[got >= 0]
    if got.size and int(got[0]) != int(argus_version):
        raise VersionMismatch(f"online vectors are model version {int(got[0])}, the served bundle is {argus_version}")
    return raw


def features_for(cfg: ArgusrankConfig, user_id: int, cand: dict[str, Any], items: "ItemFeatureCache | None") -> dict:
    """Raw features of a candidate answer, by ``cfg.serve.features_path`` (``items`` needed for cached_items)."""
    if items is None:
        return raw_features(cfg, user_id, cand["item_ids"], cand["model_versions"]["argus"])
    return raw_features_cached(cfg, user_id, cand["item_ids"], cand["scores"], items)


class ItemFeatureCache:
    """Item-level baseline features (``item_stats``) of the whole catalog, read from the Feast online
    store in bulk and held in RAM; rebuilt (then swapped whole) when a materialization lands.

    Used by ``serve.features_path="cached_items"``: per request only the user's row is read
    from Feast (``user_stats`` + ``user_item_priors``), and ``argus_dot`` is the candidate
    generator's exact dot product over the pinned version's item vectors.
    """

    def __init__(self, cfg: ArgusrankConfig):
        from argusrank.features.baseline import ITEM_STATS
        from argusrank.features.store import baseline_dir, get_store

        self.names = ITEM_STATS.features
        path = baseline_dir(cfg) / ITEM_STATS.name
        ids = (np.unique(ds.dataset(path, format="parquet").to_table(columns=["item_id"])["item_id"].to_numpy())
               if path.is_dir() and any(path.glob("*.parquet")) else np.zeros(0, np.int64))
        refs = [f"{ITEM_STATS.name}:{f}" for f in self.names]
        cols = {f: [] for f in self.names}
        store = get_store(cfg)
        for lo in range(0, len(ids), 5000):  # (N,) in chunks: one Feast call each
            r = store.get_online_features(features=refs, entity_rows={"item_id": ids[lo:lo + 5000].tolist()}).to_dict()
            for f in self.names:
                cols[f].append(np.asarray([np.nan if v is None else v for v in r[f]], np.float64))
        self.ids = ids.astype(np.int64)  # (N,) sorted
        self.values = {f: np.concatenate(cols[f]) if cols[f] else np.zeros(0) for f in self.names}

    def lookup(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Item features of ``item_ids`` (N,): NaN for items without stats."""
        from argusrank.features.baseline import lookup_sorted

        pos, ok = lookup_sorted(self.ids, item_ids)
        return {f: np.where(ok, v[pos], np.nan) if len(v) else np.full(len(item_ids), np.nan)
                for f, v in self.values.items()}


def raw_features_cached(cfg: ArgusrankConfig, user_id: int, item_ids: np.ndarray, dots: np.ndarray,
                        items: ItemFeatureCache) -> dict[str, np.ndarray]:
    """Raw ranker features with item stats from RAM and ONE single-row Feast read for the user:
    ``user_stats`` and ``user_item_priors`` (the user's prior items as arrays, joined to the candidates
    here by a vectorized search), so the cost does not grow with the number of candidates.

    ``dots`` (N,): ``argus_dot`` from the candidate generator (exact, pinned version).
    """
    from argusrank.features.baseline import USER_ITEM_PRIORS, USER_STATS, priors_for
    from argusrank.features.store import get_store

    n = len(item_ids)
    refs = [f"{v.name}:{f}" for v in (USER_STATS, USER_ITEM_PRIORS) for f in v.features]
    u = get_store(cfg).get_online_features(features=refs, entity_rows={"user_id": [int(user_id)]}).to_dict()
    raw = items.lookup(np.asarray(item_ids, np.int64))
    for f in USER_STATS.features:
        raw[f] = np.full(n, np.nan if u[f][0] is None else float(u[f][0]))
    raw.update(priors_for({f: u[f][0] for f in USER_ITEM_PRIORS.features}, item_ids))
    raw["argus_dot"] = np.asarray(dots, np.float64)
    return raw


# --------------------------------------------------------------------------- ranker
@dataclass
class RankerState:
    """One registered XGBoost ranker version: booster and its feature order."""

    version: int
    booster: Any  # xgboost.Booster
    feature_names: tuple[str, ...]

    def score(self, raw: dict[str, np.ndarray], request_ts: float | np.ndarray) -> np.ndarray:
        """Scores (N,) float32 of N rows of raw features in ONE ``inplace_predict`` call."""
        from argusrank.features.baseline import ranker_features

        x = ranker_features(raw, request_ts, self.feature_names)  # (N, F) float32
        if x.shape[0] == 0:
            return np.zeros(0, np.float32)
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float32).reshape(-1)


def load_ranker_state(cfg: ArgusrankConfig, version: int) -> RankerState:
    """Load ranker ``version`` of ``cfg.mlflow.ranker_model_name`` through ``models.ranker.load_ranker``."""
    try:
        from argusrank.models.ranker import load_ranker
    except ImportError:  # the feature platform's loader not there: read the registry directly
        load_ranker = _load_ranker_from_registry
    ranker, got, names = load_ranker(cfg, str(version))
    booster = ranker.get_booster() if hasattr(ranker, "get_booster") else ranker
    booster.set_param({"nthread": 1})  # one request's 500 rows: threads only add overhead under load
    return RankerState(int(got), booster, tuple(names))


def _load_ranker_from_registry(cfg: ArgusrankConfig, ref: str):
    """``models:/<ranker>/<version or @alias>`` as an XGBoost model -> (model, version, feature names)."""
    import mlflow.xgboost

    name = cfg.mlflow.ranker_model_name
    client = _client(cfg)
    mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    mlflow.set_registry_uri(cfg.tracking_uri)
    model = mlflow.xgboost.load_model(f"models:/{name}/{mv.version}")
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    return model, int(mv.version), tuple(booster.feature_names or ())


class RankerCache:
    """Ranker versions by number (the served one and the previous), loaded on first use, thread-safe."""

    def __init__(self, cfg: ArgusrankConfig, keep: int = 2):
        self.cfg, self.keep, self._lock, self._states = cfg, keep, threading.Lock(), {}

    def get(self, version: int) -> RankerState:
        st = self._states.get(int(version))
        if st is not None:
            return st
        with self._lock:
            if int(version) not in self._states:
                self._states[int(version)] = load_ranker_state(self.cfg, int(version))
                for old in sorted(self._states)[: -self.keep]:
                    self._states.pop(old)
            return self._states[int(version)]

    def versions(self) -> list[int]:
        return sorted(self._states)


# --------------------------------------------------------------------------- whole pipeline
def request_time(cfg: ArgusrankConfig, as_of: float | None = None) -> float:
    """The request time recency features use: the request's ``as_of``, else ``cfg.serve.as_of``, else now."""
    return float(as_of if as_of is not None else cfg.serve.as_of if cfg.serve.as_of is not None else time.time())


def top_k(item_ids: np.ndarray, scores: np.ndarray, k: int, keep_order: bool = False) -> list[dict[str, Any]]:
    """Best-first ``[{item_id, score}]`` of the top k (ties by item id); ``keep_order``: already ranked."""
    order = np.arange(len(item_ids))[:k] if keep_order else np.lexsort((item_ids, -np.nan_to_num(scores, nan=-np.inf)))[:k]
    return [{"item_id": int(i), "score": float(s)} for i, s in zip(item_ids[order], scores[order])]


def recommend_response(user_id: int, k: int, cand: dict[str, Any], scores: np.ndarray | None) -> dict[str, Any]:
    """The /recommend (and /rank) JSON: ranked items, model versions, fallback reason."""
    if scores is None:  # fallback: the popularity order (or given items by popularity)
        items = top_k(cand["item_ids"], cand["scores"], k, keep_order=cand.get("ranked", False))
        n_scored = 0
    else:
        items, n_scored = top_k(cand["item_ids"], scores, k), int(len(scores))
    return {"user_id": int(user_id), "items": items, "model_versions": cand["model_versions"],
            "fallback": cand["fallback"], "ranked_candidates": n_scored}


class InProcessPipeline:
    """The whole /recommend and /rank path in one process (reference and benchmark baseline)."""

    def __init__(self, cfg: ArgusrankConfig):
        one_thread_per_request()
        self.cfg = cfg
        self.state = load_candidate_state(cfg)
        self.rankers = RankerCache(cfg)
        self.items = ItemFeatureCache(cfg) if cfg.serve.features_path == "cached_items" else None

    def _finish(self, st: CandidateState, req: dict[str, Any], k: int, as_of: float | None) -> dict[str, Any]:
        user_id = req["user_id"]
        cand = generate_candidates(self.cfg, st, [req])[0]
        if cand["fallback"] is None:
            try:
                raw = features_for(self.cfg, user_id, cand, self.items)
                scores = self.rankers.get(st.bundle.ranker_version).score(raw, request_time(self.cfg, as_of))
                return recommend_response(user_id, k, cand, scores)
            except VersionMismatch:
                req = {**req, "force_fallback": "version_mismatch"}
                cand = generate_candidates(self.cfg, st, [req])[0]
        return recommend_response(user_id, k, cand, None)

    def recommend(self, user_id: int, k: int, exclude: Sequence[int] | None = None,
                  as_of: float | None = None) -> dict[str, Any]:
        st = self.state
        req = {"user_id": user_id, "n": max(self.cfg.serve.num_candidates, k), "exclude": exclude}
        return self._finish(st, req, k, as_of)

    def rank(self, user_id: int, item_ids: Sequence[int], as_of: float | None = None) -> dict[str, Any]:
        st = self.state
        return self._finish(st, {"user_id": user_id, "items": list(item_ids)}, len(item_ids), as_of)

