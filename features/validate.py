"""Row validation for imports: types, ranges, nulls, duplicates, time order.

Everything is vectorized: one boolean mask per rule over the whole table.
A :class:`Checker` wraps the raw input table (as read, usually strings),
parses columns into typed numpy arrays and records, per row, the FIRST rule
it broke as ``"<field>: <what is wrong>"``. ``split`` then partitions the rows:
accepted events (EVENT_SCHEMA) and rejected rows (every raw value as a string,
plus ``source``, ``row`` and ``reason``), so accepted + rejected == input rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from argusrank.features.schema import EVENT_SCHEMA

#: largest plausible timestamp in seconds (2100-01-01); larger values are usually milliseconds
MAX_TIMESTAMP = 4_102_444_800
_INT_RE = r"^-?\d+(\.0*)?$"  # integer syntax; the int64 range is checked separately
_INT64_MAX = "9223372036854775807"
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_TRUE = ("1", "true", "t", "yes", "y")
_FALSE = ("0", "false", "f", "no", "n")


class SchemaError(ValueError):
    """The input cannot be imported at all (a required column is missing or unusable)."""


class UnreadableInput(SchemaError):
    """An input file cannot be read at all (empty, truncated, not the expected format, I/O error)."""


class NoValidEvents(ValueError):
    """Every input row was rejected. ``rejected_dir``: where the rejected rows were written (if any)."""

    def __init__(self, message: str, rejected_dir=None):
        super().__init__(message)
        self.rejected_dir = rejected_dir


def require_columns(table: pa.Table, required: list[str], what: str) -> None:
    """Raise SchemaError naming the first required column missing from ``table``."""
    for c in required:
        if c not in table.column_names:
            raise SchemaError(f"{what}: required column {c!r} is missing (found: {table.column_names})")


def _np(arr: pa.ChunkedArray | pa.Array, fill, dtype) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, fill).to_numpy(zero_copy_only=False), dtype=dtype)


def _is_stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


@dataclass
class Column:
    """A parsed input column: ``values`` (fill where null or bad) and its ``null`` mask."""

    values: np.ndarray
    null: np.ndarray


class Checker:
    """Accumulates per-row rule failures over one raw input table."""

    def __init__(self, raw: pa.Table, source: np.ndarray | None = None, row: np.ndarray | None = None):
        self.raw = raw
        self.n = raw.num_rows
        self.code = np.full(self.n, -1, dtype=np.int32)  # first failed rule per row, -1 = ok
        self.messages: list[str] = []
        self.source = source if source is not None else np.full(self.n, "", dtype=object)
        self.row = row if row is not None else np.arange(self.n, dtype=np.int64)

    # -- recording -------------------------------------------------------------------------
    def fail(self, mask: np.ndarray, message: str) -> None:
        """Rows in ``mask`` (not already failed) fail with ``message`` ("field: problem")."""
        new = np.asarray(mask, dtype=bool) & (self.code < 0)
        if new.any():
            self.code[new] = len(self.messages)
            self.messages.append(message)

    @property
    def ok(self) -> np.ndarray:
        return self.code < 0

    # -- typed parsing -----------------------------------------------------------------------
    def _parse(self, name: str, regex: str, target: pa.DataType, what: str) -> tuple[pa.ChunkedArray, np.ndarray]:
        """(typed array with nulls where null or unparsable, null mask); records parse failures."""
        arr = self.raw[name]
        null = _np(arr.is_null(), True, bool)
        if _is_stringy(arr.type):
            arr = pc.utf8_trim_whitespace(arr)
            null |= _np(pc.equal(pc.utf8_length(arr), 0), True, bool)
            good = _np(pc.match_substring_regex(arr, regex), False, bool)
            self.fail(~null & ~good, f"{name}: not {what}")
            if pa.types.is_integer(target):  # past int64? only texts over 18 characters can be
                long = np.flatnonzero(good & (_np(pc.utf8_length(arr), 0, np.int64) > 18))
                if long.size:  # digits without sign, leading zeros and ".0"
                    digits = pc.replace_substring_regex(arr.take(long), r"^-?0*|\.0*$", "")
                    width = _np(pc.utf8_length(digits), 0, np.int64)
                    big = np.zeros(self.n, dtype=bool)
                    big[long] = (width > 19) | ((width == 19) & _np(pc.greater(digits, _INT64_MAX), False, bool))
                    self.fail(big, f"{name}: out of int64 range")
                    good &= ~big
            clean = pc.if_else(pa.array(good), arr, pa.scalar(None, arr.type))
            if pa.types.is_integer(target):
                clean = pc.replace_substring_regex(clean, r"\.0*$", "")  # "12.0" -> "12"
            return pc.cast(clean, target), null
        if pa.types.is_boolean(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            return arr, null
        self.fail(~null, f"{name}: unsupported type {arr.type}")
        return pa.chunked_array([pa.nulls(self.n, target)]), null

    def int_column(self, name: str, required: bool = True, lo: int | None = None, hi: int | None = None) -> Column:
        """Parse an integer column; fail on nulls (if required), non-integers and out-of-range values."""
        arr, null = self._parse(name, _INT_RE, pa.int64(), "an integer")
        if pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type):
            nonint = np.zeros(self.n, dtype=bool)
            if arr.type == pa.uint64():  # values past int64 would wrap around
                nonint = ~null & _np(pc.greater(arr, pa.scalar(2**63 - 1, pa.uint64())), False, bool)
                self.fail(nonint, f"{name}: out of int64 range")
                arr = pc.if_else(pa.array(nonint), pa.scalar(None, arr.type), arr)
            vals = _np(pc.cast(arr, pa.int64()), 0, np.int64)
        else:  # floats (from text or float input columns): must be integral, finite and within int64
            f = _np(arr, 0.0, np.float64)
            frac = ~null & (~np.isfinite(f) | (np.floor(f) != f))
            self.fail(frac, f"{name}: not an integer")
            nonint = frac | (~null & (np.abs(f) >= 2.0**63))
            self.fail(nonint, f"{name}: out of int64 range")
            vals = np.where(nonint, 0, f).astype(np.int64)
        null = null | nonint
        self._check_present_and_range(name, vals, null, required, lo, hi)
        return Column(vals, null)

    def _check_present_and_range(self, name: str, vals: np.ndarray, null: np.ndarray, required: bool,
                                 lo: float | None, hi: float | None) -> None:
        """Fail missing values (if required) and non-null values outside [lo, hi]."""
        if required:
            self.fail(null, f"{name}: missing")
        if lo is not None:
            self.fail(~null & (vals < lo), f"{name}: below {lo}")
        if hi is not None:
            self.fail(~null & (vals > hi), f"{name}: above {hi}")

    def float_column(self, name: str, required: bool = False, lo: float | None = None, hi: float | None = None) -> Column:
        """Parse a float column; fail on nulls (if required), non-numbers, NaN/inf and out-of-range values."""
        arr, null = self._parse(name, _FLOAT_RE, pa.float64(), "a number")
        vals = _np(pc.cast(arr, pa.float64()), np.nan, np.float64)
        nonfinite = ~null & ~np.isfinite(vals)
        self.fail(nonfinite, f"{name}: not a finite number")
        null = null | nonfinite
        self._check_present_and_range(name, vals, null, required, lo, hi)
        return Column(np.where(null, np.nan, vals), null)

    def bool_column(self, name: str, required: bool = False) -> Column:
        """Parse a boolean column (bool, 0/1 integers, or true/false/yes/no/1/0 strings)."""
        arr = self.raw[name]
        null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if _is_stringy(arr.type):
            low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
            t = np.asarray(pc.fill_null(pc.is_in(low, pa.array(_TRUE)), False).to_numpy(zero_copy_only=False), dtype=bool)
            f = np.asarray(pc.fill_null(pc.is_in(low, pa.array(_FALSE)), False).to_numpy(zero_copy_only=False), dtype=bool)
            null |= np.asarray(pc.fill_null(pc.equal(low, ""), True).to_numpy(zero_copy_only=False), dtype=bool)
            bad = ~null & ~t & ~f
            vals = t
        elif pa.types.is_boolean(arr.type):
            vals, bad = _np(arr, False, bool), np.zeros(self.n, dtype=bool)
        elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
            v = _np(pc.cast(arr, pa.float64()), 0.0, np.float64)
            bad = ~null & (v != 0) & (v != 1)
            vals = v == 1
        else:
            vals, bad = np.zeros(self.n, dtype=bool), ~null
        self.fail(bad, f"{name}: not a boolean (expected 0/1 or true/false)")
        null = null | bad
        if required:
            self.fail(null, f"{name}: missing")
        return Column(vals & ~null, null)

    # -- table-level rules -------------------------------------------------------------------
    def duplicates(self, keys: dict[str, np.ndarray]) -> None:
        """Fail later copies of rows equal on all ``keys`` (among rows still ok)."""
        ok_idx = np.flatnonzero(self.ok)
        if ok_idx.size < 2:
            return
        cols = [np.asarray(v)[ok_idx] for v in keys.values()]
        order = np.lexsort([ok_idx] + cols[::-1])  # by keys, then input order
        same = np.ones(order.size - 1, dtype=bool)
        for c in cols:
            cs = c[order]
            same &= cs[1:] == cs[:-1]
        dup = np.zeros(self.n, dtype=bool)
        dup[ok_idx[order[1:][same]]] = True
        self.fail(dup, f"duplicate: same {', '.join(keys)} as an earlier row")

    def time_order(self, user: np.ndarray, ts: np.ndarray) -> int:
        """Count (not reject) steps back in time within a user in input order; rows are sorted on write."""
        ok_idx = np.flatnonzero(self.ok)
        if ok_idx.size < 2:
            return 0
        u, t = user[ok_idx], ts[ok_idx]
        order = np.argsort(u, kind="stable")  # input order within each user
        u, t = u[order], t[order]
        return int(np.count_nonzero((u[1:] == u[:-1]) & (t[1:] < t[:-1])))

    # -- output ----------------------------------------------------------------------------
    def reasons(self) -> np.ndarray:
        msgs = np.array(self.messages + [""], dtype=object)
        return msgs[self.code]  # code -1 -> "" (last)

    def split(self, events: dict[str, np.ndarray | pa.Array]) -> tuple[pa.Table, pa.Table]:
        """(accepted EVENT_SCHEMA table, rejected table) from full-length event columns."""
        keep = pa.array(self.ok)
        cols = {}
        for f in EVENT_SCHEMA:
            v = events[f.name]
            a = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, type=f.type)
            cols[f.name] = a.cast(f.type).filter(keep)
        accepted = pa.table(cols, schema=EVENT_SCHEMA)
        return accepted, self.rejected()

    def rejected(self) -> pa.Table:
        """Rejected rows: raw values as strings + source + row + reason."""
        bad = pa.array(~self.ok)
        cols = {name: as_text(self.raw[name]).filter(bad) for name in self.raw.column_names}
        cols["source"] = pa.array(self.source[~self.ok], pa.string())
        cols["row"] = pa.array(self.row[~self.ok], pa.int64())
        cols["reason"] = pa.array(self.reasons()[~self.ok], pa.string())
        return pa.table(cols)

    def report(self) -> dict:
        """Counts of rejected rows by reason."""
        if not self.messages:
            return {}
        counts = np.bincount(self.code[self.code >= 0], minlength=len(self.messages))
        return {m: int(c) for m, c in zip(self.messages, counts) if c}


def as_text(arr: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """``arr`` cast to string; all null where it has no text form (nested types, invalid UTF-8)."""
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(len(arr), pa.string())


def utf8_bad_rows(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Boolean mask of the values of a binary/string array that are not valid UTF-8 (vectorized)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
    n = len(arr)
    offs = np.frombuffer(arr.buffers()[1], np.int64, n + 1, arr.offset * 8)
    data = arr.buffers()[2]
    b = np.frombuffer(data, np.uint8)[offs[0]:offs[-1]] if data is not None else np.zeros(0, np.uint8)
    offs = offs - offs[0]
    p = np.flatnonzero(b >= 0x80)  # only non-ASCII bytes can be wrong
    if not p.size:
        return np.zeros(n, dtype=bool)
    v = b[p]
    need = np.select([v <= 0xBF, v <= 0xC1, v <= 0xDF, v <= 0xEF, v <= 0xF4], [0, -1, 1, 2, 3], -1).astype(np.int8)
    lead = need > 0
    q, k, qv = p[lead], need[lead], v[lead]
    short = q + k >= offs[np.searchsorted(offs, q, side="right")]  # runs past the end of its value
    second = b[np.minimum(q + 1, b.size - 1)]
    lo = np.select([qv == 0xE0, qv == 0xF0], [0xA0, 0x90], 0x80)  # overlong forms
    hi = np.select([qv == 0xED, qv == 0xF4], [0x9F, 0x8F], 0xBF)  # surrogates, past U+10FFFF
    bad_lead = short | (second < lo) | (second > hi)
    covered = np.zeros(b.size, dtype=bool)
    for j in (1, 2, 3):
        sel = ~short & (k >= j)
        at = q[sel] + j
        bad_lead[sel] |= (b[at] < 0x80) | (b[at] > 0xBF)
        covered[at] = True
    bad = np.concatenate([p[need < 0], q[bad_lead], p[(need == 0) & ~covered[p]]])
    rows = np.zeros(n, dtype=bool)
    rows[np.searchsorted(offs, bad, side="right") - 1] = True
    return rows


def check_compatible_types(schemas: list[pa.Schema], names: list[str], what: list[str]) -> None:
    """Raise SchemaError (naming the column and the files) when a column's types across files (``what``: one
    label per schema) cannot be parsed alike: only numbers, booleans and text mix (the Checker parses each).
    Works on the files' schemas alone, for importers that never hold the files' data together."""
    def family(t: pa.DataType) -> str | None:
        t = t.value_type if pa.types.is_dictionary(t) else t
        if pa.types.is_null(t):
            return None  # all null: fits anything
        if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_floating(t):
            return "number"
        if _is_stringy(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "text"
        return str(t)
    for c in names:
        types = [(w, sc.field(c).type) for w, sc in zip(what, schemas) if c in sc.names]
        families = {family(t) for _, t in types} - {None}
        if len(families) > 1 and not families <= {"number", "text"}:
            found = ", ".join(f"{w}: {t}" for w, t in types)
            raise SchemaError(f"column {c!r} has incompatible types across files ({found})")


def concat_rejected(tables: list[pa.Table]) -> pa.Table:
    """Concatenate rejected tables with different raw columns (missing ones become null)."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({"source": pa.array([], pa.string()), "row": pa.array([], pa.int64()),
                         "reason": pa.array([], pa.string())})
    names: list[str] = []
    for t in tables:
        names += [c for c in t.column_names if c not in names and c not in ("source", "row", "reason")]
    names += ["source", "row", "reason"]
    out = []
    for t in tables:
        cols = {n: (t[n] if n in t.column_names else pa.nulls(t.num_rows, pa.string())) for n in names}
        cols["row"] = pc.cast(cols["row"], pa.int64())
        out.append(pa.table({n: pc.cast(c, pa.string()) if n != "row" else c for n, c in cols.items()}))
    return pa.concat_tables(out)
