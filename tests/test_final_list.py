"""The final /recommend list offline (platform/training/final_list.py): NDCG@10 of the served candidates ranked,
against a slow per-query loop; ranker.train_on=candidates rows = the served merge with the user's next grades;
and the ranker job end to end on a log without impressions (ML-100K's shape)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from argusrank.features import baseline
from argusrank.features.histories import build_histories
from argusrank.features.schema import EVENT_SCHEMA, EVENT_TYPE_CODE
from argusrank.features.splits import Split
from argusrank.platform.training import final_list as fl
from argusrank.platform.training.candidate_recall import CandidateContext, _popular_orders

T0, DAY = 1_700_000_000, 86400
N_USERS, N_ITEMS, DAYS, TEST_DAYS = 14, 40, 8, 4


def _events(seed: int = 0, n: int = 700, requests: bool = False) -> pa.Table:
    """Random events over DAYS days, grades from played_ratio / liked / disliked; no impressions unless told."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(T0, T0 + DAYS * DAY, n))
    user = rng.integers(1, N_USERS + 1, n)
    late = user == 1  # a user who arrives in the test window: the fallback (popular, unranked) first
    ts[late] = T0 + (DAYS - TEST_DAYS) * DAY + DAY // 2 + (ts[late] - T0) * (TEST_DAYS - 1) // DAYS
    rid = np.where(rng.random(n) < 0.5, rng.integers(0, 60, n), -1) if requests else np.full(n, -1)
    return pa.table({
        "user_id": user, "timestamp": ts, "item_id": rng.integers(1, N_ITEMS + 1, n) * 3,
        "is_organic": rid < 0, "surface": np.full(n, 1, np.int8),
        "request_id": pa.array(rid, mask=rid < 0, type=pa.int64()),
        "position": pa.array(np.zeros(n, np.int16), mask=rid < 0, type=pa.int16()),
        "event_type": np.full(n, EVENT_TYPE_CODE["listen"], np.int8),
        "played_ratio": rng.random(n).astype(np.float32), "liked": rng.random(n) < 0.2,
        "disliked": rng.random(n) < 0.05, "rating": pa.nulls(n, pa.float32()),
    }).select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)


class _Vecs:
    """Random tower / NIP vectors; a user's vector depends on the user and the snapshot."""

    def __init__(self, hist, catalog, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.hist, self.items = hist, {s: rng.normal(size=(len(catalog), 5)).astype(np.float32) for s in ("tower", "nip")}

    def users(self, space, u, end, as_of):
        rng = np.random.default_rng(u * 1000 + (as_of // DAY) % 1000 + (space == "nip"))
        return rng.normal(size=(len(u), 5)).astype(np.float32)


def _ctx(cfg, events: pa.Table) -> CandidateContext:
    from argusrank.platform.export import default_snapshots

    hist = build_histories(events)
    T_end = int(events["timestamp"].to_numpy().max()) + 1
    split = Split("temporal", T_end - TEST_DAYS * DAY, T_end)
    snaps = default_snapshots(cfg, split.T, split.T_end)
    catalog = np.unique(hist.item_id)
    stats = baseline.compute_baseline(events, snaps)[baseline.ITEM_STATS.name]
    return CandidateContext(hist, split, snaps, catalog, _popular_orders(stats, snaps, catalog),
                            _Vecs(hist, catalog))


@pytest.fixture(scope="module")
def cfg():
    from argusrank.platform.config import load_config

    return load_config(env={}, overrides={"serve.candidates": [{"source": "nip", "k": 12}, {"source": "popular", "k": 6}]})


def _slow_labels(ctx, user_idx: int, s: int) -> dict[int, int]:
    """{item id: best grade} of one user's events from snapshot s to the next (T_end after the last)."""
    nxt = ctx.snaps[ctx.snaps > s]
    end = int(nxt[0]) if len(nxt) else ctx.split.T_end
    out: dict[int, int] = {}
    for e in range(ctx.hist.offsets[user_idx], ctx.hist.offsets[user_idx + 1]):
        if s <= ctx.hist.timestamp[e] < end:
            item = int(ctx.hist.item_id[e])
            out[item] = max(out.get(item, -9), int(ctx.hist.grade[e]))
    return out


def _slow_score(user: int, item: int) -> float:
    return float((user * 7 + item * 13) % 11)  # ties on purpose: broken by item id


def test_final_list_ndcg_matches_a_slow_loop(cfg):
    ctx = _ctx(cfg, _events())
    qu, qs = fl.window_queries(ctx, ctx.split.T, ctx.split.T_end, positives=True)
    assert len(qu) > 10
    calls = []

    def score_rows(df):
        calls.append(df)
        assert (df["event_timestamp"].astype("int64") // 10**9 == df["ts"]).all()
        return np.array([_slow_score(u, i) for u, i in zip(df["user_id"], df["item_id"])], np.float32)

    got = fl.final_ndcg(cfg, ctx, qu, qs, score_rows, k=10)
    assert len(calls) == 1  # one feature read for every configuration
    known = ctx.known(qu, qs) > 0
    assert 0 < known.sum() < len(qu)  # both ranked users and fallback (no history yet) ones
    for filtered, name in ((False, "seen_kept"), (True, "seen_filtered"), (False, "source_order")):
        lists = fl.served_lists(cfg, ctx, qu, qs, filtered)
        assert set(got[name]) == {"popular", "tower", "nip", "merged"}
        for config, L in lists.items():
            vals = []
            for q in range(len(qu)):
                user, s = int(ctx.hist.user_ids[qu[q]]), int(ctx.snaps[qs[q]])
                items = [int(ctx.catalog[p]) for p in L[q] if p >= 0]
                own = slice(ctx.hist.offsets[qu[q]], ctx.hist.offsets[qu[q] + 1])
                before = ctx.hist.item_id[own][ctx.hist.timestamp[own] <= s].tolist()
                if filtered:  # serving's exclude: nothing the user had before the snapshot
                    assert not set(items) & set(before)
                # a user with a history is ranked; a new one gets the fallback order as it comes
                ranked = sorted(items, key=lambda i: (-_slow_score(user, i), i)) if before and name != "source_order" \
                    else items
                lab = _slow_labels(ctx, int(qu[q]), s)
                gain = {i: 2.0 ** max(g, 0) - 1 for i, g in lab.items()}
                dcg = sum(gain.get(i, 0.0) / np.log2(r + 2) for r, i in enumerate(ranked[:10]))
                idcg = sum(x / np.log2(r + 2) for r, x in enumerate(sorted(gain.values(), reverse=True)[:10]))
                if idcg > 0:
                    vals.append(dcg / idcg)
            assert got[name][config] == pytest.approx(np.mean(vals)), (name, config)


def test_candidate_rows_are_the_served_merge_labelled_with_the_next_grades(cfg):
    ctx = _ctx(cfg, _events(seed=3))
    qu, qs = fl.window_queries(ctx, ctx.split.T, ctx.split.T + 2 * DAY)
    assert (ctx.snaps[qs] < ctx.split.T + 2 * DAY).all()
    known = ctx.known(qu, qs) > 0
    merged = fl.served_lists(cfg, ctx, qu[known], qs[known], filtered=False)["merged"]
    every = fl.candidate_rows(cfg.model_copy(update={"ranker": cfg.ranker.model_copy(
        update={"candidate_negatives": 10_000})}), ctx, qu, qs, np.random.default_rng(0))
    few = fl.candidate_rows(cfg.model_copy(update={"ranker": cfg.ranker.model_copy(
        update={"candidate_negatives": 2})}), ctx, qu, qs, np.random.default_rng(0))
    assert every["request_id"].nunique() == known.sum()
    n_labelled = 0
    for q, (u, s) in enumerate(zip(qu[known], qs[known])):
        user, t = int(ctx.hist.user_ids[u]), int(ctx.snaps[s])
        served = {int(ctx.catalog[p]) for p in merged[q] if p >= 0}
        lab = _slow_labels(ctx, int(u), t)
        rows = every[every["request_id"] == q]
        assert (rows["user_id"] == user).all() and (rows["ts"] == t).all()
        assert set(rows["item_id"]) == served and len(rows) == len(served)  # the served candidates, each once
        assert dict(zip(rows["item_id"], rows["grade"])) == {i: lab.get(i, 0) for i in served}
        sub = few[few["request_id"] == q]
        with_event = served & set(lab)
        assert set(sub["item_id"]) >= with_event and set(sub["item_id"]) <= served
        assert len(sub) == len(with_event) + min(2, len(served - with_event))
        n_labelled += len(with_event)
    assert n_labelled > 0


def _home(tmp_path, events: pa.Table):
    """A dataset, baseline features and exported tower + NIP vectors per (user, snapshot), as the export writes."""
    from argusrank.features import baseline, store, vectors
    from argusrank.features.io import write_dataset
    from argusrank.platform.config import load_config
    from argusrank.platform.export import default_snapshots, user_windows

    cfg = load_config(env={}, overrides={
        "paths.home": str(tmp_path / "home"), "data.test_days": TEST_DAYS, "features.snapshot_every_s": DAY,
        "serve.candidates": [{"source": "nip", "k": 12}, {"source": "popular", "k": 6}],
        "ranker.n_estimators": 10, "ranker.max_depth": 3, "ranker.ablation": False})
    data = tmp_path / "data"
    write_dataset(data, events, None, {"format": "test"})
    hist = build_histories(events)
    T_end = int(events["timestamp"].to_numpy().max()) + 1
    snaps = default_snapshots(cfg, T_end - TEST_DAYS * DAY, T_end)
    baseline.write_baseline(baseline.compute_baseline(events, baseline.snapshot_times(T0, T_end - 1)),
                            cfg.paths.baseline_dir)
    rng = np.random.default_rng(2)
    items = np.unique(hist.item_id)
    win = user_windows(hist, snaps, 0, 50)
    for space, d in (("tower", 6), ("nip", 4)):
        ik, uk = vectors.kind_of("item", space), vectors.kind_of("user", space)
        vectors.write_vectors(cfg, ik, vectors.vector_table(ik, items, rng.normal(size=(len(items), d)), 1,
                                                            int(snaps[0]), time.time()), "v1")
        vectors.write_vectors(cfg, uk, vectors.vector_table(uk, win["user_id"].to_numpy(),
                                                            rng.normal(size=(win.num_rows, d)), 1,
                                                            win["as_of"].to_numpy(), time.time()), "v1")
    store.materialize(cfg)
    return cfg, data


def test_ranker_trains_on_served_candidates_without_impressions(tmp_path):
    from argusrank.platform.config import with_overrides
    from argusrank.platform.pipeline import demo_summary
    from argusrank.platform.ranker_job import train_rankers, training_set

    cfg, data = _home(tmp_path, _events(seed=5, n=900))
    with pytest.raises(ValueError, match="train_on=candidates"):
        training_set(cfg, data)  # ML-100K's shape: no request_id at all
    cfg = with_overrides(cfg, {"ranker.train_on": "candidates"})
    feats, is_train, version, final = training_set(cfg, data)
    assert version == 1 and final["n_candidate_rows"] == len(feats) and is_train.any() and (~is_train).any()
    # one query id per (user, snapshot), train and test queries apart
    assert (feats.groupby("request_id")[["user_id", "ts"]].nunique() == 1).all().all()
    assert not set(feats.loc[is_train, "request_id"]) & set(feats.loc[~is_train, "request_id"])
    assert feats.loc[is_train, "ts"].max() < final["t_split"] <= feats.loc[~is_train, "ts"].min()
    assert np.isfinite(feats["argus_dot"]).any()
    out = train_rankers(cfg, data)
    assert out["train_on"] == "candidates" and out["n_final_queries"] > 0
    summary = demo_summary({"ranker": out})  # what `argusrank demo --json` prints
    for key in ("final_ndcg@10", "final_ndcg@10_seen_filtered", "final_ndcg@10_source_order"):
        assert set(out[key]) == {"popular", "tower", "nip", "merged"}
        assert all(0.0 <= v <= 1.0 for v in out[key].values()), out[key]
        assert summary[key] == pytest.approx(out[key])
    assert summary["train_on"] == "candidates"
    # the registered ranker carries its pip requirements, pinned to what trained it (not inferred by MLflow)
    import mlflow.pyfunc
    import xgboost

    mlflow.set_registry_uri(cfg.tracking_uri)
    reqs = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{cfg.mlflow.ranker_model_name}/{out['ranker_version']}"))
    assert f"xgboost=={xgboost.__version__}" in reqs.read_text().split()


def test_candidate_rows_join_the_logged_impressions(tmp_path):
    """With impressions: the union trains (XGBoost qids: the candidate queries' ids after every request's)."""
    from argusrank.features.baseline import BASE_FEATURES, ranker_features
    from argusrank.models.ranker import train_ranker
    from argusrank.platform.config import with_overrides
    from argusrank.platform.ranker_job import training_set

    cfg, data = _home(tmp_path, _events(seed=6, n=900, requests=True))
    feats, is_train, _, final = training_set(with_overrides(cfg, {"ranker.train_on": "candidates"}), data)
    imp = len(feats) - final["n_candidate_rows"]
    assert imp > 0 and final["n_candidate_rows"] > 0
    assert feats["request_id"].iloc[imp:].min() > feats["request_id"].iloc[:imp].max()
    assert is_train[imp:].all()  # candidates train; the test rows stay the logged impressions
    names = (*BASE_FEATURES, "argus_dot")
    X = ranker_features({c: feats[c].to_numpy() for c in feats.columns}, feats["ts"].to_numpy(), names)
    train_ranker(pd.DataFrame(X[is_train], columns=list(names)), feats["grade"].to_numpy()[is_train],
                 feats["request_id"].to_numpy()[is_train], n_estimators=3, max_depth=2, learning_rate=0.1, seed=0)


def test_cli_json_keeps_the_final_list_ndcg_per_configuration(capsys):
    """`argusrank ranker train --json`: the nested final_ndcg@10 dicts reach the JSON line (scalars did before)."""
    import json

    from argusrank.platform.cli_common import emit

    emit({"uplift_rel": 0.1, "final_ndcg@10": {"nip": 0.2, "merged": 0.25},
          "final_ndcg@10_seen_filtered": {"nip": 0.01}, "ablation": {"base": {}}}, True, "ranker")
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["uplift_rel"] == 0.1 and got["final_ndcg@10"] == {"nip": 0.2, "merged": 0.25}
    assert got["final_ndcg@10_seen_filtered"] == {"nip": 0.01} and "ablation" not in got


def test_the_final_lists_context_of_its_users_equals_the_whole_logs(tmp_path):
    """The job's final-list queries come from a context of their users only (queries read one user bucket at a
    time, then those users' events and vectors; catalog and fallback orders summed by bucket): the same queries,
    catalog and orders, and the same final-list NDCG, as on the context of every user."""
    from argusrank.platform.config import with_overrides
    from argusrank.platform.ranker_job import final_queries, sample_queries
    from argusrank.platform.training.candidate_recall import candidate_context

    cfg, data = _home(tmp_path, _events(seed=5, n=900))
    cfg = with_overrides(cfg, {"ranker.final_queries": 12})
    full = candidate_context(cfg, data, version=1)
    final, _ = final_queries(cfg, data, int(full.snaps[1]) - 1)  # test queries from the second snapshot
    every = fl.window_queries(full, final["t_split"], full.split.T_end, positives=True)
    want = sample_queries(every, 12, np.random.default_rng(cfg.seed))
    sub, (q_user, q_snap) = final["ctx"], final["queries"]
    assert len(every[0]) > 12 and final["t_split"] == full.snaps[1]
    assert len(sub.hist.user_ids) < len(full.hist.user_ids)  # only the sampled queries' users
    np.testing.assert_array_equal(sub.hist.user_ids[q_user], full.hist.user_ids[want[0]])
    np.testing.assert_array_equal(q_snap, want[1])
    np.testing.assert_array_equal(sub.catalog, full.catalog)
    np.testing.assert_array_equal(sub.popular, full.popular)

    def score(rows: pd.DataFrame) -> np.ndarray:  # any score of (user, item, time): the lists and labels decide
        return ((rows["user_id"] * 7919 + rows["item_id"] * 104729 + rows["ts"] // DAY) % 1009).to_numpy(float)

    got, ref = fl.final_ndcg(cfg, sub, q_user, q_snap, score), fl.final_ndcg(cfg, full, *want, score)
    assert got == ref and ref["seen_kept"]["merged"] > 0
