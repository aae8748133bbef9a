"""Merging candidate lists of several sources: per-source quotas, de-duplicated, best first.

Sources come in the configured order (``serve.candidates``); each contributes its best
``quota`` items that no earlier source already contributed. Lists hold catalog positions
(0..n_items-1), ``-1`` where a source has nothing more. Vectorized over requests.
"""
from __future__ import annotations

import numpy as np


def merge_candidates(lists: list[np.ndarray], quotas: list[int], n_items: int) -> np.ndarray:
    """``lists[s]`` (B, n_s) catalog positions best first (-1 = none), ``quotas[s]`` items taken from source s
    -> (B, sum(quotas)) merged positions, source by source, -1 padded at the end of each row."""
    if len(lists) != len(quotas) or not lists:
        raise ValueError(f"{len(lists)} candidate lists but {len(quotas)} quotas")
    B = lists[0].shape[0]
    out = np.full((B, int(sum(quotas))), -1, np.int64)
    rows = np.arange(B, dtype=np.int64)[:, None]
    taken = np.zeros(0, np.int64)  # row * n_items + position of every accepted candidate
    col = 0
    for cand, quota in zip(lists, quotas):
        cand = np.asarray(cand, np.int64)
        keys = rows * n_items + cand  # (B, n_s)
        new = (cand >= 0) & ~np.isin(keys, taken)
        # a source's own repeats count once: keep the first occurrence in the row
        order = np.lexsort((np.arange(cand.shape[1])[None, :].repeat(B, 0), keys), axis=1)
        sorted_keys = np.take_along_axis(keys, order, axis=1)
        first = np.ones_like(new)
        np.put_along_axis(first, order[:, 1:], sorted_keys[:, 1:] != sorted_keys[:, :-1], axis=1)
        new &= first
        rank = np.cumsum(new, axis=1) - 1  # rank among this source's new items
        keep = new & (rank < quota)
        r, c = np.nonzero(keep)
        out[r, col + rank[r, c]] = cand[r, c]
        taken = np.concatenate([taken, keys[keep]])
        col += int(quota)
    return np.take_along_axis(out, np.argsort(out < 0, axis=1, kind="stable"), axis=1)
