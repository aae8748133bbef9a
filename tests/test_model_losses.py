"""Losses checked against small hand-computed examples."""
import math

import torch

from argusrank.models.argus import ArgusModel
from argusrank.models.config import preset
from argusrank.models.losses import fp_losses, inbatch_log_q, pairwise_logistic_loss, sampled_softmax_loss


def test_sampled_softmax_logq_correction_hand_example():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    loss = sampled_softmax_loss(q, pos, torch.tensor([5]), torch.tensor([math.log(2.0)]), neg,
                                torch.tensor([7, 5, 9]), torch.log(torch.tensor([1.0, 2.0, 0.5])), 0.5)
    # logits: positive 1/0.5 - log 2; neg 7: 0 - log 1; neg 5 is the positive's duplicate (masked);
    # neg 9: -1/0.5 - log 0.5
    p, n7, n9 = 2 - math.log(2), 0.0, -2 - math.log(0.5)
    expected = math.log(math.exp(p) + math.exp(n7) + math.exp(n9)) - p
    assert abs(float(loss) - expected) < 1e-6
    # without the correction the value differs (the test can fail)
    plain = sampled_softmax_loss(q, pos, torch.tensor([5]), torch.zeros(1), neg, torch.tensor([7, 5, 9]),
                                 torch.zeros(3), 0.5)
    assert abs(float(plain) - expected) > 0.1


def test_inbatch_log_q_is_frequency_share():
    got = inbatch_log_q(torch.tensor([3, 3, 5, 7]))
    assert torch.allclose(got, torch.log(torch.tensor([0.5, 0.5, 0.25, 0.25])))


def test_temperature_is_learned_exp_and_clipped():
    m = ArgusModel(preset("tiny", temperature_init=0.2))
    assert abs(float(m.temperature().detach()) - 0.2) < 1e-6
    m.nip.temperature.log_t.data.fill_(10.0)
    assert float(m.temperature().detach()) == 100.0
    m.nip.temperature.log_t.data.fill_(-10.0)
    assert abs(float(m.temperature().detach()) - 0.01) < 1e-9
    m.nip.temperature.log_t.data.fill_(0.0)
    m.temperature().backward()
    assert m.nip.temperature.log_t.grad is not None and float(m.nip.temperature.log_t.grad) == 1.0


def test_pairwise_loss_weights_and_padding():
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    a, b, w = torch.tensor([[0, 2, 1]]), torch.tensor([[1, 0, 2]]), torch.tensor([[2.0, 1.0, 0.0]])
    loss, acc = pairwise_logistic_loss(scores, a, b, w)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert abs(float(loss) - (2 * sp(-2.0) + 1 * sp(1.0)) / 3) < 1e-6
    assert abs(float(acc) - 2 / 3) < 1e-6
    # doubling a pair's weight counts it twice
    loss2, _ = pairwise_logistic_loss(scores, a, b, torch.tensor([[4.0, 1.0, 0.0]]))
    assert abs(float(loss2) - (4 * sp(-2.0) + sp(1.0)) / 5) < 1e-6


def test_fp_losses_mask_missing_targets():
    logits = {"liked": torch.tensor([[0.0, 2.0, -1.0, 5.0]])}
    y = torch.tensor([[1.0, float("nan"), 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])  # last position not a target
    got = fp_losses(logits, {"liked": y}, mask)["liked"]
    expected = (math.log(2.0) + math.log1p(math.exp(-1.0))) / 2  # positions 0 and 2 only
    assert abs(float(got) - expected) < 1e-6
