"""Baseline ranker features from the event log, and the one feature-matrix builder.

Three batch feature views (declared in ``features/definitions.py``), all
point-in-time correct by construction:

- ``item_stats`` / ``user_stats``: snapshots at times ``s`` (daily by default),
  each computed from events with ``timestamp < s`` only, valid from ``s``
  (``event_timestamp = s``);
- ``user_item``: one row per event, the user's prior interactions with that
  item *including* the event, valid from ``timestamp + 1`` (strictly after it,
  so an impression never sees its own feedback).

:func:`ranker_features` turns raw feature values (from Feast, online or
historical) plus the request time into the ranker's matrix; serving and
training both call it, so the ranker sees the same features online and offline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from argusrank.features.argus_features import is_argus_feature
from argusrank.features.io import atomic_write_table
from argusrank.features.schema import feedback_grade

DAY = 86400
WINDOWS_D = (1, 7, 30)  # popularity / activity windows in days


@dataclass(frozen=True)
class ViewSpec:
    """A baseline feature view: name, entity columns, Float64 feature columns."""

    name: str
    keys: tuple[str, ...]
    features: tuple[str, ...]
    description: str


ITEM_STATS = ViewSpec(
    "item_stats", ("item_id",),
    tuple(f"item_pop_{w}d" for w in WINDOWS_D) + ("item_like_rate_7d", "item_like_rate_30d", "item_pos_rate_7d"),
    "item popularity (events) and like / positive-feedback rate over trailing windows, daily snapshots",
)
USER_STATS = ViewSpec(
    "user_stats", ("user_id",),
    tuple(f"user_events_{w}d" for w in WINDOWS_D) + ("user_events_total", "user_like_rate_30d", "user_skip_rate_7d",
                                                      "user_last_ts"),
    "user activity counts, like and skip rates, last event time, daily snapshots",
)
USER_ITEM = ViewSpec(
    "user_item", ("user_id", "item_id"), ("ui_count", "ui_likes", "ui_last_ts"),
    "the user's prior interactions with the item (count, likes, last time), valid after each event",
)
VIEWS = (ITEM_STATS, USER_STATS, USER_ITEM)
#: serving layout of ``user_item``: ONE row per user holding the latest (user, item) values of every item the
#: user touched, as aligned arrays sorted by item id (``prior_item_ids`` + one array per USER_ITEM feature), so a
#: request reads one Feast row instead of one per candidate. Online only (training reads ``user_item`` PIT).
USER_ITEM_PRIORS = ViewSpec(
    "user_item_priors", ("user_id",), ("prior_item_ids", *(f"prior_{f}" for f in USER_ITEM.features)),
    "per user: item ids and their latest user_item values as arrays (one online row per user)",
)

#: the ranker's baseline features, in matrix column order; ARGUS adds DOT_FEATURE
BASE_FEATURES: tuple[str, ...] = (
    *ITEM_STATS.features,
    *(f for f in USER_STATS.features if f != "user_last_ts"), "user_recency_s",
    "ui_count", "ui_likes", "ui_recency_s",
)
DOT_FEATURE = "argus_dot"
ARGUS_FEATURES: tuple[str, ...] = (*BASE_FEATURES, DOT_FEATURE)
#: raw Feast feature refs (view:feature) the ranker needs besides the vectors
RAW_REFS: tuple[str, ...] = tuple(f"{v.name}:{f}" for v in VIEWS for f in v.features)
_COUNTS = {f for f in BASE_FEATURES if "_pop_" in f or "_events_" in f or f in ("ui_count", "ui_likes")}


def snapshot_times(start_ts: int, end_ts: int, every_s: int = DAY) -> np.ndarray:
    """Snapshot times ``every_s`` apart from ``floor(start)`` to the first boundary after ``end_ts``. (S,) int64"""
    first = (int(start_ts) // every_s) * every_s
    last = (int(end_ts) // every_s + 1) * every_s
    return np.arange(first, last + 1, every_s, dtype=np.int64)


def event_grades(events: pa.Table) -> np.ndarray:
    """Per event its feedback grade (``schema.feedback_grade``) from the played_ratio, liked, disliked columns."""
    pr = events["played_ratio"].to_numpy(zero_copy_only=False).astype(np.float32)
    liked = events["liked"].fill_null(False).to_numpy(zero_copy_only=False)
    disliked = events["disliked"].fill_null(False).to_numpy(zero_copy_only=False)
    return feedback_grade(pr, liked, disliked)


def _ts_col(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype="int64") * 1_000_000, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _snapshot_stats(key: np.ndarray, ts: np.ndarray, grade: np.ndarray, snaps: np.ndarray, kind: str) -> pa.Table:
    """Per-key window stats at each snapshot; events (N,) sorted by ts. Rows: keys seen before the snapshot."""
    uniq, kidx = np.unique(key, return_inverse=True)
    n = len(uniq)
    like, pos, skip = (grade == 2), (grade >= 1), (grade == 0)
    parts = []
    for s in snaps:
        hi = np.searchsorted(ts, s, side="left")  # events with ts < s
        if hi == 0:
            continue
        seen = np.bincount(kidx[:hi], minlength=n)  # (n,) all-time counts
        cols: dict[str, np.ndarray] = {}
        win: dict[int, tuple[np.ndarray, slice]] = {}
        for w in sorted(set(WINDOWS_D) | {7, 30}):
            lo = np.searchsorted(ts, s - w * DAY, side="left")
            sl = slice(lo, hi)
            win[w] = (np.bincount(kidx[sl], minlength=n).astype(np.float64), sl)
        rate = lambda flag, w: np.bincount(kidx[win[w][1]], weights=flag[win[w][1]], minlength=n) / np.maximum(win[w][0], 1)
        rows = np.flatnonzero(seen > 0)
        if kind == "item":
            for w in WINDOWS_D:
                cols[f"item_pop_{w}d"] = win[w][0]
            cols["item_like_rate_7d"] = np.where(win[7][0] > 0, rate(like, 7), np.nan)
            cols["item_like_rate_30d"] = np.where(win[30][0] > 0, rate(like, 30), np.nan)
            cols["item_pos_rate_7d"] = np.where(win[7][0] > 0, rate(pos, 7), np.nan)
        else:
            for w in WINDOWS_D:
                cols[f"user_events_{w}d"] = win[w][0]
            cols["user_events_total"] = seen.astype(np.float64)
            cols["user_like_rate_30d"] = np.where(win[30][0] > 0, rate(like, 30), np.nan)
            cols["user_skip_rate_7d"] = np.where(win[7][0] > 0, rate(skip, 7), np.nan)
            last_ts = np.zeros(n)
            last_ts[kidx[:hi]] = ts[:hi]  # ts sorted ascending: the last write wins
            cols["user_last_ts"] = last_ts
        part = {("item_id" if kind == "item" else "user_id"): uniq[rows]}
        part.update({k: v[rows] for k, v in cols.items()})
        part["event_timestamp"] = np.full(len(rows), s)
        parts.append(pd.DataFrame(part))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=[("item_id" if kind == "item" else "user_id"), *(ITEM_STATS if kind == "item" else USER_STATS).features,
                 "event_timestamp"])
    return _finish(df)


def _finish(df: pd.DataFrame) -> pa.Table:
    t = pa.Table.from_pandas(df.drop(columns=["event_timestamp"]), preserve_index=False)
    for c in t.column_names:
        if c not in ("user_id", "item_id"):
            t = t.set_column(t.schema.get_field_index(c), c, t[c].cast(pa.float64()))
        else:
            t = t.set_column(t.schema.get_field_index(c), c, t[c].cast(pa.int64()))
    ets = _ts_col(df["event_timestamp"].to_numpy())
    return t.append_column("event_timestamp", ets).append_column("created", ets)


def user_item_history(events: pa.Table) -> pa.Table:
    """One row per (user, item, time): prior interaction count / likes / last time, valid from ``ts + 1``."""
    df = pd.DataFrame({
        "user_id": events["user_id"].to_numpy(), "item_id": events["item_id"].to_numpy(),
        "ts": events["timestamp"].to_numpy(), "like": (event_grades(events) == 2).astype(np.float64),
    }).sort_values(["user_id", "item_id", "ts"], kind="stable")
    g = df.groupby(["user_id", "item_id"], sort=False)
    df["ui_count"] = g.cumcount().to_numpy() + 1.0
    df["ui_likes"] = g["like"].cumsum().to_numpy()
    df["ui_last_ts"] = df["ts"].astype(np.float64)
    df = df.drop_duplicates(["user_id", "item_id", "ts"], keep="last")  # same-second events: the cumulative row
    df = df.assign(event_timestamp=df["ts"] + 1)  # a new frame (no pandas copy-of-a-slice warning per bucket)
    return _finish(df[["user_id", "item_id", *USER_ITEM.features, "event_timestamp"]])


def user_item_priors(user_item: pa.Table, max_items: int = 5000) -> pa.Table:
    """The ``user_item_priors`` rows of a ``user_item`` table: per user, the latest row of each item.

    Arrays sorted by item id; at most ``max_items`` items per user (the most recently
    touched; older ones then read as never seen). ``event_timestamp`` = the user's
    newest ``user_item`` row, so the online row is the state after the last event.
    """
    u, i = user_item["user_id"].to_numpy(), user_item["item_id"].to_numpy()
    ets = user_item["event_timestamp"].cast(pa.int64()).to_numpy()
    o = np.lexsort((ets, i, u))  # last row of each (user, item) = its latest state
    u, i, ets = u[o], i[o], ets[o]
    last = np.r_[u[1:] != u[:-1], True] | np.r_[i[1:] != i[:-1], True]
    keep = o[last]
    u, i, ets = u[last], i[last], ets[last]
    r = np.lexsort((-ets, u))  # per user newest first, to cap
    start = np.r_[0, np.flatnonzero(u[r][1:] != u[r][:-1]) + 1]
    rank = np.arange(len(r)) - np.repeat(start, np.diff(np.r_[start, len(r)]))
    r = r[rank < max_items]
    r = r[np.lexsort((i[r], u[r]))]  # back to (user, item) order
    u, i, ets, keep = u[r], i[r], ets[r], keep[r]
    users, first = np.unique(u, return_index=True)
    offsets = pa.array(np.r_[first, len(u)].astype(np.int32))
    cols = {"user_id": pa.array(users, pa.int64()),
            "prior_item_ids": pa.ListArray.from_arrays(offsets, pa.array(i, pa.int64()))}
    for f in USER_ITEM.features:
        vals = user_item[f].to_numpy(zero_copy_only=False).astype(np.float64)[keep]
        cols[f"prior_{f}"] = pa.ListArray.from_arrays(offsets, pa.array(vals, pa.float64()))
    newest = np.maximum.reduceat(ets, first) if len(u) else np.zeros(0, np.int64)
    ts = pa.array(newest, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({**cols, "event_timestamp": ts, "created": ts})


def lookup_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N,) of ``ids`` in ascending ``sorted_ids`` and whether each is there (N,) bool.

    Positions of absent ids are valid indexes (clipped) so ``values[pos]`` never fails; mask with ``hit``.
    """
    ids = np.asarray(ids, np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == ids


def priors_for(priors: Mapping[str, object], item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """USER_ITEM features (N,) of ``item_ids`` from one user's ``user_item_priors`` row; NaN where never seen."""
    arr = lambda k, dt: np.asarray([] if priors.get(k) is None else priors[k], dt)  # noqa: E731 (None: no row)
    pos, hit = lookup_sorted(arr("prior_item_ids", np.int64), item_ids)
    return {f: np.where(hit, v[pos], np.nan) if len(v := arr(f"prior_{f}", np.float64)) else np.full(len(pos), np.nan)
            for f in USER_ITEM.features}


def compute_baseline(events: pa.Table, snaps: np.ndarray) -> dict[str, pa.Table]:
    """The baseline views (and the serving-only ``user_item_priors``) from an event table (any order) at the
    given snapshot times."""
    ev = _by_time(events)
    return {ITEM_STATS.name: _item_view(ev, snaps), **_user_views(ev, snaps)}


def _by_time(events: pa.Table) -> pa.Table:
    """Events stably sorted by time (what the views' running counts expect)."""
    return events.take(pa.array(np.argsort(events["timestamp"].to_numpy(), kind="stable")))


def _item_view(ev: pa.Table, snaps: np.ndarray) -> pa.Table:
    """``item_stats`` of time-sorted events (item, time and feedback columns)."""
    return _snapshot_stats(ev["item_id"].to_numpy(), ev["timestamp"].to_numpy(), event_grades(ev), snaps, "item")


def _item_cells(dataset_dir: str | Path, snaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``item_stats``' sufficient statistics, one user bucket at a time: per (item, time cell) the event, like and
    positive counts, where the cells lie between the sorted snapshot and window-start times (cell k covers
    ``[bounds[k-1], bounds[k])``, cell 0 everything before ``bounds[0]``). Memory: the distinct (item, cell) pairs,
    at most ``min(events, items x cells)``, never the events. Returns (bounds, item, cell, (count, like, pos))."""
    from argusrank.features.io import read_events, user_buckets_of

    bounds = np.unique(np.concatenate([snaps, *(snaps - w * DAY for w in (*WINDOWS_D, 7, 30))])).astype(np.int64)
    width = len(bounds) + 1  # cells 0..len(bounds); the last one (after every snapshot) is never counted
    keys, sums = np.zeros(0, np.int64), np.zeros((3, 0), np.int64)
    for b in range(user_buckets_of(dataset_dir)):
        ev = read_events(dataset_dir, user_buckets=[b], columns=["item_id", "timestamp", *_FEEDBACK])
        if not ev.num_rows:
            continue
        grade = event_grades(ev)
        cell = np.searchsorted(bounds, ev["timestamp"].to_numpy(), side="right")
        k = np.concatenate([keys, ev["item_id"].to_numpy().astype(np.int64) * width + cell])
        v = np.concatenate([sums, np.stack([np.ones(len(grade), np.int64), grade == 2, grade >= 1])], axis=1)
        keys, inv = np.unique(k, return_inverse=True)
        sums = np.stack([np.bincount(inv, weights=row, minlength=len(keys)).astype(np.int64) for row in v])
    return bounds, keys // width, keys % width, sums


def item_view_by_bucket(dataset_dir: str | Path, snaps: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """``item_stats`` from :func:`_item_cells` (the same rows as :func:`_item_view` over all events, tested) and
    the sorted ids of every item with an event (the catalog), read one user bucket at a time."""
    bounds, item, cell, (count, like, pos) = _item_cells(dataset_dir, snaps)
    uniq, kidx = np.unique(item, return_inverse=True)
    n, parts = len(uniq), []
    at = lambda t: int(np.searchsorted(bounds, t)) + 1  # noqa: E731  the first cell at or after time t (a bound)
    for s in snaps:
        before = cell < at(s)
        seen = np.bincount(kidx[before], weights=count[before], minlength=n)
        if not seen.any():
            continue
        win = {}
        for w in sorted(set(WINDOWS_D) | {7, 30}):
            m = before & (cell >= at(s - w * DAY))
            win[w] = tuple(np.bincount(kidx[m], weights=x[m], minlength=n) for x in (count, like, pos))
        rows = np.flatnonzero(seen > 0)
        cols = {f"item_pop_{w}d": win[w][0] for w in WINDOWS_D}
        rate = lambda w, j: np.where(win[w][0] > 0, win[w][j] / np.maximum(win[w][0], 1), np.nan)  # noqa: E731
        cols.update(item_like_rate_7d=rate(7, 1), item_like_rate_30d=rate(30, 1), item_pos_rate_7d=rate(7, 2))
        parts.append(pd.DataFrame({"item_id": uniq[rows], **{k: v[rows] for k, v in cols.items()},
                                   "event_timestamp": np.full(len(rows), s)}))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["item_id", *ITEM_STATS.features, "event_timestamp"])
    return _finish(df), uniq


def _user_views(ev: pa.Table, snaps: np.ndarray) -> dict[str, pa.Table]:
    """The per-user views of time-sorted events: ``user_stats``, ``user_item``, ``user_item_priors`` (a user's rows
    depend on that user's events only, so the views of disjoint users concatenate)."""
    ui = user_item_history(ev)
    return {USER_STATS.name: _snapshot_stats(ev["user_id"].to_numpy(), ev["timestamp"].to_numpy(), event_grades(ev), snaps,
                                             "user"),
            USER_ITEM.name: ui, USER_ITEM_PRIORS.name: user_item_priors(ui)}


#: views built from the whole log (file tag ``all``, replaced by every export); the others are per snapshot range
WHOLE_LOG = (USER_ITEM.name, USER_ITEM_PRIORS.name)
_FEEDBACK = ["played_ratio", "liked", "disliked"]


def export_baseline(dataset_dir: str | Path, snaps: np.ndarray, baseline_dir: str | Path, snap_tag: str) -> dict:
    """:func:`compute_baseline` + :func:`write_baseline` (``snap_tag`` for the snapshot views, ``all`` for
    :data:`WHOLE_LOG`) with one user bucket in memory at a time: ``item_stats`` from per-(item, time cell) counts
    summed over the buckets (:func:`item_view_by_bucket`); the per-user views bucket by bucket, streamed into their files (each renamed into place
    when complete). Same rows as :func:`compute_baseline` (tested). Returns the rows per view."""
    from contextlib import ExitStack

    from argusrank.features.io import atomic_file, read_events, user_buckets_of

    items, _ = item_view_by_bucket(dataset_dir, snaps)
    write_baseline({ITEM_STATS.name: items}, baseline_dir, tag=snap_tag)
    rows = {ITEM_STATS.name: items.num_rows}
    tags = {USER_STATS.name: snap_tag, USER_ITEM.name: "all", USER_ITEM_PRIORS.name: "all"}
    with ExitStack() as stack:
        tmps = {v: stack.enter_context(atomic_file(Path(baseline_dir) / v / f"{tag}.parquet")) for v, tag in tags.items()}
        writers: dict[str, pq.ParquetWriter] = {}  # closed by the stack before the files are renamed into place
        for b in range(user_buckets_of(dataset_dir)):
            ev = _by_time(read_events(dataset_dir, user_buckets=[b], columns=["user_id", "item_id", "timestamp", *_FEEDBACK]))
            if not ev.num_rows:
                continue
            for view, t in _user_views(ev, snaps).items():
                if view not in writers:
                    writers[view] = stack.enter_context(pq.ParquetWriter(tmps[view], t.schema))
                writers[view].write_table(t.cast(writers[view].schema))
                rows[view] = rows.get(view, 0) + t.num_rows
        if len(writers) < len(tags):
            raise ValueError(f"dataset {dataset_dir} has no events: no baseline features to export")
    return rows


def write_baseline(tables: Mapping[str, pa.Table], baseline_dir: str | Path, tag: str = "part") -> dict[str, str]:
    """Write each view's table to ``baseline_dir/<view>/<tag>.parquet``, replacing that file atomically
    (written under a hidden name, renamed when complete: readers see the old file or the new one)."""
    out = {}
    for name, t in tables.items():
        d = Path(baseline_dir) / name
        atomic_write_table(t, d / f"{tag}.parquet")
        out[name] = str(d)
    return out


def _col(raw: Mapping[str, object], name: str, n: int) -> np.ndarray:
    v = raw.get(name)
    if v is None:
        return np.full(n, np.nan)
    a = np.asarray(v, dtype=object) if not isinstance(v, np.ndarray) else v
    return pd.to_numeric(pd.Series(a), errors="coerce").to_numpy(dtype=np.float64) if a.dtype == object else a.astype(np.float64)


def ranker_features(
    raw: Mapping[str, object], request_ts: np.ndarray | int, feature_names: Sequence[str] = ARGUS_FEATURES,
) -> np.ndarray:
    """The ranker's feature matrix (N, F) float32 in ``feature_names`` order.

    ``raw`` maps raw Feast feature names (``item_pop_7d``, ``user_last_ts``,
    ``ui_last_ts``, ..., and the ARGUS features used: ``argus_dot``, ``nip_dot``, ...,
    ``features/argus_features.py``) to N values (None/NaN where missing; an ARGUS feature
    other than ``argus_dot`` absent from ``raw`` is an error); ``request_ts`` is the request time in seconds (scalar or
    (N,)). Counts missing from the store are 0; recencies are ``request_ts -
    last_ts`` (NaN when never seen); rates stay NaN (XGBoost's missing value).
    """
    n = len(next(iter(raw.values())))
    t = np.broadcast_to(np.asarray(request_ts, dtype=np.float64), (n,))
    cols = []
    for f in feature_names:
        if f == "user_recency_s":
            x = t - _col(raw, "user_last_ts", n)
        elif f == "ui_recency_s":
            x = t - _col(raw, "ui_last_ts", n)
        elif f in raw or f == DOT_FEATURE:
            x = _col(raw, f, n)
        elif f in BASE_FEATURES:
            x = np.full(n, np.nan)
        elif is_argus_feature(f):  # computed from vectors (features/argus_features.py): never silently missing
            raise KeyError(f"ranker feature {f!r} is not among the raw features given ({sorted(raw)})")
        else:
            raise KeyError(f"unknown ranker feature {f!r}; known: {BASE_FEATURES} and the ARGUS features "
                           "of features/argus_features.py")
        if f in _COUNTS:
            x = np.nan_to_num(x, nan=0.0)
        cols.append(x)
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)
