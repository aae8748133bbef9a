"""Heads on top of the encoder: NIP, FP, learned temperature, and the two towers.

- NIP (next-item prediction): query from (state t-1, context t) -> nip_dim, scored
  by cosine against the item side projected to nip_dim, divided by a temperature.
- FP (feedback prediction): (state t-1, context t, item t) -> one logit per target.
- Towers (fine-tuning, ARGUS.md section 3): user state -> tower_dim, item -> tower_dim;
  the ranking feature is their dot product.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FEEDBACK_TARGETS, ArgusConfig


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two-layer MLP: in -> hidden (GELU) -> out."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class Temperature(nn.Module):
    """Learned softmax temperature T = exp(t), clipped to [min, max] (ARGUS: [0.01, 100])."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.lo, self.hi = cfg.temperature_min, cfg.temperature_max
        self.log_t = nn.Parameter(torch.tensor(math.log(cfg.temperature_init)))

    def forward(self) -> torch.Tensor:  # () scalar
        return self.log_t.exp().clamp(self.lo, self.hi)


class NIPHead(nn.Module):
    """Query side ``query(x)`` and item side ``item(e)``, both L2-normalized to nip_dim."""

    def __init__(self, cfg: ArgusConfig, in_dim: int):
        super().__init__()
        self.q = mlp(in_dim, cfg.d_model, cfg.nip_dim)
        self.i = nn.Linear(cfg.d_model, cfg.nip_dim)
        self.temperature = Temperature(cfg)

    def query(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_dim) -> (..., nip_dim)
        return F.normalize(self.q(x).float(), dim=-1)

    def item(self, e: torch.Tensor) -> torch.Tensor:  # (..., d_model) -> (..., nip_dim)
        return F.normalize(self.i(e).float(), dim=-1)


class FPHead(nn.Module):
    """(..., in_dim) -> dict target -> (...,) logits, one per feedback target."""

    def __init__(self, cfg: ArgusConfig, in_dim: int):
        super().__init__()
        self.net = mlp(in_dim, cfg.d_model, len(FEEDBACK_TARGETS))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(x).float()
        return {t: logits[..., i] for i, t in enumerate(FEEDBACK_TARGETS)}

    # The first layer is linear, so over an input ``[prefix; item]`` (simplified encoder: prefix = state t-1 and
    # context t) it splits into a user part and an item part: logits = out(GELU(user_part + item_part)). The
    # ranker's FP features use the split: one user part per user, one item part per item, exported as vectors.
    def user_part(self, prefix: torch.Tensor) -> torch.Tensor:  # (..., in_dim - d_item) -> (..., hidden)
        lin = self.net[0]
        k = prefix.shape[-1]
        return (prefix.float() @ lin.weight[:, :k].float().T + lin.bias.float()).float()

    def item_part(self, item: torch.Tensor) -> torch.Tensor:  # (..., d_item) -> (..., hidden)
        lin = self.net[0]
        return (item.float() @ lin.weight[:, lin.in_features - item.shape[-1]:].float().T).float()

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer ``(weight (n_targets, hidden), bias (n_targets,))``, rows in FEEDBACK_TARGETS order."""
        out = self.net[2]
        return out.weight.detach().float(), out.bias.detach().float()


class Towers(nn.Module):
    """User tower (state -> tower_dim) and item tower (item embedding -> tower_dim).

    Both sides are L2-normalized and multiplied by sqrt(scale), a learned scalar, so
    dot(user, item) = scale * cosine. Unnormalized towers at small init start at the
    dot-product saddle (both sides ~0, gradients ~0) and fine-tuning stalls at log 2.
    ``cfg.tower="residual"``: each side is x + MLP(x) with the MLP's output layer at zero, so
    fine-tuning starts from cosine(user state, item embedding); a plain 2-layer MLP on both
    sides learns the user x item geometry far more slowly (bench/README.md, uplift section).
    """

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.kind = cfg.tower
        self.user_mlp = mlp(cfg.d_model, cfg.d_model, cfg.tower_dim)
        self.item_mlp = mlp(cfg.d_model, cfg.d_model, cfg.tower_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(5.0)))

    def zero_init_residual(self) -> None:
        """tower='residual': start as the identity (the MLPs' output layers at zero)."""
        if self.kind == "residual":
            for m in (self.user_mlp, self.item_mlp):
                nn.init.zeros_(m[-1].weight)
                nn.init.zeros_(m[-1].bias)

    def _side(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1) * (0.5 * self.log_scale.clamp(max=math.log(100.0))).exp()

    def _tower(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + net(x) if self.kind == "residual" else net(x)

    def user(self, state: torch.Tensor) -> torch.Tensor:  # (..., d_model) -> (..., tower_dim)
        return self._side(self._tower(self.user_mlp, state))

    def item(self, e: torch.Tensor) -> torch.Tensor:  # (..., d_model) -> (..., tower_dim)
        return self._side(self._tower(self.item_mlp, e))
