"""The ranker's ARGUS features (features/argus_features.py): what each computes, and that serving computes for
the same (user, items, time) exactly what the training set holds, for the features the registered ranker
records; older rankers (argus_dot only, no feature tag) keep serving, unknown features are refused by name."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from argusrank.features import argus_features as af
from argusrank.features import baseline, store, vectors
from argusrank.features.baseline import BASE_FEATURES, ranker_features
from argusrank.platform.config import load_config

T0 = 1_700_000_000
DAY = 86400
USERS, ITEMS = np.arange(1, 16), np.arange(1, 41)
DIMS = {"user": 8, "item": 8, "user_nip": 6, "item_nip": 6, "user_fp": 5, "item_fp": 5}
ALL = (*BASE_FEATURES, *af.all_features(4))


# --- what each feature is --------------------------------------------------------------------------------

def test_blocks_sum_to_the_dot_and_each_feature_is_its_pair_of_vectors():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(1, 10)), rng.normal(size=(7, 10))
    un, vn = rng.normal(size=(1, 4)), rng.normal(size=(7, 4))
    got = af.argus_features(af.all_features(3), {"user": u, "item": v, "user_nip": un, "item_nip": vn})
    np.testing.assert_allclose(got["argus_dot"], v @ u[0])
    np.testing.assert_allclose(got["nip_dot"], vn @ un[0])
    np.testing.assert_allclose(sum(got[f] for f in af.block_features(3)), got["argus_dot"])
    np.testing.assert_allclose(got["argus_dot_b1of3"], v[:, 4:7] @ u[0, 4:7])  # blocks of 4, 3, 3 dims
    assert np.isnan(got["fp_liked"]).all()  # no FP vectors given: missing, not 0
    missing = af.argus_features(["argus_dot"], {"user": np.full((1, 10), np.nan), "item": v})
    assert np.isnan(missing["argus_dot"]).all()


def test_fp_features_equal_the_torch_head_on_the_concatenated_input():
    from argusrank.models.config import preset
    from argusrank.models.heads import FPHead

    cfg = preset("tiny")
    torch.manual_seed(0)
    head = FPHead(cfg, 3 * cfg.d_model).eval()
    x = torch.randn(9, 3 * cfg.d_model)
    with torch.no_grad():
        want = {t: torch.sigmoid(v).numpy() for t, v in head(x).items()}
        user = head.user_part(x[:, : 2 * cfg.d_model]).numpy()
        item = head.item_part(x[:, 2 * cfg.d_model:]).numpy()
    w, b = head.output_layer()
    got = af.argus_features(list(af.FP_FEATURES), {"user_fp": user, "item_fp": item},
                            {"weight": w.numpy(), "bias": b.numpy()})
    for name, target in af.FP_FEATURES.items():
        np.testing.assert_allclose(got[name], want[target], rtol=1e-5, atol=1e-6)


def test_names_kinds_and_unknown_features():
    assert af.is_argus_feature("nip_dot") and af.is_argus_feature("argus_dot_b3of4")
    assert not af.is_argus_feature("argus_dot_b4of4") and not af.is_argus_feature("item_pop_7d")
    assert af.kinds_for(["fp_skip", "argus_dot"]) == ("user", "item", "user_fp", "item_fp")
    with pytest.raises(ValueError, match="unknown ARGUS features"):
        load_config(env={}, overrides={"ranker.argus_features": ["argus_dot", "nip_cosine"]})
    with pytest.raises(KeyError, match="'nip_dot' is not among the raw features"):
        ranker_features({"argus_dot": [0.1]}, 0, ["argus_dot", "nip_dot"])  # never a silent NaN column


# --- training side == serving side --------------------------------------------------------------------

def _events(n: int = 900, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": rng.choice(USERS, n), "timestamp": np.sort(rng.integers(0, 6 * DAY, n)) + T0,
        "item_id": rng.choice(ITEMS, n), "played_ratio": rng.random(n).astype(np.float32),
        "liked": rng.random(n) < 0.2, "disliked": rng.random(n) < 0.05,
    })


def _register(cfg, names, seed: int, tag: bool = True, booster_names=None) -> int:
    """A real XGBRanker over ``names`` (random rows), registered and published as champion of ARGUS v1."""
    import xgboost as xgb

    from argusrank.platform.registry import publish_ranker
    from argusrank.platform.tracking import start_run

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(200, len(names))), columns=list(booster_names or names))
    y = rng.integers(0, 4, 200)
    model = xgb.XGBRanker(n_estimators=8, max_depth=3, n_jobs=1, random_state=seed).fit(
        X, y, qid=np.repeat(np.arange(20), 10))
    from argusrank.platform.registry import log_ranker
    with start_run(cfg, "test-ranker"):
        info = log_ranker(model, registered_model_name=cfg.mlflow.ranker_model_name)
    v = int(info.registered_model_version)
    publish_ranker(cfg, v, 1, "champion", features=tuple(names) if tag else None)
    return v


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Baseline features, vectors of every kind (v1) and the FP head, materialized; requests at ``t``."""
    cfg = load_config(env={}, overrides={"paths.home": str(tmp_path_factory.mktemp("home")),
                                         "serve.candidates": None, "serve.num_candidates": 25})
    ev = _events()
    snaps = baseline.snapshot_times(T0, T0 + 6 * DAY)
    baseline.write_baseline(baseline.compute_baseline(ev, snaps), cfg.paths.baseline_dir)
    rng = np.random.default_rng(1)
    for kind, d in DIMS.items():
        ids = USERS if kind.startswith("user") else ITEMS
        vec = rng.normal(size=(len(ids), d)).astype(np.float32)
        vectors.write_vectors(cfg, kind, vectors.vector_table(kind, ids, vec, 1, int(snaps[-1]), time.time()), "v1_a")
    vectors.write_head(cfg, af.FP_HEAD, 1, {"weight": rng.normal(size=(4, DIMS["item_fp"])),
                                             "bias": rng.normal(size=4)})
    store.materialize(cfg)
    t = int(snaps[-1]) + 3600  # after the last snapshot and event: the online rows are the PIT rows
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"as_of": float(t)})}), t


def _training_side(cfg, user: int, items: np.ndarray, t: int, names) -> np.ndarray:
    df = pd.DataFrame({"user_id": user, "item_id": items, "event_timestamp": pd.Timestamp(t, unit="s", tz="UTC")})
    feats = store.historical_features(cfg, df, argus=[f for f in names if af.is_argus_feature(f)])
    return ranker_features({c: feats[c].to_numpy() for c in feats.columns}, t, names)


def _serving_side(cfg, user: int, items: np.ndarray, t: int, names, path: str) -> np.ndarray:
    from argusrank.platform.serving.candidates import generate_candidates, load_candidate_state
    from argusrank.platform.serving.ranking_features import ItemFeatureCache, features_for

    state = load_candidate_state(cfg)
    cand = generate_candidates(cfg, state, [{"user_id": user, "items": items.tolist()}])[0]
    assert cand["fallback"] is None
    raw = features_for(cfg, user, cand, ItemFeatureCache(cfg) if path == "cached_items" else None)
    return ranker_features(raw, t, names)


@pytest.mark.parametrize("path", ["cached_items", "feast_batched"])
def test_serving_features_equal_the_training_set_for_the_same_user_items_and_time(home, path):
    cfg, t = home
    _register(cfg, ALL, seed=0)
    items = np.array([40, 3, 17, 1, 22, 9, 33])
    for user in (2, 7, 15):
        want = _training_side(cfg, user, items, t, ALL)
        got = _serving_side(cfg, user, items, t, ALL, path)
        assert np.isfinite(want[:, [ALL.index(f) for f in af.all_features(4)]]).all()  # every ARGUS feature there
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True)


def test_the_served_ranker_scores_with_the_features_it_records(home):
    """/rank and /recommend in process: the registered ranker's scores of the training-side rows."""
    from argusrank.models.ranker import score
    from argusrank.platform.registry import load_ranker
    from argusrank.platform.serving.flow import InProcessPipeline

    cfg, t = home
    names = (*BASE_FEATURES, "argus_dot", "nip_dot", "fp_liked", "fp_skip")
    v = _register(cfg, names, seed=1)
    pipe = InProcessPipeline(cfg)
    assert pipe.state.bundle.features == names and pipe.state.user_spaces == ["tower", "nip", "fp"]
    model, _, _ = load_ranker(cfg, v)
    items = np.array([5, 6, 7, 30, 31])
    ans = pipe.rank(4, items.tolist(), as_of=t)
    want = score(model, _training_side(cfg, 4, items, t, names))
    got = {it["item_id"]: it["score"] for it in ans["items"]}
    np.testing.assert_allclose([got[i] for i in items], want, rtol=1e-5)
    rec = pipe.recommend(4, k=25, as_of=t)
    ids = np.array([it["item_id"] for it in rec["items"]])
    np.testing.assert_allclose([it["score"] for it in rec["items"]],
                               score(model, _training_side(cfg, 4, ids, t, names)), rtol=1e-5)


def test_an_older_ranker_without_a_feature_list_still_serves(home):
    """Registered before the feature tag: base + argus_dot from its booster; only argus_dot computed."""
    from argusrank.features.baseline import ARGUS_FEATURES
    from argusrank.models.ranker import score
    from argusrank.platform.registry import load_ranker
    from argusrank.platform.serving.flow import InProcessPipeline

    cfg, t = home
    v = _register(cfg, ARGUS_FEATURES, seed=2, tag=False)
    pipe = InProcessPipeline(cfg)
    assert pipe.state.bundle.features is None and pipe.state.bundle.argus_features == ("argus_dot",)
    assert pipe.state.user_spaces == ["tower"] and set(pipe.state.item_vecs) == {"item"}
    items = np.array([2, 4, 8])
    ans = pipe.rank(9, items.tolist(), as_of=t)
    model, _, _ = load_ranker(cfg, v)
    got = {it["item_id"]: it["score"] for it in ans["items"]}
    np.testing.assert_allclose([got[i] for i in items], score(model, _training_side(cfg, 9, items, t, ARGUS_FEATURES)),
                               rtol=1e-5)


def test_rankers_with_features_serving_cannot_compute_are_refused_by_name(home):
    from argusrank.platform.serving.bundle import NothingToServe, resolve_bundle
    from argusrank.platform.serving.ranking import load_ranker_state

    cfg, _ = home
    _register(cfg, (*BASE_FEATURES, "argus_dot", "user_mood"), seed=3)
    with pytest.raises(NothingToServe, match=r"features \['user_mood'\] this argusrank cannot compute"):
        resolve_bundle(cfg)
    v = _register(cfg, (*BASE_FEATURES, "argus_dot"), seed=4, tag=False, booster_names=(*BASE_FEATURES, "argus_cos"))
    with pytest.raises(NothingToServe, match=r"\['argus_cos'\]"):
        load_ranker_state(cfg, v)
    v = _register(cfg, (*BASE_FEATURES, "argus_dot", "nip_dot"), seed=5, booster_names=(*BASE_FEATURES, "nip_dot",
                                                                                           "argus_dot"))
    with pytest.raises(NothingToServe, match="differ from its 'ranker_features' tag"):
        load_ranker_state(cfg, v)
