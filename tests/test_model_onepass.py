"""One-pass fine-tuning (one causal pass + searchsorted) equals the impression-level reference."""
import pytest
import torch

from argusrank.models.argus import ArgusModel, last_event_index
from argusrank.models.config import preset, sasrec_config
from argusrank.models.reference import (reference_finetune_loss, reference_impression_scores, reference_pair_loss,
                                        reference_pair_scores)
from argusrank.models.batch import random_finetune_batch

LAG = 5000


def _model(encoder, sasrec=False):
    torch.manual_seed(0)
    cfg = preset("tiny", encoder=encoder)
    m = ArgusModel(sasrec_config(cfg) if sasrec else cfg).eval()
    with torch.no_grad():  # larger weights than init so scores are O(1) and differences show
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


@pytest.mark.parametrize("encoder, sasrec", [("simplified", False), ("full", False), ("hstu", False),
                                             ("simplified", True)])
def test_one_pass_equals_impression_level(encoder, sasrec):
    m = _model(encoder, sasrec)
    batch = random_finetune_batch(B=3, L=16, K=8, P=12, seed=2, lag_s=LAG)
    with torch.no_grad():
        fast, slow = m.finetune_loss(batch, LAG), reference_finetune_loss(m, batch, LAG)
        wrong_lag = reference_impression_scores(m, batch, LAG + 4000)
    assert fast["scores"].abs().max() > 0.1
    assert torch.allclose(fast["scores"], slow["scores"], rtol=1e-4, atol=1e-4)
    assert abs(float(fast["loss"] - slow["loss"])) < 1e-4
    assert abs(float(fast["pair_accuracy"] - slow["pair_accuracy"])) < 1e-6
    assert (fast["scores"] - wrong_lag).abs().max() > 1e-3  # the comparison can fail


def test_one_pass_equals_per_pair_reference():
    m = _model("simplified")
    batch = random_finetune_batch(B=2, L=16, K=6, P=10, seed=3, lag_s=LAG)
    with torch.no_grad():
        fast = m.finetune_loss(batch, LAG)
        pairs = reference_pair_scores(m, batch, LAG)  # (B, P, 2)
        slow = reference_pair_loss(m, batch, LAG)
    w = batch.pair_w * batch.imp_valid.gather(1, batch.pair_a) * batch.imp_valid.gather(1, batch.pair_b)
    live = w > 0
    assert live.sum() > 3
    for side, idx in enumerate((batch.pair_a, batch.pair_b)):
        want = fast["scores"].gather(1, idx)
        assert torch.allclose(pairs[..., side][live], want[live], atol=1e-4)
    assert pairs[~live].abs().max() == 0
    assert abs(float(fast["loss"] - slow["loss"])) < 1e-4
    assert abs(float(fast["pair_accuracy"] - slow["pair_accuracy"])) < 1e-6


def test_empty_history_state_and_ties():
    ts = torch.tensor([[10, 20, 20, 30, 0]])
    valid = torch.tensor([[True, True, True, True, False]])
    cut = torch.tensor([[5, 10, 19, 20, 29, 30, 10**9]])
    assert last_event_index(ts, valid, cut).tolist() == [[-1, 0, 0, 2, 2, 3, 3]]
    with pytest.raises(ValueError, match="row 0"):
        last_event_index(torch.tensor([[30, 20]]), torch.tensor([[True, True]]), cut)


def test_user_and_item_vectors_dot_equals_impression_scores():
    m = _model("simplified")
    batch = random_finetune_batch(B=3, L=16, K=6, P=4, seed=5, lag_s=LAG)
    with torch.no_grad():
        scores = m.impression_scores(batch, LAG)
        for k in range(6):
            u = m.user_vectors(batch.history, as_of=batch.imp_time[:, k], lag_s=LAG)  # (B, tower_dim)
            v = m.item_vectors(batch.imp_item[:, k])  # (B, tower_dim)
            expect = torch.where(batch.imp_valid[:, k], (u * v).sum(-1), torch.zeros(()))
            assert torch.allclose(expect, scores[:, k], atol=1e-5)
        # as_of None: state after the last valid event
        last = batch.history.timestamp.max(1).values
        assert torch.allclose(m.user_vectors(batch.history), m.user_vectors(batch.history, as_of=last), atol=1e-6)


def test_finetune_gradients_reach_encoder_and_invalid_pairs_ignored():
    m = _model("simplified")
    batch = random_finetune_batch(B=2, L=10, K=5, P=6, seed=7, lag_s=0)
    out = m.finetune_loss(batch, 0)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    batch.imp_valid[:, :] = False  # all impressions invalid -> no pair counts
    assert float(m.finetune_loss(batch, 0)["loss"].detach()) == 0.0


def test_mixed_lags_score_each_row_at_its_own_lag():
    """Fine-tuning for fresh vectors (``finetune.runtime_lag_share``): rows drawn for the runtime lag are scored
    exactly as a batch at that lag, the others as at ``lag_s`` (the training objective, platform/training/worker.py)."""
    from argusrank.platform.training.worker import _Objective

    m = _model("simplified")
    batch = random_finetune_batch(B=6, L=16, K=8, P=12, seed=4, lag_s=LAG)
    torch.manual_seed(7)
    rows = torch.rand(6, 1) < 0.5
    assert 0 < int(rows.sum()) < 6
    torch.manual_seed(7)  # the objective draws the same rows
    with torch.no_grad():
        mixed = _Objective(m, "finetune", LAG, runtime_lag_s=1, runtime_share=0.5)(batch)["scores"]
        daily, runtime = reference_impression_scores(m, batch, LAG), reference_impression_scores(m, batch, 1)
    want = torch.where(rows, runtime, daily)
    assert torch.allclose(mixed, want, rtol=1e-4, atol=1e-4)
    assert (daily - runtime).abs().max() > 1e-3  # the lags differ on this batch: the comparison can fail
    with torch.no_grad():
        assert torch.allclose(_Objective(m, "finetune", LAG)(batch)["scores"], daily, rtol=1e-4, atol=1e-4)
