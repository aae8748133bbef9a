"""Final-ranker metrics against slow references, and uplift from a planted-truth feature."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from argusrank.features.baseline import ARGUS_FEATURES, BASE_FEATURES, ranker_features
from argusrank.models.ranker import ndcg_at_k, pair_accuracy, pair_accuracy_diff_se, score, train_ranker


def _slow_pair_accuracy(s, g, q):
    num = den = 0.0
    for a, b in itertools.permutations(range(len(s)), 2):
        if q[a] == q[b] and g[a] > g[b]:
            w = g[a] - g[b]
            den += w
            num += w * (1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0)
    return num / den


def _slow_ndcg(s, g, q, k):
    vals = []
    for grp in sorted(set(q)):
        idx = [i for i in range(len(s)) if q[i] == grp]
        gains = {i: 2.0 ** (g[i] + 1) - 1 for i in idx}
        by_s = sorted(idx, key=lambda i: (-s[i], i))[:k]
        ideal = sorted(gains.values(), reverse=True)[:k]
        dcg = sum(gains[i] / np.log2(r + 2) for r, i in enumerate(by_s))
        idcg = sum(x / np.log2(r + 2) for r, x in enumerate(ideal))
        if idcg > 0:
            vals.append(dcg / idcg)
    return float(np.mean(vals))


def _random_requests(seed, n=90):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 12, n)
    g = rng.integers(-1, 3, n)
    s = np.round(rng.normal(size=n), 1)  # rounded: some ties
    return s, g, q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_accuracy_matches_slow_reference(seed):
    s, g, q = _random_requests(seed)
    assert pair_accuracy(s, g, q) == pytest.approx(_slow_pair_accuracy(s, g, q))


def test_pair_accuracy_weights_and_edges():
    q = np.array([7, 7, 7])
    g = np.array([2, 0, 1])  # like, skip, listen
    # order like > listen > skip: all right; swap like/skip only: pairs (like,skip) w2 and (like,listen) w1 wrong
    assert pair_accuracy(np.array([3.0, 1.0, 2.0]), g, q) == 1.0
    assert pair_accuracy(np.array([1.0, 3.0, 2.0]), g, q) == 0.0  # every pair reversed
    assert pair_accuracy(np.array([1.0, 0.0, 2.0]), g, q) == pytest.approx((2 + 1) / 4)
    assert np.isnan(pair_accuracy(np.ones(3), np.ones(3), q))  # no pair with different grades
    assert pair_accuracy(np.zeros(3), g, q) == 0.5  # ties count half


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ndcg_matches_slow_reference(k):
    s, g, q = _random_requests(3)
    s = s + np.arange(len(s)) * 1e-9  # break ties the same way in both
    assert ndcg_at_k(s, g, q, k) == pytest.approx(_slow_ndcg(s, g, q, k))


def test_ranker_features_from_raw_values():
    raw = {"item_pop_7d": [3.0, None], "user_last_ts": [100.0, 100.0], "ui_last_ts": [np.nan, 50.0],
           "ui_count": [None, 2.0], "argus_dot": [0.5, np.nan]}
    X = ranker_features(raw, 160, ARGUS_FEATURES)
    col = {f: X[:, i] for i, f in enumerate(ARGUS_FEATURES)}
    assert col["item_pop_7d"].tolist() == [3.0, 0.0]  # missing counts are 0
    assert col["user_recency_s"].tolist() == [60.0, 60.0]
    assert np.isnan(col["ui_recency_s"][0]) and col["ui_recency_s"][1] == 110.0
    assert col["ui_count"].tolist() == [0.0, 2.0] and np.isnan(col["argus_dot"][1])
    assert np.isnan(col["item_like_rate_7d"]).all()  # rates stay missing
    with pytest.raises(KeyError, match="unknown ranker feature 'bogus'"):
        ranker_features(raw, 0, ["bogus"])


def _planted(seed: int, n_req: int = 400, slate: int = 8):
    """Requests whose feedback follows a hidden affinity; baseline features see only popularity."""
    rng = np.random.default_rng(seed)
    n = n_req * slate
    q = np.repeat(np.arange(n_req), slate)
    pop = rng.gamma(2.0, 2.0, n)
    affinity = rng.normal(size=n)
    latent = 0.3 * np.log1p(pop) + affinity + rng.normal(scale=0.5, size=n)
    grade = np.digitize(latent, np.quantile(latent, [0.25, 0.5, 0.8])) - 1  # -1..2
    raw = {f: np.full(n, np.nan) for f in BASE_FEATURES}
    raw.update(item_pop_7d=pop, item_pop_30d=pop * 3 + rng.normal(size=n), user_events_7d=rng.poisson(5, n).astype(float),
               argus_dot=affinity + rng.normal(scale=0.3, size=n))  # the "ARGUS" feature carries the signal
    return raw, grade, q, affinity


def test_feature_with_true_signal_gives_uplift_same_seed_same_result():
    raw, grade, q, affinity = _planted(0)
    train = q < 280
    res = {}
    for name, names in (("base", BASE_FEATURES), ("argus", ARGUS_FEATURES)):
        X = pd.DataFrame(ranker_features(raw, 0, names), columns=list(names))
        m = train_ranker(X[train], grade[train], q[train], n_estimators=40, max_depth=4, learning_rate=0.1, seed=0, n_jobs=1)
        res[name] = pair_accuracy(score(m, X[~train]), grade[~train], q[~train])
        again = train_ranker(X[train], grade[train], q[train], n_estimators=40, max_depth=4, learning_rate=0.1, seed=0,
                             n_jobs=1)
        assert np.array_equal(score(again, X[~train]), score(m, X[~train]))  # same seed, same data, same scores
    oracle = pair_accuracy(affinity[~train], grade[~train], q[~train])
    assert res["argus"] > res["base"] + 0.1  # clear margin
    assert res["base"] > 0.5 and oracle > res["base"]


def test_pair_accuracy_diff_se_is_a_bootstrap_over_requests():
    """Each bootstrap draw equals the slow PairAccuracy difference on the requests drawn (with repeats); the SE is
    their spread, 0 for identical scores and larger for a noisier second scorer."""
    s, g, q = _random_requests(3, n=120)
    s2 = s + np.random.default_rng(4).normal(size=len(s))
    # the requests the bootstrap draws from: those with at least one pair of different grades
    groups = sorted(k for k in set(q.tolist()) if len(set(g[q == k].tolist())) > 1)
    counts = np.random.default_rng(0).multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=20)
    diffs = []
    for c in counts:
        idx, qq = [], []  # every drawn copy of a request becomes a request of its own
        for r, k in enumerate(groups):
            for copy in range(c[r]):
                members = np.flatnonzero(q == k)
                idx += members.tolist()
                qq += [r * 1000 + copy] * len(members)
        idx, qq = np.array(idx), np.array(qq)
        diffs.append(_slow_pair_accuracy(s[idx], g[idx], qq) - _slow_pair_accuracy(s2[idx], g[idx], qq))
    assert pair_accuracy_diff_se(s, s2, g, q, n_boot=20) == pytest.approx(np.std(diffs, ddof=1))
    assert pair_accuracy_diff_se(s, s, g, q) == 0.0
    assert pair_accuracy_diff_se(s, s2 + 3 * np.random.default_rng(5).normal(size=len(s)), g, q) > \
        pair_accuracy_diff_se(s, s + 1e-3 * np.random.default_rng(5).normal(size=len(s)), g, q)
