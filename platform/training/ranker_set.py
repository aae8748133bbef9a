"""The ranker's impressions and, for windows too large to hold, its training set written by user bucket.

:func:`impressions` and :func:`split_requests` are the rows and the train/test split of ``argusrank ranker
train`` (ARGUS.md section 4). :func:`write_ranker_set` builds the same rows with their point-in-time features
one user bucket at a time: the window's impressions of the bucket's users are read with a scan-time filter
(``read_events(user_mod=...)``), joined (``store.historical_feature_parts``) and written as
``part-<bucket>.parquet`` with an ``is_train`` column, so its memory is one bucket's rows (plus 16 bytes per
impression for the request split) whatever the window's size. :class:`RankerRows` gives the rows (one frame in
memory, or the parts read one at a time) as batches for ``models.ranker.train_ranker_on_batches``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from argusrank.features.baseline import ranker_features
from argusrank.features.io import read_events
from argusrank.features.splits import dataset_split
from argusrank.features.vectors import check_versions, one_version
from argusrank.platform.config import ArgusrankConfig

IMPRESSION_COLUMNS = ["user_id", "timestamp", "item_id", "request_id", "position", "played_ratio", "liked", "disliked"]


def impressions(dataset_dir: str | Path, t_from: int, t_to: int,
                user_mod: tuple[int, int] | None = None) -> pd.DataFrame:
    """Recommendation impressions (request_id set) with ``t_from <= timestamp < t_to`` and their grades;
    ``user_mod=(n, b)``: only those of users with ``user_id % n == b``."""
    from argusrank.features.schema import feedback_grade

    ev = read_events(dataset_dir, columns=IMPRESSION_COLUMNS, time_range=(t_from, t_to), user_mod=user_mod)
    ev = ev.filter(pc.is_valid(ev["request_id"]))  # only the window was read: memory of the window, not the log
    grade = feedback_grade(ev["played_ratio"].to_numpy(zero_copy_only=False).astype(np.float32),
                           ev["liked"].fill_null(False).to_numpy(zero_copy_only=False),
                           ev["disliked"].fill_null(False).to_numpy(zero_copy_only=False))
    df = pd.DataFrame({"user_id": ev["user_id"].to_numpy(), "item_id": ev["item_id"].to_numpy(),
                       "request_id": ev["request_id"].to_numpy(), "ts": ev["timestamp"].to_numpy(),
                       "grade": grade.astype(np.int64)})
    df["event_timestamp"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    return df


def split_requests(df: pd.DataFrame, train_frac: float) -> np.ndarray:
    """(N,) bool: True for rows of the earliest ``train_frac`` of requests (by request time)."""
    first = df.groupby("request_id")["ts"].min().sort_values(kind="stable")
    n_train = int(round(len(first) * train_frac))
    train_ids = first.index[:n_train]
    return df["request_id"].isin(train_ids).to_numpy()


def split_time(df: pd.DataFrame, is_train: np.ndarray, t_from: int, t_to: int, train_frac: float) -> int:
    """The first test request's time (without test rows: ``train_frac`` of the window ``[t_from, t_to)``)."""
    return int(df["ts"][~is_train].min()) if (~is_train).any() else t_from + int(round(train_frac * (t_to - t_from)))


@dataclass(frozen=True)
class RankerSet:
    """What :func:`write_ranker_set` wrote: its parts, rows, train rows, rows with an ``argus_dot`` and its sum,
    the vectors' model version, the user buckets and the first test request's time (:func:`split_time`)."""

    parts: tuple[Path, ...]
    rows: int
    train_rows: int
    dot_rows: int
    dot_sum: float
    model_version: int | None
    n_buckets: int
    t_split: int


def train_request_ids(dataset_dir: str | Path, t_from: int, t_to: int,
                      train_frac: float) -> tuple[np.ndarray, int, int]:
    """(sorted request IDs of the earliest ``train_frac`` of the window's requests, the window's impressions, the
    split time): the split of :func:`split_requests`, read one user bucket at a time as one row per request (its
    first time and users): memory of the window's requests, not of its impressions. Refuses a request ID shared by
    several users (a request serves one user; its rows would fall into several user buckets)."""
    from argusrank.features.io import user_buckets_of

    parts, n_rows = [], 0
    for b in range(user_buckets_of(dataset_dir)):
        ev = read_events(dataset_dir, columns=["request_id", "timestamp", "user_id"], user_buckets=[b],
                         time_range=(t_from, t_to))
        ev = ev.filter(pc.is_valid(ev["request_id"]))
        n_rows += ev.num_rows
        parts.append(ev.group_by("request_id").aggregate([("timestamp", "min"), ("user_id", "min"),
                                                          ("user_id", "max")]))
    req = pa.concat_tables(parts) if parts else pa.table({"request_id": pa.array([], pa.int64())})
    rid = req["request_id"].to_numpy() if req.num_rows else np.zeros(0, np.int64)
    ids, counts = np.unique(rid, return_counts=True)
    shared = np.union1d(ids[counts > 1], rid[req["user_id_min"].to_numpy() != req["user_id_max"].to_numpy()]) \
        if req.num_rows else ids[:0]
    if len(shared):
        r = int(shared[0])
        ev = read_events(dataset_dir, columns=["request_id", "user_id"], time_range=(t_from, t_to))
        who = np.unique(ev.filter(pc.equal(ev["request_id"], r))["user_id"].to_numpy()).tolist()
        raise ValueError(f"request_id {r} holds impressions of users {who} "
                         f"({len(shared)} request IDs are shared by users): ranker.training_set=parts writes one "
                         "user bucket at a time and needs each request to serve one user; use training_set=memory")
    first = req["timestamp_min"].to_numpy() if req.num_rows else np.zeros(0, np.int64)
    order = np.lexsort((rid, first))  # by first time, then ID (split_requests' order)
    n_train = int(round(len(rid) * train_frac))
    t_split = int(first[order[n_train:]].min()) if n_train < len(rid) else \
        t_from + int(round(train_frac * (t_to - t_from)))  # split_time's
    return np.sort(rid[order[:n_train]]), n_rows, t_split


def write_ranker_set(cfg: ArgusrankConfig, dataset_dir: str | Path, out_dir: str | Path, argus: Sequence[str],
                     progress: bool = True) -> RankerSet:
    """The ranker's impressions of the test window with their point-in-time features (the ARGUS features
    ``argus`` too) and ``is_train``, written to ``out_dir/part-<bucket>.parquet`` one user bucket at a time; rows
    of one request are contiguous in a part. The rows and values of ``ranker_job.ranker_rows``."""
    from argusrank.features import store

    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    train_ids, n_rows, t_split = train_request_ids(dataset_dir, split.T, split.T_end, cfg.ranker.train_frac)
    if n_rows == 0:
        raise ValueError(f"no recommendation impressions (request_id set) after T={split.T} in {dataset_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    n_buckets = 0

    def rows_of(n: int, b: int) -> pd.DataFrame:
        nonlocal n_buckets
        n_buckets = n
        imp = impressions(dataset_dir, split.T, split.T_end, user_mod=(n, b))
        return imp.assign(is_train=np.isin(imp["request_id"].to_numpy(), train_ids))

    parts, rows, train_rows, dot_rows, dot_sum, versions = [], 0, 0, 0, 0.0, set()
    for b, frame in store.historical_feature_parts(cfg, n_rows, rows_of, argus=argus, progress=progress):
        v = check_versions(frame["user_model_version"].fillna(-1).astype(np.int64).to_numpy(),
                           frame["item_model_version"].fillna(-1).astype(np.int64).to_numpy())
        versions |= {v} if v is not None and v >= 0 else set()
        frame = frame.iloc[np.argsort(frame["request_id"].to_numpy(), kind="stable")]
        path = out / f"part-{b:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        parts.append(path)
        rows, train_rows = rows + len(frame), train_rows + int(frame["is_train"].sum())
        dot = frame["argus_dot"].to_numpy()
        dot_rows, dot_sum = dot_rows + int(np.isfinite(dot).sum()), dot_sum + float(np.nansum(dot))
    version = one_version(versions)  # buckets that joined different versions: refused as one frame would be
    return RankerSet(tuple(parts), rows, train_rows, dot_rows, dot_sum, version, n_buckets, t_split)


@dataclass(frozen=True)
class RankerRows:
    """The ranker's rows with their features and ``is_train``, as frames in which a request's rows are
    contiguous: one frame in memory or a :class:`RankerSet`'s parts read one at a time (``frames()``)."""

    frames: Callable[[Sequence[str] | None], Iterable[pd.DataFrame]]  # (columns or None: all) -> frames
    parts: tuple[Path, ...] = ()  # the files, when on disk

    @classmethod
    def of_frame(cls, feats: pd.DataFrame, is_train: np.ndarray) -> "RankerRows":
        order = np.argsort(feats["request_id"].to_numpy(), kind="stable")
        frame = feats.assign(is_train=is_train).iloc[order].reset_index(drop=True)
        return cls(lambda columns=None: [frame])

    @classmethod
    def of_parts(cls, parts: Sequence[Path]) -> "RankerRows":
        def read(columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
            for p in parts:  # only the columns asked for are read from the file
                yield pq.read_table(p, columns=list(columns) if columns is not None else None).to_pandas()

        return cls(read, tuple(parts))

    def batches(self, names: Sequence[str], train: bool) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
        """``(X, grades, request IDs)`` of the train (or test) rows, one frame at a time; ``X``: the ranker
        features ``names`` (``baseline.ranker_features``)."""
        for f in self.frames():
            f = f[f["is_train"].to_numpy() == train]
            X = ranker_features({c: f[c].to_numpy() for c in f.columns}, f["ts"].to_numpy(), names)
            yield pd.DataFrame(X, columns=list(names)), f["grade"].to_numpy(), f["request_id"].to_numpy()

    def columns(self, names: Sequence[str], train: bool | None = None) -> pd.DataFrame:
        """The columns ``names`` of the train (``True``), test (``False``) or all rows, in frame order."""
        read = list(dict.fromkeys([*names, "is_train"]))
        got = [f.loc[f["is_train"].to_numpy() == train if train is not None else slice(None), list(names)]
               for f in self.frames(read)]
        return pd.concat(got, ignore_index=True)
