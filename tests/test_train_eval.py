"""Evaluation metrics against slow obviously-correct references (no Ray, no MLflow)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from argusrank.platform.training.evaluate import (
    Catalog,
    pair_accuracy_eval,
    rank_metric_sums,
    ranking_eval,
    target_ranks,
)
from argusrank.platform.training.worker import lr_lambda


def _ref_rank(scores: list[float], t: int, excluded: set[int]) -> int:
    """Pessimistic rank: candidates (not excluded, not the target) scoring >= the target."""
    return sum(1 for j, s in enumerate(scores) if j != t and j not in excluded and s >= scores[t])


def test_target_ranks_match_reference_with_ties_and_exclusions():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (50, 20), generator=g).float()  # many ties
    target = torch.randint(0, 20, (50,), generator=g)
    exclude = torch.rand(50, 20, generator=g) < 0.3
    exclude[torch.arange(50), target] = False
    got = target_ranks(scores, target, exclude)
    for i in range(50):
        excl = set(torch.nonzero(exclude[i]).flatten().tolist())
        assert got[i] == _ref_rank(scores[i].tolist(), int(target[i]), excl)
    # a constant scorer is ranked last, not first
    const = target_ranks(torch.zeros(3, 10), torch.tensor([0, 5, 9]))
    assert const.tolist() == [9, 9, 9]


def test_rank_metric_sums():
    ranks = torch.tensor([0, 1, 9, 10, 50])
    m = rank_metric_sums(ranks, [10], "hr")
    assert m["hr@10"] == 3
    assert m["ndcg@10"] == pytest.approx(1 + 1 / math.log2(3) + 1 / math.log2(11))
    assert m["mrr"] == pytest.approx(sum(1 / (r + 1) for r in [0, 1, 9, 10, 50]))


def _arrays(item_rows: list[list[int]], target_cols: list[int]) -> dict[str, np.ndarray]:
    B, L = len(item_rows), max(len(r) for r in item_rows)
    item = np.zeros((B, L), np.int64)
    valid = np.zeros((B, L), bool)
    tm = np.zeros((B, L), bool)
    for b, row in enumerate(item_rows):
        item[b, : len(row)] = row
        valid[b, : len(row)] = True
        tm[b, target_cols[b]] = True
    nan = np.full((B, L), np.nan, np.float32)
    return {"item_id": item, "timestamp": np.tile(np.arange(L), (B, 1)), "is_organic": np.ones((B, L), bool),
            "surface": np.zeros((B, L), np.int64), "played_ratio": nan, "liked": nan, "disliked": nan,
            "valid": valid, "target_mask": tm}


def _fixed_scorer(item_scores: np.ndarray, catalog: Catalog):
    s = torch.as_tensor(item_scores, dtype=torch.float32)

    def score(batch, pos):
        return s.expand(len(pos), -1)

    return score


def test_ranking_eval_full_catalog_and_filter_seen():
    catalog = Catalog(np.arange(10, 20))  # items 10..19
    item_scores = np.arange(10, 0, -1, dtype=np.float32)  # item 10 best ... item 19 worst
    arrays = _arrays([[10, 11, 12, 15], [19, 18, 13]], [3, 2])
    scorer = _fixed_scorer(item_scores, catalog)
    res = ranking_eval(scorer, arrays, catalog, ks=[1, 3], hit_name="hr", negatives="all", batch_size=1)
    # targets: 15 (rank 5), 13 (rank 3)
    assert res["n_targets"] == 2
    assert res["hr@3"] == 0.0
    assert res["ndcg@3"] == 0.0
    res = ranking_eval(scorer, arrays, catalog, ks=[1, 3], hit_name="hr", negatives="all", filter_seen=True)
    # seen before target: {10,11,12} -> 15 ranks 2; {19,18} (worse anyway) -> 13 ranks 3
    assert res["hr@3"] == pytest.approx(0.5)
    assert res["ndcg@3"] == pytest.approx(0.5 * 1 / math.log2(4))


def test_sampled_negatives_are_unseen_uniform_and_exclude_target():
    n_items = 300
    catalog = Catalog(np.arange(1, n_items + 1))
    seen = [5, 6, 7, 8]
    arrays = _arrays([seen + [9]] * 400, [4] * 400)
    drawn = []

    def scorer(batch, pos):  # target scores 0.5, negatives get their own ID: record which were drawn
        s = torch.arange(1, n_items + 1, dtype=torch.float32).expand(len(pos), -1).clone()
        s[:, 8] = 0.5  # item 9 (column 8), the target
        drawn.append(s)
        return s

    res = ranking_eval(scorer, arrays, catalog, ks=[10], hit_name="hr", negatives="100", seed=3)
    # every one of the 100 negatives (IDs >= 1) outranks 0.5: the target is always last
    assert res["hr@10"] == 0.0 and res["mrr"] == pytest.approx(1 / 101)
    # sampling: reproduce the draw to check exclusions and uniformity
    g = torch.Generator().manual_seed(3)
    keys = torch.rand(400, n_items, generator=g)
    blocked = torch.tensor([4, 5, 6, 7])
    keys[:, blocked] = 2.0
    keys[:, 8] = 3.0
    neg = keys.topk(100, dim=1, largest=False).indices
    assert not torch.isin(neg, torch.tensor([4, 5, 6, 7, 8])).any()
    counts = torch.bincount(neg.flatten(), minlength=n_items).float()
    free = counts[[i for i in range(n_items) if i not in (4, 5, 6, 7, 8)]]
    assert free.mean() == pytest.approx(400 * 100 / (n_items - 5))
    assert free.std() / free.mean() < 0.15  # roughly uniform


def test_pair_accuracy_weighted_reference():
    class Fixed:
        def finetune_loss(self, fb, lag_s):
            return {"scores": fb.imp_item.float()}  # score = item id

    B, K, P = 3, 4, 3
    rng = np.random.default_rng(0)
    arrays = _arrays([[1, 2]] * B, [1] * B)
    arrays.update(imp_item=rng.integers(0, 5, (B, K)), imp_time=np.zeros((B, K), np.int64),
                  imp_valid=np.ones((B, K), bool), pair_a=rng.integers(0, K, (B, P)),
                  pair_b=rng.integers(0, K, (B, P)), pair_w=rng.choice([0.0, 1.0, 2.0], (B, P)).astype(np.float32))
    got = pair_accuracy_eval(Fixed(), arrays, lag_s=0, batch_size=2)
    num = den = 0.0
    for b in range(B):
        for p in range(P):
            sa, sb = arrays["imp_item"][b, arrays["pair_a"][b, p]], arrays["imp_item"][b, arrays["pair_b"][b, p]]
            w = arrays["pair_w"][b, p]
            num += w * (1.0 if sa > sb else 0.5 if sa == sb else 0.0)
            den += w
    assert got["pair_accuracy"] == pytest.approx(num / den)


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_runs_keep_their_artifacts_under_the_home(tmp_path, monkeypatch):
    """A local (SQLite) store's experiment gets its artifact root under the home, not ./mlruns of the cwd."""
    import mlflow

    from argusrank.platform import registry, tracking
    from argusrank.platform.config import load_config

    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides={"paths.home": str(tmp_path / "home"), "mlflow.experiment": "artifact-probe"}, env={})
    with tracking.start_run(cfg, "probe"):
        mlflow.log_text("x", "a.txt")
        uri = mlflow.get_artifact_uri()
    assert uri.startswith((tmp_path / "home" / "mlartifacts").resolve().as_uri())
    assert not (tmp_path / "mlruns").exists()


@pytest.fixture(scope="module")
def bucketed_synth(tmp_path_factory):
    """80 synthetic users in 8 user buckets, and a random ``tiny`` model sized to it."""
    from argusrank.features.config import SynthConfig
    from argusrank.features.io import read_metadata
    from argusrank.features.synth import synthesize
    from argusrank.models.factory import model_from_config
    from argusrank.platform.config import load_config
    from argusrank.platform.training.checks import model_config

    home = tmp_path_factory.mktemp("home")
    d = home / "synth"
    synthesize(SynthConfig(n_users=80, n_items=120, days=20), d, seed=0, user_buckets=8)
    cfg = load_config(None, {"paths.home": str(home), "data.max_len": 32, "model.preset": "tiny", "eval.ks": [5, 10],
                             "finetune.max_history": 32}, env={})
    torch.manual_seed(0)
    model = model_from_config(model_config(cfg, read_metadata(d)).to_dict())
    return cfg, d, model


@pytest.mark.parametrize("protocol", ["temporal", "loo"])
def test_evaluation_by_user_bucket_equals_one_pass_over_all_users(bucketed_synth, protocol):
    """``evaluate_model`` reads and scores one user bucket at a time: its metrics (sums over buckets) equal those of
    one pass over every user's histories held at once, for the model and the popularity baseline."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.platform.training.evaluate import evaluate_model

    cfg, d, model = bucketed_synth
    everyone = build_histories(read_events(d))
    for scored in (model, "popularity"):
        stages = ("ranking", "pairs") if scored is model else ("ranking",)
        by_bucket = evaluate_model(cfg, d, scored, protocol=protocol, negatives="all", stages=stages)
        at_once = evaluate_model(cfg, d, scored, protocol=protocol, negatives="all", stages=stages, hist=everyone)
        assert by_bucket["n_targets"] > 50 and by_bucket["n_users"] == everyone.n_users == 80
        assert by_bucket.keys() == at_once.keys()
        for k, v in at_once.items():
            assert by_bucket[k] == (pytest.approx(v, rel=1e-9) if isinstance(v, float) else v), k
        if scored is model and protocol == "temporal":
            assert by_bucket["n_pairs"] > 50
            # the losses' sampled negatives have their own seeded stream: the other stages do not move them
            losses = evaluate_model(cfg, d, model, protocol=protocol, stages=("losses",))
            every = evaluate_model(cfg, d, model, protocol=protocol, stages=("ranking", "losses", "pairs"))
            assert losses["nip_loss"] == every["nip_loss"] and math.isfinite(losses["nip_loss"])


def test_eval_max_users_scores_whole_buckets_in_order(bucketed_synth):
    """``eval.max_users`` evaluates the first user buckets until that many users: the metrics of exactly those
    buckets' users against the whole catalog, fewer users than the whole set."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events, user_buckets_of
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training import evaluate as ev

    cfg, d, model = bucketed_synth
    first = build_histories(read_events(d, user_buckets=[0]))
    assert user_buckets_of(d) > 2 and 0 < first.n_users < 80
    sampled_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_users": first.n_users})})
    sampled = ev.evaluate_model(sampled_cfg, d, model, protocol="temporal", negatives="all", stages=("ranking",))
    catalog, sums = ev.dataset_catalog(d), ev._Sums()  # reference: bucket 0 alone, ranked over the whole catalog
    n = ev.ranking_sums(ev.model_scorer(model, catalog), ev.eval_arrays(first, dataset_split(d, "temporal",
                        cfg.data.test_days), cfg.data.max_len), catalog, sums, torch.Generator().manual_seed(0),
                        ks=cfg.eval.ks, hit_name="recall", negatives="all", filter_seen=False, batch_size=256)
    assert sampled["n_users"] == first.n_users and sampled["n_targets"] == n > 0
    assert sampled["ndcg@10"] == pytest.approx(sums.means()["ndcg@10"], rel=1e-9)
    one_more = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_users": first.n_users + 1})})
    two = ev.evaluate_model(one_more, d, model, protocol="temporal", negatives="all", stages=("ranking",))
    assert first.n_users < two["n_users"] < 80  # one more user asked: the whole next bucket


def test_ranking_chunks_of_targets_change_no_rank_and_share_a_batchs_queries(bucketed_synth, monkeypatch):
    """Targets scored against the catalog in chunks (memory bounded by ``SCORE_ELEMENTS``, not the catalog): any
    chunk size gives the same metrics, and the model's queries run once per batch, not once per chunk."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training import evaluate as ev

    cfg, d, model = bucketed_synth
    arrays = ev.eval_arrays(build_histories(read_events(d)), dataset_split(d, "temporal", cfg.data.test_days),
                            cfg.data.max_len)
    catalog = ev.dataset_catalog(d)
    calls = []
    real = model.nip_queries
    monkeypatch.setattr(model, "nip_queries", lambda b: calls.append(1) or real(b))
    got = {}
    for chunk, filter_seen in ((None, False), (3, False), (None, True), (3, True)):
        sums, calls[:] = ev._Sums(), []
        n = ev.ranking_sums(ev.model_scorer(model, catalog), arrays, catalog, sums, torch.Generator().manual_seed(0),
                            ks=[10], hit_name="recall", filter_seen=filter_seen, batch_size=16,
                            max_targets_per_chunk=chunk)
        got[chunk, filter_seen] = (n, sums.means())
        assert len(calls) == -(-len(arrays["valid"]) // 16)  # one query pass per batch
    for filter_seen in (False, True):  # the same ranks; the sums only add in another order
        (n, whole), (n3, chunked) = got[None, filter_seen], got[3, filter_seen]
        assert n == n3 > 50 and whole == pytest.approx(chunked, rel=1e-12)
    assert got[None, True][1]["mrr"] > got[None, False][1]["mrr"]  # seen items filtered: targets rank higher
