"""Candidate recall: how well each candidate source covers what users play next (temporal split).

For every positive event of the test window ``[T, T_end)`` the user's state is the one serving would
have at that time: the daily snapshot vectors (``export``'s snapshots, the latest at or before the
event). Each source proposes its top-K for that (user, snapshot):

- ``popular``: the serving fallback order (7-day popularity, then 30-day, then item id) at the snapshot;
- ``tower``: exact top-K of the user tower vector against the item tower vectors;
- ``nip``: exact top-K of the NIP query for a feed request against the items' NIP embeddings;
- ``merged``: the configured merge (``serve.candidates``: per-source quotas, de-duplicated).

Recall@K is the share of target events whose item is in the top K; ``*_seen_filtered`` removes the
items the user had before the snapshot first. A user with no event before the snapshot gets the
popular list from every source (the serving fallback). Exact search here; ANN recall vs exact is
``bench/ann.py``'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from argusrank.features import baseline
from argusrank.features.splits import POSITIVE_GRADE, dataset_split
from argusrank.models.candidate_merge import merge_candidates
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.inference import item_vectors, user_vectors, window_arrays

KS = (100, 500)
SOURCES = ("popular", "tower", "nip")


def _queries(hist, t_user: np.ndarray, t_ts: np.ndarray, snaps: np.ndarray):
    """Unique (user index, snapshot index) of the targets, the target -> query map, and per query the number
    of the user's events at or before the snapshot (events are sorted by user, then time)."""
    snap = np.searchsorted(snaps, t_ts, side="right") - 1
    uq, inv = np.unique(t_user * len(snaps) + snap, return_inverse=True)
    q_user, q_snap = uq // len(snaps), uq % len(snaps)
    key = hist.user_index().astype(np.int64) * 2**33 + hist.timestamp  # sorted: histories are (user, time) ordered
    end = np.searchsorted(key, q_user * 2**33 + snaps[q_snap], side="right")
    return q_user, q_snap, inv, end - hist.offsets[q_user]


def _popular_orders(events, snaps: np.ndarray, catalog: np.ndarray) -> np.ndarray:
    """(S, C) catalog positions in the serving fallback order at each snapshot."""
    stats = baseline.compute_baseline(events, snaps)[baseline.ITEM_STATS.name].to_pandas()
    orders = []
    for s in snaps:
        row = stats[stats["event_timestamp"].astype("int64") // 10**9 == s] if len(stats) else stats
        pos, ok = baseline.lookup_sorted(catalog, row["item_id"].to_numpy()) if len(row) else (np.zeros(0, int), np.zeros(0, bool))
        pop = np.zeros((len(catalog), 2))
        for j, col in enumerate(("item_pop_7d", "item_pop_30d")):
            pop[pos[ok], j] = np.nan_to_num(row[col].to_numpy(np.float64))[ok]
        orders.append(np.lexsort((catalog, -pop[:, 1], -pop[:, 0])))
    return np.stack(orders)


def _top(scores: torch.Tensor, seen: torch.Tensor | None, k: int) -> np.ndarray:
    if seen is not None:
        scores = scores.masked_fill(seen, -torch.inf)
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return torch.where(torch.isfinite(top.values), top.indices, -1).numpy()


def candidate_recall(cfg: ArgusrankConfig, dataset_dir: str | Path, model, sources: list[dict] | None = None,
                     ks: tuple[int, ...] = KS, chunk: int = 256) -> dict[str, Any]:
    """``{"popular"|"tower"|"nip"|"merged": {"recall@K": x, "recall@K_seen_filtered": y, ...}, "n_targets": n}``.

    ``sources``: the merge (default ``cfg.serve.candidates``, i.e. what ``/recommend`` serves)."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.platform.export import default_snapshots

    sources = sources or [s.model_dump() for s in cfg.serve.candidate_sources()]
    events = read_events(dataset_dir)
    hist = build_histories(events)
    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    snaps = default_snapshots(cfg, split.T, split.T_end)
    target = (hist.timestamp >= split.T) & (hist.timestamp < split.T_end) & (hist.grade >= POSITIVE_GRADE)
    catalog = np.unique(hist.item_id)
    t_pos = np.searchsorted(catalog, hist.item_id[target])
    q_user, q_snap, inv, n_known = _queries(hist, hist.user_index()[target], hist.timestamp[target], snaps)
    popular = _popular_orders(events, snaps, catalog)
    kmax, C, max_len = max(ks), len(catalog), int(model.cfg.max_len)
    model = model.eval()
    items = {space: torch.as_tensor(item_vectors(model, catalog, space)) for space in ("tower", "nip")}
    lists = {(name, f): np.full((len(q_user), kmax), -1, np.int64) for name in SOURCES for f in (False, True)}
    for lo in range(0, len(q_user), chunk):
        sl = slice(lo, lo + chunk)
        u, s, n = q_user[sl], q_snap[sl], n_known[sl]
        end = hist.offsets[u] + n
        seen = torch.zeros((len(u), C), dtype=torch.bool)  # items the user had before the snapshot
        rows = np.repeat(np.arange(len(u)), n)
        ev = np.repeat(hist.offsets[u] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))  # each query's events
        seen[torch.as_tensor(rows), torch.as_tensor(np.searchsorted(catalog, hist.item_id[ev]))] = True
        pop = torch.as_tensor(-np.argsort(popular[s], axis=1), dtype=torch.float32)  # higher = earlier in order
        known = n > 0
        for f in (False, True):
            lists[("popular", f)][sl] = _top(pop, seen if f else None, kmax)
        for space in ("tower", "nip"):
            scores = pop.clone()
            if known.any():
                start = np.maximum(hist.offsets[u[known]], end[known] - max_len)
                arr = window_arrays(hist, start, end[known] - start, snaps[s[known]], space, max_len)
                scores[torch.as_tensor(known)] = torch.as_tensor(user_vectors(model, arr, space)) @ items[space].T
            for f in (False, True):
                lists[(space, f)][sl] = _top(scores, seen if f else None, kmax)
    out: dict[str, Any] = {}
    for f in (False, True):
        picked = [lists[(src["source"], f)] for src in sources]
        lists[("merged", f)] = merge_candidates(picked, [int(src["k"]) for src in sources], C)
    for name in (*SOURCES, "merged"):
        res = {}
        for f in (False, True):
            hit_at = (lists[(name, f)][inv] == t_pos[:, None])  # (n_targets, K)
            first = np.where(hit_at.any(1), hit_at.argmax(1), np.iinfo(np.int64).max)
            for k in ks:
                res[f"recall@{k}" + ("_seen_filtered" if f else "")] = float((first < k).mean()) if len(first) else float("nan")
        out[name] = res
    out["n_targets"] = int(target.sum())
    return out
