"""Importers: public interaction logs -> validated dataset directory (see features/io.py).

``import_dataset(fmt, src, out_dir)`` reads the source, validates every row
(features/validate.py), writes accepted events and rejected rows and returns a
report. Format mappings (also in the README):

- ``yambda``: flat parquet ``uid, item_id, timestamp, is_organic, played_ratio_pct,
  track_length_seconds`` from ``listens``/``likes``/``dislikes``/``unlikes``/
  ``undislikes`` files (the event type is the file name) or ``multi_event``
  (an ``event_type`` column). ``played_ratio = played_ratio_pct / 100`` (values
  above 100 %, i.e. replays/seeks, clipped to 1); like -> ``liked=True``,
  dislike -> ``disliked=True``, unlike -> ``liked=False``, undislike ->
  ``disliked=False``; other feedback null. No requests in Yambda.
- ``movielens``: ``user_id item_id rating timestamp`` separated by tab, ``::`` or
  comma (csv with a header ``userId,movieId,rating,timestamp``). Rating in [0, 5]:
  ``liked = rating >= 4``, ``disliked = rating <= 2``, rating 2.5-3.5 is neutral
  (grade "listen"); ``played_ratio`` null, ``rating`` kept, ``is_organic`` True.
- ``sasrec``: ``user item`` per line in time order; the 0-based line index
  becomes the timestamp; string IDs map to ints by first appearance (users from
  0, items from 1) with ``vocab/users.parquet`` and ``vocab/items.parquet``.
- ``movielens-100k``: ``pip download --no-deps recbole==1.2.1`` into a cache and
  the wheel's ``ml-100k.inter`` read as movielens (recbole is never imported).

Text rows: ``row`` in rejected/ is the 0-based physical line index in ``source``.
Text input is UTF-8 (a leading BOM is dropped); a field with bytes that are not
UTF-8 rejects its row (``"<field>: invalid UTF-8 bytes"``), so distinct IDs with
bad bytes are never merged. Unreadable input (empty, truncated or non-parquet
files, UTF-16 text, I/O errors) raises UnreadableInput (a SchemaError) naming
the file. When nothing valid remains (NoValidEvents) a previous dataset in
``out_dir`` is kept and the rejected rows go to ``<out_dir>.failed/``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from argusrank.features.io import fail_import, failed_dir, write_dataset
from argusrank.features.text_input import read_input_bytes, split_fields, text_lines
from argusrank.features.schema import EVENT_TYPE_CODE, event_columns, nullable
from argusrank.features.yambda import import_yambda
from argusrank.features.validate import (
    MAX_TIMESTAMP,
    Checker,
    NoValidEvents,
    SchemaError,
    UnreadableInput,
)

FORMATS = ("yambda", "movielens", "sasrec", "movielens-100k")
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
LIKE_AT, DISLIKE_AT = 4.0, 2.0  # movielens rating thresholds


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "argusrank"


# --- text parsing (vectorized: pyarrow string kernels over all lines at once) -------------------
def _text_checker(lines, line_idx, alt, sep: str | None, names: list[str], source: str) -> tuple[Checker, pa.Table]:
    """Checker over the split lines: wrong field counts and fields with bad bytes already failed."""
    raw, wrong = split_fields(lines, sep, names)
    ck = Checker(raw, source=np.full(len(line_idx), source, dtype=object), row=line_idx)
    ck.fail(wrong, f"line: expected {len(names)} fields ({' '.join(names)}) separated by {sep or 'whitespace'!r}")
    if alt is not None:
        alt_raw, _ = split_fields(alt, sep, names)
        for n in names:
            differs = pc.fill_null(pc.not_equal(raw[n], alt_raw[n]), False).to_numpy(zero_copy_only=False)
            ck.fail(differs, f"{n}: invalid UTF-8 bytes")
    return ck, raw


def _detect_sep(first: str) -> str | None:
    if "::" in first:
        return "::"
    for sep in ("\t", ","):
        if sep in first:
            return sep
    return None  # whitespace


_ML_ALIASES = {
    "user_id": ("user_id", "userid", "user", "uid"),
    "item_id": ("item_id", "itemid", "movie_id", "movieid", "item", "movie"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "time", "ts"),
}


def _header_names(header: str, sep: str | None, what: str) -> tuple[list[str], list[str]]:
    """Map a header line to canonical names; RecBole-style ``name:type`` suffixes dropped."""
    raw = header.split(sep) if sep else header.split()
    norm = [h.strip().split(":")[0].lower() for h in raw]
    names = []
    for h in norm:
        canon = next((c for c, al in _ML_ALIASES.items() if h in al), h)
        names.append(canon)
    for c in _ML_ALIASES:
        if c not in names:
            raise SchemaError(f"{what}: header has no {c!r} column (header: {header.strip()!r})")
    return names, raw


# --- event column helpers ---------------------------------------------------------------------
def _finish(fmt: str, src, out_dir, checker: Checker, events: dict, n_out_of_order: int,
            vocab: dict | None = None, extra: dict | None = None, user_buckets: int | None = None) -> dict:
    accepted, rejected = checker.split(events)
    assert accepted.num_rows + rejected.num_rows == checker.n
    report = {
        "format": fmt, "source": str(src), "input_rows": checker.n,
        "accepted": accepted.num_rows, "rejected": rejected.num_rows,
        "rejected_by_reason": checker.report(), "n_out_of_order": n_out_of_order,
        **(extra or {}),
    }
    if accepted.num_rows:
        meta = write_dataset(out_dir, accepted, rejected, report, vocab=vocab, user_buckets=user_buckets)
        shutil.rmtree(failed_dir(out_dir), ignore_errors=True)  # a stale failed attempt
        return meta
    fail_import(fmt, src, out_dir, rejected, report, vocab=vocab)


# --- movielens ----------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _movielens_from_bytes(data: bytes, source: str, out_dir, fmt: str, src, user_buckets: int | None = None) -> dict:
    lines, line_idx, alt = text_lines(data, f"{fmt} {src}")
    if len(lines) == 0:
        raise UnreadableInput(f"{fmt}: {src} is empty")
    first = lines[0].as_py()
    sep = _detect_sep(first)
    if not any(_NUMBER.match(f.strip()) for f in (first.split(sep) if sep else first.split())):  # header line
        names, _ = _header_names(first, sep, f"{fmt} {src}")
        lines, line_idx = lines.slice(1), line_idx[1:]
        alt = None if alt is None else alt.slice(1)
    else:
        names = list(_ML_ALIASES)
    ck, raw = _text_checker(lines, line_idx, alt, sep, names, source)
    user = ck.int_column("user_id", lo=0)
    item = ck.int_column("item_id", lo=0)
    rating = ck.float_column("rating", required=True, lo=0.0, hi=5.0)
    ts = ck.int_column("timestamp", lo=0, hi=MAX_TIMESTAMP)
    et = np.full(ck.n, EVENT_TYPE_CODE["rating"], np.int8)
    ck.duplicates({"user_id": user.values, "item_id": item.values, "timestamp": ts.values})
    n_ooo = ck.time_order(user.values, ts.values)
    r = rating.values
    events = event_columns(
        ck.n, user.values, item.values, ts.values, np.ones(ck.n, bool), et,
        liked=nullable(r >= LIKE_AT, rating.null, pa.bool_()),
        disliked=nullable(r <= DISLIKE_AT, rating.null, pa.bool_()),
        rating=nullable(np.nan_to_num(r).astype(np.float32), rating.null, pa.float32()),
    )
    return _finish(fmt, src, out_dir, ck, events, n_ooo, user_buckets=user_buckets,
                   extra={"separator": sep or "whitespace",
                          "rating_mapping": f"liked=rating>={LIKE_AT}, disliked=rating<={DISLIKE_AT}"})


def import_movielens(src, out_dir, user_buckets: int | None = None) -> dict:
    """MovieLens ratings file (tab, ``::`` or csv with header) -> dataset."""
    p = Path(src)
    return _movielens_from_bytes(read_input_bytes(p, "movielens"), p.name, out_dir, "movielens", src, user_buckets)


def fetch_ml100k(cache_dir=None) -> Path:
    """The recbole 1.2.1 wheel in the cache (``pip download --no-deps`` if missing)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    wheel = cache / RECBOLE_WHEEL
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "recbole==1.2.1", "-d", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"movielens-100k: `{' '.join(cmd)}` failed (rc={proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    return wheel


def import_movielens_100k(src, out_dir, cache_dir=None, user_buckets: int | None = None) -> dict:
    """ml-100k from the recbole wheel (``src``: None to download, or a wheel / .inter file)."""
    path = Path(src) if src else fetch_ml100k(cache_dir)
    if path.suffix == ".inter":
        data, name = read_input_bytes(path, "movielens-100k"), path.name
    else:
        if not path.is_file():
            raise FileNotFoundError(f"movielens-100k: no such file {path}")
        try:
            with zipfile.ZipFile(path) as zf:
                if ML100K_MEMBER not in zf.namelist():
                    raise SchemaError(f"movielens-100k: {path} has no {ML100K_MEMBER}")
                data, name = zf.read(ML100K_MEMBER), "ml-100k.inter"
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UnreadableInput(f"movielens-100k: cannot read {path} as a wheel (zip): {exc}") from exc
    return _movielens_from_bytes(data, name, out_dir, "movielens-100k", path, user_buckets)


# --- sasrec -------------------------------------------------------------------------------------
def import_sasrec(src, out_dir, user_buckets: int | None = None) -> dict:
    """``user item`` lines in time order -> dataset (line index = timestamp, vocab-mapped IDs)."""
    p = Path(src)
    lines, line_idx, alt = text_lines(read_input_bytes(p, "sasrec"), f"sasrec {p}")
    if len(lines) == 0:
        raise UnreadableInput(f"sasrec: {p} is empty")
    ck, raw = _text_checker(lines, line_idx, alt, None, ["user", "item"], p.name)
    ok = pa.array(ck.ok)
    vocab, ids = {}, {}
    for name, col, start in (("users", "user", 0), ("items", "item", 1)):
        enc = pc.dictionary_encode(raw[col].filter(ok)).combine_chunks()  # first appearance order
        vocab[name] = pa.table({"id": pa.array(np.arange(len(enc.dictionary)) + start, pa.int64()),
                                "raw": enc.dictionary})
        full = np.zeros(ck.n, np.int64)
        full[ck.ok] = enc.indices.to_numpy(zero_copy_only=False) + start
        ids[name] = full
    n = ck.n
    events = event_columns(n, ids["users"], ids["items"], line_idx, np.ones(n, bool),
                     np.full(n, EVENT_TYPE_CODE["interaction"], np.int8))
    return _finish("sasrec", src, out_dir, ck, events, 0, vocab=vocab, user_buckets=user_buckets,
                   extra={"timestamps": "0-based line index (file order = time order)"})


# --- yambda: features/yambda.py (streamed) -----------------------------------------------------


def import_dataset(fmt: str, src, out_dir, cache_dir=None, user_buckets: int | None = None, workers: int = 1,
                   ray_address: str | None = None) -> dict:
    """Import ``src`` in format ``fmt`` into ``out_dir``; returns the report (accepted/rejected counts ...).
    ``user_buckets``: partitions of the events by user (a power of two; default sized to the data).
    ``workers`` > 1 (yambda): the streamed passes run as that many Ray tasks at once, on the cluster at
    ``ray_address`` or a local Ray (features/parallel.py); the other formats are small and read whole.

    Raises SchemaError (unusable input, names the column) or NoValidEvents
    (every row rejected; rejected/ is still written).
    """
    if fmt == "yambda":
        return import_yambda(src, out_dir, user_buckets, workers=workers, ray_address=ray_address)
    if fmt == "movielens":
        return import_movielens(src, out_dir, user_buckets)
    if fmt == "sasrec":
        return import_sasrec(src, out_dir, user_buckets)
    if fmt == "movielens-100k":
        return import_movielens_100k(src, out_dir, cache_dir, user_buckets)
    raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")


__all__ = ["import_dataset", "FORMATS", "fetch_ml100k", "SchemaError", "NoValidEvents"]
