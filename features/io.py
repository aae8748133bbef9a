"""Dataset directory I/O: the one on-disk layout every importer writes and every stage reads.

Layout of a dataset directory ``DIR``::

    DIR/events/user_bucket=K/*.parquet   accepted events (EVENT_SCHEMA), hive-partitioned by user_id % B
    DIR/rejected/rejected.parquet        bad input rows: raw values as strings + source + row + reason
    DIR/metadata.json                    format, counts, time range, ID stats, import report
    DIR/items.parquet                    item_id, count, first_ts
    DIR/vocab/{users,items}.parquet      original string ID -> int ID (importers that map IDs)
    DIR/truth/truth.parquet              synth only: per impression true_affinity
    DIR/truth/*.npy                      synth only: latent factors

Writes are atomic: :func:`write_dataset` builds the whole directory beside
``DIR`` and swaps it in by a rename when complete (:func:`atomic_dir`); the
single-file helpers :func:`atomic_write_text` / :func:`atomic_write_table` /
:func:`atomic_file` write a temporary file and rename it over the target. A
reader sees the previous content or the new one, never a partial write, and a
failed write leaves the previous content as it was.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from argusrank.features.schema import (EVENT_PARTITIONS, EVENT_SCHEMA, EVENT_TYPES, PARTITION_COLUMN,
                                       check_user_buckets, default_user_buckets)
from argusrank.features.validate import NoValidEvents

SORT_KEYS = [("user_id", "ascending", "at_start"), ("timestamp", "ascending", "at_start"),
             ("position", "ascending", "at_start")]
#: what a scan reads ahead (``Dataset.to_table`` options): Arrow's defaults (4 files x 16 batches of 128K rows) held
#: ~250 MB more than the rows kept while one user bucket's rows were filtered out of a 3M-event log's view; bounded,
#: the same scans ran no slower here (bench/README.md "Scale")
#: ``pre_buffer`` off: on, the parquet reader buffered most of a file ahead of the batches (a scan of a 415 MB
#: view held 584 MB above its batches' size, 194 MB without, and ran faster; bench/README.md "Spilled buckets")
SCAN_BOUNDS = {"batch_size": 32_768, "batch_readahead": 2, "fragment_readahead": 1,
               "fragment_scan_options": ds.ParquetFragmentScanOptions(pre_buffer=False)}
#: decoded bytes per scan batch of wide rows: a batch spans row groups, so rows of lists or vectors (~1.7 KB each for
#: user_item_priors) at 32K rows made each batch, and its read-ahead, hundreds of MB (bench/README.md "Scale")
SCAN_BATCH_BYTES = 8 << 20


def scan_bounds(bytes_per_row: float = 0.0) -> dict:
    """:data:`SCAN_BOUNDS` with batches of at most :data:`SCAN_BATCH_BYTES` for rows of ``bytes_per_row``
    (uncompressed; 0: unknown, the default batch)."""
    rows = SCAN_BOUNDS["batch_size"]
    if bytes_per_row > 0:
        rows = int(min(rows, max(1024, SCAN_BATCH_BYTES // bytes_per_row)))
    return {**SCAN_BOUNDS, "batch_size": rows}
EVENT_PARTITIONING = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.int32())]), flavor="hive")
#: the entries write_dataset owns in a dataset directory (replaced on every write; others are kept)
DATASET_ENTRIES = frozenset({"events", "rejected", "metadata.json", "items.parquet", "vocab", "truth"})


# --- atomic writes: write beside the target, rename into place when complete ----------------------
def _temp_beside(path: Path, tag: str) -> Path:
    """A fresh hidden name in path's folder that keeps path's suffix (np.save adds none)."""
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it, and on success it is renamed over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: str | Path, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file beside it, then rename); returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_table(table: pa.Table, path: str | Path, **write_options) -> Path:
    """Write ``table`` as parquet to ``path`` atomically (``pq.write_table`` options pass through)."""
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, **write_options)
    return Path(path)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(new: Path, path: Path) -> None:
    """Put directory ``new`` at ``path`` (replacing an existing directory there) and remove the old one."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    if _exchange(new, path):  # one step: a reader always sees the old or the new directory
        shutil.rmtree(new, ignore_errors=True)
        return
    old = _temp_beside(path, "old")
    os.rename(path, old)  # fallback: two renames (``path`` is missing between them)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | Path, keep: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield a new empty directory beside ``path``; on success it replaces ``path`` by a rename.

    The previous directory at ``path`` stays readable while the caller writes and
    is removed after the swap; on an exception the new directory is removed and
    the previous one is left untouched. ``keep(name)``: entries of the previous
    directory to move into the new one at the swap (when the new one has no
    entry of that name). A symlink at ``path`` is followed (its target is replaced).
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, "new")
    tmp.mkdir()  # not tempfile.mkdtemp: that would give the dataset mode 0700
    try:
        yield tmp
        moved = [e for e in (os.listdir(path) if keep is not None and path.is_dir() else [])
                 if keep(e) and not os.path.lexists(tmp / e)]
        try:
            for entry in moved:
                os.rename(path / entry, tmp / entry)
            _swap_in(tmp, path)
        except BaseException:
            for entry in moved:  # put the kept entries back before the new directory goes
                if os.path.lexists(tmp / entry) and not os.path.lexists(path / entry):
                    os.rename(tmp / entry, path / entry)
            raise
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def sort_events(events: pa.Table) -> pa.Table:
    """Sort events by (user_id, timestamp, position); null positions (organic) first."""
    return events.sort_by(SORT_KEYS)


def items_table(events: pa.Table) -> pa.Table:
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


def merge_stats(parts: list[dict[str, Any]], items: pa.Table) -> dict[str, Any]:
    """:func:`dataset_stats` of a table from those of its user buckets' tables (users never span buckets;
    ``items``: the merged items table). ``n_requests`` adds up: request IDs do not span users."""
    parts = [p for p in parts if p.get("n_events")]
    out: dict[str, Any] = {"n_events": sum(p["n_events"] for p in parts)}
    if not parts:
        return out
    total = lambda k: sum(p[k] for p in parts)  # noqa: E731
    types: dict[str, int] = {}
    for p in parts:
        for k, v in p["event_types"].items():
            types[k] = types.get(k, 0) + v
    out.update(
        n_users=total("n_users"), n_items=items.num_rows,
        max_user_id=max(p["max_user_id"] for p in parts), max_item_id=max(p["max_item_id"] for p in parts),
        min_item_id=min(p["min_item_id"] for p in parts), min_timestamp=min(p["min_timestamp"] for p in parts),
        max_timestamp=max(p["max_timestamp"] for p in parts), n_organic=total("n_organic"),
        n_requests=total("n_requests"), event_types={k: types[k] for k in EVENT_TYPES if k in types},
        has_played_ratio=any(p["has_played_ratio"] for p in parts), has_likes=any(p["has_likes"] for p in parts),
    )
    return out


def merge_items(a: pa.Table | None, b: pa.Table) -> pa.Table:
    """Two items tables (item_id, count, first_ts) as one."""
    if a is None:
        return b
    g = pa.concat_tables([a, b]).group_by("item_id").aggregate([("count", "sum"), ("first_ts", "min")])
    return pa.table({"item_id": g["item_id"], "count": g["count_sum"], "first_ts": g["first_ts_min"]}).sort_by("item_id")


def failed_dir(out_dir) -> Path:
    """Where an import with no valid row writes its rejected rows when ``out_dir`` holds a dataset."""
    out = Path(out_dir).resolve()
    return out.with_name(out.name + ".failed")


def fail_import(fmt: str, src, out_dir, rejected: pa.Table, report: dict, vocab: dict | None = None) -> None:
    """An import that accepted nothing: keep a previous dataset in ``out_dir`` (the rejected rows go to
    :func:`failed_dir`), else write the rejected rows there; raise NoValidEvents naming the top reasons."""
    keep_old = (Path(out_dir) / "events").is_dir()  # never replace a dataset by an empty one
    target = failed_dir(out_dir) if keep_old else Path(out_dir)
    write_dataset(target, EVENT_SCHEMA.empty_table(), rejected, report, vocab=vocab)
    n = report["input_rows"]
    reasons = "; ".join(f"{k} ({v})" for k, v in list(report["rejected_by_reason"].items())[:5])
    msg = f"{fmt}: no valid events in {src} ({n} rows rejected: {reasons})" if n else f"{fmt}: {src} has no data rows"
    if keep_old:
        msg += f"; the previous dataset in {out_dir} is kept, this import's rejected rows are in {target / 'rejected'}"
    raise NoValidEvents(msg, rejected_dir=target / "rejected")


def write_dataset(
    out_dir: str | Path,
    events: pa.Table,
    rejected: pa.Table | None,
    metadata: dict,
    vocab: dict[str, pa.Table] | None = None,
    truth: dict[str, pa.Table | np.ndarray] | None = None,
    user_buckets: int | None = None,
) -> dict:
    """Write a dataset directory (see module docstring); returns the metadata written.

    ``events`` must hold the EVENT_SCHEMA columns; it is sorted and partitioned
    by ``user_bucket`` = user_id % B, B = ``user_buckets`` (a power of two; default
    sized to the data, :func:`~argusrank.features.schema.default_user_buckets`),
    recorded as ``metadata["partitions"]["n"]``. ``vocab`` (optional) maps a name ("users", "items") to a
    table ``(id int64, raw string)`` written to ``DIR/vocab/<name>.parquet``;
    ``truth`` (optional) maps a name to a table (``truth/<name>.parquet``) or an
    array (``truth/<name>.npy``).

    Atomic: the new dataset is written to a temporary folder beside ``out_dir``
    and swapped in by a rename only when complete. Until then a previous dataset
    in ``out_dir`` stays readable; if writing fails it is left untouched. The
    layout entries of a previous dataset are replaced; other entries in
    ``out_dir`` are kept.
    """
    events = sort_events(events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA))
    meta = dict(metadata)
    meta.update(dataset_stats(events))
    meta["n_rejected"] = 0 if rejected is None else rejected.num_rows
    n_buckets = check_user_buckets(user_buckets) if user_buckets else default_user_buckets(events.num_rows)
    meta["partitions"] = {"column": PARTITION_COLUMN, "n": n_buckets}
    with atomic_dir(out_dir, keep=lambda name: name not in DATASET_ENTRIES) as out:
        if events.num_rows:
            bucket = pc.cast(pc.bit_wise_and(events["user_id"], n_buckets - 1), pa.int32())  # power of two: AND == %
            ds.write_dataset(
                events.append_column(PARTITION_COLUMN, bucket), out / "events", format="parquet",
                partitioning=EVENT_PARTITIONING, existing_data_behavior="error",
                basename_template="part-{i}.parquet", preserve_order=True,
                max_rows_per_group=1 << 20,
            )
        pq.write_table(items_table(events), out / "items.parquet")
        for sub, tables in (("rejected", {"rejected": rejected} if rejected is not None else {}),
                            ("vocab", vocab or {}), ("truth", truth or {})):
            for name, value in tables.items():
                (out / sub).mkdir(exist_ok=True)
                if isinstance(value, np.ndarray):
                    np.save(out / sub / f"{name}.npy", value)
                else:
                    pq.write_table(value, out / sub / f"{name}.parquet")
        (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def user_buckets_of(dataset_dir: str | Path) -> int:
    """The number of user buckets the dataset's events are partitioned into (8 for datasets that predate it)."""
    return int(read_metadata(dataset_dir).get("partitions", {}).get("n", EVENT_PARTITIONS))


def worker_shard(rank: int, world: int, n_buckets: int) -> tuple[list[int], int, int]:
    """What training worker ``rank`` of ``world`` reads: ``(buckets, modulus, remainder)``, the user buckets and,
    inside them, the users with ``(user_id // n_buckets) % modulus == remainder``.

    Up to ``n_buckets`` workers split the buckets (``b % world == rank``, modulus 1); more workers share a bucket
    and split its users, so the worker count is free of the bucket count. Over all ranks the shards partition the
    users, and each worker reads at most ``ceil(n_buckets / world)`` buckets."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world} workers")
    if world <= n_buckets:
        return [b for b in range(n_buckets) if b % world == rank], 1, 0
    bucket = rank % n_buckets
    sharing = len(range(bucket, world, n_buckets))  # workers bucket, bucket + B, bucket + 2B, ... < world
    return [bucket], sharing, rank // n_buckets


def select_users(events: pa.Table, n_buckets: int, modulus: int, remainder: int) -> pa.Table:
    """The rows of ``events`` whose user is in :func:`worker_shard`'s share ``(modulus, remainder)``."""
    if modulus == 1:
        return events
    uid = events["user_id"].to_numpy()
    return events.filter(pa.array((uid // n_buckets) % modulus == remainder))


def users_filter(n_buckets: int, modulus: int, remainder: int) -> ds.Expression | None:
    """:func:`select_users` as a dataset filter, applied while the files are scanned (a worker sharing a bucket
    never holds the other workers' rows); None for a whole bucket. User IDs are >= 0 (importer rule)."""
    if modulus == 1:
        return None
    q = ds.field("user_id") / int(n_buckets)  # integer division on int64
    return (q - (q / int(modulus)) * int(modulus)) == int(remainder)


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
    users: tuple[int, int] = (1, 0),
    time_range: tuple[int, int] | None = None,
    user_mod: tuple[int, int] | None = None,
    user_ids: np.ndarray | None = None,
) -> pa.Table:
    """Read accepted events sorted by (user_id, timestamp, position).

    ``columns``: a subset of EVENT_SCHEMA names (default all); ``user_buckets``:
    only these ``user_id % B`` shards (B = :func:`user_buckets_of`; read without touching the others);
    ``users``: (modulus, remainder) of :func:`worker_shard`, filtered while scanning (:func:`users_filter`);
    ``time_range``: ``(t_from, t_to)``, only events with ``t_from <= timestamp < t_to``, filtered while scanning;
    ``user_mod``: ``(n, b)``, only users with ``user_id % n == b`` (any ``n``; reads only the shards that can hold
    them), filtered while scanning; ``user_ids``: only these users (reads only their shards).
    """
    path = Path(dataset_dir) / "events"
    if not path.is_dir():
        raise FileNotFoundError(f"no events/ in dataset directory {dataset_dir}")
    columns = list(columns or EVENT_SCHEMA.names)
    unknown = [c for c in columns if c not in EVENT_SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown event column(s) {unknown}; known: {EVENT_SCHEMA.names}")
    dset = ds.dataset(path, format="parquet", partitioning=EVENT_PARTITIONING)
    flt = None
    if user_buckets is not None:
        flt = ds.field(PARTITION_COLUMN).isin([int(b) for b in user_buckets])
    if users[0] != 1:  # a worker's share of its buckets' users, filtered while scanning
        by_user = users_filter(user_buckets_of(dataset_dir), *users)
        flt = by_user if flt is None else flt & by_user
    if user_mod is not None:
        n, b = int(user_mod[0]), int(user_mod[1])
        g = math.gcd(n, user_buckets_of(dataset_dir))  # user_id % n == b only in shards k with k % g == b % g
        shards = [k for k in range(user_buckets_of(dataset_dir)) if k % g == b % g]
        uid = ds.field("user_id")
        by_mod = (ds.field(PARTITION_COLUMN).isin(shards)) & ((uid - (uid / n) * n) == b)
        flt = by_mod if flt is None else flt & by_mod
    if user_ids is not None:
        ids = np.unique(np.asarray(user_ids, np.int64))
        shards = np.unique(ids % user_buckets_of(dataset_dir)).tolist()
        by_ids = ds.field(PARTITION_COLUMN).isin(shards) & ds.field("user_id").isin(pa.array(ids))
        flt = by_ids if flt is None else flt & by_ids
    if time_range is not None:
        in_range = (ds.field("timestamp") >= int(time_range[0])) & (ds.field("timestamp") < int(time_range[1]))
        flt = in_range if flt is None else flt & in_range
    keys = [k[0] for k in SORT_KEYS]
    read_cols = columns + [k for k in keys if k not in columns]
    t = dset.to_table(columns=read_cols, filter=flt, **SCAN_BOUNDS)
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
