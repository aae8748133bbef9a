"""Yambda flat parquet -> dataset directory, streamed: memory bounded by one record batch and one user bucket.

Yambda releases come in 50M, 500M and 5B events; reading them whole does not fit one machine. The import
runs in two passes over bounded pieces:

1. each file is read by record batches (``batch_rows``); a batch gets the row rules (types, ranges, event
   type, UTF-8) of ``features/validate.py``; its rejected rows go to the rejected file, its accepted rows —
   with their raw values and input position — are spilled to one folder per user bucket (``user_id % S``,
   S sized to the input rows);
2. one final bucket (``user_id % B``, B sized to the accepted rows, S a multiple of it) at a time: the rules
   that need a user's other rows (later duplicates of (uid, item, timestamp, event type) are rejected;
   steps back in time are counted), the sort, the bucket's events file and its share of the statistics.

The result equals the import of the files read whole (rejected rows in input order included):
tests/test_data_yambda_stream.py runs every case with a batch of a few rows. Mapping of the columns: see
``features/importers.py``. Both passes are lists of independent units (pass 1: a file's row groups; pass 2: a
final bucket) that ``workers`` > 1 runs as Ray tasks (``features/parallel.py``), on a local Ray or the cluster at
``ray_address``; each unit writes its own spill / events / rejected files, merged in unit order, so the result is the
same for any number of workers (tested).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm import tqdm

from argusrank.features.io import (DATASET_ENTRIES, SCAN_BOUNDS, atomic_dir, dataset_stats, fail_import,
                                   failed_dir, items_table, merge_items, merge_stats, sort_events)
from argusrank.features.parallel import parallel_session, run_units
from argusrank.features.schema import (EVENT_SCHEMA, EVENT_TYPE_CODE, PARTITION_COLUMN, check_user_buckets,
                                       default_user_buckets, event_columns, nullable)
from argusrank.features.validate import (MAX_TIMESTAMP, Checker, SchemaError, UnreadableInput, as_text,
                                         check_compatible_types, require_columns, utf8_bad_rows)

YAMBDA_FILES = {"listens": "listen", "likes": "like", "dislikes": "dislike", "unlikes": "unlike", "undislikes": "undislike"}
YAMBDA_COLUMNS = ["uid", "item_id", "timestamp", "is_organic", "played_ratio_pct", "track_length_seconds", "event_type"]
KINDS = ["listen", "like", "dislike", "unlike", "undislike"]
BATCH_ROWS = 1 << 18  # rows per record batch of pass 1 (~200 MB of working memory)


def yambda_files(src: Path) -> list[Path]:
    """The parquet files of a Yambda source: one file, or every ``*.parquet`` under a folder."""
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(f for f in src.rglob("*.parquet") if f.is_file())
        if files:
            return files
        raise FileNotFoundError(f"yambda: no .parquet files under {src}")
    raise FileNotFoundError(f"yambda: no such file or folder {src}")


def _open(src, files: list[Path]) -> list[pq.ParquetFile]:
    """Open every file and check its columns before anything is written (unreadable -> UnreadableInput)."""
    opened = []
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:  # empty, truncated, not parquet, I/O error
            raise UnreadableInput(f"yambda: cannot read {path} as parquet: {exc}") from exc
        schema = pf.schema_arrow
        require_columns(schema.empty_table(), ["uid", "item_id", "timestamp", "is_organic"], f"yambda {path.name}")
        if "event_type" not in schema.names and path.stem not in YAMBDA_FILES:
            raise SchemaError(f"yambda {path.name}: no 'event_type' column and the file name is not one of "
                              f"{sorted(YAMBDA_FILES)} or multi_event")
        opened.append(pf)
    try:
        check_compatible_types([pf.schema_arrow for pf in opened], YAMBDA_COLUMNS, [f.name for f in files])
    except SchemaError as exc:
        raise SchemaError(f"yambda {src}: {exc}") from None
    return opened


def _text_column(col: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """Binary or invalid-UTF-8 string column -> valid string column (bad values null) + bad-value mask."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col.validate(full=True)
            return col, None
        except pa.ArrowInvalid:  # parquet readers do not check UTF-8
            col = col.cast(pa.large_binary())
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        return col, None
    bad = utf8_bad_rows(col)
    return pc.if_else(pa.array(bad), pa.scalar(None, col.type), col).cast(pa.string()), bad


def _raw(t: pa.Table, path: Path) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """A batch's YAMBDA_COLUMNS (missing optional ones null, event_type from the file name) + invalid-UTF-8 masks."""
    n, cols, bad = t.num_rows, {}, {}
    for c in YAMBDA_COLUMNS:
        if c in t.column_names:
            cols[c], mask = _text_column(t[c])
            if mask is not None:
                bad[c] = mask
        elif c == "event_type":
            cols[c] = pa.chunked_array([pa.repeat(pa.scalar(YAMBDA_FILES[path.stem]), n)], pa.string())
        else:
            cols[c] = pa.chunked_array([pa.nulls(n, pa.float64())])
    try:
        cols["event_type"] = pc.cast(cols["event_type"], pa.string())
    except pa.ArrowException as exc:
        raise SchemaError(f"yambda {path.name}: column 'event_type' of type {cols['event_type'].type} "
                          f"is not text ({exc})") from exc
    return pa.table(cols), bad


def _row_rules(raw: pa.Table, bad: dict[str, np.ndarray], source: str, row0: int) -> tuple[Checker, dict]:
    """The rules of one row alone, over a batch; returns the checker and the parsed EVENT_SCHEMA columns."""
    ck = Checker(raw, source=np.full(raw.num_rows, source, dtype=object), row=row0 + np.arange(raw.num_rows))
    for c, mask in bad.items():
        ck.fail(mask, f"{c}: invalid UTF-8 bytes")
    user, item = ck.int_column("uid", lo=0), ck.int_column("item_id", lo=0)
    ts = ck.int_column("timestamp", lo=0, hi=MAX_TIMESTAMP)
    organic = ck.bool_column("is_organic", required=True)
    pct = ck.float_column("played_ratio_pct", lo=0.0)
    ck.float_column("track_length_seconds", lo=0.0)
    et_str = pc.fill_null(raw["event_type"], "")
    ck.fail(~pc.is_in(et_str, pa.array(KINDS)).to_numpy(zero_copy_only=False), f"event_type: not one of {KINDS}")
    kind = pc.index_in(et_str, pa.array(KINDS)).to_numpy(zero_copy_only=False)
    kind = np.nan_to_num(np.asarray(kind, dtype=np.float64), nan=0).astype(np.int64)
    et = np.array([EVENT_TYPE_CODE[k] for k in KINDS], np.int8)[kind]
    played = np.minimum(np.nan_to_num(pct.values) / 100.0, 1.0).astype(np.float32)  # replays/seeks clipped to 1
    liked_known, disliked_known = (kind == 1) | (kind == 3), (kind == 2) | (kind == 4)
    events = event_columns(
        ck.n, user.values, item.values, ts.values, organic.values, et,
        played_ratio=nullable(played, pct.null | (kind != 0), pa.float32()),
        liked=nullable(kind == 1, ~liked_known, pa.bool_()), disliked=nullable(kind == 2, ~disliked_known, pa.bool_()))
    return ck, events


def _batches(path: Path, pf: pq.ParquetFile, batch_rows: int, row_groups: list[int]) -> Iterator[pa.RecordBatch]:
    """Those row groups' YAMBDA_COLUMNS by record batches, read lazily (a corrupt page -> UnreadableInput)."""
    it = pf.iter_batches(batch_size=batch_rows, row_groups=row_groups,
                         columns=[c for c in YAMBDA_COLUMNS if c in pf.schema_arrow.names])
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableInput(f"yambda: cannot read {path} as parquet: {exc}") from exc
        yield batch


REJECTED_SCHEMA = pa.schema([(c, pa.string()) for c in YAMBDA_COLUMNS] + [("source", pa.string()), ("row", pa.int64()),
                                                                          ("reason", pa.string()), ("_file", pa.int32())])


def _write_rejected(path: Path, rejected: pa.Table) -> None:
    """Rejected rows (with their ``_file``) of one batch or bucket to a file of their own; nothing for none."""
    if rejected.num_rows:
        pq.write_table(rejected.select(REJECTED_SCHEMA.names).cast(REJECTED_SCHEMA), path)


def _pass1_units(files: list[Path], opened: list[pq.ParquetFile], batch_rows: int) -> list[tuple]:
    """(file index, path, row groups, first row) per unit: a file's row groups in runs of >= ``batch_rows`` rows."""
    units = []
    for fi, (path, pf) in enumerate(zip(files, opened)):
        row0, start, n = 0, 0, 0
        for g in range(pf.metadata.num_row_groups):
            n += pf.metadata.row_group(g).num_rows
            if n >= batch_rows or g == pf.metadata.num_row_groups - 1:
                units.append((fi, str(path), list(range(start, g + 1)), row0))
                row0, start, n = row0 + n, g + 1, 0
    return units


def _spill(fi: int, path: str, row_groups: list[int], row0: int, work: Path, n_spill: int, batch_rows: int) -> dict:
    """Pass 1, one unit: row rules per batch; rejected rows to ``work/rejected``, accepted ones to
    ``work/spill/user_bucket=S``: one file per spill bucket for the unit, a row group per batch (files do not
    multiply with batches x buckets). Returns the unit's counts."""
    path = Path(path)
    stats = {"input_rows": 0, "accepted": 0, "reasons": {}}
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for bi, batch in enumerate(_batches(path, pq.ParquetFile(path), batch_rows, row_groups)):
            raw, bad = _raw(pa.Table.from_batches([batch]), path)
            ck, events = _row_rules(raw, bad, path.name, row0)
            accepted, rej = ck.split(events)
            _count(stats["reasons"], ck.report())
            _write_rejected(work / "rejected" / f"p1-f{fi}-g{row_groups[0]}-b{bi}.parquet",
                            rej.append_column("_file", pa.array(np.full(rej.num_rows, fi, np.int32))))
            if accepted.num_rows:
                keep = pa.array(ck.ok)
                out = accepted
                for k, v in {**{f"raw_{c}": as_text(raw[c]).filter(keep) for c in YAMBDA_COLUMNS},
                             "_file": pa.array(np.full(accepted.num_rows, fi, np.int32)),
                             "_row": pa.array(ck.row[ck.ok])}.items():
                    out = out.append_column(k, v)
                _spill_by_bucket(out, accepted["user_id"].to_numpy() & (n_spill - 1), writers, work / "spill",
                                 f"f{fi}-g{row_groups[0]}.parquet")
            stats["input_rows"] += ck.n
            stats["accepted"] += accepted.num_rows
            row0 += ck.n
    finally:
        for w in writers.values():
            w.close()
    return stats


def _spill_by_bucket(t: pa.Table, bucket: np.ndarray, writers: dict[int, pq.ParquetWriter], spill: Path,
                     name: str) -> None:
    """Append each spill bucket's rows of ``t`` (input order kept) to that bucket's open file ``name``."""
    order = np.argsort(bucket, kind="stable")
    t, bucket = t.take(pa.array(order)), bucket[order]
    cuts = [0, *(np.flatnonzero(np.diff(bucket)) + 1).tolist(), len(bucket)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        b = int(bucket[lo])
        if b not in writers:
            folder = spill / f"{PARTITION_COLUMN}={b}"
            folder.mkdir(parents=True, exist_ok=True)
            writers[b] = pq.ParquetWriter(folder / name, t.schema)
        writers[b].write_table(t.slice(lo, hi - lo).cast(writers[b].schema))


def _count(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def _bucket(names: list[str], work: Path, b: int, n_buckets: int, n_spill: int):
    """Pass 2, final bucket ``b``: its sorted events to ``work/events/user_bucket=b``, its rejected rows to
    ``work/rejected``; returns (stats, items table, steps back in time, counts by reason), None for no events."""
    parts = [work / "spill" / f"{PARTITION_COLUMN}={s}" for s in range(b, n_spill, n_buckets)]
    parts = [p for p in parts if p.is_dir()]
    if not parts:
        return None
    files = [f for p in parts for f in sorted(p.glob("*.parquet"))]  # one per pass-1 unit: bounded read-ahead
    t = ds.dataset(files, format="parquet").to_table(**SCAN_BOUNDS).sort_by([("_file", "ascending"), ("_row", "ascending")])
    raw = pa.table({c: t[f"raw_{c}"] for c in YAMBDA_COLUMNS})
    ck = Checker(raw, source=np.array(names, dtype=object)[t["_file"].to_numpy()], row=t["_row"].to_numpy())
    user, ts = t["user_id"].to_numpy(), t["timestamp"].to_numpy()
    ck.duplicates({"uid": user, "item_id": t["item_id"].to_numpy(), "timestamp": ts,
                   "event_type": t["event_type"].to_numpy()})
    n_ooo = ck.time_order(user, ts)
    accepted, rej = ck.split({f.name: t[f.name] for f in EVENT_SCHEMA})
    _write_rejected(work / "rejected" / f"p2-b{b}.parquet", rej.append_column("_file", t["_file"].filter(pa.array(~ck.ok))))
    events = sort_events(accepted)  # never empty: the first copy of a duplicate is kept
    (work / "events" / f"{PARTITION_COLUMN}={b}").mkdir(parents=True)
    pq.write_table(events, work / "events" / f"{PARTITION_COLUMN}={b}" / "part-0.parquet", row_group_size=1 << 20)
    return dataset_stats(events), items_table(events), n_ooo, ck.report()


def _passes(files, opened, work: Path, n_spill: int, user_buckets: int | None, batch_rows: int, workers: int):
    """Both passes; returns (pass-1 counts, final bucket count, stats by bucket, steps back in time, items)."""
    (work / "rejected").mkdir()
    s = {"input_rows": 0, "accepted": 0, "reasons": {}}
    for part in run_units(_spill, [(*u, work, n_spill, batch_rows) for u in _pass1_units(files, opened, batch_rows)],
                          workers, "import: validate"):
        s["input_rows"] += part["input_rows"]
        s["accepted"] += part["accepted"]
        _count(s["reasons"], part["reasons"])
    n_buckets = check_user_buckets(user_buckets) if user_buckets else min(n_spill, default_user_buckets(s["accepted"]))
    if n_spill % n_buckets:
        raise ValueError(f"spill_buckets={n_spill} is not a multiple of user_buckets={n_buckets}")
    names = [f.name for f in files]
    got = run_units(_bucket, [(names, work, b, n_buckets, n_spill) for b in range(n_buckets)], workers,
                    "import: sort user buckets")  # one bucket in memory per worker
    buckets, n_ooo, items = {}, 0, None
    for b, res in enumerate(got):
        if res is None:
            continue
        buckets[b], bucket_items, ooo, reasons = res
        _count(s["reasons"], reasons)
        n_ooo += ooo
        items = merge_items(items, bucket_items)
    return s, n_buckets, buckets, n_ooo, items


def import_yambda(src, out_dir, user_buckets: int | None = None, batch_rows: int | None = None,
                  spill_buckets: int | None = None, workers: int = 1, ray_address: str | None = None) -> dict:
    """Yambda flat parquet file or folder of files -> dataset (see the module docstring); returns its metadata.
    ``batch_rows``: rows per record batch of pass 1 (default :data:`BATCH_ROWS`); ``spill_buckets``: pass 1's
    buckets (default: the final count, or sized to the input rows), a multiple of the final count; ``workers``:
    units run at once as Ray tasks (1: in this process), on the Ray this process uses, else the cluster at
    ``ray_address``, else a local one."""
    batch_rows = int(batch_rows or BATCH_ROWS)
    files = yambda_files(Path(src))
    opened = _open(src, files)
    n_input = sum(pf.metadata.num_rows for pf in opened)
    n_spill = check_user_buckets(spill_buckets or user_buckets or default_user_buckets(n_input))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.import-", dir=out_dir.parent))
    try:
        with parallel_session(workers, ray_address):
            s, n_buckets, buckets, n_ooo, items = _passes(files, opened, work, n_spill, user_buckets, batch_rows, workers)
        parts = sorted((work / "rejected").glob("*.parquet"))
        rejected_rows = (pa.concat_tables([pq.read_table(f) for f in parts]) if parts
                         else REJECTED_SCHEMA.empty_table())  # -> input order: file, then row
        rejected_rows = rejected_rows.sort_by([("_file", "ascending"), ("row", "ascending")]).drop_columns(["_file"])
        n_acc = sum(p["n_events"] for p in buckets.values())
        report = {"format": "yambda", "source": str(src), "input_rows": s["input_rows"], "accepted": n_acc,
                  "rejected": rejected_rows.num_rows, "rejected_by_reason": s["reasons"], "n_out_of_order": n_ooo,
                  "files": [f.name for f in files]}
        if not n_acc:
            fail_import("yambda", src, out_dir, rejected_rows, report)
        meta = {**report, **merge_stats(list(buckets.values()), items), "n_rejected": rejected_rows.num_rows,
                "partitions": {"column": PARTITION_COLUMN, "n": n_buckets}}
        with atomic_dir(out_dir, keep=lambda name: name not in DATASET_ENTRIES) as out:
            shutil.move(str(work / "events"), out / "events")
            pq.write_table(items, out / "items.parquet")
            (out / "rejected").mkdir()
            pq.write_table(rejected_rows, out / "rejected" / "rejected.parquet")
            (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        shutil.rmtree(failed_dir(out_dir), ignore_errors=True)  # a stale failed attempt
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)
