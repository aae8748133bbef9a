"""Point-in-time joins by user bucket: training rows with the feature rows valid at their times.

Feast's file offline store (``get_historical_features``) reads each view's whole source into pandas on every call
and returns vectors as Python lists (~32 B per float): the ranker set's memory grew with the data (4.8 GB at 10M
events, bench/README.md "Scale"). Here the entity rows split by ``user_id % n``; for one bucket at a time each
view's rows are read (views keyed by user: the bucket's users; views keyed by item: one ``item_id % m`` bucket at
a time, for the bucket's rows of those items): from 8 buckets on from the view split once into a file per bucket
(features/buckets.py), below with a scan-time filter (which prunes no row group: each read decodes the whole view),
and joined as Feast joins views without a
ttl: the row of the same keys with the largest event timestamp at or before the entity row's, ties broken by the
largest created timestamp; none -> missing (NaN).
Vectors stay (N, d) float32 matrices. Tested equal to Feast's join (tests/test_features_store.py).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features import buckets as bucketed
from argusrank.features.io import scan_bounds
from argusrank.features.materialize import bucket_count, key_bucket_filter, row_bytes, scan_buckets
from argusrank.features.vectors import to_matrix

TS, CREATED = "event_timestamp", "created"  # the timestamp columns of every view (features/definitions.py)


@dataclass(frozen=True)
class ViewJoin:
    """One view to join: its offline parquet folder, join keys and feature columns."""

    path: Path
    keys: tuple[str, ...]
    columns: tuple[str, ...]


def time_ns(values: pd.Series) -> np.ndarray:
    """Timestamps (naive = UTC, as Feast reads them) -> int64 nanoseconds since the epoch."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8


def _column_ns(col: pa.ChunkedArray) -> np.ndarray:
    typ = col.type
    if pa.types.is_timestamp(typ) and typ.tz is None:
        col = col.cast(pa.timestamp(typ.unit, tz="UTC"))
    return col.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()


def _values(col: pa.ChunkedArray, width: int | None) -> np.ndarray:
    """A view column as numpy: lists (vectors) -> (N, width) float32 matrix, scalars -> float64 (nulls NaN)."""
    if width is not None:
        return to_matrix(col, width)
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _take(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``values[pos]``, NaN (rows) where ``pos`` is -1."""
    out = np.full((len(pos), *values.shape[1:]), np.nan, dtype=np.float32 if values.ndim == 2 else np.float64)
    hit = pos >= 0
    if len(values):
        out[hit] = values[pos[hit]]
    return out


@dataclass(frozen=True)
class ViewRows:
    """One read of a view: its keys and times sorted for the as-of join (ties on time: the row created last is
    the last one) and its columns as numpy (vectors (M, d) float32, scalars float64)."""

    order: pd.DataFrame  # keys, "_t" (event time, ns), "_pos" (row in ``values``)
    values: dict[str, np.ndarray]


def vector_widths(view: ViewJoin) -> dict[str, int]:
    """The width of each vector (list) column of ``view``, from its first row with one (0: no row has one)."""
    data = ds.dataset(view.path, format="parquet")
    widths = {}
    for c in view.columns:
        typ = data.schema.field(c).type
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            first = data.head(1, columns=[c], filter=ds.field(c).is_valid()).column(c)
            widths[c] = len(first[0]) if len(first) else 0
    return widths


def view_columns(view: ViewJoin) -> list[str]:
    """The columns a join reads of ``view``: keys, event time, created time (when the view has one), features."""
    names = ds.dataset(view.path, format="parquet").schema.names
    return [*view.keys, TS, *([CREATED] if CREATED in names else []), *view.columns]


def read_view(view: ViewJoin, where: ds.Expression | None, widths: dict[str, int],
              table: pa.Table | None = None) -> ViewRows:
    """``view``'s rows that pass ``where`` (None: all), ready for :func:`as_of`; ``table``: those rows already
    read (:func:`view_columns`), e.g. one bucket of a :class:`buckets.BucketSpill`."""
    keys = list(view.keys)
    if table is None:
        data = ds.dataset(view.path, format="parquet")
        columns = view_columns(view)
        table = data.to_table(columns=columns, filter=where, **scan_bounds(row_bytes(data, columns)))
    created = [CREATED] if CREATED in table.schema.names else []
    order = pd.DataFrame({**{k: table[k].to_numpy() for k in keys}, "_t": _column_ns(table[TS]),
                          "_c": _column_ns(table[CREATED]) if created else np.zeros(table.num_rows, np.int64),
                          "_pos": np.arange(table.num_rows)})
    order = order.sort_values(["_t", "_c"], kind="stable")  # ties on _t: the largest created is the last one
    return ViewRows(order[[*keys, "_t", "_pos"]], {c: _values(table[c], widths.get(c)) for c in view.columns})


def as_of(view: ViewJoin, side: ViewRows, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """``view``'s columns for each of ``rows`` (its keys and ``event_timestamp``): those of the row of the same
    keys with the latest time at or before the row's (read in ``side``), NaN where none."""
    keys = list(view.keys)
    left = pd.DataFrame({**{k: rows[k].to_numpy().astype(side.order[k].dtype) for k in keys}, "_t": time_ns(rows[TS]),
                         "_row": np.arange(len(rows))}).sort_values("_t", kind="stable")
    hit = pd.merge_asof(left, side.order, on="_t", by=keys, direction="backward", allow_exact_matches=True)
    pos = np.full(len(rows), -1, dtype=np.int64)
    pos[hit["_row"].to_numpy()] = hit["_pos"].fillna(-1).to_numpy().astype(np.int64)
    return {c: _take(v, pos) for c, v in side.values.items()}


def join_view(view: ViewJoin, rows: pd.DataFrame, where: ds.Expression | None,
              widths: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """``view``'s columns for each of ``rows`` as of the row's time, reading the view's rows that pass ``where`` (a
    filter that keeps every row of ``rows``' keys; None: the rows of ``rows``' values of the first key)."""
    if where is None:
        key = view.keys[0]
        where = ds.field(key).isin(pa.array(np.unique(rows[key].to_numpy()).astype(np.int64)))
    return as_of(view, read_view(view, where, vector_widths(view) if widths is None else widths), rows)


def key_buckets(keys: np.ndarray, n_buckets: int) -> Iterator[tuple[int, np.ndarray]]:
    """(bucket, row positions in input order) of every non-empty ``key % n_buckets`` bucket."""
    b = np.asarray(keys, dtype=np.int64) % n_buckets
    order = np.argsort(b, kind="stable")
    cuts = np.searchsorted(b[order], np.arange(n_buckets + 1))
    for k in range(n_buckets):
        if cuts[k + 1] > cuts[k]:
            yield k, order[cuts[k]:cuts[k + 1]]


def _buckets(views: list[ViewJoin], n_rows: int, rows_per_bucket: int, mb_per_bucket: int) -> int:
    """Buckets for ``n_rows`` entity rows and ``views``' offline rows (:func:`materialize.scan_buckets`)."""
    n = bucket_count(n_rows, rows_per_bucket)
    for v in views:
        data = ds.dataset(v.path, format="parquet")
        n = max(n, scan_buckets(data.count_rows(), row_bytes(data, [*v.keys, TS, *v.columns]), rows_per_bucket,
                                mb_per_bucket))
    return n


ITEM_BUCKETS_KEPT = 4  # item buckets of a view kept across user buckets (each at most mb_per_bucket MB): at most
# this many are read once per join; more are read once per user bucket, from their spill files (swapping the loops
# would read each once)


def _join_bucket(frame: pd.DataFrame, by_user: list[ViewJoin], by_item: list[ViewJoin], n_users: int, b: int,
                 n_items: int, widths: dict[Path, dict[str, int]], kept: dict | None,
                 spills: dict[Path, bucketed.BucketSpill]) -> dict[str, np.ndarray]:
    """Every view's columns for the rows of user bucket ``b``: views keyed by user read that bucket's rows, the
    others one item bucket (``item_id % n_items``) at a time, for the rows of that item bucket (``kept``: a dict
    holding each item bucket's read for the next user buckets; None: read again). A view in ``spills`` reads its
    bucket's file, the others a filtered scan."""
    out = {}
    for view in by_user:
        spill = spills.get(view.path)
        side = read_view(view, key_bucket_filter("user_id", n_users, b), widths[view.path],
                         table=None if spill is None else spill.read(b))
        out.update(as_of(view, side, frame))
    for view in by_item:
        w = widths[view.path]
        for col in view.columns:
            out[col] = np.full((len(frame), w[col]) if col in w else len(frame), np.nan,
                               dtype=np.float32 if col in w else np.float64)
        for j, at in key_buckets(frame[view.keys[0]].to_numpy(), n_items):
            if view.keys[0] != "item_id":  # keyed by something else: the rows' own keys
                got = join_view(view, frame.iloc[at], None, w)
            else:
                side = kept.get((view.path, j)) if kept is not None else None
                if side is None:
                    spill = spills.get(view.path)
                    side = read_view(view, key_bucket_filter("item_id", n_items, j), w,
                                     table=None if spill is None else spill.read(j))
                    if kept is not None:
                        kept[(view.path, j)] = side
                got = as_of(view, side, frame.iloc[at])
            for col, values in got.items():
                out[col][at] = values
    return out


def join_buckets(n_rows: int, rows_of: Callable[[int, int], pd.DataFrame], views: list[ViewJoin],
                 rows_per_bucket: int, finish: Callable[[pd.DataFrame, dict[str, np.ndarray]], pd.DataFrame],
                 mb_per_bucket: int = 32, progress: bool = True) -> Iterator[tuple[int, pd.DataFrame]]:
    """(bucket, finished rows) for every non-empty user bucket: ``rows_of(n, b)`` gives the entity rows (user_id,
    the views' keys, ``event_timestamp``, anything to carry) with ``user_id % n == b``, joined with every view's
    columns as of each row's time and passed through ``finish(frame, matrices)`` (scalar columns added to the
    frame, vector columns as matrices). Buckets: the smallest power of two giving at most ``rows_per_bucket`` of
    the ``n_rows`` entity rows and, of every view keyed by user, at most ``rows_per_bucket`` rows and
    ``mb_per_bucket`` MB of offline rows per bucket (:func:`materialize.scan_buckets`); the views keyed by item
    are read one item bucket at a time, sized the same way. Memory: one bucket's rows, whatever ``n_rows``."""
    from tqdm import tqdm

    by_user = [v for v in views if "user_id" in v.keys]
    by_item = [v for v in views if "user_id" not in v.keys]
    n_users = _buckets(by_user, n_rows, rows_per_bucket, mb_per_bucket)
    n_items = _buckets(by_item, 0, rows_per_bucket, mb_per_bucket)
    widths = {v.path: vector_widths(v) for v in views}
    kept: dict | None = {} if n_items <= ITEM_BUCKETS_KEPT else None
    with ExitStack() as stack:
        spills = {}  # views split once into a file per bucket (features/buckets.py): by user, and by item unless kept
        split = [(v, "user_id", n_users) for v in by_user if n_users >= bucketed.SPILL_FROM_BUCKETS]
        split += [(v, "item_id", n_items) for v in by_item
                  if v.keys[0] == "item_id" and kept is None and n_items >= bucketed.SPILL_FROM_BUCKETS]
        for v, key, n in split:
            data, columns = ds.dataset(v.path, format="parquet"), view_columns(v)
            spills[v.path] = stack.enter_context(
                bucketed.BucketSpill(v.path, key, n, columns, None, row_bytes(data, columns)))
        for b in tqdm(range(n_users), disable=None if progress else True, mininterval=5.0,
                      desc=f"point-in-time join ({n_users} user x {n_items} item buckets)"):
            frame = rows_of(n_users, b).reset_index(drop=True)
            if not len(frame):
                continue
            matrices: dict[str, np.ndarray] = {}
            joined = _join_bucket(frame, by_user, by_item, n_users, b, n_items, widths, kept, spills)
            for col, values in joined.items():
                if values.ndim == 2:
                    matrices[col] = values
                else:
                    frame[col] = values
            yield b, finish(frame, matrices)


def joined_by_bucket(rows: pd.DataFrame, views: list[ViewJoin], rows_per_bucket: int,
                     finish: Callable[[pd.DataFrame, dict[str, np.ndarray]], pd.DataFrame], mb_per_bucket: int = 32,
                     progress: bool = True) -> pd.DataFrame:
    """:func:`join_buckets` over the rows of a frame in memory: ``rows`` with every view's columns as of each
    row's time (and what ``finish`` adds), in input order."""
    rows = rows.reset_index(drop=True)
    positions: dict[int, np.ndarray] = {}

    def rows_of(n: int, b: int) -> pd.DataFrame:
        if not positions:
            positions.update(key_buckets(rows["user_id"].to_numpy(), n))
        return rows.iloc[positions.get(b, np.zeros(0, np.int64))]

    added: dict[str, np.ndarray] = {}  # the columns joined and finished, filled bucket by bucket (no concat copies)
    for b, done in join_buckets(len(rows), rows_of, views, rows_per_bucket, finish, mb_per_bucket, progress):
        at = positions[b]
        for col in done.columns.difference(rows.columns, sort=False):
            if col not in added:
                added[col] = np.full(len(rows), np.nan, dtype=np.result_type(done[col].dtype, np.float32))
            added[col][at] = done[col].to_numpy()
    if not len(rows):
        return finish(rows.copy(), {})
    return rows.assign(**added)
