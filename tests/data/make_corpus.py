"""Generate the corrupt-input corpus of tests/test_data_corrupt.py (issue #14).

    python tests/data/make_corpus.py [OUT_DIR]     (default: this folder)

Writes small broken inputs for the movielens, sasrec and yambda importers under
``OUT_DIR/<format>/`` and ``OUT_DIR/corpus.json``: one entry per input with the
expected outcome. ``expect`` is ``ok`` (the import succeeds: ``data_rows`` input
rows, ``accepted`` of them kept, the others rejected with ``reasons``: rejected
row ``"<source>:<row>"`` -> the start of its reason, which names the field),
``SchemaError`` (unusable input: exit 2) or ``NoValidEvents`` (exit 1).
Deterministic: no randomness, so rerunning rewrites the same files.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BOM = b"\xef\xbb\xbf"
I64_MAX = 2**63 - 1
CASES: list[dict] = []


def _case(path: str, fmt: str, expect: str, data_rows: int | None = None, accepted: int | None = None,
          reasons: dict | None = None, note: str = "") -> None:
    CASES.append({"path": path, "format": fmt, "expect": expect, "data_rows": data_rows, "accepted": accepted,
                  "reasons": reasons or {}, "note": note})


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()  # no statistics, no compression, no arrow schema blob: a few hundred bytes
    pq.write_table(table, buf, compression="NONE", write_statistics=False, store_schema=False)
    return buf.getvalue()


def _bad_string(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8 (parquet writers do not check)."""
    b = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(b), b.buffers())


def _listens(**cols) -> pa.Table:
    n = len(next(iter(cols.values()))) if cols else 3
    base = {"uid": pa.array(range(1, n + 1), pa.uint32()), "item_id": pa.array(range(10, 10 + n), pa.uint32()),
            "timestamp": pa.array(range(100, 100 + n), pa.uint32()), "is_organic": pa.array([1] * n, pa.uint8())}
    base.update(cols)
    return pa.table(base)


def movielens() -> dict[str, bytes]:
    f = {}
    f["empty.dat"] = b""
    _case("movielens/empty.dat", "movielens", "SchemaError", note="0 bytes")
    f["blank_lines.dat"] = b"\n  \r\n\t\n"
    _case("movielens/blank_lines.dat", "movielens", "SchemaError", note="only whitespace")
    f["header_only.csv"] = b"userId,movieId,rating,timestamp\n"
    _case("movielens/header_only.csv", "movielens", "NoValidEvents", 0, 0, note="a header and no rows")
    f["bom_header.csv"] = BOM + b"userId,movieId,rating,timestamp\r\n1,10,4.0,100\r\n1,11,2.5,101\r\n2,10,5.0,102\r\n"
    _case("movielens/bom_header.csv", "movielens", "ok", 3, 3, note="UTF-8 BOM before the header")
    f["bom_tab.data"] = BOM + b"1\t10\t4\t100\n2\t11\t3\t101\n"
    _case("movielens/bom_tab.data", "movielens", "ok", 2, 2, note="UTF-8 BOM, no header")
    f["bad_utf8.dat"] = b"1::10::5::100\n\xff1::11::4::101\n2::1\xe90::3::102\n3::12::4::103\n2::13::4::1\xc3\n"
    _case("movielens/bad_utf8.dat", "movielens", "ok", 5, 2, {
        "bad_utf8.dat:1": "user_id: invalid UTF-8", "bad_utf8.dat:2": "item_id: invalid UTF-8",
        "bad_utf8.dat:4": "timestamp: invalid UTF-8"}, "latin-1 / stray bytes in three fields")
    f["wrong_types.csv"] = (b"userId,movieId,rating,timestamp\nabc,10,4,100\n1,x10,4,101\n1,11,good,102\n"
                            b"1,12,4,2020-01-01\n1,13,4.5,103\n1.5,14,4,104\n1,15,4,105\x00\n")
    _case("movielens/wrong_types.csv", "movielens", "ok", 7, 1, {
        "wrong_types.csv:1": "user_id: not an integer", "wrong_types.csv:2": "item_id: not an integer",
        "wrong_types.csv:3": "rating: not a number", "wrong_types.csv:4": "timestamp: not an integer",
        "wrong_types.csv:6": "user_id: not an integer", "wrong_types.csv:7": "timestamp: not an integer"},
        "text in id/rating/timestamp fields, a fractional id, a NUL byte")
    f["timestamps.tsv"] = (b"1\t10\t4\tnan\n1\t11\t4\tinf\n1\t12\t4\t-5\n1\t13\t4\t1.5\n1\t14\t4\t-inf\n"
                           b"1\t15\t4\t100\n1\t16\t4\t1e9\n1\t17\t4\t99999999999999\n1\t18\tnan\t200\n-3\t19\t4\t201\n")
    _case("movielens/timestamps.tsv", "movielens", "ok", 10, 1, {
        "timestamps.tsv:0": "timestamp: not an integer", "timestamps.tsv:1": "timestamp: not an integer",
        "timestamps.tsv:2": "timestamp: below 0", "timestamps.tsv:3": "timestamp: not an integer",
        "timestamps.tsv:4": "timestamp: not an integer", "timestamps.tsv:6": "timestamp: not an integer",
        "timestamps.tsv:7": "timestamp: above", "timestamps.tsv:8": "rating: not a number",
        "timestamps.tsv:9": "user_id: below 0"},
        "NaN/inf/negative/fractional/exponent/millisecond timestamps, NaN rating, negative id")
    f["big_ids.tsv"] = (b"9223372036854775808\t1\t4\t1\n1\t99999999999999999999\t4\t2\n9223372036854775807\t2\t4\t3\n"
                        b"-9223372036854775809\t3\t4\t4\n00000000000000000000042\t4\t4\t5\n1\t5\t4\t9223372036854775808\n")
    _case("movielens/big_ids.tsv", "movielens", "ok", 6, 2, {
        "big_ids.tsv:0": "user_id: out of int64 range", "big_ids.tsv:1": "item_id: out of int64 range",
        "big_ids.tsv:3": "user_id: out of int64 range", "big_ids.tsv:5": "timestamp: out of int64 range"},
        "ids past int64; int64 max and zero-padded ids are fine")
    f["mixed_sep.dat"] = b"1::10::5::100\n1\t11\t4\t101\n2,12,3,102\n2::13::4::103\n2 14 4 104\n"
    _case("movielens/mixed_sep.dat", "movielens", "ok", 5, 2, {
        "mixed_sep.dat:1": "line: expected 4 fields", "mixed_sep.dat:2": "line: expected 4 fields",
        "mixed_sep.dat:4": "line: expected 4 fields"}, "'::' from the first line; tab/comma/space lines rejected")
    f["truncated.dat"] = b"1::10::5::100\n1::11::4::101\n2::12::"
    _case("movielens/truncated.dat", "movielens", "ok", 3, 2, {"truncated.dat:2": "line: expected 4 fields"},
          "cut in the middle of the last line")
    f["utf16.csv"] = "userId,movieId,rating,timestamp\n1,10,4,100\n".encode("utf-16")
    _case("movielens/utf16.csv", "movielens", "SchemaError", note="UTF-16 text")
    f["binary.dat"] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa\n"
    _case("movielens/binary.dat", "movielens", "SchemaError", note="an image: its first line reads as a bad header")
    return f


def sasrec() -> dict[str, bytes]:
    f = {}
    f["empty.txt"] = b""
    _case("sasrec/empty.txt", "sasrec", "SchemaError", note="0 bytes")
    f["bom.txt"] = BOM + b"u1 i1\nu1 i2\nu2 i1\n"
    _case("sasrec/bom.txt", "sasrec", "ok", 3, 3, note="BOM dropped: the first user is 'u1'")
    f["bad_utf8.txt"] = b"u1 i1\nu\xff i2\nu\xfe i3\nu1 i\xff\nu2 i1\nu\xff\xfe\n"
    _case("sasrec/bad_utf8.txt", "sasrec", "ok", 6, 2, {
        "bad_utf8.txt:1": "user: invalid UTF-8", "bad_utf8.txt:2": "user: invalid UTF-8",
        "bad_utf8.txt:3": "item: invalid UTF-8", "bad_utf8.txt:5": "line: expected 2 fields"},
        "distinct ids with bad bytes: rejected, never merged into one user")
    f["mixed_sep.txt"] = b"u1 i1\nu1\ti2\nu2,i3\nu2 ; i4\nu3   i5\n"
    _case("sasrec/mixed_sep.txt", "sasrec", "ok", 5, 3, {
        "mixed_sep.txt:2": "line: expected 2 fields", "mixed_sep.txt:3": "line: expected 2 fields"},
        "any whitespace separates; a comma does not")
    f["big_ids.txt"] = b"9223372036854775808 99999999999999999999\n-1 0\n18446744073709551616 1\n"
    _case("sasrec/big_ids.txt", "sasrec", "ok", 3, 3, note="sasrec ids are strings (vocab-mapped): any token is fine")
    f["truncated.txt"] = b"u1 i1\nu1 i2\nu2"
    _case("sasrec/truncated.txt", "sasrec", "ok", 3, 2, {"truncated.txt:2": "line: expected 2 fields"},
          "cut in the middle of the last line")
    f["utf16.txt"] = "u1 i1\n".encode("utf-16")
    _case("sasrec/utf16.txt", "sasrec", "SchemaError", note="UTF-16 text")
    return f


def yambda() -> dict[str, bytes]:
    f = {}
    good = _parquet(_listens())
    f["truncated/listens.parquet"] = good[: len(good) * 2 // 3]
    _case("yambda/truncated/listens.parquet", "yambda", "SchemaError", note="the first 2/3 of a parquet file")
    f["empty/listens.parquet"] = b""
    _case("yambda/empty/listens.parquet", "yambda", "SchemaError", note="0 bytes")
    f["not_parquet/listens.parquet"] = b"uid,item_id,timestamp,is_organic\n1,2,3,1\n"
    _case("yambda/not_parquet/listens.parquet", "yambda", "SchemaError", note="csv text named .parquet")
    f["header_only/listens.parquet"] = _parquet(_listens().slice(0, 0))
    _case("yambda/header_only/listens.parquet", "yambda", "NoValidEvents", 0, 0, note="schema, no rows")
    f["wrong_types/multi_event.parquet"] = _parquet(pa.table({
        "uid": ["1", "x", "2.5", "3", "4"], "item_id": ["10", "11", "12", "1e3", "13"],
        "timestamp": ["100", "101", "102", "103", "2020-01-01"], "is_organic": ["1", "0", "yes", "true", "1"],
        "event_type": ["listen", "like", "listen", "listen", "listen"]}))
    _case("yambda/wrong_types/multi_event.parquet", "yambda", "ok", 5, 1, {
        "multi_event.parquet:1": "uid: not an integer", "multi_event.parquet:2": "uid: not an integer",
        "multi_event.parquet:3": "item_id: not an integer", "multi_event.parquet:4": "timestamp: not an integer"},
        "text columns")
    nan, inf = float("nan"), float("inf")
    f["timestamps/listens.parquet"] = _parquet(_listens(
        timestamp=pa.array([nan, inf, -inf, -5.0, 1.5, 100.0, 1e300, 5e9], pa.float64())))
    _case("yambda/timestamps/listens.parquet", "yambda", "ok", 8, 1, {
        "listens.parquet:0": "timestamp: not an integer", "listens.parquet:1": "timestamp: not an integer",
        "listens.parquet:2": "timestamp: not an integer", "listens.parquet:3": "timestamp: below 0",
        "listens.parquet:4": "timestamp: not an integer", "listens.parquet:6": "timestamp: out of int64 range",
        "listens.parquet:7": "timestamp: above"}, "float timestamps: NaN/inf/negative/fractional/huge")
    f["negative/listens.parquet"] = _parquet(_listens(
        timestamp=pa.array([-1, 0, 10], pa.int64()), uid=pa.array([1, -2, 3], pa.int64())))
    _case("yambda/negative/listens.parquet", "yambda", "ok", 3, 1, {
        "listens.parquet:0": "timestamp: below 0", "listens.parquet:1": "uid: below 0"},
        "negative int64 timestamp and uid (timestamp 0 is fine)")
    f["played/listens.parquet"] = _parquet(_listens(played_ratio_pct=pa.array([inf, -1.0, 50.0, nan], pa.float64())))
    _case("yambda/played/listens.parquet", "yambda", "ok", 4, 1, {
        "listens.parquet:0": "played_ratio_pct: not a finite number", "listens.parquet:1": "played_ratio_pct: below 0",
        "listens.parquet:3": "played_ratio_pct: not a finite number"}, "inf / negative / NaN played_ratio_pct")
    f["big_ids/listens.parquet"] = _parquet(_listens(
        uid=pa.array([2**63, 2**64 - 1, 5, I64_MAX], pa.uint64()), item_id=pa.array([1.0, 2.0, 1e20, 3.0])))
    _case("yambda/big_ids/listens.parquet", "yambda", "ok", 4, 1, {
        "listens.parquet:0": "uid: out of int64 range", "listens.parquet:1": "uid: out of int64 range",
        "listens.parquet:2": "item_id: out of int64 range"}, "uint64 uids past int64, a float id of 1e20")
    f["bad_utf8/multi_event.parquet"] = _parquet(_listens(
        uid=pa.array([b"1", b"2", b"\xfe3"], pa.binary()), event_type=_bad_string([b"listen", b"lik\xff", b"listen"])))
    _case("yambda/bad_utf8/multi_event.parquet", "yambda", "ok", 3, 1, {
        "multi_event.parquet:1": "event_type: invalid UTF-8", "multi_event.parquet:2": "uid: invalid UTF-8"},
        "a binary uid column and a string column with bytes that are not UTF-8")
    f["mixed_uid/listens.parquet"] = _parquet(_listens(uid=pa.array([1, 2], pa.uint32())))
    f["mixed_uid/likes.parquet"] = _parquet(_listens(uid=pa.array([3, 4], pa.int64())))
    f["mixed_uid/dislikes.parquet"] = _parquet(_listens(uid=pa.array(["5", "abc"])))
    _case("yambda/mixed_uid", "yambda", "ok", 6, 5, {"dislikes.parquet:1": "uid: not an integer"},
          "uint32 / int64 / string uids: unified as text, parsed per row")
    f["mixed_uid_numeric/listens.parquet"] = _parquet(_listens(uid=pa.array([1, 2], pa.uint64())))
    f["mixed_uid_numeric/likes.parquet"] = _parquet(_listens(uid=pa.array([3], pa.int32())))
    f["mixed_uid_numeric/unlikes.parquet"] = _parquet(_listens(uid=pa.array([4.0], pa.float64())))
    _case("yambda/mixed_uid_numeric", "yambda", "ok", 4, 4, note="uint64 / int32 / float64 uids: one numeric type")
    f["mixed_uid_big/listens.parquet"] = _parquet(_listens(uid=pa.array([2**63 + 1, 1], pa.uint64())))
    f["mixed_uid_big/likes.parquet"] = _parquet(_listens(uid=pa.array([2], pa.int64())))
    _case("yambda/mixed_uid_big", "yambda", "ok", 3, 2, {"listens.parquet:0": "uid: out of int64 range"},
          "uint64 past int64 with int64: unified as text, the big one rejected")
    f["mixed_uid_nested/listens.parquet"] = _parquet(_listens(uid=pa.array([[1], [2]], pa.list_(pa.int64()))))
    f["mixed_uid_nested/likes.parquet"] = _parquet(_listens(uid=pa.array([3], pa.int64())))
    _case("yambda/mixed_uid_nested", "yambda", "SchemaError", note="list<int64> and int64 uids cannot be unified")
    return f


def build(out_dir: Path) -> list[dict]:
    """Write every corpus file and corpus.json under ``out_dir``; returns the manifest."""
    CASES.clear()
    for fmt, files in (("movielens", movielens()), ("sasrec", sasrec()), ("yambda", yambda())):
        for name, data in files.items():
            p = out_dir / fmt / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    (out_dir / "corpus.json").write_text(json.dumps(CASES, indent=1) + "\n")
    return list(CASES)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    print(f"{len(build(target))} corpus entries -> {target}")
