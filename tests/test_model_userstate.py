"""Gated feedback tokens, pooled-token user state and residual towers (the xxs demo preset)."""
import pytest
import torch
import torch.nn.functional as F

from argusrank.models.argus import ArgusModel
from argusrank.models.batch import random_finetune_batch, random_sequence_batch
from argusrank.models.config import preset
from argusrank.models.reference import reference_finetune_loss

LAG = 5000
NEW = dict(feedback_gate=True, tower_pool=True, tower="residual", tower_dim=32)


def _noisy(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m.eval()


def test_xxs_preset_uses_the_new_user_state():
    c = preset("xxs")
    assert c.feedback_gate and c.tower_pool and c.tower == "residual" and c.tower_dim == c.d_model


def test_residual_tower_needs_tower_dim_equal_d_model():
    with pytest.raises(ValueError, match="tower_dim"):
        preset("tiny", tower="residual", tower_dim=8)
    with pytest.raises(ValueError, match="tower"):
        preset("tiny", tower="linear")


def test_residual_towers_start_as_scaled_cosine():
    torch.manual_seed(0)
    m = ArgusModel(preset("tiny", tower="residual", tower_dim=32))
    x = torch.randn(5, 32)
    scale = m.towers.log_scale.exp()
    assert torch.allclose(m.towers.user(x), F.normalize(x, dim=-1) * scale.sqrt(), atol=1e-6)
    assert torch.allclose(m.towers.item(x), F.normalize(x, dim=-1) * scale.sqrt(), atol=1e-6)
    mlp_model = ArgusModel(preset("tiny", tower_dim=32))  # the plain MLP tower is not the identity
    assert not torch.allclose(mlp_model.towers.user(x), F.normalize(x, dim=-1) * scale.sqrt(), atol=1e-3)


def test_feedback_gate_makes_the_token_depend_on_item_times_feedback():
    torch.manual_seed(0)
    for gate in (False, True):
        m = ArgusModel(preset("tiny", feedback_gate=gate))
        pr, lk, dl = torch.tensor([[0.9, 0.9]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
        item = m.item_emb(torch.tensor([[11, 12]]))
        fb = m.feedback_emb(pr, lk, dl, item)
        same = torch.allclose(fb[0, 0], fb[0, 1])
        assert same != gate  # same feedback on two items: one vector without the gate, two with it


def test_pooled_state_starts_without_the_encoder_and_is_the_running_token_mean():
    torch.manual_seed(0)
    m = ArgusModel(preset("tiny", **NEW)).eval()
    b = random_sequence_batch(2, 10, seed=4, min_len=3)
    with torch.no_grad():
        got = m.encode(b)
        ctx = m.context_emb(b.surface, b.is_organic, b.timestamp)
        item = m.item_emb(b.item_id)
        tok = (ctx + item + m.feedback_emb(b.played_ratio, b.liked, b.disliked, item)) * b.valid.unsqueeze(-1)
        want = m.pool_norm(tok.cumsum(1) / b.valid.cumsum(1).clamp(min=1).unsqueeze(-1))
        assert torch.allclose(got, want, atol=1e-5)  # state_mix starts at 0
        m.state_mix.fill_(0.7)
        assert not torch.allclose(m.encode(b), want, atol=1e-3)  # the encoder state mixes in


def test_pooled_state_is_causal():
    torch.manual_seed(0)
    m = _noisy(ArgusModel(preset("tiny", **NEW)))
    x = random_sequence_batch(2, 12, seed=1, min_len=12)
    y = type(x)(**{k: getattr(x, k).clone() for k in x.__dataclass_fields__})
    y.item_id[:, 6:] += 17
    y.liked[:, 6:] = 1.0
    with torch.no_grad():
        hx, hy = m.encode(x), m.encode(y)
    assert torch.allclose(hx[:, :6], hy[:, :6], atol=1e-5)
    assert (hx[:, 6:] - hy[:, 6:]).abs().max() > 1e-3


@pytest.mark.parametrize("encoder", ["simplified", "full"])
def test_one_pass_equals_impression_level_with_pooled_state(encoder):
    torch.manual_seed(0)
    m = _noisy(ArgusModel(preset("tiny", encoder=encoder, **NEW)))
    batch = random_finetune_batch(B=3, L=16, K=8, P=12, seed=2, lag_s=LAG)
    with torch.no_grad():
        fast, slow = m.finetune_loss(batch, LAG), reference_finetune_loss(m, batch, LAG)
        wrong = reference_finetune_loss(m, batch, LAG + 4000)
    assert torch.allclose(fast["scores"], slow["scores"], rtol=1e-4, atol=1e-4)
    assert (fast["scores"] - wrong["scores"]).abs().max() > 1e-3
