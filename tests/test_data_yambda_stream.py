"""The streamed Yambda import (features/yambda.py) gives the same dataset whatever its batch size and spill
buckets: the bounded-memory passes equal one pass over the whole input (events, rejected rows in input order,
metadata), on every corpus case and on a multi-file set whose duplicates span files and batches."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from argusrank.features.io import dataset_stats, items_table, read_events
from argusrank.features.yambda import import_yambda

CORPUS = Path(__file__).parent / "data" / "yambda"


def _result(src, out, **kw):
    """(events, rejected rows, metadata) of an import, or the error it raised (type and message)."""
    try:
        import_yambda(src, out, **kw)
    except Exception as exc:  # noqa: BLE001 - the error itself is the result compared
        return type(exc).__name__, str(exc).replace(str(out), "OUT")
    meta = json.loads((out / "metadata.json").read_text())
    return read_events(out).to_pylist(), pq.read_table(out / "rejected").to_pylist(), meta


@pytest.mark.parametrize("case", sorted(p.name for p in CORPUS.iterdir()))
def test_corpus_case_is_the_same_in_batches_of_two(case, tmp_path):
    whole = _result(CORPUS / case, tmp_path / "whole")
    assert _result(CORPUS / case, tmp_path / "whole", batch_rows=2, spill_buckets=64) == whole


def _file(rows, **cols):
    base = {"uid": [r[0] for r in rows], "item_id": [r[1] for r in rows], "timestamp": [r[2] for r in rows],
            "is_organic": [1] * len(rows), "played_ratio_pct": [50.0] * len(rows)}
    return pa.table({**base, **cols})


def _multi_file_source(tmp_path):
    """Three files (listens in row groups of 50 rows) whose duplicates span files and batches."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    listens = [(int(u), int(i), int(t)) for u, i, t in zip(rng.integers(0, 40, 300), rng.integers(0, 50, 300),
                                                          rng.integers(0, 10_000, 300))]
    listens += [listens[3], listens[250], (7, -1, 5), (2**40, 3, 9)]  # 2 duplicates, a bad item, a big user id
    pq.write_table(_file(listens), src / "listens.parquet", row_group_size=50)
    likes = [listens[10][:2] + (listens[10][2],), (5, 5, 5), (5, 5, 5)]  # a like at a listen's time: not a duplicate
    pq.write_table(_file(likes), src / "likes.parquet")
    multi = [listens[20], (9, 9, 9)]
    pq.write_table(_file(multi, event_type=["listen", "bogus"]), src / "multi_event.parquet")
    return src, listens, likes, multi


def test_duplicates_across_files_and_batches_reject_the_later_copy(tmp_path):
    src, listens, likes, multi = _multi_file_source(tmp_path)
    whole = _result(src, tmp_path / "whole")
    events, rejected, meta = whole
    assert meta["input_rows"] == len(listens) + len(likes) + len(multi)
    assert meta["accepted"] + meta["rejected"] == meta["input_rows"] and meta["n_events"] == len(events)
    stats = dataset_stats(read_events(tmp_path / "whole"))  # the statistics merged over buckets = of the whole
    assert {k: meta[k] for k in stats} == json.loads(json.dumps(stats))
    assert pq.read_table(tmp_path / "whole" / "items.parquet").equals(items_table(read_events(tmp_path / "whole")))
    dup = [(r["source"], r["row"]) for r in rejected if r["reason"].startswith("duplicate")]
    assert ("listens.parquet", 300) in dup and ("listens.parquet", 301) in dup  # the later copies
    assert ("likes.parquet", 2) in dup and ("multi_event.parquet", 0) in dup  # across files too
    assert not any(src_ == "likes.parquet" and row == 0 for src_, row in dup)
    assert {r["reason"].split(":")[0] for r in rejected} >= {"item_id", "event_type", "duplicate"}
    assert [(r["source"], r["row"]) for r in rejected] == sorted(
        [(r["source"], r["row"]) for r in rejected], key=lambda k: (["likes.parquet", "listens.parquet",
                                                                      "multi_event.parquet"].index(k[0]), k[1]))
    for kw in ({"batch_rows": 7}, {"batch_rows": 1, "spill_buckets": 32}, {"batch_rows": 64, "spill_buckets": 1024}):
        assert _result(src, tmp_path / f"b{kw['batch_rows']}", **kw) == whole, kw


def test_import_as_ray_tasks_equals_the_import_in_one_process(tmp_path):
    """workers=2: both passes' units run as Ray tasks in other processes; same events, rejected rows (input
    order), metadata; a unit's error reaches the caller as itself."""
    import os

    from argusrank.features.parallel import parallel_session, run_units

    src, *_ = _multi_file_source(tmp_path)
    here = _result(src, tmp_path / "here", batch_rows=7)
    with parallel_session(2):
        assert _result(src, tmp_path / "ray", batch_rows=7, workers=2) == here
        assert _result(src, tmp_path / "ray64", batch_rows=64, spill_buckets=64, workers=2) == here
        pids = run_units(lambda i: os.getpid(), [(i,) for i in range(4)], workers=2)
        assert os.getpid() not in pids
        with pytest.raises(ZeroDivisionError):
            run_units(lambda i: 1 // i, [(1,), (0,)], workers=2)
