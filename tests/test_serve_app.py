"""The real Ray Serve app over HTTP on a tiny trained pipeline (real Feast SQLite store, real
MLflow SQLite registry, real XGBoost ranker): answers equal an independent offline
computation, bad requests get 4xx, unknown users get the popular fallback, a killed
replica under load keeps the app serving, and an alias move is picked up without mixing
vector versions."""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

import httpx
from serve_corpus import answer_items as _items
from serve_corpus import assert_same_answer as _assert_same
from serve_corpus import check_bad_requests
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

pytestmark = pytest.mark.ray

N_USERS, N_ITEMS, DIM, N_CAND = 40, 150, 16, 40
UNKNOWN_USER = 987_654


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_vectors(cfg, version: int, users: np.ndarray, items: np.ndarray, seed: int, event_ts: int):
    """User/item vectors of one model version into the export parquet; returns (U by user id, V)."""
    from argusrank.features.vectors import vector_table, write_vectors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, DIM))
    V = (centres[rng.integers(0, 6, len(items))] + 0.5 * rng.normal(size=(len(items), DIM))).astype(np.float32)
    U = (centres[rng.integers(0, 6, len(users))] + 0.5 * rng.normal(size=(len(users), DIM))).astype(np.float32)
    now = time.time()
    write_vectors(cfg, "user", vector_table("user", users, U, version, event_ts, now), f"v{version}")
    write_vectors(cfg, "item", vector_table("item", items, V, version, event_ts, now), f"v{version}")
    return dict(zip(users.tolist(), U)), V


def _write_nip_vectors(cfg, version: int, users: np.ndarray, items: np.ndarray, seed: int, event_ts: int):
    """NIP-head user queries / item embeddings of one model version; returns (UN by user id, VN)."""
    from argusrank.features.vectors import vector_table, write_vectors

    rng = np.random.default_rng(seed)
    VN = rng.normal(size=(len(items), 8)).astype(np.float32)
    UN = rng.normal(size=(len(users), 8)).astype(np.float32)
    write_vectors(cfg, "user_nip", vector_table("user_nip", users, UN, version, event_ts, time.time()), f"v{version}")
    write_vectors(cfg, "item_nip", vector_table("item_nip", items, VN, version, event_ts, time.time()), f"v{version}")
    return dict(zip(users.tolist(), UN)), VN


def _train_and_register(cfg, version: int, users: np.ndarray, items: np.ndarray, seed: int) -> int:
    """A real XGBRanker on online features of (user, item) samples; registered with alias champion."""

    from argusrank.features.baseline import ARGUS_FEATURES, ranker_features
    from argusrank.features.store import online_features
    from argusrank.models.ranker import train_ranker

    rng = np.random.default_rng(seed)
    xs, grades, groups = [], [], []
    for g, u in enumerate(users[:25]):
        its = rng.choice(items, 12, replace=False)
        raw = online_features(cfg, int(u), its)
        x = ranker_features(raw, cfg.serve.as_of, ARGUS_FEATURES)
        xs.append(x)
        grades.append(np.digitize(raw["argus_dot"] + rng.normal(0, 1, len(its)), [-2, 0, 2]) - 1)
        groups.append(np.full(len(its), g))
    X = pd.DataFrame(np.concatenate(xs), columns=list(ARGUS_FEATURES))
    model = train_ranker(X, np.concatenate(grades), np.concatenate(groups), n_estimators=15, max_depth=3,
                         learning_rate=0.3, seed=seed, n_jobs=1)
    from argusrank.platform.tracking import start_run

    from argusrank.platform.registry import log_ranker
    with start_run(cfg, "serve-test"):  # artifacts under the home, not ./mlruns
        info = log_ranker(model, registered_model_name=cfg.mlflow.ranker_model_name)
    v = info.registered_model_version
    from argusrank.platform.registry import publish_ranker

    publish_ranker(cfg, int(v), version, "champion")
    return int(v)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Tiny trained pipeline: synth events -> baseline features -> vectors v1 -> Feast -> ranker in MLflow."""
    from argusrank.features.baseline import compute_baseline, snapshot_times, write_baseline
    from argusrank.features.io import read_events
    from argusrank.features.store import materialize
    from argusrank.features.synth import synthesize
    from argusrank.platform.config import load_config

    home = tmp_path_factory.mktemp("serve_home")
    cfg = load_config(overrides={
        "paths.home": str(home), "data.synth.n_users": N_USERS, "data.synth.n_items": N_ITEMS, "data.synth.days": 6,
        "data.synth.dim": 4, "serve.port": _free_port(), "serve.num_candidates": N_CAND,
        "serve.candidates": None,  # the tower source alone: the references below compute exact tower top-N
        "serve.reload_interval_s": 0.5, "serve.topology": "composed", "serve.ingress": "proxy",
    }, env={})
    synthesize(cfg.data.synth, home / "data" / "synth", seed=0)
    events = read_events(home / "data" / "synth")
    ts = events["timestamp"].to_numpy()
    write_baseline(compute_baseline(events, snapshot_times(int(ts.min()), int(ts.max()))), cfg.paths.baseline_dir)
    end = int(ts.max()) + 1
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"as_of": float(end + 3600)})})
    users = np.unique(events["user_id"].to_numpy())
    items = np.arange(N_ITEMS, dtype=np.int64)
    U, V = _write_vectors(cfg, 1, users, items, seed=1, event_ts=end)
    UN, VN = _write_nip_vectors(cfg, 1, users, items, seed=7, event_ts=end)
    materialize(cfg)
    ranker_v = _train_and_register(cfg, 1, users, items, seed=1)
    return {"cfg": cfg, "users": users, "items": items, "U": U, "V": V, "UN": UN, "VN": VN, "end": end,
            "ranker_v": ranker_v}


@pytest.fixture(scope="module")
def app(pipeline):
    import ray

    from argusrank.platform.serving.run import start_serving, stop_serving

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, namespace="serve",
             log_to_driver=False)
    try:
        url = start_serving(pipeline["cfg"], blocking=False, deployment_options={
            "Ranker": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.25}},
        })
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        stop_serving()
        ray.shutdown()


def _load_booster(cfg, version: int):
    import mlflow.xgboost

    import mlflow
    mlflow.set_registry_uri(cfg.tracking_uri)
    m = mlflow.xgboost.load_model(f"models:/{cfg.mlflow.ranker_model_name}/{version}")
    return m.get_booster()


def reference_rank(pipeline, user: int, items: np.ndarray, k: int, ranker_version: int) -> list[tuple[int, float]]:
    """Offline reference: Feast features + ranker_features + booster.predict(DMatrix): (item, score) best first."""
    import xgboost as xgb

    from argusrank.features.baseline import ranker_features
    from argusrank.features.store import online_features

    cfg = pipeline["cfg"]
    booster = _load_booster(cfg, ranker_version)
    names = booster.feature_names
    x = ranker_features(online_features(cfg, user, items), cfg.serve.as_of, names)
    s = booster.predict(xgb.DMatrix(x, feature_names=names))
    order = np.lexsort((items, -s))[:k]
    return [(int(items[i]), float(s[i])) for i in order]


def reference_recommend(pipeline, user: int, k: int, ranker_version: int, exclude=()) -> list[tuple[int, float]]:
    """Offline reference: exact top-N by numpy over the exported vectors, then :func:`reference_rank`."""
    dots = pipeline["V"] @ pipeline["U"][user]
    items = pipeline["items"]
    ok = ~np.isin(items, list(exclude))
    cand = items[ok][np.argsort(-dots[ok], kind="stable")[:N_CAND]]
    return reference_rank(pipeline, user, cand, k, ranker_version)


@pytest.mark.parametrize("path", ["cached_items", "feast_batched"])
def test_in_process_pipeline_equals_offline_for_both_feature_paths(pipeline, path):
    from argusrank.platform.serving.flow import InProcessPipeline

    cfg = pipeline["cfg"]
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"features_path": path})})
    pipe, user = InProcessPipeline(cfg), int(pipeline["users"][5])
    got = pipe.recommend(user, 10)
    assert got["fallback"] is None and got["model_versions"] == {"argus": 1, "ranker": pipeline["ranker_v"]}
    _assert_same(_items(got), reference_recommend(pipeline, user, 10, pipeline["ranker_v"]))


def _popular_order(pipeline) -> list[int]:
    t = ds.dataset(pipeline["cfg"].paths.baseline_dir / "item_stats").to_table().to_pandas()
    t = t[t["event_timestamp"] == t["event_timestamp"].max()].set_index("item_id")
    pop = t.reindex(pipeline["items"])[["item_pop_7d", "item_pop_30d"]].fillna(0.0).reset_index(drop=True)
    pop["item_id"] = pipeline["items"]
    return pop.sort_values(["item_pop_7d", "item_pop_30d", "item_id"], ascending=[False, False, True])["item_id"].tolist()


def test_merged_candidate_sources_equal_a_reference_merge(pipeline):
    """serve.candidates merges NIP-ANN, popularity and tower-ANN with quotas, de-duplicated, then ranks."""
    from argusrank.platform.serving.flow import InProcessPipeline

    cfg = pipeline["cfg"]
    sources = [{"source": "nip", "k": 15}, {"source": "popular", "k": 10}, {"source": "tower", "k": 15}]
    cfg = type(cfg).model_validate({**cfg.model_dump(mode="json"),
                                    "serve": {**cfg.serve.model_dump(mode="json"), "candidates": sources}})
    pipe, items = InProcessPipeline(cfg), pipeline["items"]
    assert [c["source"] for c in pipe.state.info()["candidates"]] == ["nip", "popular", "tower"]
    for user in pipeline["users"][:3].tolist():
        lists = [items[np.argsort(-(pipeline["VN"] @ pipeline["UN"][user]), kind="stable")].tolist(),
                 _popular_order(pipeline), items[np.argsort(-(pipeline["V"] @ pipeline["U"][user]), kind="stable")].tolist()]
        merged: list[int] = []
        for lst, src in zip(lists, sources):
            merged += [i for i in lst if i not in merged][: src["k"]]
        got = pipe.recommend(user, 10)
        assert got["ranked_candidates"] == len(merged) == 40
        _assert_same(_items(got), reference_rank(pipeline, user, np.asarray(merged), 10, pipeline["ranker_v"]))


def test_recommend_and_rank_equal_offline_pipeline(app, pipeline):
    for user in pipeline["users"][:3].tolist():
        r = app.post("/recommend", json={"user_id": user, "k": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] is None and body["model_versions"] == {"argus": 1, "ranker": pipeline["ranker_v"]}
        assert body["ranked_candidates"] == N_CAND
        _assert_same(_items(body), reference_recommend(pipeline, user, 10, pipeline["ranker_v"]))
    user = int(pipeline["users"][3])
    excl = [i for i, _ in reference_recommend(pipeline, user, 5, pipeline["ranker_v"])]
    r = app.post("/recommend", json={"user_id": user, "k": 10, "exclude": excl}).json()
    assert not set(excl) & {i for i, _ in _items(r)}
    _assert_same(_items(r), reference_recommend(pipeline, user, 10, pipeline["ranker_v"], exclude=excl))
    given = np.random.default_rng(0).choice(pipeline["items"], 15, replace=False)
    r = app.post("/rank", json={"user_id": user, "item_ids": given.tolist()}).json()
    _assert_same(_items(r), reference_rank(pipeline, user, given, 15, pipeline["ranker_v"]))


@pytest.mark.parametrize("body, field", [
    ({"k": 10}, "user_id"),                                    # missing field
    ({"user_id": "12", "k": 10}, "user_id"),                   # wrong type (strict)
    ({"user_id": 1, "k": 0}, "k"),                             # out of range
    ({"user_id": 1, "k": 100_000}, "k"),                       # above serve.max_k
    ({"user_id": 1, "k": 5, "exclude": "abc"}, "exclude"),
    ({"user_id": 1, "k": 5, "surprise": 1}, "surprise"),       # unknown field
    ([1, 2], "object"),
])
def test_bad_recommend_requests_get_4xx_with_message(app, body, field):
    r = app.post("/recommend", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.text


def test_bad_bodies_get_4xx(app, pipeline):
    big = {"user_id": 1, "k": 5, "exclude": list(range(60_000))}
    assert app.post("/recommend", json=big).status_code == 413
    assert app.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    r = app.post("/rank", json={"user_id": 1, "item_ids": []})
    assert r.status_code == 422 and "item_ids" in r.text
    r = app.post("/rank", json={"user_id": 1, "item_ids": [3, 3]})
    assert r.status_code == 422 and "distinct" in r.text
    assert app.get("/recommend").status_code == 405


def test_corrupt_requests_get_4xx_and_spare_valid_requests(app, pipeline):
    """Composed topology through the proxy: bad requests never reach a @serve.batch with valid ones."""
    check_bad_requests(app, {"user_id": int(pipeline["users"][0]), "k": 5})


def test_rank_names_unknown_items(app, pipeline):
    user, known = int(pipeline["users"][0]), int(pipeline["items"][3])
    body = app.post("/rank", json={"user_id": user, "item_ids": [known, 999_999]}).json()
    assert body["unknown_items"] == [999_999] and body["fallback"] is None
    assert {it["item_id"] for it in body["items"]} == {known, 999_999}  # answered, scored without argus_dot


def test_unknown_user_gets_popular_fallback(app, pipeline):
    want = _popular_order(pipeline)
    r = app.post("/recommend", json={"user_id": UNKNOWN_USER, "k": 8, "exclude": [want[0]]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] == "unknown_user"
    assert [i for i, _ in _items(body)] == want[1:9]


def test_healthz_and_version(app, pipeline):
    assert app.get("/healthz").json() == {"status": "ok"}
    v = app.get("/version").json()
    assert v["model_versions"] == {"argus": 1, "ranker": pipeline["ranker_v"]}
    assert v["index"] == {"kind": "exact", "items": N_ITEMS, "dim": DIM}


def test_killing_a_replica_under_load_keeps_serving(app, pipeline):
    import ray

    url = str(app.base_url)
    users = pipeline["users"][:10].tolist()
    codes: Counter = Counter()
    after_kill: Counter = Counter()
    killed = threading.Event()
    stop = time.time() + 8.0

    def load():
        with httpx.Client(base_url=url, timeout=10) as c:
            i = 0
            while time.time() < stop and i < 400:
                try:
                    code = c.post("/recommend", json={"user_id": users[i % len(users)], "k": 5}).status_code
                except httpx.HTTPError:
                    code = -1
                codes[code] += 1
                if killed.is_set():
                    after_kill[code] += 1
                i += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    (victim,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if "SERVE_REPLICA" in a["name"] and "Ranker" in a["name"]][:1]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    killed.set()
    for t in threads:
        t.join()
    errors = sum(n for c, n in codes.items() if c != 200)
    print(f"\nreplica kill under load: {sum(codes.values())} requests, {errors} errors, codes {dict(codes)}, "
          f"after kill {dict(after_kill)}")
    assert after_kill[200] > 20, after_kill
    assert errors <= 0.05 * sum(codes.values()), codes
    assert app.post("/recommend", json={"user_id": users[0], "k": 5}).status_code == 200


def test_alias_move_is_picked_up_without_mixing_versions(app, pipeline):
    from argusrank.features.store import materialize

    cfg, user = pipeline["cfg"], int(pipeline["users"][0])
    U2, V2 = _write_vectors(cfg, 2, pipeline["users"], pipeline["items"], seed=2, event_ts=pipeline["end"] + 60)
    materialize(cfg)
    # the online store moved to v2 but the alias did not: never score v2 user vectors against v1 items
    r = app.post("/recommend", json={"user_id": user, "k": 5}).json()
    assert r["fallback"] == "version_mismatch" and r["model_versions"]["argus"] == 1
    ranker_v2 = _train_and_register(cfg, 2, pipeline["users"], pipeline["items"], seed=2)
    deadline = time.time() + 90
    while time.time() < deadline and app.get("/version").json()["model_versions"]["argus"] != 2:
        time.sleep(0.5)
    assert app.get("/version").json()["model_versions"] == {"argus": 2, "ranker": ranker_v2}
    pipeline2 = {**pipeline, "U": U2, "V": V2}
    body = app.post("/recommend", json={"user_id": user, "k": 10}).json()
    assert body["fallback"] is None and body["model_versions"] == {"argus": 2, "ranker": ranker_v2}
    _assert_same(_items(body), reference_recommend(pipeline2, user, 10, ranker_v2))


def test_cached_feature_path_reads_the_same_pair_features_as_per_pair_feast_reads(pipeline):
    """``user_item_priors`` (one row per user) gives the values of one ``user_item`` Feast row per candidate."""
    from argusrank.features.baseline import USER_ITEM, USER_STATS
    from argusrank.features.store import online_features
    from argusrank.platform.serving.ranking_features import ItemFeatureCache, raw_features_cached

    cfg, items = pipeline["cfg"], pipeline["items"]
    cache, seen = ItemFeatureCache(cfg), 0
    for user in pipeline["users"][:5].tolist():
        want = online_features(cfg, user, items)
        got = raw_features_cached(cfg, user, items, {"argus_dot": np.zeros(len(items))}, cache)
        for f in (*USER_ITEM.features, *USER_STATS.features, "item_pop_7d"):
            np.testing.assert_array_equal(got[f], np.asarray(want[f], np.float64), err_msg=f"user {user} {f}")
        seen += int(np.isfinite(got["ui_count"]).sum())
    assert seen > 0  # some candidates were seen before: the join is exercised


def test_direct_ingress_config_sets_serve_flags_on_controller_and_ingress_only():
    from argusrank.platform.config import load_config
    from argusrank.platform.serving.run import serve_config

    cfg = load_config(overrides={"serve.ingress": "direct", "serve.direct_port": 18101, "serve.topology": "fused"},
                      env={})
    conf = serve_config(cfg, {"Ingress": {"ray_actor_options": {"runtime_env": {"env_vars": {"X": "1"}}}}})
    env = conf["controller_options"]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "18101"
    (dep,) = conf["applications"][0]["deployments"]
    assert dep["name"] == "Ingress"
    assert dep["ray_actor_options"]["runtime_env"]["env_vars"] == {"X": "1", **env}  # merged, not replaced
    proxy = load_config(overrides={"serve.ingress": "proxy"}, env={})
    assert "controller_options" not in serve_config(proxy)  # proxy: Serve as shipped
    with pytest.raises(ValueError, match="direct_port"):
        load_config(overrides={"serve.port": 9000, "serve.direct_port": 9000}, env={})
