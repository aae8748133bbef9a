"""The Feast store for real (SQLite online store in tmp_path; Redis against a real redis-server).

Vectors written, materialized and read back equal; point-in-time training rows
never see a vector (or baseline feature) from after the impression; user/item
vectors of different model versions are refused; dot products equal numpy.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from argusrank.features import baseline, store, vectors
from argusrank.platform.config import load_config

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000  # dataset time origin (seconds)
DAY = 86400
D = 8


def _cfg(home: Path, **over):
    return load_config(env={}, overrides={"paths.home": str(home), **over})


def _events(n: int = 600, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": rng.integers(1, 20, n), "timestamp": np.sort(rng.integers(0, 6 * DAY, n)) + T0,
        "item_id": rng.integers(1, 30, n), "played_ratio": rng.random(n).astype(np.float32),
        "liked": rng.random(n) < 0.2, "disliked": rng.random(n) < 0.05,
    })


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def _write(cfg, kind: str, ids, vecs, version: int, ts: int, tag: str, created: float | None = None):
    t = vectors.vector_table(kind, np.asarray(ids), vecs, version, ts, created or time.time())
    return vectors.write_vectors(cfg, kind, t, tag)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store with baseline features (snapshots days 3..7), vectors v1 as of day 3 and v2 as of day 5."""
    cfg = _cfg(tmp_path_factory.mktemp("home"))
    ev = _events()
    baseline.write_baseline(baseline.compute_baseline(ev, baseline.snapshot_times(T0 + 3 * DAY, T0 + 6 * DAY)),
                            cfg.paths.baseline_dir)
    users, items = np.arange(1, 20), np.arange(1, 30)
    vec = {"u1": _vectors(19, 1), "i1": _vectors(29, 2), "u2": _vectors(19, 3), "i2": _vectors(29, 4)}
    _write(cfg, "user", users, vec["u1"], 1, T0 + 3 * DAY, "a", created=time.time() - 10)
    _write(cfg, "item", items, vec["i1"], 1, T0 + 3 * DAY, "a", created=time.time() - 10)
    first = store.materialize(cfg)
    _write(cfg, "user", users, vec["u2"], 2, T0 + 5 * DAY, "b")
    _write(cfg, "item", items, vec["i2"], 2, T0 + 5 * DAY, "b")
    second = store.materialize(cfg)  # incremental: only the v2 rows
    return cfg, ev, users, items, vec, first, second


def test_feast_sees_only_the_definitions_file():
    from feast.repo_operations import get_repo_files

    assert [p.name for p in get_repo_files(REPO / "features")] == ["definitions.py"]


def test_materialize_is_incremental(filled):
    *_, first, second = filled
    assert first["views"]["user_vectors"]["rows"] == 19 and first["views"]["user_item"]["rows"] > 0
    assert second["views"]["user_vectors"]["rows"] == 19 and second["views"]["item_vectors"]["rows"] == 29
    assert second["views"]["user_item"]["rows"] == 0 and second["rows"] == 19 + 29
    assert second["rows_per_s"] > 0


def test_materialize_reloads_an_emptied_online_store(tmp_path):
    import sqlite3

    cfg = _cfg(tmp_path / "home")
    uv = _vectors(4, 0)
    _write(cfg, "user", np.arange(4), uv, 3, T0, "a")
    _write(cfg, "item", np.arange(6), _vectors(6, 1), 3, T0, "a")
    assert store.materialize(cfg)["rows"] == 10
    assert store.materialize(cfg)["rows"] == 0  # incremental: nothing new
    with sqlite3.connect(cfg.paths.feature_repo / "online_store.db") as db:  # the online store is emptied
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            db.execute(f'DELETE FROM "{table}"')
    assert np.isnan(store.read_user_vectors(cfg, [1])[0]).all()
    rep = store.materialize(cfg)
    assert sorted(rep["reloaded"]) == ["item_vectors", "user_vectors"] and rep["rows"] == 10
    np.testing.assert_array_equal(store.read_user_vectors(cfg, [1, 3])[0], uv[[1, 3]])


def test_vectors_read_back_equal(filled):
    cfg, _, users, items, vec, *_ = filled
    u, uv = store.read_user_vectors(cfg, [3, 1, 999])
    np.testing.assert_array_equal(u[:2], vec["u2"][[2, 0]])
    assert uv.tolist() == [2, 2, -1] and np.isnan(u[2]).all()
    i, iv = store.read_item_vectors(cfg, items)
    np.testing.assert_array_equal(i, vec["i2"])
    assert set(iv.tolist()) == {2}
    version = vectors.newest_version(cfg, "item")
    ids, latest = vectors.read_version(cfg, "item", version)
    np.testing.assert_array_equal(ids, items)
    np.testing.assert_array_equal(latest, vec["i2"])
    assert version == 2


@pytest.mark.parametrize("via_push", [False, True])
def test_pushed_user_vectors_replace_the_online_row(tmp_path, via_push):
    """The fresh-vector write (straight to the online store, or through Feast's push source) is read back as is."""
    cfg = _cfg(tmp_path)
    _write(cfg, "user", np.arange(5), _vectors(5, 0), 3, T0, "a")
    _write(cfg, "item", np.arange(7), _vectors(7, 1), 3, T0, "a")
    store.materialize(cfg)
    fresh = _vectors(2, 9)
    store.push_user_vectors(cfg, vectors.vector_table("user", np.array([4, 1]), fresh, 3, T0 + 60, time.time()),
                            via_push=via_push)
    u, ver = store.read_user_vectors(cfg, [1, 4, 2])
    np.testing.assert_array_equal(u[:2], fresh[[1, 0]])
    np.testing.assert_array_equal(u[2], _vectors(5, 0)[2])  # untouched users keep the exported row
    assert ver.tolist() == [3, 3, 3]


@pytest.mark.parametrize("mode", ["caller", "on_demand"])
def test_online_dot_products_equal_numpy(filled, mode):
    cfg, _, users, items, vec, *_ = filled
    cands = [5, 1, 29, 12, 4000]
    out = store.online_features(cfg, 7, cands, mode=mode)
    ref = vec["i2"][np.array(cands[:4]) - 1].astype(np.float64) @ vec["u2"][6].astype(np.float64)
    np.testing.assert_allclose(out["argus_dot"][:4], ref, rtol=1e-5)
    assert np.isnan(out["argus_dot"][4])  # unknown item: missing, not 0
    assert out["model_version"].tolist() == [2] * 5
    assert {r.split(":")[1] for r in baseline.RAW_REFS} <= set(out) and out["item_pop_30d"].shape == (5,)


def test_point_in_time_training_rows(filled):
    """Impressions before any vector get none; between exports the older one; same-request rows all kept."""
    cfg, ev, _, _, vec, *_ = filled
    ts = [T0 + 2 * DAY, T0 + 4 * DAY, T0 + 4 * DAY, T0 + 5 * DAY, T0 + 6 * DAY - 1]
    edf = pd.DataFrame({"user_id": [2, 2, 2, 2, 2], "item_id": [3, 3, 4, 3, 3], "request_id": [0, 1, 1, 2, 3],
                        "event_timestamp": pd.to_datetime(ts, unit="s", utc=True)})
    df = store.historical_features(cfg, edf)
    assert len(df) == 5 and df["request_id"].tolist() == [0, 1, 1, 2, 3]
    assert np.isnan(df["argus_dot"][0])  # before the first export
    ref = lambda u, i: float(u.astype(np.float64) @ i.astype(np.float64))
    assert df["argus_dot"][1] == pytest.approx(ref(vec["u1"][1], vec["i1"][2]), rel=1e-5)  # v1, not the later v2
    assert df["argus_dot"][2] == pytest.approx(ref(vec["u1"][1], vec["i1"][3]), rel=1e-5)
    assert df["argus_dot"][3] == pytest.approx(ref(vec["u2"][1], vec["i2"][2]), rel=1e-5)
    assert df["user_model_version"].tolist()[1:] == [1, 1, 2, 2]
    # baseline: the user-item history as of each impression counts only strictly earlier events
    e = ev.to_pandas()
    for k, t in enumerate(ts):
        prior = e[(e.user_id == 2) & (e.item_id == edf.item_id[k]) & (e.timestamp < t)]
        assert (df["ui_count"][k] if len(prior) else 0) == pytest.approx(len(prior)) or np.isnan(df["ui_count"][k])
        if len(prior):
            assert df["ui_last_ts"][k] == prior.timestamp.max()


def _online_rows(cfg, users, items) -> dict[str, list]:
    """Every view's online values (and event timestamps) for all users, items and user-item pairs."""
    fs = store.get_store(cfg)
    pairs = [(u, i) for u in users for i in items]
    rows = {"user": {"user_id": [int(u) for u in users]}, "item": {"item_id": [int(i) for i in items]},
            "item,user": {"user_id": [int(u) for u, _ in pairs], "item_id": [int(i) for _, i in pairs]}}
    out = {}
    for fv in fs.list_feature_views():
        refs = [f"{fv.name}:{f.name}" for f in fv.features]
        out[fv.name] = fs.get_online_features(features=refs, entity_rows=rows[",".join(sorted(fv.entities))]) \
            .to_dict(include_event_timestamps=True)
    return out


def test_materialize_by_entity_bucket_gives_feasts_online_rows(filled, tmp_path, monkeypatch):
    """The default materialization (one entity bucket at a time, 5 offline rows per bucket here: many buckets)
    writes the same online rows, values and event timestamps, as Feast's own ``materialize`` over the same
    offline files (two vector versions per user and item, many user_item rows per pair: the latest wins), both
    with the rows split once into a file per bucket (``spill``) and with a filtered scan per bucket (``scan``)."""
    from argusrank.features import buckets

    cfg, _, users, items, vec, *_ = filled
    got = {}
    for run, engine, spill_from in (("feast", "feast", 8), ("spill", "buckets", 1), ("scan", "buckets", 1 << 20)):
        monkeypatch.setattr(buckets, "SPILL_FROM_BUCKETS", spill_from)
        home = tmp_path / run
        shutil.copytree(cfg.paths.home, home, ignore=shutil.ignore_patterns("online_store.db", "materialize_state.json"))
        c = _cfg(home, **{"features.materialize_engine": engine, "features.materialize_bucket_rows": 5,
                          "features.online_write_rows": 7})
        rep = store.materialize(c)
        assert (rep["views"]["user_item"].get("buckets", 0) > 1) == (engine == "buckets")
        got[run] = _online_rows(c, users, items)
        assert not list(home.rglob(".spill-*"))  # the bucket files are gone
    for run in ("spill", "scan"):
        assert set(got[run]) == set(got["feast"]) and len(got["feast"]) >= 9
        for view, cols in got["feast"].items():
            for col, want in cols.items():
                assert got[run][view][col] == want, (run, view, col)
        np.testing.assert_allclose(np.asarray(got[run]["user_vectors"]["user_vector"]), vec["u2"], rtol=1e-6)
    assert sum(v is not None for v in got["spill"]["user_item"]["ui_count"]) > 20  # real pairs compared


def test_wide_rows_get_more_scan_buckets(tmp_path):
    """A bucket is bounded in bytes as well as rows: the same row count of 64-float vectors splits into more buckets
    than of one float (the vector views' buckets would otherwise grow with the users: bench/README.md "Scale")."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from argusrank.features.materialize import row_bytes, scan_buckets

    n, rng = 10_000, np.random.default_rng(0)  # random values: parquet's encodings cannot shrink them
    ids = rng.permutation(n)
    pq.write_table(pa.table({"user_id": ids, "x": rng.random(n)}), tmp_path / "narrow.parquet", row_group_size=4096)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 64, np.float32)), 64).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table({"user_id": ids, "v": vec}), tmp_path / "wide.parquet", row_group_size=4096)
    narrow, wide = (row_bytes(ds.dataset(tmp_path / f"{k}.parquet"), ["user_id", "x", "v"]) for k in ("narrow", "wide"))
    assert 8 <= narrow < 40 and 256 <= wide < 600
    assert row_bytes(ds.dataset(tmp_path / "wide.parquet"), ["user_id"]) == pytest.approx(narrow / 2, rel=0.5)
    assert scan_buckets(n, narrow, 500_000, 1) == 1 and scan_buckets(n, wide, 500_000, 1) == 4
    assert scan_buckets(n, wide, 1_000, 64) == 16  # the row bound still holds
    # ... and a scan batch, which spans row groups, in bytes too: wide rows get fewer rows per batch, never < 1024
    from argusrank.features.io import SCAN_BATCH_BYTES, SCAN_BOUNDS, scan_bounds

    assert scan_bounds()["batch_size"] == scan_bounds(narrow)["batch_size"] == SCAN_BOUNDS["batch_size"]
    assert scan_bounds(1700)["batch_size"] == SCAN_BATCH_BYTES // 1700 < SCAN_BOUNDS["batch_size"] // 4
    assert scan_bounds(10**7)["batch_size"] == 1024 and scan_bounds(wide)["batch_readahead"] == 2


def test_point_in_time_join_by_user_bucket_gives_feasts_rows(filled, tmp_path, monkeypatch):
    """The default point-in-time join (one user bucket at a time, 5 rows per bucket here: many buckets) gives
    Feast's ``get_historical_features`` rows, value for value: impressions before any feature row, between vector
    versions, on a snapshot's second, several of one request, users and items without rows, in the input order.
    Two rows of one user at the same event time: the one created last (Feast's rule; its Dask file store sorts by
    created, then by event time without keeping that order, so it is compared with the rule, not with Feast)."""
    cfg, ev, users, items, vec, *_ = filled
    home = tmp_path / "home"
    shutil.copytree(cfg.paths.home, home, ignore=shutil.ignore_patterns("online_store.db", "materialize_state.json"))
    base, t6 = _cfg(home), T0 + 5 * DAY + 6 * 3600
    later = _vectors(19, 9)  # version 2 again, six hours after day 5
    _write(base, "user", users, later, 2, t6, "c")
    store.apply(base)  # the copied registry names the first home's files
    rng = np.random.default_rng(3)
    n = 300
    ts = np.concatenate([rng.integers(T0, T0 + 7 * DAY, n - 5), [T0 + 3 * DAY, T0 + 5 * DAY, T0 + 5 * DAY - 1, T0, t6]])
    edf = pd.DataFrame({"user_id": np.concatenate([rng.integers(0, 22, n - 5), [2, 2, 3, 40, 2]]),
                        "item_id": np.concatenate([rng.integers(0, 32, n - 5), [3, 3, 4, 1, 3]]),
                        "request_id": rng.integers(0, 60, n), "event_timestamp": pd.to_datetime(ts, unit="s", utc=True)})
    argus = ("argus_dot", "argus_dot_b0of2", "argus_dot_b1of2")
    engine = lambda e: _cfg(home, **{"features.historical_engine": e, "features.materialize_bucket_rows": 5})
    got = {e: store.historical_features(engine(e), edf, argus=argus) for e in ("feast", "buckets")}
    pd.testing.assert_frame_equal(got["buckets"], got["feast"], check_dtype=False)
    assert list(got["buckets"].columns[:4]) == list(edf.columns) and len(got["buckets"]) == n
    from argusrank.features import point_in_time

    monkeypatch.setattr(point_in_time, "ITEM_BUCKETS_KEPT", 1 << 20)  # each item bucket read once, kept for all
    kept = store.historical_features(engine("buckets"), edf, argus=argus)
    pd.testing.assert_frame_equal(kept, got["feast"], check_dtype=False)
    monkeypatch.undo()
    from argusrank.features import buckets

    for spill_from in (1, 1 << 20):  # views keyed by user split once into a file per bucket / a filtered scan each
        monkeypatch.setattr(buckets, "SPILL_FROM_BUCKETS", spill_from)
        pd.testing.assert_frame_equal(store.historical_features(engine("buckets"), edf, argus=argus), got["feast"],
                                      check_dtype=False)
        assert not list(home.rglob(".spill-*"))
    monkeypatch.undo()
    ok = np.isfinite(got["buckets"]["argus_dot"].to_numpy())
    assert 0.3 * n < ok.sum() < n and got["buckets"]["ui_count"].notna().sum() > 20  # real values compared
    dot = lambda u, i: float(u.astype(np.float64) @ i.astype(np.float64))
    assert got["buckets"]["argus_dot"].iloc[-1] == pytest.approx(dot(later[1], vec["i2"][2]), rel=1e-5)
    tie = _vectors(19, 10)  # the same user rows and event time as ``later``, created after them
    _write(base, "user", users, tie, 2, t6, "0", created=time.time() + 100)  # its file scans first
    again = store.historical_features(engine("buckets"), edf.tail(1), argus=argus)
    assert again["argus_dot"].iloc[0] == pytest.approx(dot(tie[1], vec["i2"][2]), rel=1e-5)


RAY_ENGINE_JOB = """
import sys, pandas as pd
from argusrank.features import store
from argusrank.platform.config import load_config
cfg = load_config(env={}, overrides={"paths.home": sys.argv[1], "features.offline_engine": "ray", "features.ray_cpus": 1})
edf = pd.read_parquet(sys.argv[2])
store.historical_features(cfg, edf).to_parquet(sys.argv[3])
rep = store.materialize(cfg, full=True)
u, ver = store.read_user_vectors(cfg, list(range(1, 20)))
pd.DataFrame({"rows": [rep["rows"]] * 19, "version": ver, "u0": u[:, 0]}).to_parquet(sys.argv[4])
"""


def test_feast_on_ray_joins_the_configured_cluster_without_local_resources(tmp_path, monkeypatch):
    """offline_engine=ray with ray.address (or RAY_ADDRESS): Feast's offline store and engine connect to that
    cluster (remote mode) and ask for no CPUs of their own (Ray refuses num_cpus when connecting); without an
    address they start a local Ray of features.ray_cpus CPUs."""
    from argusrank.platform.config import load_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    base = {"paths.home": str(tmp_path), "features.offline_engine": "ray", "features.ray_cpus": 3}
    for cfg, env, want in ((load_config(None, {**base, "ray.address": "10.0.0.5:6379"}, env={}), None, "10.0.0.5:6379"),
                           (load_config(None, base, env={}), "10.0.0.6:6379", "10.0.0.6:6379"),
                           (load_config(None, base, env={}), None, None)):
        if env:
            monkeypatch.setenv("RAY_ADDRESS", env)
        rc = store.repo_config(cfg)
        for part in (rc.offline_store, rc.batch_engine):
            assert part.ray_address == want
            assert part.ray_conf == ({"include_dashboard": False} if want else {"num_cpus": 3, "include_dashboard": False})
        monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_feast_on_ray_gives_the_file_stores_training_rows_and_online_rows(filled, tmp_path):
    """``features.offline_engine=ray`` (Feast's Ray offline store and compute engine, in a subprocess with its own
    Ray): the point-in-time training rows and the materialized online rows equal the file store's."""
    cfg, _, users, _, vec, *_ = filled
    home = tmp_path / "home"
    shutil.copytree(cfg.paths.home, home, ignore=shutil.ignore_patterns("online_store.db", "materialize_state.json"))
    ts = [T0 + 2 * DAY, T0 + 4 * DAY, T0 + 4 * DAY, T0 + 5 * DAY, T0 + 6 * DAY - 1, T0 + 6 * DAY]
    edf = pd.DataFrame({"user_id": [2, 2, 2, 2, 5, 7], "item_id": [3, 3, 4, 3, 9, 1], "request_id": [0, 1, 1, 2, 3, 4],
                        "event_timestamp": pd.to_datetime(ts, unit="s", utc=True)})
    edf.to_parquet(tmp_path / "edf.parquet")
    env = {**__import__("os").environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", RAY_ENGINE_JOB, str(home), str(tmp_path / "edf.parquet"),
                          str(tmp_path / "rows.parquet"), str(tmp_path / "online.parquet")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    want = store.historical_features(cfg, edf)
    got = pd.read_parquet(tmp_path / "rows.parquet")[list(want.columns)]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
    assert not np.isnan(want["argus_dot"][1:]).any()  # the comparison covers real vectors
    online = pd.read_parquet(tmp_path / "online.parquet")
    assert online["version"].tolist() == [2] * 19  # the newest export, as the file engine materialized it
    np.testing.assert_allclose(online["u0"].to_numpy(), vec["u2"][:, 0], rtol=1e-6)


def test_same_second_event_is_not_visible_to_its_impression(tmp_path):
    cfg = _cfg(tmp_path)
    ev = pa.table({"user_id": [1, 1], "timestamp": [T0, T0 + 100], "item_id": [5, 5],
                   "played_ratio": pa.array([1.0, 0.0], pa.float32()), "liked": [True, False], "disliked": [False, False]})
    baseline.write_baseline(baseline.compute_baseline(ev, baseline.snapshot_times(T0, T0 + 100)), cfg.paths.baseline_dir)
    store.apply(cfg)
    edf = pd.DataFrame({"user_id": [1, 1], "item_id": [5, 5],
                        "event_timestamp": pd.to_datetime([T0 + 100, T0 + 101], unit="s", utc=True)})
    df = store.historical_features(cfg, edf, with_vectors=False)
    assert df["ui_count"].tolist() == [1.0, 2.0] and df["ui_likes"].tolist() == [1.0, 1.0]


def test_version_mismatch_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    _write(cfg, "user", [1, 2], _vectors(2, 0), 1, T0, "a")
    _write(cfg, "item", [1, 2], _vectors(2, 1), 2, T0, "a")
    store.materialize(cfg)
    with pytest.raises(vectors.VectorVersionMismatch, match=r"different model versions \[1, 2\]"):
        store.online_features(cfg, 1, [1, 2])
    with pytest.raises(vectors.VectorVersionMismatch, match="first mismatching row 0"):
        edf = pd.DataFrame({"user_id": [1], "item_id": [2], "event_timestamp": pd.to_datetime([T0 + 5], unit="s", utc=True)})
        store.historical_features(cfg, edf)
    assert vectors.check_versions(np.array([3, -1]), np.array([3, 3])) == 3  # missing vectors are not a mismatch


def test_bad_vectors_are_rejected_with_the_row():
    v = _vectors(3, 0)
    v[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"user_id=11 \(row 1\) is not finite"):
        vectors.vector_table("user", np.array([10, 11, 12]), v, 1, T0, time.time())


def test_dot_products_reference():
    rng = np.random.default_rng(0)
    u, items = rng.normal(size=(1, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    got = vectors.dot_products(u, items)
    assert np.allclose(got, [sum(float(a) * float(b) for a, b in zip(u[0], it)) for it in items], rtol=1e-6)


def test_feast_cli_applies_and_materializes_the_repo_folder_as_is(tmp_path):
    """`feast -c features apply` / `materialize` on a copy of features/ (its default home: <copy>/../.argusrank)."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "features", root / "features", ignore=shutil.ignore_patterns("__pycache__"))
    cfg = _cfg(root / ".argusrank")
    _write(cfg, "user", [1, 2], _vectors(2, 0), 4, T0, "a")
    _write(cfg, "item", [1, 2, 3], _vectors(3, 1), 4, T0, "a")
    _write(cfg, "user_nip", [1, 2], _vectors(2, 2), 4, T0, "a")  # the export writes every space
    _write(cfg, "item_nip", [1, 2, 3], _vectors(3, 3), 4, T0, "a")
    _write(cfg, "user_fp", [1, 2], _vectors(2, 4), 4, T0, "a")
    _write(cfg, "item_fp", [1, 2, 3], _vectors(3, 5), 4, T0, "a")
    baseline.write_baseline(baseline.compute_baseline(_events(50), np.array([T0 + DAY])), cfg.paths.baseline_dir)
    feast = [str(Path(sys.executable).parent / "feast"), "-c", str(root / "features")]
    run = lambda *a: subprocess.run([*feast, *a], cwd=root, capture_output=True, text=True, timeout=300)
    r = run("apply")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("materialize", "2023-01-01T00:00:00", "2024-01-01T00:00:00")
    assert r.returncode == 0, r.stderr[-2000:]
    u, ver = store.read_user_vectors(cfg, [2])  # argusrank's programmatic config reads what the CLI wrote
    np.testing.assert_array_equal(u[0], _vectors(2, 0)[1])
    assert ver.tolist() == [4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.redis
def test_redis_online_store_round_trip(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found on PATH (`make redis-server` installs it from Debian packages)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        cfg = _cfg(tmp_path / "home", **{"features.online_store": "redis", "features.redis_url": f"127.0.0.1:{port}"})
        uv, iv = _vectors(5, 0), _vectors(7, 1)
        _write(cfg, "user", np.arange(5), uv, 9, T0, "a")
        _write(cfg, "item", np.arange(7), iv, 9, T0, "a")
        rep = store.materialize(cfg)
        assert rep["online_store"] == "redis" and rep["rows"] == 12
        u, ver = store.read_user_vectors(cfg, [4, 0])
        np.testing.assert_array_equal(u, uv[[4, 0]])
        assert ver.tolist() == [9, 9]
        out = store.online_features(cfg, 2, [6, 1])
        np.testing.assert_allclose(out["argus_dot"], iv[[6, 1]].astype(np.float64) @ uv[2].astype(np.float64), rtol=1e-5)
        assert not (cfg.paths.feature_repo / "online_store.db").exists()  # nothing went to SQLite
        import redis

        redis.Redis(host="127.0.0.1", port=port).flushall()  # a Redis restart without persistence
        assert np.isnan(store.read_user_vectors(cfg, [4])[0]).all()
        rep = store.materialize(cfg)  # nothing new offline, but the online store lost everything
        assert set(rep["reloaded"]) >= {"user_vectors", "item_vectors"} and rep["rows"] == 12
        np.testing.assert_array_equal(store.read_user_vectors(cfg, [4, 0])[0], uv[[4, 0]])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_to_matrix_fast_path_equals_the_checked_path():
    """Feast vector values -> (N, d): every row present takes one numpy call; missing rows (None / NaN) and
    rows of different lengths take the checked path (NaN rows; ValueError naming the row)."""
    rows = [[1.0, 2.0], np.array([3.0, 4.0], np.float32)]
    got = vectors.to_matrix(rows)
    assert got.dtype == np.float32 and got.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    got = vectors.to_matrix([[1.0, 2.0], None, float("nan")])
    assert got.shape == (3, 2) and got[0].tolist() == [1.0, 2.0] and np.isnan(got[1:]).all()
    with pytest.raises(ValueError, match="row 0 has 2 dims, others 3"):
        vectors.to_matrix([[1.0, 2.0], [1.0, 2.0, 3.0]])
    assert vectors.to_matrix([]).shape == (0, 0)


def test_offline_only_views_stay_out_of_the_online_store_and_in_training_sets(filled, tmp_path):
    """``features.offline_only=[user_item]``: materialize writes every other view online and not the per-pair one;
    the point-in-time training rows still carry its features; unknown names and a serving path that reads the view
    online are refused."""
    from pydantic import ValidationError

    cfg, _, users, items, *_ = filled
    home = tmp_path / "home"
    shutil.copytree(cfg.paths.home, home, ignore=shutil.ignore_patterns("online_store.db", "materialize_state.json"))
    c = _cfg(home, **{"features.offline_only": ["user_item"]})
    rep = store.materialize(c)
    assert rep["views"]["user_item"] == {"rows": 0, "seconds": 0.0, "offline_only": True}
    assert rep["views"]["user_item_priors"]["rows"] > 0 and rep["views"]["user_vectors"]["rows"] > 0
    online = _online_rows(c, users, items)
    assert all(v is None for v in online["user_item"]["ui_count"])
    assert sum(v is not None for v in online["user_item_priors"]["prior_item_ids"]) > 5
    ev = filled[1].to_pandas()
    entity = pd.DataFrame({"user_id": ev["user_id"][:40], "item_id": ev["item_id"][:40],
                           "event_timestamp": pd.to_datetime(ev["timestamp"][:40] + DAY, unit="s", utc=True)})
    rows = store.historical_features(c, entity, with_vectors=False)
    assert rows["ui_count"].notna().sum() > 5
    with pytest.raises(ValueError, match="unknown view"):
        store.materialize(_cfg(home, **{"features.offline_only": ["user_itme"]}))
    with pytest.raises(ValidationError, match="feast_batched reads the user_item view online"):
        _cfg(home, **{"features.offline_only": ["user_item"], "serve.features_path": "feast_batched"})


def test_bucket_spill_gives_each_bucket_the_rows_a_filtered_scan_gives(tmp_path):
    """features/buckets.py: one scan into a file per ``key % n`` bucket; each bucket reads back the rows (values and
    scan order) a scan filtered to that bucket reads, an empty bucket an empty table, and closing removes the files."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from argusrank.features import buckets
    from argusrank.features.materialize import key_bucket_filter

    rng, folder = np.random.default_rng(0), tmp_path / "view"
    folder.mkdir()
    for part in range(3):
        n = 20_000
        ids = rng.choice(np.arange(0, 4000, 2), n)  # even ids only: odd buckets stay empty
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4, np.float32)), 4).cast(pa.list_(pa.float32()))
        pq.write_table(pa.table({"user_id": ids, "x": rng.random(n), "v": vec}), folder / f"{part}.parquet",
                       row_group_size=5000)
    data, where = ds.dataset(folder), ds.field("x") > 0.5
    with buckets.BucketSpill(folder, "user_id", 16, ["user_id", "v"], where, bytes_per_row=40) as spill:
        for b in range(16):
            want = data.to_table(columns=["user_id", "v"], filter=where & key_bucket_filter("user_id", 16, b))
            got = spill.read(b)
            assert got.equals(want), b
            assert (got.num_rows == 0) == (b % 2 == 1)
        assert len(list(spill.folder.iterdir())) == 8
    assert not spill.folder.exists()
