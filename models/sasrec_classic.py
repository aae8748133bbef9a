"""The original SASRec recipe (Kang & McAuley, ICDM 2018) as a reference model.

One row per item in a full embedding table (shared by input and output), learned
positions, ``n_layers`` blocks of (LayerNorm -> causal self-attention with the normed
input as query, residual; LayerNorm -> ReLU point-wise FFN, residual), a final
LayerNorm, binary cross-entropy of the true next item against ONE sampled negative
per position (an item not in the user's sequence), Adam lr 1e-3 without weight decay.
Paper settings: d = 50, 2 blocks, 1 head, dropout 0.2 on dense data (MovieLens-1M),
0.5 on sparse sets. It exposes what training and evaluation call on ``ArgusModel``
(``pretrain_losses``, ``nip_queries``, ``nip_item_embeddings``, ...).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batch import SequenceBatch, positives_only
from .vocab import ItemVocab

ARCH = "sasrec-classic"


@dataclass
class SASRecClassicConfig:
    arch: str = ARCH
    d_model: int = 50
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    max_len: int = 200
    n_items: int = 1  # rows of the item table = n_items + 1 (row 0: padding / unknown)
    positives_only: bool = True  # SASRec keeps only positive events

    def __post_init__(self) -> None:
        if self.arch != ARCH:
            raise ValueError(f"SASRecClassicConfig.arch must be {ARCH!r}, got {self.arch!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"SASRecClassicConfig.d_model={self.d_model} not divisible by n_heads={self.n_heads}")
        if min(self.d_model, self.n_layers, self.n_heads, self.max_len, self.n_items) < 1:
            raise ValueError("SASRecClassicConfig: sizes must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecClassicConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SASRecClassicConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"SASRecClassicConfig: unknown field(s) {unknown}")
        return cls(**d)


class _Block(nn.Module):
    def __init__(self, cfg: SASRecClassicConfig):
        super().__init__()
        d, self.h, self.p = cfg.d_model, cfg.n_heads, cfg.dropout
        self.ln_attn, self.ln_ffn = nn.LayerNorm(d, eps=1e-8), nn.LayerNorm(d, eps=1e-8)
        self.q, self.kv, self.out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(d, d),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qn = self.ln_attn(x)
        q = self.q(qn).view(B, L, self.h, -1).transpose(1, 2)
        k, v = self.kv(x).view(B, L, 2, self.h, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = qn + self.out(a.transpose(1, 2).reshape(B, L, D))
        x = self.ln_ffn(x)
        return (x + self.ffn(x)) * keep


class SASRecClassic(nn.Module):
    clip_grad = False  # the original recipe does not clip gradients

    def __init__(self, cfg: SASRecClassicConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab = ItemVocab()
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=1e-8)
        self.register_buffer("catalog", torch.zeros(0, dtype=torch.long), persistent=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def set_vocab(self, item_ids: torch.Tensor) -> None:
        if len(item_ids.unique()) > self.cfg.n_items:
            raise ValueError(f"{len(item_ids.unique())} items do not fit SASRecClassicConfig.n_items={self.cfg.n_items}")
        self.vocab.set(item_ids)

    def set_catalog(self, item_ids: torch.Tensor) -> None:
        """Negatives are drawn from these items (rows of the table)."""
        rows = self.vocab(torch.as_tensor(item_ids).long())
        self.catalog = torch.unique(rows[rows > 0])

    def prepare_batch(self, batch: SequenceBatch) -> SequenceBatch:
        return positives_only(batch)[0]

    def _feats(self, b: SequenceBatch) -> torch.Tensor:
        """(B, L, d) hidden state after each event."""
        L = b.item_id.shape[1]
        if L > self.cfg.max_len:
            raise ValueError(f"history length {L} > SASRecClassicConfig.max_len={self.cfg.max_len}")
        keep = b.valid.unsqueeze(-1).float()
        x = self.item_emb(self.vocab(b.item_id)) * math.sqrt(self.cfg.d_model)
        x = self.drop(x + self.pos_emb.weight[:L]) * keep
        for blk in self.blocks:
            x = blk(x, keep)
        return self.ln_f(x)

    def _negatives(self, b: SequenceBatch, rows: torch.Tensor, rounds: int = 4) -> torch.Tensor:
        """(B, L) one catalog row per position, redrawn while it is in the user's sequence."""
        cat = self.catalog if self.catalog.numel() else torch.arange(1, self.cfg.n_items + 1, device=rows.device)
        seen = torch.where(b.valid, rows, torch.full_like(rows, -1))  # (B, L)
        neg = cat[torch.randint(cat.numel(), rows.shape, device=rows.device)]
        for _ in range(rounds):
            bad = (neg.unsqueeze(-1) == seen.unsqueeze(1)).any(-1)  # (B, L)
            if not bool(bad.any()):
                break
            neg = torch.where(bad, cat[torch.randint(cat.numel(), rows.shape, device=rows.device)], neg)
        return neg

    def pretrain_losses(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """BCE(positive) + BCE(one negative) at every target position t >= 1 (state t-1 predicts t)."""
        b, _ = positives_only(batch)
        rows = self.vocab(b.item_id)
        h = self._feats(b)[:, :-1]  # (B, L-1, d): state before event t = 1..L-1
        mask = (b.target_mask & b.valid)[:, 1:]
        pos = (h * self.item_emb(rows[:, 1:])).sum(-1)
        neg = (h * self.item_emb(self._negatives(b, rows)[:, 1:])).sum(-1)
        loss = (F.softplus(-pos[mask]).mean() + F.softplus(neg[mask]).mean()) if bool(mask.any()) else h.sum() * 0.0
        return {"loss": loss, "bce": loss.detach()}

    def nip_queries(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, L, d) position t scores item t from the state after event t-1 (zeros at t = 0)."""
        h = self._feats(self.prepare_batch(batch))
        return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)

    def nip_item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.item_emb(self.vocab(item_ids))

    def num_parameters(self, encoder_only: bool = True) -> int:
        mods = [self.blocks, self.ln_f, self.pos_emb] if encoder_only else [self]
        return sum(p.numel() for m in mods for p in m.parameters())

    def configure_optimizer(self, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.98)) -> torch.optim.Adam:
        """Adam as in the paper (its l2_emb 0: no weight decay)."""
        return torch.optim.Adam(self.parameters(), lr=lr, betas=betas)
