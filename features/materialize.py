"""Materialization by entity bucket: a feature view's offline rows -> the online store, one bucket at a time.

Feast's local engine (the file offline store) reads a view's whole source into one pandas frame, keeps each
entity's latest row, and, unless ``online_write_batch_size`` is set, turns every row into protobuf before one
write: memory grew ~3.4 KB per event at 1M-3M events (bench/README.md "Scale"). Here the rows of the
materialized time range are split by the first join key (``key % n_buckets``: from
``buckets.SPILL_FROM_BUCKETS`` buckets on, by one scan into a file per bucket, :class:`buckets.BucketSpill`; with
fewer, by a filter applied while the files are scanned; a bucket never holds another bucket's rows); each bucket keeps its entities' latest rows (largest
event timestamp, then largest created timestamp: Feast's rule) and goes to the provider's ``online_write_batch``
(the call Feast's materialization ends in) in chunks. All rows of one entity share a bucket, so the result is
the same online rows as Feast's ``materialize`` over the same range (tests/test_features_store.py).
"""
from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features import buckets as bucketed
from argusrank.features.io import scan_bounds

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

MAX_BUCKETS = 1024


def bucket_count(n_rows: int, rows_per_bucket: int) -> int:
    """Buckets for ``n_rows``: the smallest power of two giving <= ``rows_per_bucket`` rows each (at most 1024)."""
    need = max(1, -(-int(n_rows) // int(rows_per_bucket)))
    return min(MAX_BUCKETS, 1 << (need - 1).bit_length())


def row_bytes(data: ds.Dataset, columns: list[str]) -> float:
    """Mean uncompressed bytes per row of ``columns`` in a parquet dataset (from its footers; 0 when empty)."""
    total, rows = 0, 0
    for frag in data.get_fragments():
        meta = frag.metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            total += sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                         if group.column(c).path_in_schema.split(".")[0] in columns)
    return total / rows if rows else 0.0


def scan_buckets(n_rows: int, bytes_per_row: float, rows_per_bucket: int, mb_per_bucket: int) -> int:
    """Buckets for a scan of ``n_rows`` rows: at most ``rows_per_bucket`` rows and ``mb_per_bucket`` MB
    (uncompressed) each, so wide rows (vectors) get more buckets than narrow ones."""
    by_bytes = bucket_count(int(n_rows * bytes_per_row), mb_per_bucket * 2**20) if bytes_per_row else 1
    return max(bucket_count(n_rows, rows_per_bucket), by_bytes)


def key_bucket_filter(key: str, n_buckets: int, bucket: int) -> ds.Expression | None:
    """Rows whose ``key`` (an int64 entity id >= 0) is in ``bucket`` of ``n_buckets`` (``key % n == bucket``),
    as a scan-time dataset filter; None for one bucket."""
    if n_buckets == 1:
        return None
    k = ds.field(key)
    return (k - (k / int(n_buckets)) * int(n_buckets)) == int(bucket)


def latest_rows(table: pa.Table, keys: list[str], ts: str, created: str | None) -> pa.Table:
    """Each entity's latest row: largest ``ts``, ties broken by largest ``created`` (Feast's dedup rule)."""
    if table.num_rows == 0:
        return table
    order = [(k, "ascending") for k in keys] + [(ts, "descending")] + ([(created, "descending")] if created else [])
    table = table.take(pc.sort_indices(table, sort_keys=order))
    first = np.ones(table.num_rows, dtype=bool)
    change = np.zeros(table.num_rows - 1, dtype=bool)
    for k in keys:
        a = table[k].to_numpy()
        change |= a[1:] != a[:-1]
    first[1:] = change
    return table.filter(pa.array(first))


def _time_range(schema: pa.Schema, ts: str, start: datetime, end: datetime) -> ds.Expression:
    """``start <= ts <= end`` (both ends inclusive, as Feast's file store materializes)."""
    typ = schema.field(ts).type
    lo, hi = (pc.cast(pa.scalar(t), typ) for t in (start, end))
    return (ds.field(ts) >= lo) & (ds.field(ts) <= hi)


def materialize_view(store: "FeatureStore", name: str, path: Path, start: datetime, end: datetime,
                     rows_per_bucket: int, write_rows: int, progress: bool = True,
                     mb_per_bucket: int = 32) -> dict[str, Any]:
    """Write view ``name``'s latest row per entity among its offline rows (``path``) with event time in
    [start, end] to the online store, one entity bucket at a time (:func:`scan_buckets`); records the interval in
    Feast's registry as ``FeatureStore.materialize`` does. Returns the rows written online and the bucket count."""
    from feast.utils import _convert_arrow_to_proto
    from tqdm import tqdm

    fv = store.get_feature_view(name)
    source = fv.batch_source
    ts, created = source.timestamp_field, source.created_timestamp_column or None
    keys = list(fv.join_keys)
    key_types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    columns = [*keys, *(f.name for f in fv.features), ts, *([created] if created else [])]
    data = ds.dataset(path, format="parquet")
    in_range = _time_range(data.schema, ts, start, end)
    width = row_bytes(data, columns)
    n_buckets = scan_buckets(data.count_rows(filter=in_range), width, rows_per_bucket, mb_per_bucket)
    provider, written = store._get_provider(), 0
    with ExitStack() as stack:
        spill = (stack.enter_context(bucketed.BucketSpill(path, keys[0], n_buckets, columns, in_range, width))
                 if n_buckets >= bucketed.SPILL_FROM_BUCKETS else None)
        for b in tqdm(range(n_buckets), desc=f"materialize {name} (entity buckets)",
                      disable=None if progress else True, mininterval=5.0):
            if spill is not None:
                part = spill.read(b)
            else:
                where = key_bucket_filter(keys[0], n_buckets, b)
                part = data.to_table(columns=columns, filter=in_range if where is None else in_range & where,
                                     **scan_bounds(width))
            rows = latest_rows(part, keys, ts, created)
            for batch in rows.to_batches(max_chunksize=write_rows):
                provider.online_write_batch(store.config, fv, _convert_arrow_to_proto(batch, fv, key_types), None)
            written += rows.num_rows
    store.registry.apply_materialization(fv, store.project, start, end)
    return {"online_rows": written, "buckets": n_buckets}
