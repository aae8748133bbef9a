"""Corrupt-input corpus (tests/data/, made by tests/data/make_corpus.py): every broken file either
imports with accepted + rejected == input rows (each rejected row's reason names its field) or
raises SchemaError / NoValidEvents naming the file -- never another exception.

Negative timestamps: validate.py gives every timestamp the range [0, MAX_TIMESTAMP] (seconds since
the epoch or since the dataset's start), so a negative one rejects its row with "timestamp: below 0";
so do NaN/inf ("not an integer"), fractions and values past int64 ("out of int64 range").
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from argusrank.features.importers import import_dataset
from argusrank.features.io import read_events, read_metadata, read_vocab
from argusrank.features.validate import NoValidEvents, SchemaError, UnreadableInput

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "corpus.json").read_text())
EXPECT = {"SchemaError": SchemaError, "NoValidEvents": NoValidEvents}


@pytest.mark.parametrize("case", CASES, ids=[c["path"] for c in CASES])
def test_corpus_file(case, tmp_path):
    src, out = DATA / case["path"], tmp_path / "ds"
    if case["expect"] != "ok":
        with pytest.raises((SchemaError, NoValidEvents)) as info:
            import_dataset(case["format"], src, out)
        assert isinstance(info.value, EXPECT[case["expect"]]), repr(info.value)
        assert src.name in str(info.value), str(info.value)  # names the file (or the folder of files)
        if case["expect"] == "NoValidEvents":  # readable, no data row: an empty dataset with the counts
            meta = read_metadata(out)
            assert meta["input_rows"] == case["data_rows"] == meta["accepted"] + meta["rejected"]
        return
    rep = import_dataset(case["format"], src, out)
    meta = read_metadata(out)
    assert meta["input_rows"] == case["data_rows"] == meta["accepted"] + meta["rejected"]
    assert rep["accepted"] == meta["accepted"] == case["accepted"] == read_events(out).num_rows
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert len(rejected) == meta["rejected"] == meta["n_rejected"] == sum(meta["rejected_by_reason"].values())
    got = {f"{r['source']}:{r['row']}": r["reason"] for r in rejected}
    assert sorted(got) == sorted(case["reasons"])
    for key, start in case["reasons"].items():
        assert got[key].startswith(start), (key, got[key])


def test_corpus_is_current(tmp_path):
    """make_corpus.py regenerates the checked-in corpus (text byte for byte; parquet by content)."""
    spec = importlib.util.spec_from_file_location("make_corpus", DATA / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.build(tmp_path) == CASES
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    have = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file() and p.suffix != ".py"
                  and "__pycache__" not in p.parts)
    assert made == have
    for rel in made:
        new, old = (tmp_path / rel).read_bytes(), (DATA / rel).read_bytes()
        if rel.suffix == ".parquet" and new != old:  # another pyarrow writes other bytes: same content
            assert _parquet_shape(tmp_path / rel) == _parquet_shape(DATA / rel), rel
        else:
            assert new == old, rel


def _parquet_shape(path):
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # the truncated / empty / not-parquet entries
        return None
    return meta.schema.to_arrow_schema(), meta.num_rows


def test_sasrec_bad_bytes_never_merge_users(tmp_path):
    import_dataset("sasrec", DATA / "sasrec" / "bad_utf8.txt", tmp_path / "ds")
    assert read_vocab(tmp_path / "ds", "users")["raw"].to_pylist() == ["u1", "u2"]
    rej = pq.read_table(tmp_path / "ds" / "rejected").to_pylist()
    assert [r["user"] for r in rej[:2]] == ["u\\xff", "u\\xfe"]  # raw values kept distinct (escaped)
    import_dataset("sasrec", DATA / "sasrec" / "bom.txt", tmp_path / "bom")
    assert read_vocab(tmp_path / "bom", "users")["raw"].to_pylist() == ["u1", "u2"]


def test_yambda_uid_types_unified(tmp_path):
    import_dataset("yambda", DATA / "yambda" / "mixed_uid", tmp_path / "a")
    assert sorted(set(read_events(tmp_path / "a")["user_id"].to_pylist())) == [1, 2, 3, 4, 5]
    import_dataset("yambda", DATA / "yambda" / "mixed_uid_numeric", tmp_path / "b")
    assert sorted(read_events(tmp_path / "b")["user_id"].to_pylist()) == [1, 2, 3, 4]
    with pytest.raises(SchemaError, match="'uid'.*listens.parquet: list"):
        import_dataset("yambda", DATA / "yambda" / "mixed_uid_nested", tmp_path / "c")


def test_unreadable_parquet_is_unreadable_input(tmp_path):
    with pytest.raises(UnreadableInput, match="truncated/listens.parquet.*(magic|footer|Parquet)"):
        import_dataset("yambda", DATA / "yambda" / "truncated" / "listens.parquet", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # nothing written


def test_cli_unreadable_file_exit_2(tmp_path):
    src = DATA / "yambda" / "truncated" / "listens.parquet"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "argusrank.platform.cli", "data", "import", "--format", "yambda",
                           str(src), "--out", str(tmp_path / "ds")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "listens.parquet" in proc.stderr, proc.stderr
