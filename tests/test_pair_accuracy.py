"""One PairAccuracy: training's batch metric, offline evaluation and the ranker report agree, pairs touching
an invalid impression weigh nothing in all of them, and all equal a slow pair-by-pair count."""
from dataclasses import fields

import numpy as np
import torch

from argusrank.models.argus import ArgusModel
from argusrank.models.batch import SequenceBatch, random_finetune_batch
from argusrank.models.config import preset
from argusrank.models.ranker import pair_accuracy
from argusrank.platform.training.evaluate import pair_accuracy_eval

LAG = 5000


def _arrays(batch) -> dict[str, np.ndarray]:
    out = {f.name: getattr(batch.history, f.name).numpy() for f in fields(SequenceBatch)}
    out.update({f.name: getattr(batch, f.name).numpy() for f in fields(batch) if f.name != "history"})
    return out


def _slow(scores: torch.Tensor, batch) -> float:
    num = den = 0.0
    for b in range(scores.shape[0]):
        for a, c, w in zip(batch.pair_a[b].tolist(), batch.pair_b[b].tolist(), batch.pair_w[b].tolist()):
            if w > 0 and batch.imp_valid[b, a] and batch.imp_valid[b, c]:
                sa, sc = float(scores[b, a]), float(scores[b, c])
                num += w * (1.0 if sa > sc else 0.5 if sa == sc else 0.0)
                den += w
    return num / den


def test_training_evaluation_and_reference_agree_with_invalid_impressions():
    torch.manual_seed(0)
    model = ArgusModel(preset("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    batch = random_finetune_batch(B=4, L=16, K=8, P=20, seed=3, lag_s=LAG)
    batch.imp_valid[0, :3] = False  # pairs still point at these impressions with weight > 0
    batch.imp_valid[2, 5] = False
    assert float(batch.pair_w[0][(batch.pair_a[0] < 3) | (batch.pair_b[0] < 3)].sum()) > 0
    with torch.no_grad():
        train = model.finetune_loss(batch, LAG)
    want = _slow(train["scores"], batch)
    assert abs(float(train["pair_accuracy"]) - want) < 1e-6
    got = pair_accuracy_eval(model, _arrays(batch), LAG, batch_size=2)["pair_accuracy"]
    assert abs(got - want) < 1e-6


def test_ranker_pair_accuracy_equals_a_slow_count():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 6)
    grades = rng.integers(-1, 3, groups.size)
    scores = rng.normal(size=groups.size).round(1)  # ties happen and count half
    num = den = 0.0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        for i in idx:
            for j in idx:
                if grades[i] > grades[j]:
                    w = grades[i] - grades[j]
                    num += w * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
                    den += w
    assert abs(pair_accuracy(scores, grades, groups) - num / den) < 1e-12
