"""The candidate generator: ANN top-N over the served version's item vectors, popularity as the fallback.

Cold start / fallback (documented in the README): a user with no vector in the online store, or
whose vector is from another model version than the served bundle (while an alias move is in
flight), gets the **most popular items**: items of the served catalog ordered by 7-day
popularity (``item_pop_7d``, ties by ``item_pop_30d``) at the latest baseline snapshot, minus
``exclude``; the response says ``"fallback": "unknown_user"`` / ``"version_mismatch"``.
Hot swap builds a complete new :class:`CandidateState` off the request path and swaps one reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features import vectors
from argusrank.features.baseline import lookup_sorted
from argusrank.models.ann import AnnIndex, build_index
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import Bundle, NothingToServe, resolve_bundle


def item_vectors(cfg: ArgusrankConfig, version: int) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors of exactly one model version (``features.vectors.read_version``); NothingToServe if none."""
    try:
        return vectors.read_version(cfg, "item", version)
    except LookupError as exc:
        raise NothingToServe(str(exc)) from exc


def popular_items(cfg: ArgusrankConfig, catalog: np.ndarray) -> np.ndarray:
    """Popularity (M, 2) float64 of the sorted ``catalog`` (M,): ``item_pop_7d``, ``item_pop_30d``.

    Read from the latest ``item_stats`` baseline snapshot (offline parquet); items not
    in the snapshot (or no snapshot at all) get 0.
    """
    pop = np.zeros((len(catalog), 2))
    path = cfg.paths.baseline_dir / "item_stats"
    if len(catalog) and path.is_dir() and any(path.glob("*.parquet")):
        t = ds.dataset(path, format="parquet").to_table(columns=["item_id", "event_timestamp", "item_pop_7d", "item_pop_30d"])
        t = t.filter(pc.equal(t["event_timestamp"], pc.max(t["event_timestamp"])))
        pos, ok = lookup_sorted(catalog, t["item_id"].to_numpy())
        for j, col in enumerate(("item_pop_7d", "item_pop_30d")):
            pop[pos[ok], j] = np.nan_to_num(t[col].to_numpy(zero_copy_only=False).astype(np.float64))[ok]
    return pop


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
        if items is not None:  # /rank: items outside the served catalog are answered, and named
            ids = np.asarray(items, np.int64)
            pos = state.index.positions(ids)
            if ok[i]:  # exact dot products from RAM, NaN (missing for the ranker) outside the catalog
                dots = state.index.vectors[np.maximum(pos, 0)] @ vecs[i]
                out[i] = {"item_ids": ids, "scores": np.where(pos >= 0, dots, np.nan).astype(np.float32)}
            else:
                out[i] = {"item_ids": ids, "scores": state.popularity_of(ids)}
            out[i]["unknown_items"] = [int(x) for x in ids[pos < 0]]
        elif not ok[i]:
            ids, sc = state.popular(int(r["n"]), r.get("exclude"))
            out[i] = {"item_ids": ids, "scores": sc, "ranked": True}
        reason = r.get("force_fallback") or ("version_mismatch" if known[i] else "unknown_user")
        out[i]["fallback"] = None if ok[i] else reason
        out[i]["model_versions"] = state.bundle.as_dict()
        if known[i] and not ok[i]:
            out[i]["user_vector_version"] = int(versions[i])
    return out
