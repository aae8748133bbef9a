"""A parquet folder's rows split once into one file per key bucket, for stages that read it bucket by bucket.

Materialization and the point-in-time join read a view one entity bucket (``key % n == b``) at a time. As a
scan-time filter, that predicate prunes no row group (parquet statistics hold the key's range, not its residue),
so each bucket decodes the whole view: work = buckets x rows, which made both stages grow faster than the data
(bench/README.md "50M events through every stage"). :class:`BucketSpill` scans the view once, in batches bounded
in bytes, writes each batch's rows to their bucket's Arrow IPC file (uncompressed), and reads a bucket back as one file:
work = 2 x rows, memory = one batch plus one bucket. The files sit in a hidden folder beside the view (the home
that holds the view has room for a copy of it) and are removed when the spill closes.
"""
from __future__ import annotations

import resource
import secrets
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from argusrank.features.io import SCAN_BOUNDS, scan_bounds

#: bucket counts from which a bucketed read spills first (fewer: a filtered scan per bucket costs about as much)
SPILL_FROM_BUCKETS = 8
#: rows waiting for their bucket's file, all buckets together (each bucket writes once it holds its share)
SPILL_BUFFER_BYTES = 64 << 20
#: uncompressed: with lz4 or zstd, 32 open writers held ~1 GB of Arrow memory while splitting a 415 MB view (none: 195 MB)
_IPC = pa.ipc.IpcWriteOptions(compression=None)


def _allow_open_files(n: int) -> None:
    """Raise the soft limit on open files to fit ``n`` more (one writer per bucket), up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise OSError(f"splitting into {n} bucket files needs {want} open files; the hard limit is {hard} "
                          "(raise `ulimit -n` or use fewer buckets)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def row_group_batches(data: ds.Dataset, columns: list[str], where: ds.Expression | None,
                      bytes_per_row: float = 0.0) -> Iterator[pa.RecordBatch]:
    """The rows of ``data`` passing ``where``, one row group read at a time (row groups pruned by their statistics),
    in batches of :func:`io.scan_bounds` rows. Not a dataset scan: a scan's consumer slower than its reader (writing
    every batch to 32 files) let decoded batches queue up to ~0.5 GB on a 415 MB view; this holds one row group."""
    rows = scan_bounds(bytes_per_row)["batch_size"]
    for fragment in data.get_fragments(filter=where):
        for group in fragment.split_by_row_group(filter=where):
            table = group.to_table(columns=columns, filter=where, **SCAN_BOUNDS)
            yield from table.to_batches(max_chunksize=rows)


class BucketSpill:
    """``path``'s rows passing ``where`` (``columns`` only), split by ``key % n_buckets`` into one file per bucket;
    :meth:`read` gives one bucket's rows (in scan order). Use as a context manager (removes the files)."""

    def __init__(self, path: Path, key: str, n_buckets: int, columns: list[str], where: ds.Expression | None = None,
                 bytes_per_row: float = 0.0):
        self.path, self.key, self.n_buckets = Path(path), key, int(n_buckets)
        data = ds.dataset(self.path, format="parquet")
        self.schema = pa.schema([data.schema.field(c) for c in columns])
        self.folder = self.path.parent / f".spill-{self.path.name}-{secrets.token_hex(4)}"
        self.folder.mkdir()
        try:
            self._split(data, columns, where, bytes_per_row)
        except BaseException:
            self.close()
            raise

    def _file(self, bucket: int) -> Path:
        return self.folder / f"{bucket}.arrow"

    def _split(self, data: ds.Dataset, columns: list[str], where: ds.Expression | None, bytes_per_row: float) -> None:
        _allow_open_files(self.n_buckets)
        share = max(1, SPILL_BUFFER_BYTES // self.n_buckets)
        sinks: dict[int, pa.NativeFile] = {}
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        pending: dict[int, list[pa.RecordBatch]] = {}
        held: dict[int, int] = {}  # bytes pending per bucket

        def flush(b: int) -> None:
            if b not in writers:
                sinks[b] = pa.OSFile(str(self._file(b)), "wb")
                writers[b] = pa.ipc.new_stream(sinks[b], self.schema, options=_IPC)
            writers[b].write_table(pa.Table.from_batches(pending.pop(b), self.schema).combine_chunks())
            held.pop(b)

        try:
            for batch in row_group_batches(data, columns, where, bytes_per_row):
                bucket = batch.column(self.key).to_numpy(zero_copy_only=False).astype(np.int64) % self.n_buckets
                order = np.argsort(bucket, kind="stable")
                cuts = np.searchsorted(bucket[order], np.arange(self.n_buckets + 1))
                for b in np.flatnonzero(np.diff(cuts)).tolist():
                    piece = batch.take(pa.array(order[cuts[b]:cuts[b + 1]]))
                    pending.setdefault(b, []).append(piece)
                    held[b] = held.get(b, 0) + piece.nbytes
                    if held[b] >= share:
                        flush(b)
            for b in list(pending):
                flush(b)
        finally:
            for w in writers.values():
                w.close()
            for f in sinks.values():
                f.close()

    def read(self, bucket: int) -> pa.Table:
        """The rows of ``bucket`` (an empty table with the columns when it has none)."""
        f = self._file(bucket)
        if not f.exists():
            return self.schema.empty_table()
        with pa.OSFile(str(f), "rb") as source, pa.ipc.open_stream(source) as reader:
            return reader.read_all()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "BucketSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
