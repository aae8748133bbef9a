"""User histories: events grouped by user and sorted by time, as flat numpy columns + offsets.

``Histories`` is a CSR-like layout: the events of user ``user_ids[u]`` are rows
``offsets[u]:offsets[u+1]`` of every per-event column, in (timestamp, position)
order. Everything here is vectorized (lexsort, cumsum, fancy indexing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from argusrank.features.schema import feedback_grade

EVENT_COLUMNS = ("item_id", "timestamp", "is_organic", "surface", "request_id", "position",
                 "played_ratio", "liked", "disliked", "grade")


@dataclass
class Histories:
    """Per-user event sequences (U users, N events)."""

    user_ids: np.ndarray  # (U,) int64, ascending
    offsets: np.ndarray  # (U+1,) int64
    item_id: np.ndarray  # (N,) int64
    timestamp: np.ndarray  # (N,) int64 seconds
    is_organic: np.ndarray  # (N,) bool
    surface: np.ndarray  # (N,) int8
    request_id: np.ndarray  # (N,) int64, -1 where null
    position: np.ndarray  # (N,) int16, -1 where null
    played_ratio: np.ndarray  # (N,) float32, NaN where null
    liked: np.ndarray  # (N,) float32 1/0, NaN where null
    disliked: np.ndarray  # (N,) float32 1/0, NaN where null
    grade: np.ndarray  # (N,) int8 feedback grade (schema.feedback_grade)

    @property
    def n_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def n_events(self) -> int:
        return int(self.item_id.size)

    @property
    def lengths(self) -> np.ndarray:  # (U,)
        return np.diff(self.offsets)

    def user_index(self) -> np.ndarray:
        """(N,) index into ``user_ids`` of every event."""
        return np.repeat(np.arange(self.n_users), self.lengths)

    def events_of(self, user_id: int) -> dict[str, np.ndarray]:
        """One user's events (slow path for tests and inspection)."""
        u = int(np.searchsorted(self.user_ids, user_id))
        if u >= self.n_users or self.user_ids[u] != user_id:
            raise KeyError(f"user_id {user_id} has no events")
        s, e = self.offsets[u], self.offsets[u + 1]
        return {c: getattr(self, c)[s:e] for c in EVENT_COLUMNS}

    def select(self, mask: np.ndarray) -> "Histories":
        """Keep events in ``mask`` (N,); users left with no events are dropped."""
        mask = np.asarray(mask, dtype=bool)
        counts = np.bincount(self.user_index()[mask], minlength=self.n_users)
        keep_u = counts > 0
        offsets = np.concatenate([[0], np.cumsum(counts[keep_u])]).astype(np.int64)
        cols = {c: getattr(self, c)[mask] for c in EVENT_COLUMNS}
        return Histories(user_ids=self.user_ids[keep_u], offsets=offsets, **cols)


def _np(col: pa.ChunkedArray, fill, dtype) -> np.ndarray:
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=dtype)


def _bool_nan(col: pa.ChunkedArray) -> np.ndarray:
    v = np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), dtype=np.float32)
    v[np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = np.nan
    return v


def build_histories(events: pa.Table) -> Histories:
    """Group EVENT_SCHEMA events by user and sort by (timestamp, position): lexsort + offsets."""
    user = _np(events["user_id"], 0, np.int64)
    ts = _np(events["timestamp"], 0, np.int64)
    pos = _np(events["position"], -1, np.int16)
    order = np.lexsort((pos, ts, user))
    user = user[order]
    played = _np(events["played_ratio"], np.nan, np.float32)[order]
    liked = _bool_nan(events["liked"])[order]
    disliked = _bool_nan(events["disliked"])[order]
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if user.size else np.zeros(0, np.int64)
    return Histories(
        user_ids=user[starts],
        offsets=np.r_[starts, user.size].astype(np.int64),
        item_id=_np(events["item_id"], 0, np.int64)[order],
        timestamp=ts[order],
        is_organic=_np(events["is_organic"], False, bool)[order],
        surface=_np(events["surface"], 0, np.int8)[order],
        request_id=_np(events["request_id"], -1, np.int64)[order],
        position=pos[order],
        played_ratio=played,
        liked=liked,
        disliked=disliked,
        grade=feedback_grade(played, liked == 1, disliked == 1),
    )


def histories_by_bucket(dataset_dir, hist: Histories | None = None, desc: str = "histories") -> Iterator[Histories]:
    """A dataset's histories one user bucket at a time (``hist`` itself when given), with progress: a pass over
    all users that holds one bucket's histories, whatever the data size."""
    from tqdm import tqdm

    from argusrank.features.io import read_events, user_buckets_of

    if hist is not None:
        yield hist
        return
    for b in tqdm(range(user_buckets_of(dataset_dir)), desc=f"{desc} (user buckets)", mininterval=5.0, disable=None):
        part = build_histories(read_events(dataset_dir, user_buckets=[b]))
        if part.n_users:
            yield part


def events_until(hist: Histories, user_idx: np.ndarray, ts: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """End offsets (exclusive) of each user's events at or before ``ts`` (``inclusive``), else strictly before:
    ``hist.offsets[u] .. end`` is that history. Vectorized: events are sorted by (user, time)."""
    key = hist.user_index().astype(np.int64) * 2**33 + hist.timestamp
    return np.searchsorted(key, np.asarray(user_idx, np.int64) * 2**33 + np.asarray(ts, np.int64),
                           side="right" if inclusive else "left")


def restrict(hist: Histories, before_ts: int | None = None, positives_only: bool = False) -> Histories:
    """Events with timestamp < ``before_ts`` and/or grade >= 1 (listen or like); empty users dropped."""
    mask = np.ones(hist.n_events, dtype=bool)
    if before_ts is not None:
        mask &= hist.timestamp < before_ts
    if positives_only:
        mask &= hist.grade >= 1
    return hist.select(mask)


def drop_last(hist: Histories, k: int) -> Histories:
    """Remove each user's last ``k`` events (leave-one-out training input: k=2)."""
    pos_from_end = np.repeat(hist.offsets[1:], hist.lengths) - np.arange(hist.n_events)  # 1 = last
    return hist.select(pos_from_end > k)


def group_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, within each group of rows ``starts[g]:starts[g]+sizes[g]``; vectorized.

    Returns flat row indices (i, j) of length sum(size * (size - 1) / 2).
    """
    starts = np.asarray(starts, np.int64)
    sizes = np.asarray(sizes, np.int64)
    n_rows = int(sizes.sum())
    row = np.repeat(starts, sizes) + (np.arange(n_rows) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    end = np.repeat(starts + sizes, sizes)
    cnt = end - row - 1  # partners after each row
    i = np.repeat(row, cnt)
    first = np.cumsum(cnt) - cnt
    j = i + 1 + (np.arange(i.size) - np.repeat(first, cnt))
    return i, j


def pair_groups(hist: Histories, window_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of events shown/consumed together: requests, else ``window_s`` windows per user.

    Returns (order (M,) event indices grouped, starts (G,), sizes (G,)) over events
    that belong to a group (all request events; null-request events only if window_s > 0).
    """
    uidx = hist.user_index()
    has_req = hist.request_id >= 0
    member = has_req | (window_s > 0)
    idx = np.flatnonzero(member)
    kind = (~has_req[idx]).astype(np.int8)  # requests first, then windows
    sub = np.where(has_req[idx], hist.request_id[idx], hist.timestamp[idx] // max(window_s, 1))
    u = uidx[idx]
    order = np.lexsort((hist.position[idx], hist.timestamp[idx], sub, u, kind))
    idx, k1, k2, k3 = idx[order], kind[order], u[order], sub[order]
    new = np.r_[True, (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1]) | (k3[1:] != k3[:-1])] if idx.size else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, idx.size])
    return idx, starts, sizes


def extract_pairs(hist: Histories, window_s: int) -> pa.Table:
    """Feedback pairs for fine-tuning/ranking: same request (or same ``window_s`` window when
    request_id is null), different grade; ``item_a`` has the higher grade, weight = grade difference.

    Columns: user_id, request_id (null for windows), timestamp (group start), item_a, item_b,
    grade_a, grade_b, weight (float32).
    """
    idx, starts, sizes = pair_groups(hist, window_s)
    gi, gj = group_pairs(starts, sizes)
    gid = np.repeat(np.arange(starts.size), sizes)
    a, b = idx[gi], idx[gj]
    ga, gb = hist.grade[a], hist.grade[b]
    keep = ga != gb
    a, b, ga, gb, g = a[keep], b[keep], ga[keep], gb[keep], gid[gi[keep]]
    swap = gb > ga
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    ga, gb = hist.grade[a], hist.grade[b]
    t_group = np.minimum.reduceat(hist.timestamp[idx], starts) if starts.size else np.zeros(0, np.int64)
    req = hist.request_id[a]
    return pa.table({
        "user_id": pa.array(hist.user_ids[hist.user_index()[a]], pa.int64()),
        "request_id": pa.array(req, pa.int64(), mask=req < 0),
        "timestamp": pa.array(t_group[g], pa.int64()),
        "item_a": pa.array(hist.item_id[a], pa.int64()),
        "item_b": pa.array(hist.item_id[b], pa.int64()),
        "grade_a": pa.array(ga, pa.int8()),
        "grade_b": pa.array(gb, pa.int8()),
        "weight": pa.array((ga.astype(np.float32) - gb), pa.float32()),
    })


__all__ = ["Histories", "build_histories", "histories_by_bucket", "restrict", "drop_last",
           "extract_pairs", "group_pairs", "pair_groups"]
