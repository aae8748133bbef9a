"""Histories, splits, chunking, pair extraction and fine-tuning rows vs slow references."""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from argusrank.features.histories import (
    build_histories, drop_last, extract_pairs, restrict,
)
from argusrank.features.schema import EVENT_SCHEMA, feedback_grade
from argusrank.features.sequences import (
    SEQ_KEYS, finetune_arrays, iterate_batches, loo_eval_arrays, pretrain_arrays, temporal_eval_arrays,
)
from argusrank.features.synth import generate
from argusrank.features.splits import temporal_window
from argusrank.models.batch import FinetuneBatch, SequenceBatch
from argusrank.platform.config import SynthConfig


@pytest.fixture(scope="module")
def events():
    ev = generate(SynthConfig(n_users=120, n_items=80, days=21, slate_size=5), seed=3).events
    # shuffle rows so build_histories has to sort
    return ev.take(np.random.default_rng(0).permutation(ev.num_rows))


@pytest.fixture(scope="module")
def hist(events):
    return build_histories(events)


def _rows(events):
    """Slow reference: per-user event dicts sorted by (timestamp, position)."""
    per = defaultdict(list)
    for e in events.to_pylist():
        pr = np.float32(np.nan if e["played_ratio"] is None else e["played_ratio"])
        e["grade"] = int(feedback_grade(np.array([pr]), np.array([bool(e["liked"])]), np.array([bool(e["disliked"])]))[0])
        e["request_id"] = -1 if e["request_id"] is None else e["request_id"]
        e["position"] = -1 if e["position"] is None else e["position"]
        per[e["user_id"]].append(e)
    return {u: sorted(v, key=lambda e: (e["timestamp"], e["position"])) for u, v in sorted(per.items())}


def test_build_histories_matches_reference(events, hist):
    ref = _rows(events)
    assert hist.user_ids.tolist() == list(ref)
    for u in hist.user_ids[::7]:
        got = hist.events_of(int(u))
        assert got["item_id"].tolist() == [e["item_id"] for e in ref[u]]
        assert got["grade"].tolist() == [e["grade"] for e in ref[u]]
        assert got["request_id"].tolist() == [e["request_id"] for e in ref[u]]


def _ref_pairs(ref, window_s):
    out = Counter()
    for u, evs in ref.items():
        groups = defaultdict(list)
        for e in evs:
            if e["request_id"] >= 0:
                groups[("r", e["request_id"])].append(e)
            elif window_s > 0:
                groups[("w", e["timestamp"] // window_s)].append(e)
        for g in groups.values():
            for x, y in itertools.combinations(g, 2):
                if x["grade"] != y["grade"]:
                    a, b = (x, y) if x["grade"] > y["grade"] else (y, x)
                    out[(u, a["item_id"], b["item_id"], a["grade"], b["grade"], a["grade"] - b["grade"])] += 1
    return out


@pytest.mark.parametrize("window_s", [0, 3600 * 24])
def test_extract_pairs_matches_reference(events, hist, window_s):
    p = extract_pairs(hist, window_s)
    got = Counter(zip(*(p[c].to_pylist() for c in ("user_id", "item_a", "item_b", "grade_a", "grade_b", "weight"))))
    assert got == _ref_pairs(_rows(events), window_s)
    assert p.num_rows > 0 and all(w > 0 for w in p["weight"].to_pylist())
    if window_s == 0:
        assert p["request_id"].null_count == 0


def _chunks_ref(hist, max_len, min_len):
    out = []
    for u in range(hist.n_users):
        items = hist.item_id[hist.offsets[u]:hist.offsets[u + 1]].tolist()
        chunks, end = [], len(items)
        while end > 0:
            chunks.append(items[max(0, end - max_len):end])
            end -= max_len
        out += [(hist.user_ids[u], c) for c in reversed(chunks) if len(c) >= min_len]
    return out


@pytest.mark.parametrize("max_len,min_len", [(7, 2), (16, 5), (1000, 2)])
def test_pretrain_chunks_match_reference(hist, max_len, min_len):
    a = pretrain_arrays(hist, max_len, min_len)
    assert a["item_id"].shape == (len(a["user_id"]), max_len)
    got = [(u, row[v].tolist()) for u, row, v in zip(a["user_id"], a["item_id"], a["valid"])]
    assert got == _chunks_ref(hist, max_len, min_len)
    assert np.all(a["item_id"][~a["valid"]] == 0) and np.isnan(a["played_ratio"][~a["valid"]]).all()
    # right-padded: valid is a prefix
    assert np.all(np.diff(a["valid"].astype(int), axis=1) <= 0)
    SequenceBatch.from_numpy(a)  # keys and dtypes fit the model contract
    assert set(SEQ_KEYS) <= set(a)


def test_temporal_split_no_leak(hist):
    T, T_end = temporal_window(hist.timestamp.max(), test_days=5)
    assert T_end == hist.timestamp.max() + 1 and T_end - T == 5 * 86400
    train = restrict(hist, before_ts=T)
    assert train.timestamp.max() < T
    tr = pretrain_arrays(train, 32)
    assert tr["timestamp"][tr["target_mask"]].max() < T  # no test-window event is a training target
    ev = temporal_eval_arrays(hist, T, T_end, max_len=64)
    tgt_ts = ev["timestamp"][ev["target_mask"]]
    assert tgt_ts.size > 0 and tgt_ts.min() >= T
    assert (ev["grade"][ev["target_mask"]] >= 1).all()
    assert not ev["target_mask"][:, 0].any()
    # inputs include history before T (test users keep their full history)
    assert (ev["timestamp"][ev["valid"]] < T).any()
    # every positive test-window event of a user (not at position 0) is a target
    for r in range(0, len(ev["user_id"]), 11):
        e = hist.events_of(int(ev["user_id"][r]))
        want = e["item_id"][(e["timestamp"] >= T) & (e["grade"] >= 1)][-63:]
        got = ev["item_id"][r][ev["target_mask"][r]]
        assert set(got.tolist()) <= set(want.tolist()) and len(got) >= len(want) - 1
    neg = temporal_eval_arrays(hist, T, T_end, 64, positives_only_targets=False)
    assert neg["target_mask"].sum() > ev["target_mask"].sum()


def test_leave_one_out(hist):
    test = loo_eval_arrays(hist, 10, "test")
    valid = loo_eval_arrays(hist, 10, "valid")
    for arr, back in ((test, 1), (valid, 2)):
        assert (arr["target_mask"].sum(1) == 1).all()
        last = arr["valid"].sum(1) - 1
        assert np.array_equal(np.flatnonzero(arr["target_mask"][0]), [last[0]])
        for r in range(0, len(arr["user_id"]), 17):
            e = hist.events_of(int(arr["user_id"][r]))
            assert arr["item_id"][r][arr["target_mask"][r]][0] == e["item_id"][-back]
    train = drop_last(hist, 2)
    assert np.array_equal(train.lengths, hist.lengths[hist.lengths > 2] - 2)


def _ref_finetune(hist, lag, max_history, min_history, K, t_from, t_to, window_s):
    """Slow obviously-correct per-user reference of finetune_arrays."""
    use_req = (hist.request_id >= 0).any()
    rows = {}
    for u in range(hist.n_users):
        s, e = hist.offsets[u], hist.offsets[u + 1]
        idx = list(range(s, e))
        h = [i for i in idx if hist.timestamp[i] < t_to][-max_history:]
        groups = defaultdict(list)
        for i in idx:
            if use_req and hist.request_id[i] >= 0:
                groups[hist.request_id[i]].append(i)
            elif not use_req:
                groups[hist.timestamp[i] // window_s].append(i)
        elig = []
        for key, g in groups.items():
            gt = min(hist.timestamp[i] for i in g)
            n_before = sum(hist.timestamp[i] <= gt - lag for i in h)
            if (t_from <= gt < t_to and len(g) <= K and len({hist.grade[i] for i in g}) > 1
                    and n_before >= min_history):
                elig.append((gt, key, g))
        chosen, total = [], 0
        for gt, key, g in sorted(elig, key=lambda x: (-x[0], x[1])):
            if total + len(g) > K:
                break
            chosen.append((gt, key, g))
            total += len(g)
        if not chosen:
            continue
        imps, pairs = [], []
        for gt, key, g in sorted(chosen, key=lambda x: (x[0], x[1])):
            base = len(imps)
            imps += [(int(hist.item_id[i]), int(gt)) for i in g]
            for x, y in itertools.combinations(range(len(g)), 2):
                gx, gy = hist.grade[g[x]], hist.grade[g[y]]
                if gx != gy:
                    a, b = (x, y) if gx > gy else (y, x)
                    pairs.append((base + a, base + b, float(abs(int(gx) - int(gy)))))
        rows[int(hist.user_ids[u])] = (imps, sorted(pairs), [int(hist.item_id[i]) for i in h])
    return rows


def _check_finetune(hist, **kw):
    a = finetune_arrays(hist, **kw)
    ref = _ref_finetune(hist, kw["lag_s"], kw["max_history"], kw["min_history"], kw["max_impressions"],
                        kw.get("t_from", -2**62), kw.get("t_to", 2**62), kw.get("window_s", 3600))
    assert a["user_id"].tolist() == sorted(ref)
    for r, u in enumerate(a["user_id"].tolist()):
        imps, pairs, h = ref[u]
        v = a["imp_valid"][r]
        assert list(zip(a["imp_item"][r][v].tolist(), a["imp_time"][r][v].tolist())) == imps
        w = a["pair_w"][r] > 0
        got = sorted(zip(a["pair_a"][r][w].tolist(), a["pair_b"][r][w].tolist(), a["pair_w"][r][w].tolist()))
        assert got == pairs
        assert a["item_id"][r][a["valid"][r]].tolist() == h
    FinetuneBatch.from_numpy(a)
    return a


def test_finetune_arrays_requests_match_reference(hist):
    T, T_end = temporal_window(hist.timestamp.max(), 7)
    a = _check_finetune(hist, lag_s=86400, max_history=30, min_history=3, max_impressions=12, t_to=T)
    assert a["imp_valid"].sum(1).max() <= 12 and a["imp_time"][a["imp_valid"]].max() < T
    _check_finetune(hist, lag_s=0, max_history=500, min_history=0, max_impressions=5, t_from=T, t_to=T_end)


def test_finetune_arrays_windows_without_requests():
    rng = np.random.default_rng(1)
    n = 400
    t = pa.table({
        "user_id": rng.integers(0, 12, n), "timestamp": rng.integers(0, 20 * 3600, n),
        "item_id": rng.integers(1, 50, n), "is_organic": np.ones(n, bool), "surface": np.zeros(n, np.int8),
        "request_id": pa.nulls(n, pa.int64()), "position": pa.nulls(n, pa.int16()),
        "event_type": np.full(n, 6, np.int8), "played_ratio": pa.nulls(n, pa.float32()),
        "liked": rng.random(n) < 0.4, "disliked": rng.random(n) < 0.2, "rating": pa.nulls(n, pa.float32()),
    }).cast(EVENT_SCHEMA)
    h = build_histories(t)
    a = _check_finetune(h, lag_s=600, max_history=40, min_history=1, max_impressions=20, window_s=3600)
    assert len(a["user_id"]) > 0


def test_iterate_batches_deterministic(hist):
    arr = pretrain_arrays(hist, 16)
    b1 = list(iterate_batches(arr, 10, shuffle=True, seed=5))
    b2 = list(iterate_batches(arr, 10, shuffle=True, seed=5))
    assert all(np.array_equal(x["item_id"], y["item_id"]) for x, y in zip(b1, b2))
    assert sum(len(b["user_id"]) for b in b1) == len(arr["user_id"])
    seen = np.sort(np.concatenate([b["user_id"] for b in b1]))
    assert np.array_equal(seen, np.sort(arr["user_id"]))
    plain = list(iterate_batches(arr, 10, shuffle=False, seed=0))
    assert np.array_equal(plain[0]["item_id"], arr["item_id"][:10])
