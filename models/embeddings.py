"""Event embeddings: hashed item IDs, context and feedback (ARGUS.md section 1).

An event is a (context, item, feedback) triple; each part becomes a vector of
width ``d_model``. Item IDs are raw int64 values hashed ``k`` times into one
shared table (unified embeddings), so any ID, seen or not, gets a vector and
the table size is fixed.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from argusrank.features.schema import SKIP_THRESHOLD

from .config import ArgusConfig
from .vocab import ItemVocab

_PRIME = (1 << 31) - 1  # Mersenne prime; keeps every product below 2^62 (no int64 overflow)
#: fixed (a, b) pairs of the universal hashes h_k(x) = ((a_k x + b_k) mod p) mod buckets.
#: Fixed constants, not random state: training, export and serving must hash alike.
_HASH_AB = ((1_103_515_245, 12_345), (1_664_525, 1_013_904_223), (2_147_483_629, 7_919),
            (69_069, 1_234_567), (1_812_433_253, 271_828), (48_271, 314_159), (16_807, 2_718_281),
            (1_566_083_941, 99_991))


def hash_item_ids(ids: torch.Tensor, n_hashes: int, buckets: int) -> torch.Tensor:
    """(...,) int64 raw IDs -> (..., n_hashes) int64 rows in [0, buckets)."""
    if n_hashes > len(_HASH_AB):
        raise ValueError(f"n_hashes={n_hashes} > {len(_HASH_AB)} supported hashes")
    ids = ids.long()
    x = (torch.remainder(ids, _PRIME) + torch.remainder(ids // _PRIME, _PRIME) * 40_503) % _PRIME  # fold 64 -> 31 bits
    a = torch.tensor([ab[0] for ab in _HASH_AB[:n_hashes]], device=ids.device)
    b = torch.tensor([ab[1] for ab in _HASH_AB[:n_hashes]], device=ids.device)
    return ((x.unsqueeze(-1) * a + b) % _PRIME) % buckets


class HashedItemEmbedding(nn.Module):
    """Unified embeddings: k hashes of the ID into one table, summed or concatenated + projected;
    with ``item_table="catalog"`` one row per catalog item instead (``set_vocab``)."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.n_hashes, self.buckets = cfg.n_hashes, cfg.hash_buckets
        self.vocab = ItemVocab() if cfg.item_table == "catalog" else None
        self.table = nn.Embedding(cfg.n_items + 1 if self.vocab is not None else cfg.hash_buckets, cfg.item_dim)
        in_dim = cfg.item_dim * (cfg.n_hashes if cfg.hash_combine == "concat" and self.vocab is None else 1)
        self.combine = cfg.hash_combine
        self.proj = nn.Linear(in_dim, cfg.d_model, bias=False) if in_dim != cfg.d_model else nn.Identity()
        self.content = nn.Linear(cfg.content_dim, cfg.d_model, bias=False) if cfg.content_dim else None

    def set_vocab(self, item_ids: torch.Tensor) -> None:
        if self.vocab is not None:
            if torch.unique(torch.as_tensor(item_ids)).numel() > self.table.num_embeddings - 1:
                raise ValueError(f"catalog larger than ArgusConfig.n_items={self.table.num_embeddings - 1}")
            self.vocab.set(item_ids)

    def forward(self, ids: torch.Tensor, content: torch.Tensor | None = None) -> torch.Tensor:
        """ids (...,) int64 -> (..., d_model). ``content`` (..., content_dim) is the optional features hook."""
        if self.vocab is not None:
            e = self.table(self.vocab(ids))  # (..., item_dim)
        else:
            e = self.table(hash_item_ids(ids, self.n_hashes, self.buckets))  # (..., k, item_dim)
            e = e.sum(-2) if self.combine == "sum" else e.flatten(-2)
        e = self.proj(e)
        if content is not None:
            if self.content is None:
                raise ValueError("content features given but ArgusConfig.content_dim == 0")
            e = e + self.content(content)
        return e


def time_gap_buckets(timestamp: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """(B, L) seconds -> (B, L) int64 bucket of log2(1 + gap to the previous event); 0 for the first."""
    gap = (timestamp[:, 1:] - timestamp[:, :-1]).clamp(min=0).float()
    b = torch.log2(1.0 + gap).floor().long().clamp(max=n_buckets - 2) + 1
    return torch.cat([torch.zeros_like(timestamp[:, :1]), b], dim=1)


class ContextEmbedding(nn.Module):
    """Context of an event: surface, organic vs recommended, time gap since the previous event."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.use, self.time_signal, self.time_buckets = cfg.use_context, cfg.time_signal, cfg.time_buckets
        self.surface = nn.Embedding(cfg.n_surfaces, cfg.d_model)
        self.organic = nn.Embedding(2, cfg.d_model)
        self.gap = nn.Embedding(cfg.time_buckets, cfg.d_model)
        self.constant = nn.Parameter(torch.zeros(cfg.d_model))  # the "no context" vector (SASRec)

    def forward(self, surface: torch.Tensor, is_organic: torch.Tensor, timestamp: torch.Tensor) -> torch.Tensor:
        """(B, L) each -> (B, L, d_model)."""
        if not self.use:
            return self.constant.expand(*surface.shape, -1)
        c = self.surface(surface.long()) + self.organic(is_organic.long())
        if self.time_signal:
            c = c + self.gap(time_gap_buckets(timestamp, self.time_buckets))
        return c


def skip_target(played_ratio: torch.Tensor) -> torch.Tensor:
    """(B, L) played fraction (NaN unknown) -> (B, L) 1.0 skip / 0.0 not / NaN unknown."""
    return torch.where(played_ratio.isnan(), played_ratio, (played_ratio < SKIP_THRESHOLD).float())


class FeedbackEmbedding(nn.Module):
    """Feedback of an event: played fraction, like, dislike, skip, each with a 'missing' flag."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.use = cfg.use_feedback
        self.proj = nn.Linear(8, cfg.d_model)
        # feedback_gate: a per-dimension gate of the item vector by the feedback, so the token holds
        # the product item x feedback (attention can then average "liked items minus skipped items")
        self.gate = nn.Linear(8, cfg.d_model) if cfg.feedback_gate and cfg.use_feedback else None
        self.constant = nn.Parameter(torch.zeros(cfg.d_model))  # the "no feedback" vector (SASRec)

    def forward(self, played_ratio: torch.Tensor, liked: torch.Tensor, disliked: torch.Tensor,
                item: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) float each (NaN = unknown) -> (B, L, d_model); ``item`` (B, L, d_model) feeds the gate."""
        if not self.use:
            return self.constant.expand(*played_ratio.shape, -1)
        sig = torch.stack([played_ratio, liked, disliked, skip_target(played_ratio)], dim=-1).float()  # (B, L, 4)
        known = ~sig.isnan()
        x = torch.cat([sig.nan_to_num(0.0), known.float()], dim=-1).to(self.proj.weight.dtype)  # (B, L, 8)
        out = self.proj(x)
        if self.gate is not None and item is not None:
            out = out + item * self.gate(x)
        return out

