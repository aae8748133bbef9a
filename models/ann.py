"""Candidate index over item vectors: exact inner product for small catalogs, faiss HNSW for large.

``build_index(item_ids, vectors, kind="auto")`` picks exact search up to
``exact_max_items`` items and ``faiss.IndexHNSWFlat`` (inner product) above it.
``AnnIndex.search(queries, k, exclude)`` returns the top-k item IDs and scores
per query; excluded items (e.g. already seen) are removed by over-fetching
``k + len(exclude)`` and masking, so the answer still holds ``k`` items when the
catalog has them. ``exact_topk`` and ``recall_at_k`` are the reference and the
quality measure used by tests and ``bench/ann.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

IndexKind = Literal["auto", "exact", "hnsw"]


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: positions (B, k) int64 and scores (B, k) float32, best first.

    Rows have ``-1`` / ``-inf`` padding when the catalog holds fewer than ``k`` items.
    """
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (B, D)
    n = vectors.shape[0]
    kk = min(k, n)
    scores = q @ vectors.T  # (B, N)
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (B, kk) unordered
    else:
        part = np.broadcast_to(np.arange(n), (q.shape[0], n))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    pos = np.take_along_axis(part, order, axis=1).astype(np.int64)
    sc = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    return _pad(pos, sc, k)


def _pad(pos: np.ndarray, sc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if pos.shape[1] >= k:
        return pos[:, :k], sc[:, :k]
    b, short = pos.shape[0], k - pos.shape[1]
    return (
        np.concatenate([pos, np.full((b, short), -1, np.int64)], axis=1),
        np.concatenate([sc, np.full((b, short), -np.inf, np.float32)], axis=1),
    )


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` (B, k) found in the same row of ``approx`` (B, k')."""
    hits = [np.intersect1d(a[a >= 0], e[e >= 0]).size / max(int((e >= 0).sum()), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else float("nan")


@dataclass
class AnnIndex:
    """Item vectors of ONE model version plus the search structure built over them."""

    item_ids: np.ndarray  # (N,) int64, row i of ``vectors`` is item ``item_ids[i]``
    vectors: np.ndarray  # (N, D) float32, C-contiguous
    kind: Literal["exact", "hnsw"]
    model_version: str | None = None
    ef_search: int = 128
    faiss_index: object | None = None  # faiss.IndexHNSWFlat when kind == "hnsw"
    _pos_of: dict | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row positions of ``item_ids`` (-1 for items not in the index), vectorized via searchsorted."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if self._pos_of is None:
            order = np.argsort(self.item_ids, kind="stable")
            self._pos_of = {"order": order, "sorted": self.item_ids[order]}
        srt, order = self._pos_of["sorted"], self._pos_of["order"]
        at = np.clip(np.searchsorted(srt, ids), 0, max(len(srt) - 1, 0))
        found = (srt[at] == ids) if len(srt) else np.zeros(ids.shape, bool)
        return np.where(found, order[at], -1).astype(np.int64)

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k row positions (B, k) and scores (B, k) for queries (B, D); -1/-inf padded."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.kind == "exact" or self.faiss_index is None:
            return exact_topk(q, self.vectors, k)
        import faiss

        kk = min(k, self.size)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, kk)  # efSearch < k silently loses recall
        sc, pos = self.faiss_index.search(q, kk, params=params)
        return _pad(pos.astype(np.int64), sc.astype(np.float32), k)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int] | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item IDs (B, k) int64 and scores (B, k) float32, skipping ``exclude[b]`` for query b.

        Padding is item id -1 with score -inf where fewer than k items qualify.
        """
        q = np.atleast_2d(queries)
        excl = [np.asarray(e if e is not None else [], np.int64) for e in (exclude or [None] * q.shape[0])]
        extra = max((e.size for e in excl), default=0)
        pos, sc = self.search_positions(q, k + extra)  # (B, k+extra)
        ids = np.where(pos >= 0, self.item_ids[np.maximum(pos, 0)], -1)
        if extra:
            drop = np.stack([np.isin(row, e) for row, e in zip(ids, excl)])  # (B, k+extra)
            keep = (~drop) & (ids >= 0)
            # stable move of the kept columns to the front of each row
            order = np.argsort(~keep, axis=1, kind="stable")
            ids = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
            sc = np.take_along_axis(np.where(keep, sc, -np.inf), order, axis=1)
        return ids[:, :k], sc[:, :k].astype(np.float32)


def build_index(
    item_ids: np.ndarray,
    vectors: np.ndarray,
    kind: IndexKind = "auto",
    *,
    exact_max_items: int = 50_000,
    hnsw_m: int = 32,
    ef_construction: int = 64,
    ef_search: int = 128,
    model_version: str | None = None,
    num_threads: int | None = None,
) -> AnnIndex:
    """Build the candidate index over ``vectors`` (N, D) with ids ``item_ids`` (N,).

    ``kind="auto"``: exact when N <= ``exact_max_items``, else HNSW (inner product).
    ``num_threads`` caps faiss's OpenMP threads (build and search) when given.
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    vec = np.ascontiguousarray(vectors, dtype=np.float32)
    if vec.ndim != 2 or vec.shape[0] != ids.shape[0]:
        raise ValueError(f"vectors must be (N, D) with N == len(item_ids); got {vec.shape} and {ids.shape}")
    if not np.isfinite(vec).all():
        bad = int(np.flatnonzero(~np.isfinite(vec).all(axis=1))[0])
        raise ValueError(f"item vector for item_id={ids[bad]} (row {bad}) is not finite")
    if np.unique(ids).size != ids.size:
        raise ValueError("item_ids must be unique")
    chosen = kind if kind != "auto" else ("exact" if ids.size <= exact_max_items else "hnsw")
    index = AnnIndex(ids, vec, chosen, model_version=model_version, ef_search=ef_search)
    if chosen == "hnsw":
        import faiss

        if num_threads:
            faiss.omp_set_num_threads(int(num_threads))
        h = faiss.IndexHNSWFlat(vec.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = ef_construction
        h.hnsw.efSearch = ef_search
        h.add(vec)
        index.faiss_index = h
    return index
