"""Histories -> dict-of-numpy batches whose keys match ``models/batch.py`` exactly.

Sequence keys (SequenceBatch): ``item_id, timestamp, is_organic, surface,
played_ratio, liked, disliked, valid, target_mask`` — all (N, L), right-padded
(position 0 is the oldest event; padding: 0 / False / NaN). Extra keys, ignored
by the model: ``user_id`` (N,) and ``grade`` (N, L).

Fine-tuning adds (FinetuneBatch) ``imp_item, imp_time, imp_valid`` (N, K) and
``pair_a, pair_b, pair_w`` (N, P), plus extras ``imp_grade, imp_request`` (N, K).

``target_mask`` marks the events that are targets (the model predicts event j
from events before j); only temporal/LOO evaluation restricts it.
All builders are vectorized over users (offsets + fancy indexing).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from argusrank.features.histories import Histories, group_pairs, pair_groups

SEQ_KEYS = ("item_id", "timestamp", "is_organic", "surface", "played_ratio", "liked", "disliked", "valid", "target_mask")
_PAD = {"item_id": 0, "timestamp": 0, "is_organic": False, "surface": 0, "played_ratio": np.nan,
        "liked": np.nan, "disliked": np.nan, "grade": 0}
# right-padding of every (N, W) column of training rows (pre-training and fine-tuning)
ROW_PAD = {**_PAD, "valid": False, "target_mask": False, "imp_item": 0, "imp_time": 0, "imp_valid": False,
           "imp_grade": 0, "imp_request": -1, "pair_a": 0, "pair_b": 0, "pair_w": 0.0}


def _segments(n_per: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts (G,): (group index, rank within group) of each of sum(n_per) items."""
    n_per = np.asarray(n_per, np.int64)
    g = np.repeat(np.arange(n_per.size), n_per)
    rank = np.arange(g.size) - np.repeat(np.cumsum(n_per) - n_per, n_per)
    return g, rank


def gather_windows(hist: Histories, start: np.ndarray, length: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Rows of events ``start[r] : start[r] + length[r]`` right-padded to ``width``: (R, width) arrays."""
    cols = np.arange(width)
    valid = cols[None, :] < length[:, None]  # (R, W)
    idx = np.where(valid, start[:, None] + cols[None, :], 0)
    out = {}
    for k, pad in _PAD.items():
        src = getattr(hist, k)
        out[k] = np.where(valid, src[idx], np.asarray(pad, dtype=src.dtype)) if src.size else \
            np.full(valid.shape, pad, dtype=src.dtype)
    out["valid"] = valid
    out["target_mask"] = valid.copy()
    return out


def pretrain_arrays(hist: Histories, max_len: int, min_len: int = 2) -> dict[str, np.ndarray]:
    """Non-overlapping chunks of every history, aligned from the most recent event, (N, max_len).

    A user with n events gives ceil(n / max_len) chunks: full ones ending at the
    last event, and the oldest remainder kept only if it has >= ``min_len`` events.
    Pass the training part (``restrict(hist, before_ts=T)``) for a temporal split.
    """
    n_chunks = -(-hist.lengths // max_len)  # (U,)
    u, c = _segments(n_chunks)  # c = 0 is the most recent chunk
    end = hist.offsets[u + 1] - c * max_len
    start = np.maximum(hist.offsets[u], end - max_len)
    length = end - start
    keep = length >= min_len
    u, start, length = u[keep], start[keep], length[keep]
    order = np.lexsort((start, u))  # chronological within user
    out = gather_windows(hist, start[order], length[order], max_len)
    out["user_id"] = hist.user_ids[u[order]]
    return out


def temporal_eval_arrays(hist: Histories, T: int, T_end: int, max_len: int,
                         positives_only_targets: bool = True) -> dict[str, np.ndarray]:
    """Global temporal split evaluation rows, one per test user.

    Input: the user's last ``max_len`` events with timestamp < T_end (full history
    before T included). ``target_mask``: events with T <= timestamp < T_end
    (and grade >= 1 if ``positives_only_targets``), never position 0.
    Users without any target are left out.
    """
    uidx = hist.user_index()
    ts = hist.timestamp
    end = hist.offsets[:-1] + np.bincount(uidx[ts < T_end], minlength=hist.n_users)
    start = np.maximum(hist.offsets[:-1], end - max_len)
    out = gather_windows(hist, start, end - start, max_len)
    tgt = out["valid"] & (out["timestamp"] >= T) & (out["timestamp"] < T_end)
    if positives_only_targets:
        tgt &= out["grade"] >= 1
    tgt[:, 0] = False
    keep = tgt.any(axis=1)
    out["target_mask"] = tgt
    out = {k: v[keep] for k, v in out.items()}
    out["user_id"] = hist.user_ids[keep]
    return out


def loo_eval_arrays(hist: Histories, max_len: int, split: str = "test") -> dict[str, np.ndarray]:
    """Leave-one-out rows: the history ending at the held-out event (last for ``test``,
    second-to-last for ``valid``); ``target_mask`` only at that event. Needs >= 1 event before it.
    Train on ``drop_last(hist, 2)``.
    """
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    end = hist.offsets[1:] - (0 if split == "test" else 1)
    keep = end - hist.offsets[:-1] >= 2
    end = end[keep]
    start = np.maximum(hist.offsets[:-1][keep], end - max_len)
    out = gather_windows(hist, start, end - start, max_len)
    tgt = np.zeros_like(out["valid"])
    tgt[np.arange(end.size), end - start - 1] = True
    out["target_mask"] = tgt
    out["user_id"] = hist.user_ids[keep]
    return out


def _time_key(hist: Histories, uidx: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Monotone int64 key (user, time) for one global searchsorted over sorted histories."""
    t_min = int(hist.timestamp.min()) if hist.n_events else 0
    span = int(hist.timestamp.max()) - t_min + 2 if hist.n_events else 2
    if hist.n_users * span >= 2**62:
        raise OverflowError("timestamp span x users too large for a joint (user, time) key")
    return uidx.astype(np.int64) * span + (ts - t_min), span, t_min


def finetune_arrays(hist: Histories, lag_s: int, max_history: int, min_history: int, max_impressions: int,
                    t_from: int | None = None, t_to: int | None = None, window_s: int = 3600) -> dict[str, np.ndarray]:
    """One-pass fine-tuning rows (FinetuneBatch keys), one per user with usable impressions.

    - history: the user's last ``max_history`` events with timestamp < ``t_to`` (N, L<=max_history);
    - impression groups: requests (events sharing a request_id) or, when the data has no
      request_id at all, the user's events in ``window_s`` windows; group time (``imp_time``)
      = its first timestamp, which must lie in [t_from, t_to); a group is used only if it has
      two different grades, at most ``max_impressions`` items and >= ``min_history`` history
      events at or before ``imp_time - lag_s``;
    - the most recent whole groups fitting in ``max_impressions`` are kept (K <= max_impressions);
    - pairs: same group, different grade, ``pair_a`` = higher grade, ``pair_w`` = grade difference,
      right-padded with weight 0 (N, P).
    """
    t_lo = np.iinfo(np.int64).min if t_from is None else int(t_from)
    t_hi = np.iinfo(np.int64).max if t_to is None else int(t_to)
    uidx = hist.user_index()
    ts = hist.timestamp
    h_end = hist.offsets[:-1] + np.bincount(uidx[ts < t_hi], minlength=hist.n_users)
    h_start = np.maximum(hist.offsets[:-1], h_end - max_history)

    use_requests = bool((hist.request_id >= 0).any())
    idx, starts, sizes = pair_groups(hist, 0 if use_requests else window_s)
    g_user = uidx[idx[starts]] if starts.size else np.zeros(0, np.int64)
    t_idx, g_idx = ts[idx], hist.grade[idx]
    g_time = np.minimum.reduceat(t_idx, starts) if starts.size else np.zeros(0, np.int64)
    g_gmin = np.minimum.reduceat(g_idx, starts) if starts.size else np.zeros(0, np.int8)
    g_gmax = np.maximum.reduceat(g_idx, starts) if starts.size else np.zeros(0, np.int8)
    key, span, t_min = _time_key(hist, uidx, ts)
    cut = np.clip(g_time - lag_s - t_min, -1, span - 1)
    pos = np.searchsorted(key, g_user * span + cut, side="right")
    n_before = np.clip(pos, h_start[g_user], h_end[g_user]) - h_start[g_user]
    ok = ((g_time >= t_lo) & (g_time < t_hi) & (sizes <= max_impressions) & (g_gmax > g_gmin)
          & (n_before >= min_history))

    # most recent eligible groups first; keep the prefix whose sizes fit in max_impressions
    e = np.flatnonzero(ok)
    e = e[np.lexsort((-g_time[e], g_user[e]))]
    cs = np.cumsum(sizes[e])
    seg_first = np.r_[True, g_user[e][1:] != g_user[e][:-1]] if e.size else np.zeros(0, bool)
    base = np.maximum.accumulate(np.where(seg_first, cs - sizes[e], 0)) if e.size else cs
    e = e[cs - base <= max_impressions]
    e = e[np.lexsort((g_time[e], g_user[e]))]  # chronological within user

    rows_u, row_of_group = np.unique(g_user[e], return_inverse=True)  # (B,), (G_sel,)
    B = rows_u.size
    # impression slots: groups laid out in order within each row
    gs = sizes[e]
    slot0 = np.cumsum(gs) - gs
    first_of_row = np.r_[True, row_of_group[1:] != row_of_group[:-1]] if e.size else np.zeros(0, bool)
    slot0 = slot0 - np.maximum.accumulate(np.where(first_of_row, slot0, 0))
    gi, rank = _segments(gs)
    ev = idx[starts[e][gi] + rank]  # event index of each impression
    imp_row, imp_slot = row_of_group[gi], slot0[gi] + rank
    K = int(max((slot0 + gs).max(initial=0), 1))
    out = {
        "imp_item": np.zeros((B, K), np.int64), "imp_time": np.zeros((B, K), np.int64),
        "imp_valid": np.zeros((B, K), bool), "imp_grade": np.zeros((B, K), np.int8),
        "imp_request": np.full((B, K), -1, np.int64),
    }
    out["imp_item"][imp_row, imp_slot] = hist.item_id[ev]
    out["imp_time"][imp_row, imp_slot] = g_time[e][gi]
    out["imp_valid"][imp_row, imp_slot] = True
    out["imp_grade"][imp_row, imp_slot] = hist.grade[ev]
    out["imp_request"][imp_row, imp_slot] = hist.request_id[ev]

    # pairs within each selected group (positions relative to the group, then to the row's slots)
    pstart = np.cumsum(gs) - gs  # groups laid out back to back in impression order
    pi, pj = group_pairs(pstart, gs)
    pg = np.repeat(np.arange(e.size), gs)[pi] if pi.size else np.zeros(0, np.int64)
    ga, gb = hist.grade[ev[pi]], hist.grade[ev[pj]]
    keep = ga != gb
    pi, pj, pg, ga, gb = pi[keep], pj[keep], pg[keep], ga[keep], gb[keep]
    swap = gb > ga
    sa, sb = np.where(swap, imp_slot[pj], imp_slot[pi]), np.where(swap, imp_slot[pi], imp_slot[pj])
    w = np.abs(ga.astype(np.float32) - gb)
    prow = row_of_group[pg]
    n_pairs = np.bincount(prow, minlength=B)
    _, prank = _segments(n_pairs)  # pairs are already grouped by row (groups ordered by row)
    P = int(max(n_pairs.max(initial=0), 1))
    out["pair_a"] = np.zeros((B, P), np.int64)
    out["pair_b"] = np.zeros((B, P), np.int64)
    out["pair_w"] = np.zeros((B, P), np.float32)
    out["pair_a"][prow, prank] = sa
    out["pair_b"][prow, prank] = sb
    out["pair_w"][prow, prank] = w

    length = (h_end - h_start)[rows_u]  # rows_u are user indices
    L = int(max(length.max(initial=0), 1))
    out.update(gather_windows(hist, h_start[rows_u], length, L))
    out["user_id"] = hist.user_ids[rows_u]
    return out


def trim_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the (N, L) sequence columns of a right-padded batch to its longest sequence (>= 1)."""
    valid = batch.get("valid")
    if valid is None or valid.ndim != 2:
        return batch
    L = valid.shape[1]
    width = max(int(valid.sum(1).max(initial=0)), 1)
    if width == L:
        return batch
    return {k: (v[:, :width] if k in SEQ_KEYS or k == "grade" else v) if v.ndim == 2 and v.shape[1] == L else v
            for k, v in batch.items()}


def concat_rows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of several dicts of equal-length arrays, one after the other; (N, W) columns of different widths are
    right-padded to the widest with :data:`ROW_PAD` (fine-tuning rows of different users' shards differ in
    history, impression and pair widths)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k in parts[0]:
        cols = [p[k] for p in parts]
        if cols[0].ndim == 2:
            width = max(c.shape[1] for c in cols)
            cols = [c if c.shape[1] == width else
                    np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=np.asarray(ROW_PAD[k], c.dtype))
                    for c in cols]
        out[k] = np.concatenate(cols)
    return out


def iterate_batches(arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                    trim: bool = False, bucket: int = 0) -> Iterator[dict]:
    """Yield dicts of row slices (the last batch may be smaller); same seed -> same order.

    ``trim``: sequence columns cut to each batch's longest sequence (no compute on padding).
    ``bucket`` > 1 (with ``shuffle``): rows are sorted by length within pools of ``bucket``
    batches and the batches of all pools are shuffled, so a batch holds similar lengths.
    """
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    starts = np.arange(0, n, batch_size)
    if shuffle and bucket > 1 and "valid" in arrays:
        lengths = arrays["valid"].sum(1)
        pool = batch_size * bucket
        order = np.concatenate([order[s:s + pool][np.argsort(-lengths[order[s:s + pool]], kind="stable")]
                                for s in range(0, n, pool)]) if n else order
        starts = rng.permutation(starts)
    for s in starts:
        sel = order[s:s + batch_size]
        batch = {k: v[sel] for k, v in arrays.items()}
        yield trim_batch(batch) if trim else batch
