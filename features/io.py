"""Dataset directory I/O: the one on-disk layout every importer writes and every stage reads.

Layout of a dataset directory ``DIR``::

    DIR/events/user_bucket=K/*.parquet   accepted events (EVENT_SCHEMA), hive-partitioned by user_id % 8
    DIR/rejected/rejected.parquet        bad input rows: raw values as strings + source + row + reason
    DIR/metadata.json                    format, counts, time range, ID stats, import report
    DIR/items.parquet                    item_id, count, first_ts
    DIR/vocab/{users,items}.parquet      original string ID -> int ID (importers that map IDs)
    DIR/truth/truth.parquet              synth only: per impression true_affinity
    DIR/truth/*.npy                      synth only: latent factors
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from argusrank.features.schema import EVENT_PARTITIONS, EVENT_SCHEMA, EVENT_TYPES, PARTITION_COLUMN

SORT_KEYS = [("user_id", "ascending", "at_start"), ("timestamp", "ascending", "at_start"),
             ("position", "ascending", "at_start")]
_PARTITIONING = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.int32())]), flavor="hive")


def sort_events(events: pa.Table) -> pa.Table:
    """Sort events by (user_id, timestamp, position); null positions (organic) first."""
    return events.sort_by(SORT_KEYS)


def _items_table(events: pa.Table) -> pa.Table:
    g = events.group_by("item_id").aggregate([("item_id", "count"), ("timestamp", "min")])
    t = pa.table({"item_id": g["item_id"], "count": g["item_id_count"].cast(pa.int64()),
                  "first_ts": g["timestamp_min"]})
    return t.sort_by("item_id")


def dataset_stats(events: pa.Table) -> dict[str, Any]:
    """Counts, time range and ID stats of an event table (for metadata.json)."""
    n = events.num_rows
    stats: dict[str, Any] = {"n_events": n}
    if n == 0:
        return stats
    ts = events["timestamp"]
    et = np.bincount(events["event_type"].to_numpy(), minlength=len(EVENT_TYPES))
    stats.update(
        n_users=pc.count_distinct(events["user_id"]).as_py(),
        n_items=pc.count_distinct(events["item_id"]).as_py(),
        max_user_id=pc.max(events["user_id"]).as_py(),
        max_item_id=pc.max(events["item_id"]).as_py(),
        min_item_id=pc.min(events["item_id"]).as_py(),
        min_timestamp=pc.min(ts).as_py(),
        max_timestamp=pc.max(ts).as_py(),
        n_organic=int(pc.sum(events["is_organic"].cast(pa.int64())).as_py() or 0),
        n_requests=pc.count_distinct(events["request_id"]).as_py(),  # nulls not counted
        event_types={EVENT_TYPES[i]: int(c) for i, c in enumerate(et) if c},
        has_played_ratio=events["played_ratio"].null_count < n,
        has_likes=events["liked"].null_count < n,
    )
    return stats


def write_dataset(
    out_dir: str | Path,
    events: pa.Table,
    rejected: pa.Table | None,
    metadata: dict,
    vocab: dict[str, pa.Table] | None = None,
) -> dict:
    """Write a dataset directory (see module docstring); returns the metadata written.

    ``events`` must hold the EVENT_SCHEMA columns; it is sorted and partitioned
    by ``user_bucket``. Any previous content of ``out_dir`` is replaced.
    ``vocab`` (optional) maps a name ("users", "items") to a table
    ``(id int64, raw string)`` written to ``DIR/vocab/<name>.parquet``.
    """
    out = Path(out_dir)
    for sub in ("events", "rejected", "vocab", "truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    events = sort_events(events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA))
    meta = dict(metadata)
    meta.update(dataset_stats(events))
    meta["n_rejected"] = 0 if rejected is None else rejected.num_rows
    meta["partitions"] = {"column": PARTITION_COLUMN, "n": EVENT_PARTITIONS}
    if events.num_rows:
        bucket = pc.cast(pc.bit_wise_and(events["user_id"], EVENT_PARTITIONS - 1), pa.int32())
        assert EVENT_PARTITIONS & (EVENT_PARTITIONS - 1) == 0  # power of two: AND == modulo
        ds.write_dataset(
            events.append_column(PARTITION_COLUMN, bucket), out / "events", format="parquet",
            partitioning=_PARTITIONING, existing_data_behavior="delete_matching",
            basename_template="part-{i}.parquet", preserve_order=True,
            max_rows_per_group=1 << 20,
        )
        pq.write_table(_items_table(events), out / "items.parquet")
    if rejected is not None:
        (out / "rejected").mkdir()
        pq.write_table(rejected, out / "rejected" / "rejected.parquet")
    if vocab:
        (out / "vocab").mkdir()
        for name, table in vocab.items():
            pq.write_table(table, out / "vocab" / f"{name}.parquet")
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def read_metadata(dataset_dir: str | Path) -> dict:
    """The dataset's metadata.json as a dict."""
    p = Path(dataset_dir) / "metadata.json"
    if not p.is_file():
        raise FileNotFoundError(f"not a dataset directory (no metadata.json): {dataset_dir}")
    return json.loads(p.read_text())


def read_events(
    dataset_dir: str | Path,
    columns: list[str] | None = None,
    user_buckets: Iterable[int] | None = None,
) -> pa.Table:
    """Read accepted events sorted by (user_id, timestamp, position).

    ``columns``: a subset of EVENT_SCHEMA names (default all); ``user_buckets``:
    only these ``user_id % 8`` shards (read without touching the others).
    """
    path = Path(dataset_dir) / "events"
    if not path.is_dir():
        raise FileNotFoundError(f"no events/ in dataset directory {dataset_dir}")
    columns = list(columns or EVENT_SCHEMA.names)
    unknown = [c for c in columns if c not in EVENT_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown event column(s) {unknown}; known: {EVENT_SCHEMA.names}")
    dset = ds.dataset(path, format="parquet", partitioning=_PARTITIONING)
    flt = None
    if user_buckets is not None:
        flt = ds.field(PARTITION_COLUMN).isin([int(b) for b in user_buckets])
    keys = [k[0] for k in SORT_KEYS]
    read_cols = columns + [k for k in keys if k not in columns]
    t = dset.to_table(columns=read_cols, filter=flt)
    t = t.cast(pa.schema([EVENT_SCHEMA.field(c) for c in read_cols]))
    return sort_events(t).select(columns)


def read_truth(dataset_dir: str | Path) -> pa.Table:
    """Synthetic datasets only: per-impression truth (user_id, request_id, item_id, timestamp, position, true_affinity)."""
    p = Path(dataset_dir) / "truth" / "truth.parquet"
    if not p.is_file():
        raise FileNotFoundError(f"no planted truth in {dataset_dir} (only synthetic datasets have one)")
    return pq.read_table(p)


def read_vocab(dataset_dir: str | Path, name: str) -> pa.Table | None:
    """The ID vocabulary ``name`` ("users" / "items": id -> raw string), or None if the IDs were kept as is."""
    p = Path(dataset_dir) / "vocab" / f"{name}.parquet"
    return pq.read_table(p) if p.is_file() else None
