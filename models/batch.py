"""Tensor batches: the contract between the data layer and the model.

The data layer (``argusrank.features.sequences``) yields dicts of numpy arrays
with exactly these field names; ``SequenceBatch.from_numpy`` /
``FinetuneBatch.from_numpy`` turn them into tensors. Sequences are
**right-padded**: position 0 is the oldest event, ``valid[b, :n_b]`` is True.

Shapes: B = batch size, L = history length, K = impressions, P = pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np
import torch


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device) if device is not None else t


@dataclass
class SequenceBatch:
    """A batch of event histories (the input of pre-training and of the user tower)."""

    item_id: torch.Tensor  # (B, L) int64 raw item IDs (hashed by the model); 0 at padding
    timestamp: torch.Tensor  # (B, L) int64 seconds
    is_organic: torch.Tensor  # (B, L) bool
    surface: torch.Tensor  # (B, L) int64 code into features.schema.SURFACES
    played_ratio: torch.Tensor  # (B, L) float32 in [0, 1], NaN where unknown
    liked: torch.Tensor  # (B, L) float32 1/0, NaN where unknown
    disliked: torch.Tensor  # (B, L) float32 1/0, NaN where unknown
    valid: torch.Tensor  # (B, L) bool, False at padding
    target_mask: torch.Tensor  # (B, L) bool, positions whose NIP/FP targets count in loss/metrics

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray], device=None) -> "SequenceBatch":
        """Build from a dict of numpy arrays; ``target_mask`` defaults to ``valid``."""
        kw = {}
        for f in fields(cls):
            if f.name == "target_mask" and "target_mask" not in arrays:
                kw[f.name] = _to_tensor(arrays["valid"], device)
            else:
                kw[f.name] = _to_tensor(arrays[f.name], device)
        kw["surface"] = kw["surface"].long()
        return cls(**kw)

    def to(self, device) -> "SequenceBatch":
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def lengths(self) -> torch.Tensor:  # (B,)
        return self.valid.sum(dim=1)


@dataclass
class FinetuneBatch:
    """One-pass pairwise fine-tuning input (ARGUS.md section 3).

    ``history`` is the user's full event sequence; impressions are shown items
    with their request time. Each impression is scored with the user state of
    the last history event at or before ``imp_time - lag``. Pairs index into
    the K impressions of the same row: item ``pair_a`` should outrank
    ``pair_b`` with weight ``pair_w`` (0 at padding).
    """

    history: SequenceBatch
    imp_item: torch.Tensor  # (B, K) int64 raw item IDs
    imp_time: torch.Tensor  # (B, K) int64 seconds
    imp_valid: torch.Tensor  # (B, K) bool
    pair_a: torch.Tensor  # (B, P) int64 index into K (the better one)
    pair_b: torch.Tensor  # (B, P) int64 index into K (the worse one)
    pair_w: torch.Tensor  # (B, P) float32 weight, 0 at padding

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray], device=None) -> "FinetuneBatch":
        """``arrays`` holds the SequenceBatch fields plus the impression/pair fields."""
        hist = SequenceBatch.from_numpy(arrays, device)
        kw = {f.name: _to_tensor(arrays[f.name], device) for f in fields(cls) if f.name != "history"}
        return cls(history=hist, **kw)

    def to(self, device) -> "FinetuneBatch":
        kw = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "history"}
        return type(self)(history=self.history.to(device), **kw)
