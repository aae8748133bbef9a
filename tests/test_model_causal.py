"""No information from the future: perturbing event t0 leaves every earlier output unchanged."""
import pytest
import torch

from argusrank.models.argus import ArgusModel
from argusrank.models.config import preset
from argusrank.models.batch import random_sequence_batch

T0 = 5


def _perturb(batch, t0):
    """Change item and feedback of event t0 and everything after it (context of t0 kept)."""
    b = type(batch)(**{k: getattr(batch, k).clone() for k in batch.__dataclass_fields__})
    b.item_id[:, t0:] += 17
    b.played_ratio[:, t0:] = 1.0 - b.played_ratio[:, t0:].nan_to_num(0.5)
    b.liked[:, t0:] = 1.0
    b.surface[:, t0 + 1:] = (b.surface[:, t0 + 1:] + 1) % 7  # later contexts too
    b.timestamp[:, t0 + 1:] += 99_999
    return b


@pytest.mark.parametrize("encoder", ["simplified", "full", "hstu"])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_future_events_do_not_change_earlier_outputs(encoder, positions):
    torch.manual_seed(0)
    m = ArgusModel(preset("tiny", encoder=encoder, positions=positions)).eval()
    x = random_sequence_batch(3, 12, seed=1, min_len=12)
    y = _perturb(x, T0)
    with torch.no_grad():
        hx, hy = m.encode(x), m.encode(y)
        qx, qy = m.nip_queries(x), m.nip_queries(y)
        fx, fy = m.fp_predictions(x), m.fp_predictions(y)
    assert torch.allclose(hx[:, :T0], hy[:, :T0], atol=1e-6)
    assert (hx[:, T0:] - hy[:, T0:]).abs().max() > 1e-4  # the perturbation is visible later
    # NIP query t uses state t-1 and context t: unchanged up to and including T0 (item T0 unseen)
    assert torch.allclose(qx[:, : T0 + 1], qy[:, : T0 + 1], atol=1e-6)
    assert (qx[:, T0 + 1:] - qy[:, T0 + 1:]).abs().max() > 1e-5
    # FP at t sees item t: unchanged before T0 only
    for name in fx:
        assert torch.allclose(fx[name][:, :T0], fy[name][:, :T0], atol=1e-6)
    assert max(float((fx[n][:, T0] - fy[n][:, T0]).abs().max()) for n in fx) > 1e-6


@pytest.mark.parametrize("encoder", ["simplified", "full", "hstu"])
def test_padding_does_not_leak_into_valid_positions(encoder):
    torch.manual_seed(0)
    m = ArgusModel(preset("tiny", encoder=encoder)).eval()
    x = random_sequence_batch(2, 10, seed=3, min_len=10)
    short = type(x)(**{k: getattr(x, k)[:, :6] for k in x.__dataclass_fields__})
    with torch.no_grad():
        assert torch.allclose(m.encode(x)[:, :6], m.encode(short), atol=1e-5)
