"""Importers on small real-format files, the rejection path and the `data` CLI."""
from __future__ import annotations

import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import argusrank.features.io as io_mod
from argusrank.features.importers import ML100K_MEMBER, RECBOLE_WHEEL, failed_dir, fetch_ml100k, import_dataset
from argusrank.features.io import (atomic_dir, atomic_file, atomic_write_table, atomic_write_text, read_events,
                                   read_metadata, read_vocab, write_dataset)
from argusrank.features.schema import EVENT_SCHEMA, EVENT_TYPE_CODE
from argusrank.features.validate import NoValidEvents, SchemaError
from argusrank.platform.cli import app


def _rejected(out):
    return pq.read_table(out / "rejected").to_pylist()


# --- yambda ------------------------------------------------------------------------------------
def _yambda_listens(n=6):
    return pa.table({
        "uid": pa.array([1, 1, 2, 2, 3, 3][:n], pa.uint32()),
        "timestamp": pa.array([10, 5, 20, 25, 30, 35][:n], pa.uint32()),
        "item_id": pa.array([100, 101, 100, 102, 103, 104][:n], pa.uint32()),
        "is_organic": pa.array([1, 0, 0, 1, 1, 0][:n], pa.uint8()),
        "played_ratio_pct": pa.array([100, 20, 150, 55, 0, 80][:n], pa.uint16()),
        "track_length_seconds": pa.array([200, 180, 240, 200, 100, 90][:n], pa.uint32()),
    })


def test_yambda_folder_of_flat_files(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    pq.write_table(_yambda_listens(), src / "listens.parquet")
    likes = pa.table({"uid": pa.array([1, 3], pa.uint32()), "timestamp": pa.array([11, 31], pa.uint32()),
                      "item_id": pa.array([100, 103], pa.uint32()), "is_organic": pa.array([1, 1], pa.uint8())})
    pq.write_table(likes, src / "likes.parquet")
    pq.write_table(likes.slice(0, 1).set_column(1, "timestamp", pa.array([12], pa.uint32())), src / "unlikes.parquet")
    out = tmp_path / "ds"
    rep = import_dataset("yambda", src, out)
    assert (rep["accepted"], rep["rejected"]) == (9, 0)
    ev = read_events(out)
    assert ev.schema == EVENT_SCHEMA
    u1 = ev.filter(pa.compute.equal(ev["user_id"], 1)).to_pylist()
    assert [e["timestamp"] for e in u1] == [5, 10, 11, 12]  # sorted by time
    assert u1[1]["played_ratio"] == pytest.approx(1.0) and u1[1]["event_type"] == EVENT_TYPE_CODE["listen"]
    assert u1[2]["liked"] is True and u1[2]["played_ratio"] is None
    assert u1[3]["liked"] is False and u1[3]["event_type"] == EVENT_TYPE_CODE["unlike"]
    u2 = ev.filter(pa.compute.equal(ev["user_id"], 2)).to_pylist()
    assert u2[0]["played_ratio"] == pytest.approx(1.0)  # 150 % clipped
    assert u2[0]["is_organic"] is False
    assert read_metadata(out)["files"] == ["likes.parquet", "listens.parquet", "unlikes.parquet"]


def test_yambda_multi_event_with_bad_rows(tmp_path):
    t = pa.table({
        "uid": pa.array([1, 1, 1, 2, 2, 2, 3, None], pa.int64()),
        "timestamp": pa.array([1, 2, 3, 4, 4, 5, 6, 7], pa.int64()),
        "item_id": pa.array([5, 6, 7, 8, 8, 9, -3, 1], pa.int64()),
        "is_organic": pa.array([1, 0, 1, 1, 1, 2, 1, 1], pa.uint8()),
        "played_ratio_pct": pa.array([50, None, None, 10, 10, None, 90, 90], pa.float64()),
        "track_length_seconds": pa.array([1, 1, 1, 1, 1, 1, 1, 1], pa.int64()),
        "event_type": pa.array(["listen", "like", "dislike", "listen", "listen", "undislike", "listen", "bogus"]),
    })
    f = tmp_path / "multi_event.parquet"
    pq.write_table(t, f)
    out = tmp_path / "ds"
    rep = import_dataset("yambda", f, out)
    assert rep["accepted"] + rep["rejected"] == 8
    assert rep["accepted"] == 4
    rej = _rejected(out)
    reasons = {r["row"]: r["reason"] for r in rej}
    assert reasons[4].startswith("duplicate")
    assert reasons[5].startswith("is_organic")
    assert reasons[6].startswith("item_id")
    assert reasons[7].startswith("uid")  # first failing rule: the missing uid
    assert all(r["source"] == "multi_event.parquet" for r in rej)
    assert {r["event_type"] for r in rej} >= {"bogus"}  # raw values kept as strings
    ev = read_events(out).to_pylist()
    assert [e["event_type"] for e in ev] == [EVENT_TYPE_CODE[k] for k in ("listen", "like", "dislike", "listen")]
    assert ev[2]["disliked"] is True and ev[2]["liked"] is None


def test_yambda_missing_column_is_schema_error(tmp_path):
    f = tmp_path / "listens.parquet"
    pq.write_table(_yambda_listens().drop_columns(["timestamp"]), f)
    with pytest.raises(SchemaError, match="'timestamp'"):
        import_dataset("yambda", f, tmp_path / "ds")


# --- movielens ---------------------------------------------------------------------------------
ROWS = [(1, 10, 5.0, 100), (1, 11, 3.0, 101), (2, 10, 1.0, 50), (2, 12, 4.0, 40)]


@pytest.mark.parametrize("kind", ["tab", "colons", "csv"])
def test_movielens_separators(tmp_path, kind):
    if kind == "tab":
        text = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
    elif kind == "colons":
        text = "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)
    else:
        text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\r\n" for u, i, r, t in ROWS)
    f = tmp_path / "ratings.txt"
    f.write_text(text)
    rep = import_dataset("movielens", f, tmp_path / "ds")
    assert (rep["accepted"], rep["rejected"]) == (4, 0)
    ev = read_events(tmp_path / "ds").to_pylist()
    assert [(e["user_id"], e["item_id"], e["timestamp"]) for e in ev] == [(1, 10, 100), (1, 11, 101), (2, 12, 40), (2, 10, 50)]
    assert [e["liked"] for e in ev] == [True, False, True, False]  # rating >= 4
    assert [e["disliked"] for e in ev] == [False, False, False, True]  # rating <= 2
    assert [e["rating"] for e in ev] == [5.0, 3.0, 4.0, 1.0]
    assert all(e["played_ratio"] is None and e["event_type"] == EVENT_TYPE_CODE["rating"] for e in ev)
    assert rep["n_out_of_order"] == 1  # user 2's rows go back in time; sorted on write


def test_movielens_rejection_path(tmp_path):
    lines = [
        "1::10::5::100",  # ok
        "1::11::x::101",  # rating not a number
        "",  # blank: not a row
        "2::10::4::99999999999999",  # timestamp in milliseconds: out of range
        "2::10::9::50",  # rating above 5
        "2::12::4",  # 3 fields
        "::12::4::1",  # missing user
        "3::1.5::4::7",  # item not an integer
        "1::10::5::100",  # duplicate of line 0
        "4::7::2.5::8.0",  # ok (8.0 is an integer timestamp)
    ]
    f = tmp_path / "ratings.dat"
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    rep = import_dataset("movielens", f, out)
    assert rep["input_rows"] == 9
    assert (rep["accepted"], rep["rejected"]) == (2, 7)
    rej = {r["row"]: r for r in _rejected(out)}
    assert rej[1]["reason"] == "rating: not a number" and rej[1]["rating"] == "x"
    assert rej[3]["reason"].startswith("timestamp: above")
    assert rej[4]["reason"].startswith("rating: above")
    assert rej[5]["reason"].startswith("line: expected 4 fields") and rej[5]["line"] == "2::12::4"
    assert rej[6]["reason"] == "user_id: missing"
    assert rej[7]["reason"] == "item_id: not an integer"
    assert rej[8]["reason"].startswith("duplicate")
    assert sum(rep["rejected_by_reason"].values()) == 7
    assert read_metadata(out)["n_rejected"] == 7


def test_nothing_valid_and_cli_exit_codes(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("1\tx\t4\t1\n2\t3\t4\n")
    with pytest.raises(NoValidEvents):
        import_dataset("movielens", f, tmp_path / "ds")
    assert pq.read_table(tmp_path / "ds" / "rejected").num_rows == 2  # still kept
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import", "--format", "movielens", str(f), "--out", str(tmp_path / "ds2")])
    assert res.exit_code == 1
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("user,movie,stars\n1,2,3\n")
    res = runner.invoke(app, ["data", "import", "--format", "movielens", str(hdr), "--out", str(tmp_path / "ds3")])
    assert res.exit_code == 2 and "'rating'" in res.output
    good = tmp_path / "good.tsv"
    good.write_text("1\t2\t4\t1\n1\t3\tx\t2\n")
    res = runner.invoke(app, ["data", "import", "--format", "movielens", str(good), "--out", str(tmp_path / "ds4")])
    assert res.exit_code == 0, res.output
    assert "accepted 1 rejected 1" in res.output
    res = runner.invoke(app, ["data", "info", str(tmp_path / "ds4")])
    assert res.exit_code == 0 and "n_events" in res.output
    assert "1/1/1" in res.output  # history lengths (min/median/max), read user bucket by user bucket


# --- sasrec ------------------------------------------------------------------------------------
def test_sasrec_vocab_and_positions(tmp_path):
    f = tmp_path / "seq.txt"
    f.write_text("u7 itemA\nu7 itemB\nu3 itemA\nu7 itemC\nbroken\nu3 itemC\n")
    out = tmp_path / "ds"
    rep = import_dataset("sasrec", f, out)
    assert (rep["accepted"], rep["rejected"]) == (5, 1)
    assert _rejected(out)[0]["row"] == 4
    users, items = read_vocab(out, "users").to_pylist(), read_vocab(out, "items").to_pylist()
    assert users == [{"id": 0, "raw": "u7"}, {"id": 1, "raw": "u3"}]
    assert items == [{"id": 1, "raw": "itemA"}, {"id": 2, "raw": "itemB"}, {"id": 3, "raw": "itemC"}]
    ev = read_events(out, columns=["user_id", "item_id", "timestamp"]).to_pylist()
    assert ev == [
        {"user_id": 0, "item_id": 1, "timestamp": 0}, {"user_id": 0, "item_id": 2, "timestamp": 1},
        {"user_id": 0, "item_id": 3, "timestamp": 3}, {"user_id": 1, "item_id": 1, "timestamp": 2},
        {"user_id": 1, "item_id": 3, "timestamp": 5},
    ]


# --- movielens-100k ----------------------------------------------------------------------------
def test_movielens_100k_from_cached_wheel(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
    with zipfile.ZipFile(cache / RECBOLE_WHEEL, "w") as zf:
        zf.writestr(ML100K_MEMBER, inter)
        zf.writestr("recbole/__init__.py", "raise RuntimeError('never imported')\n")
    rep = import_dataset("movielens-100k", None, tmp_path / "ds", cache_dir=cache)
    assert (rep["accepted"], rep["rejected"]) == (3, 0)
    ev = read_events(tmp_path / "ds").to_pylist()
    assert [(e["user_id"], e["disliked"]) for e in ev] == [(22, True), (186, False), (196, False)]
    assert "recbole" not in sys.modules


def test_movielens_100k_real_download(tmp_path):
    cache = tmp_path / "cache"
    try:
        fetch_ml100k(cache)
    except RuntimeError as exc:
        msg = str(exc).lower()
        if any(s in msg for s in ("network", "connection", "resolve", "timed out", "no matching distribution", "could not find a version",
                                  "temporary failure", "proxy", "unreachable", "ssl")):
            pytest.skip(f"pip download needs the network: {exc}")
        raise
    rep = import_dataset("movielens-100k", None, tmp_path / "ds", cache_dir=cache)
    assert rep["input_rows"] == 100_000 and rep["accepted"] + rep["rejected"] == 100_000
    assert rep["accepted"] > 99_000
    m = read_metadata(tmp_path / "ds")
    assert (m["n_users"], m["n_items"]) == (943, 1682)


def test_cli_synth(tmp_path):
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "s"), "--seed", "3",
                                   "--set", "data.synth.n_users=40", "--set", "data.synth.n_items=50"])
    assert res.exit_code == 0, res.output
    m = read_metadata(tmp_path / "s")
    assert m["n_users"] == 40 and m["seed"] == 3
    assert np.all(np.diff(read_events(tmp_path / "s", columns=["user_id"])["user_id"].to_numpy()) >= 0)


# --- atomic writes (issue #14): a rerun never loses the previous dataset -----------------------
def _good_then(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("1\t2\t4\t1\n1\t3\t5\t2\n9\t3\t1\t3\n")
    out = tmp_path / "ds"
    import_dataset("movielens", good, out)
    return out, read_events(out), read_metadata(out)


def test_rerun_with_no_valid_row_keeps_previous_dataset(tmp_path):
    out, before, meta = _good_then(tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tx\t4\t1\n2\t3\t4\n")
    with pytest.raises(NoValidEvents, match="previous dataset .* is kept") as info:
        import_dataset("movielens", bad, out)
    assert read_events(out).equals(before) and read_metadata(out) == meta
    assert info.value.rejected_dir == failed_dir(out) / "rejected"
    assert pq.read_table(info.value.rejected_dir).num_rows == 2  # this import's rejected rows, beside it
    res = CliRunner().invoke(app, ["data", "import", "--format", "movielens", str(bad), "--out", str(out)])
    assert res.exit_code == 1 and read_events(out).equals(before)
    import_dataset("movielens", tmp_path / "good.tsv", out)
    assert not failed_dir(out).exists()  # a later good import clears the stale failure


def test_failed_write_leaves_previous_dataset_and_no_temp(tmp_path, monkeypatch):
    out, before, meta = _good_then(tmp_path)
    other = tmp_path / "other.tsv"
    other.write_text("5\t6\t4\t1\n")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(io_mod.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        import_dataset("movielens", other, out)
    monkeypatch.undo()
    assert read_events(out).equals(before) and read_metadata(out) == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "good.tsv", "other.tsv"]


def test_previous_dataset_readable_until_swap(tmp_path, monkeypatch):
    out, before, meta = _good_then(tmp_path)
    seen = []
    real = io_mod.pq.write_table

    def check_then_write(*a, **k):  # called in the middle of writing the new dataset
        seen.append(read_events(out).equals(before) and read_metadata(out) == meta)
        return real(*a, **k)
    monkeypatch.setattr(io_mod.pq, "write_table", check_then_write)
    other = tmp_path / "other.tsv"
    other.write_text("5\t6\t4\t1\n")
    import_dataset("movielens", other, out)
    assert seen and all(seen)
    assert read_events(out)["user_id"].to_pylist() == [5]


def test_rerun_replaces_layout_entries_keeps_others(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a\nu2 b\n")
    out = tmp_path / "ds"
    import_dataset("sasrec", seq, out)
    (out / "notes.txt").write_text("mine")
    mode = out.stat().st_mode
    out2, _, _ = _good_then(tmp_path)
    assert out2 == out and read_vocab(out, "users") is None  # the sasrec vocab is gone
    assert (out / "notes.txt").read_text() == "mine" and out.stat().st_mode == mode
    assert read_metadata(out)["format"] == "movielens"


def test_write_dataset_truth_entries(tmp_path):
    ev = pa.table({f.name: pa.array([True] if f.type == pa.bool_() else [1], f.type) for f in EVENT_SCHEMA})
    write_dataset(tmp_path / "s", ev, None, {"format": "x"},
                  truth={"truth": pa.table({"a": [1]}), "item_bias": np.arange(3.0)})
    assert pq.read_table(tmp_path / "s" / "truth" / "truth.parquet").num_rows == 1
    assert np.load(tmp_path / "s" / "truth" / "item_bias.npy").tolist() == [0.0, 1.0, 2.0]


def test_atomic_file_helpers(tmp_path):
    p = tmp_path / "sub" / "report.txt"
    assert atomic_write_text("one", p) == p and p.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_file(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert p.read_text() == "one" and [x.name for x in p.parent.iterdir()] == ["report.txt"]
    atomic_write_table(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet")["x"].to_pylist() == [1, 2]
    with atomic_file(tmp_path / "v.npy") as tmp:
        np.save(tmp, np.ones(2))  # the temp name keeps the suffix: np.save adds none
    assert np.load(tmp_path / "v.npy").tolist() == [1.0, 1.0] and len(list(tmp_path.iterdir())) == 3


def test_atomic_dir(tmp_path):
    d = tmp_path / "vectors"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
        assert not d.exists()
    assert (d / "a").read_text() == "1"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert d.stat().st_mode == plain.stat().st_mode  # not mkdtemp's 0700
    with pytest.raises(ValueError):
        with atomic_dir(d) as tmp:
            (tmp / "b").write_text("2")
            assert (d / "a").read_text() == "1"  # readable while the new one is written
            raise ValueError("stop")
    assert sorted(x.name for x in d.iterdir()) == ["a"]
    with atomic_dir(d, keep=lambda name: name == "keep.txt") as tmp:
        (d / "keep.txt").write_text("k")
        (tmp / "b").write_text("2")
    assert sorted(x.name for x in d.iterdir()) == ["b", "keep.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["plain", "vectors"]
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(tmp_path / "f"):
            pass


def test_user_buckets_sized_to_the_data_or_set_and_read_back(tmp_path):
    """Events are partitioned by user_id % B: B sized to the data by default (8 up to 4M events, a power of two
    near n/500K above, at most 1024) or set (`--user-buckets`, data.user_buckets); readers take B from the
    metadata, so a worker's shard holds exactly its users."""
    from argusrank.features.io import read_events, user_buckets_of
    from argusrank.features.schema import check_user_buckets, default_user_buckets
    from argusrank.platform.config import load_config
    from argusrank.platform.training.checks import ConfigError, validate

    assert [default_user_buckets(n) for n in (0, 1000, 4_000_000, 4_000_001, 10_000_000, 50_000_000, 10**10)] == \
        [8, 8, 8, 16, 32, 128, 1024]
    for bad in (0, 3, 2048):
        with pytest.raises(ValueError, match="user_buckets"):
            check_user_buckets(bad)
    n = 40
    ev = pa.table({f.name: pa.array([True] * n if f.type == pa.bool_() else np.arange(n) if f.name == "user_id"
                                    else np.ones(n), f.type) for f in EVENT_SCHEMA})
    write_dataset(tmp_path / "d16", ev, None, {"format": "x"}, user_buckets=16)
    assert user_buckets_of(tmp_path / "d16") == 16
    assert sorted(p.name for p in (tmp_path / "d16" / "events").iterdir()) == sorted(f"user_bucket={b}" for b in range(16))
    shard = read_events(tmp_path / "d16", user_buckets=[3, 19])
    assert sorted(shard["user_id"].to_pylist()) == [u for u in range(n) if u % 16 == 3]
    write_dataset(tmp_path / "d8", ev, None, {"format": "x"})
    assert user_buckets_of(tmp_path / "d8") == 8
    with pytest.raises(ValueError, match="power of two"):
        load_config(None, {"data.user_buckets": 12}, env={})
    cfg = load_config(None, {"paths.home": str(tmp_path), "train.num_workers": 41, "train.cpus_per_worker": 1}, env={})
    with pytest.raises(ConfigError, match="more workers than the dataset's 40 users"):
        validate(cfg, tmp_path / "d8", "pretrain")
    good = tmp_path / "good.tsv"
    good.write_text("1\t2\t4\t1\n2\t3\t5\t2\n")
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import", "-f", "movielens", "-o", str(tmp_path / "x"), "--user-buckets", "6", str(good)])
    assert res.exit_code == 2 and "user_buckets: 6 is not a power of two" in res.output, res.output
    res = runner.invoke(app, ["data", "import", "-f", "movielens", "-o", str(tmp_path / "x"), "--user-buckets", "32", str(good)])
    assert res.exit_code == 0 and user_buckets_of(tmp_path / "x") == 32, res.output


@pytest.mark.parametrize("world,n_buckets", [(1, 8), (3, 8), (8, 8), (9, 8), (20, 8), (5, 1), (64, 16)])
def test_worker_shards_partition_the_users_for_any_worker_count(world, n_buckets):
    """The worker count is free of the bucket count: any number of workers splits the users into disjoint shards
    that cover them all, each worker reading at most ceil(B / W) buckets (more workers share a bucket's users)."""
    from argusrank.features.io import select_users, worker_shard

    n = 5000
    events = pa.table({"user_id": pa.array(np.arange(n, dtype=np.int64) * 7 + 3), "x": pa.array(np.arange(n))})
    bucket_of = events["user_id"].to_numpy() % n_buckets
    seen = np.zeros(n, int)
    for rank in range(world):
        buckets, modulus, remainder = worker_shard(rank, world, n_buckets)
        assert 1 <= len(buckets) <= -(-n_buckets // world)
        mine = select_users(events.filter(pa.array(np.isin(bucket_of, buckets))), n_buckets, modulus, remainder)
        assert mine.num_rows > 0, (rank, buckets, modulus, remainder)
        seen[mine["x"].to_numpy()] += 1
    assert (seen == 1).all()  # every user's events on exactly one worker
    with pytest.raises(ValueError, match="rank"):
        worker_shard(world, world, n_buckets)


def test_read_events_filters_a_workers_users_while_scanning(tmp_path):
    """read_events(users=...) gives exactly select_users of the whole read, for every worker sharing a bucket."""
    from argusrank.features.io import read_events, select_users, user_buckets_of, worker_shard
    from argusrank.features.config import SynthConfig
    from argusrank.features.synth import synthesize

    synthesize(SynthConfig(n_users=60, days=5), tmp_path / "d", seed=0, user_buckets=2)
    B, world = user_buckets_of(tmp_path / "d"), 7
    total = 0
    for rank in range(world):
        buckets, modulus, remainder = worker_shard(rank, world, B)
        whole = read_events(tmp_path / "d", user_buckets=buckets)
        got = read_events(tmp_path / "d", user_buckets=buckets, users=(modulus, remainder))
        assert modulus > 1 and got.equals(select_users(whole, B, modulus, remainder))
        total += got.num_rows
    assert total == read_events(tmp_path / "d").num_rows
    # a time window, filtered while scanning: the whole read's rows in [t_from, t_to), in the same order
    import pyarrow.compute as pc

    whole = read_events(tmp_path / "d")
    ts = whole["timestamp"]
    t_from, t_to = int(pc.min(ts).as_py()) + 86_400, int(pc.min(ts).as_py()) + 3 * 86_400
    want = whole.filter(pc.and_(pc.greater_equal(ts, t_from), pc.less(ts, t_to)))
    got = read_events(tmp_path / "d", time_range=(t_from, t_to))
    assert 0 < got.num_rows < whole.num_rows and got.equals(want)
