"""Fresh user vectors: events ingested online are logged durably and move the user's vector in the online store
to exactly what a full pass over the user's history (offline events, then the new ones) gives."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from argusrank.platform.config import load_config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A registered tiny ARGUS model, its vectors at the data's end in the online store."""
    from argusrank.features import store, vectors
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.synth import synthesize
    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import preset
    from argusrank.platform import registry
    from argusrank.platform.inference import item_vectors, user_vectors, window_arrays
    from argusrank.platform.tracking import start_run

    home = tmp_path_factory.mktemp("fresh")
    cfg = load_config(env={}, overrides={"paths.home": str(home), "data.synth.n_users": 40, "data.synth.n_items": 60,
                                         "data.synth.days": 6})
    synthesize(cfg.data.synth, cfg.dataset_dir, seed=0)
    torch.manual_seed(0)
    model = ArgusModel(preset("tiny")).eval()
    with start_run(cfg, "fresh-test"):
        version = registry.log_argus_model(cfg, model)
    model, _ = registry.load_argus(cfg, version)
    hist = build_histories(read_events(cfg.dataset_dir))
    end = int(hist.timestamp.max())
    start = np.maximum(hist.offsets[:-1], hist.offsets[1:] - model.cfg.max_len)
    U = user_vectors(model, window_arrays(hist, start, hist.offsets[1:] - start, None, "tower", model.cfg.max_len), "tower")
    items = np.unique(hist.item_id)
    now = time.time()
    vectors.write_vectors(cfg, "user", vectors.vector_table("user", hist.user_ids, U, version, end, now), "v")
    vectors.write_vectors(cfg, "item", vectors.vector_table("item", items, item_vectors(model, items, "tower"),
                                                            version, end, now), "v")
    store.materialize(cfg)
    return {"cfg": cfg, "model": model, "version": version, "hist": hist, "end": end, "items": items}


def _full_pass(served, user: int, new: list[dict], space: str = "tower") -> np.ndarray:
    """Reference: the user's offline events plus ``new``, one causal pass over the last max_len (``nip``: the
    export's query for a feed request at the last event's time)."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.online_events import validate_events
    from argusrank.platform.inference import user_vectors, window_arrays

    ev = read_events(served["cfg"].dataset_dir)
    ev = ev.filter(pa.compute.equal(ev["user_id"], user))
    hist = build_histories(pa.concat_tables([ev, validate_events(new)[0]]))
    L = served["model"].cfg.max_len
    start = np.maximum(hist.offsets[:1], hist.offsets[1:] - L)
    as_of = hist.timestamp[-1:].astype(np.int64)
    return user_vectors(served["model"], window_arrays(hist, start, hist.offsets[1:] - start, as_of, space, L), space)[0]


def test_ingested_events_move_the_online_vector_to_a_full_pass(served):
    from argusrank.features import store
    from argusrank.features.online_events import OnlineEventLog
    from argusrank.platform.serving.bundle import Bundle
    from argusrank.platform.serving.fresh import FreshVectors

    cfg, user = served["cfg"], int(served["hist"].user_ids[3])
    before, _ = store.read_user_vectors(cfg, [user])
    fresh = FreshVectors(cfg, Bundle(argus_version=served["version"], ranker_version=0))
    t = served["end"] + 60
    first = [{"user_id": user, "item_id": int(served["items"][5]), "timestamp": t, "is_organic": True,
              "surface": "search", "event_type": "listen", "played_ratio": 0.95, "liked": True},
             {"user_id": user, "item_id": -4, "timestamp": t}]  # rejected, the first is kept
    out = fresh.ingest(first)
    assert out["accepted"] == 1 and out["rejected"] == [{"row": 1, "reason": "item_id: below 0"}]
    assert out["vectors"] == [{"user_id": user, "event_timestamp": t, "model_version": served["version"]}]
    got, ver = store.read_user_vectors(cfg, [user])
    want = _full_pass(served, user, first[:1])
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
    assert ver.tolist() == [served["version"]] and not np.allclose(got[0], before[0])
    # the NIP-ANN candidates' user row moved too: the export's query for a feed request right after the event
    nip, nip_ver = store.read_user_spaces(cfg, [user], ("nip",))["nip"]
    np.testing.assert_allclose(nip[0], _full_pass(served, user, first[:1], "nip"), rtol=1e-4, atol=1e-5)
    assert nip_ver.tolist() == [served["version"]]
    second = [{"user_id": user, "item_id": int(served["items"][9]), "timestamp": t + 30, "is_organic": False,
               "surface": "feed", "played_ratio": 0.1}]
    fresh.ingest(second)  # the cached window plus the new event
    np.testing.assert_allclose(store.read_user_vectors(cfg, [user])[0][0], _full_pass(served, user, first[:1] + second),
                               rtol=1e-4, atol=1e-5)
    # one batch, several cached users, two events for one of them, out of order in the batch: each user's vector
    # equals a full pass (the steps are batched across users, a user's events in time order)
    other = int(served["hist"].user_ids[4])
    o1 = [{"user_id": other, "item_id": int(served["items"][2]), "timestamp": t + 5, "played_ratio": 0.5}]
    fresh.ingest(o1)
    batch = [{"user_id": user, "item_id": int(served["items"][1]), "timestamp": t + 90, "played_ratio": 0.7},
             {"user_id": other, "item_id": int(served["items"][3]), "timestamp": t + 40, "liked": True},
             {"user_id": user, "item_id": int(served["items"][7]), "timestamp": t + 60, "played_ratio": 0.2}]
    out = fresh.ingest(batch)
    assert [(v["user_id"], v["event_timestamp"]) for v in out["vectors"]] == sorted([(user, t + 90), (other, t + 40)])
    got = store.read_user_vectors(cfg, [user, other])[0]
    np.testing.assert_allclose(got[0], _full_pass(served, user, first[:1] + second + [batch[2], batch[0]]),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], _full_pass(served, other, o1 + [batch[1]]), rtol=1e-4, atol=1e-5)
    nip = store.read_user_spaces(cfg, [user, other], ("nip",))["nip"][0]
    np.testing.assert_allclose(nip[1], _full_pass(served, other, o1 + [batch[1]], "nip"), rtol=1e-4, atol=1e-5)
    # durable: another process (a restarted replica) finds every accepted event in the log
    log = OnlineEventLog(cfg.paths.home / "online" / "events.db")
    assert log.user_events(user)["timestamp"].to_pylist() == [t, t + 30, t + 60, t + 90]
    assert log.last_timestamp() == t + 90
    # the online store (derived state) commits without waiting for the disk: WAL, set on the database file
    import sqlite3

    with sqlite3.connect(cfg.paths.feature_repo / "online_store.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_user_unknown_offline_gets_a_vector_from_the_online_events_alone(served):
    from argusrank.features import store
    from argusrank.platform.serving.bundle import Bundle
    from argusrank.platform.serving.fresh import FreshVectors

    cfg, user = served["cfg"], 10**9 + 7
    assert np.isnan(store.read_user_vectors(cfg, [user])[0]).all()
    fresh = FreshVectors(cfg, Bundle(argus_version=served["version"], ranker_version=0))
    events = [{"user_id": user, "item_id": int(i), "timestamp": served["end"] + k, "played_ratio": 1.0}
              for k, i in enumerate(served["items"][:3])]
    assert fresh.ingest(events)["accepted"] == 3
    np.testing.assert_allclose(store.read_user_vectors(cfg, [user])[0][0], _full_pass(served, user, events),
                               rtol=1e-4, atol=1e-5)


def test_fresh_ranker_features_equal_a_full_pass_at_each_request_time(served):
    """``ranker.user_vectors=fresh`` training rows: the tower and NIP features from the user vectors after every
    event strictly before the request (its earliest row's time), against one slow pass per row."""
    import pandas as pd

    from argusrank.platform.inference import item_vectors, user_vectors, window_arrays
    from argusrank.platform.training.fresh_features import fresh_user_features

    from argusrank.features import vectors

    cfg, hist, model = served["cfg"], served["hist"], served["model"]
    items = served["items"]
    vectors.write_vectors(cfg, "item_nip", vectors.vector_table("item_nip", items, item_vectors(model, items, "nip"),
                                                                served["version"], served["end"], 0.0), "v")
    u0, u1 = (int(x) for x in hist.user_ids[:2])
    t0 = int(hist.timestamp[hist.offsets[0] + 5])  # u0's 6th event: strictly before it = 5 events
    t1 = int(hist.timestamp[hist.offsets[2] - 1])  # u1's last event
    first = int(hist.timestamp[hist.offsets[0]])
    rows = pd.DataFrame({"user_id": [u0, u0, u1, u1, u0, u0],
                         "item_id": [items[0], items[1], items[2], 10**9, items[3], items[4]],
                         "request_id": [1, 1, 2, 2, 3, 3],
                         "ts": [t0, t0 + 999, t1, t1, first, first]})  # request 1's time is its earliest row's
    got = fresh_user_features(cfg, cfg.dataset_dir, rows, served["version"],
                               ["argus_dot", "argus_dot_b0of2", "argus_dot_b1of2", "nip_dot", "fp_liked"])
    assert set(got) == {"argus_dot", "argus_dot_b0of2", "argus_dot_b1of2", "nip_dot"}  # FP stays daily, as served

    def slow(user: int, before: int, item: int, space: str) -> float:
        u = int(np.searchsorted(hist.user_ids, user))
        lo, hi = int(hist.offsets[u]), int(hist.offsets[u + 1])
        end = lo + int((hist.timestamp[lo:hi] < before).sum())
        start = max(lo, end - model.cfg.max_len)
        as_of = hist.timestamp[end - 1:end].astype(np.int64)  # NIP: a feed request at the last event's time
        vec = user_vectors(model, window_arrays(hist, np.array([start]), np.array([end - start]), as_of, space,
                                                model.cfg.max_len), space)[0]
        return float(vec.astype(np.float64) @ item_vectors(model, np.array([item]), space)[0].astype(np.float64))

    for feature, space in (("argus_dot", "tower"), ("nip_dot", "nip")):
        want = [slow(u0, t0, items[0], space), slow(u0, t0, items[1], space), slow(u1, t1, items[2], space)]
        np.testing.assert_allclose(got[feature][:3], want, rtol=1e-4, atol=1e-5)
        assert np.isnan(got[feature][3])  # an item without a vector of this version
        assert np.isnan(got[feature][4:]).all()  # no event before the request: no fresh vector
    np.testing.assert_allclose(got["argus_dot_b0of2"][:3] + got["argus_dot_b1of2"][:3], got["argus_dot"][:3], rtol=1e-6)
