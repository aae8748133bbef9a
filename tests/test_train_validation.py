"""The validation split is held out like the test one and never trained on; the worker's
training rows stop before it; quality's seed aggregation gives means and standard errors."""
import math

import numpy as np
import pytest

from argusrank.features.histories import build_histories
from argusrank.features.splits import Split, train_histories, valid_arrays, validation_split
from argusrank.features.synth import generate
from argusrank.platform.config import SynthConfig


@pytest.fixture(scope="module")
def hist():
    return build_histories(generate(SynthConfig(n_users=80, n_items=60, days=21, slate_size=5), seed=4).events)


def test_temporal_validation_window_before_test_and_untrained(hist):
    T_end = int(hist.timestamp.max()) + 1
    test = Split("temporal", T_end - 3 * 86400, T_end)
    v = validation_split(test, 2.0)
    assert (v.T, v.T_end) == (test.T - 2 * 86400, test.T)
    arr = valid_arrays(hist, v, 64)
    ts = arr["timestamp"][arr["target_mask"]]
    assert ts.size and (ts >= v.T).all() and (ts < test.T).all()
    assert (arr["timestamp"][arr["valid"]] < test.T).all()  # nothing of the test window is fed in
    train = train_histories(hist, Split("temporal", v.T))  # what the worker trains on
    assert train.timestamp.max() < v.T


def test_loo_validation_target_is_second_to_last_and_untrained(hist):
    v = validation_split(Split("loo"), 7.0)
    assert v == Split("loo")
    arr = valid_arrays(hist, v, 64)
    ends = hist.offsets[1:] - 1  # last event index of each user
    u = np.searchsorted(hist.user_ids, arr["user_id"])
    rows, cols = np.nonzero(arr["target_mask"])
    assert (arr["timestamp"][rows, cols] == hist.timestamp[ends[u[rows]] - 1]).all()
    train = train_histories(hist, v)
    assert train.n_events == hist.n_events - 2 * hist.n_users


def test_seed_means_and_standard_errors(monkeypatch):
    from argusrank.platform.training import quality

    fake = {0: 0.10, 1: 0.20, 2: 0.30}
    monkeypatch.setattr(quality, "run_quality", lambda cfg, fmt, src, seed, **kw: {
        "ndcg@10": fake[seed], "n_targets": 5, "model": "argus", "seed": seed, "run_id": f"r{seed}"})
    out = quality.run_quality_seeds(None, "synth", None, [0, 1, 2], model="argus")
    assert out["ndcg@10"] == pytest.approx(0.2)
    assert out["ndcg@10_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert out["seeds"] == [0, 1, 2] and [r["seed"] for r in out["per_seed"]] == [0, 1, 2]
    one = quality.run_quality_seeds(None, "synth", None, [1], model="argus")
    assert one["ndcg@10"] == 0.2 and one["ndcg@10_se"] is None


def test_finetune_validation_pairs_are_the_window_before_t_and_untrained(tmp_path):
    """Fine-tuning's early stopping validates on the impressions of [T - valid_days, T); training
    impressions end before that window and nothing of the test window is in either."""
    from argusrank.features.io import user_buckets_of
    from argusrank.features.splits import dataset_split
    from argusrank.features.synth import synthesize
    from argusrank.platform.config import load_config
    from argusrank.platform.training.feed import worker_arrays

    synthesize(SynthConfig(n_users=80, n_items=60, days=21, slate_size=5), tmp_path / "ds", seed=4)
    cfg = load_config(None, {"paths.home": str(tmp_path), "data.test_days": 3, "finetune.valid_days": 2}, env={})
    split = dataset_split(tmp_path / "ds", "temporal", 3)
    buckets = list(range(user_buckets_of(tmp_path / "ds")))
    train, valid = worker_arrays(cfg, str(tmp_path / "ds"), "finetune", split, buckets, 64)
    v_from = split.T - 2 * 86400
    tr_t, va_t = train["imp_time"][train["imp_valid"]], valid["imp_time"][valid["imp_valid"]]
    assert tr_t.size and va_t.size and (valid["pair_w"] > 0).any()
    assert tr_t.max() < v_from and (va_t >= v_from).all() and (va_t < split.T).all()
    assert (valid["timestamp"][valid["valid"]] < split.T).all()  # histories stop before the test window
    off, _ = worker_arrays(cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"valid_every": 0})}),
                           str(tmp_path / "ds"), "finetune", split, buckets, 64)
    assert off["imp_time"][off["imp_valid"]].max() >= v_from  # without validation, training keeps the window


def _stop_epoch(curve, steps_per_epoch, patience, patience_steps):
    """Replay a validation curve through the worker's bookkeeping; the epoch training stops after."""
    from argusrank.platform.training.worker import early_stop

    best = {"metric": -math.inf, "bad": 0, "step": 0}
    for epoch, metric in enumerate(curve, start=1):
        if metric > best["metric"]:
            best = {"metric": metric, "bad": 0, "step": epoch * steps_per_epoch}
        else:
            best["bad"] += 1
        if early_stop(best, epoch * steps_per_epoch, patience, patience_steps):
            return epoch
    return len(curve)


def test_patience_steps_carry_a_small_data_set_over_its_first_plateau():
    # sasrec-classic on ML-100K temporal (8 steps per epoch): a 6-epoch plateau, then the climb to 2x
    curve = [0.010, 0.017, 0.018, 0.019, 0.0185, 0.018, 0.0188, 0.0189, 0.019, 0.0236, 0.03, 0.04, 0.05] + [0.049] * 30
    assert _stop_epoch(curve, 8, patience=5, patience_steps=0) == 9  # epochs alone: stops on the plateau
    assert _stop_epoch(curve, 8, patience=5, patience_steps=160) == 13 + 20  # 160 steps = 20 epochs past the best
    # a big data set (500 steps per epoch) is unchanged: `patience` epochs already exceed the step floor
    assert _stop_epoch(curve, 500, patience=5, patience_steps=160) == 9
