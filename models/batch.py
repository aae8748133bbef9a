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


def is_positive(batch: SequenceBatch) -> torch.Tensor:
    """(B, L) bool: valid events with grade >= listen (``features.schema.feedback_grade``):
    liked, or not disliked and not skipped (unknown played fraction counts as a listen)."""
    from argusrank.features.schema import SKIP_THRESHOLD

    pr = batch.played_ratio
    listened = pr.isnan() | (pr >= SKIP_THRESHOLD)
    disliked = batch.disliked.nan_to_num(0.0) > 0
    liked = batch.liked.nan_to_num(0.0) > 0
    return batch.valid & (liked | (listened & ~disliked))


def positives_only(batch: SequenceBatch) -> tuple[SequenceBatch, torch.Tensor]:
    """Move each row's positive events to the front (order kept), the rest become padding.

    Returns the new batch and ``order`` (B, L): new position j holds old position
    ``order[:, j]`` (gather other (B, L) tensors with it). Used by the SASRec ablation.
    """
    keep = is_positive(batch)
    L = keep.shape[1]
    order = ((~keep).long() * L + torch.arange(L, device=keep.device)).argsort(dim=1)  # (B, L), stable
    kw = {f.name: getattr(batch, f.name).gather(1, order) for f in fields(batch)}
    kw["valid"] = keep.gather(1, order)
    kw["target_mask"] = kw["target_mask"] & kw["valid"]
    return SequenceBatch(**kw), order


# ---- random batches for tests and benches (no data layer needed) ----

def random_sequence_arrays(B: int, L: int, seed: int = 0, n_items: int = 50, min_len: int = 1) -> dict:
    """Right-padded histories with sorted timestamps, mixed feedback and NaN (unknown) signals."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, L + 1, size=B)
    valid = np.arange(L)[None, :] < lengths[:, None]
    ts = np.cumsum(rng.integers(0, 4000, size=(B, L)), axis=1) + 1_000_000  # ties (gap 0) possible
    pr = rng.random((B, L)).astype(np.float32)
    pr[rng.random((B, L)) < 0.2] = np.nan
    liked = (rng.random((B, L)) < 0.2).astype(np.float32)
    liked[rng.random((B, L)) < 0.3] = np.nan
    disliked = (rng.random((B, L)) < 0.1).astype(np.float32)
    a = dict(
        item_id=np.where(valid, rng.integers(1, n_items + 1, size=(B, L)) * 7919 + 10**9, 0).astype(np.int64),
        timestamp=np.where(valid, ts, 0).astype(np.int64),
        is_organic=rng.random((B, L)) < 0.5,
        surface=rng.integers(0, 7, size=(B, L)).astype(np.int64),
        played_ratio=np.where(valid, pr, np.nan).astype(np.float32),
        liked=np.where(valid, liked, np.nan).astype(np.float32),
        disliked=np.where(valid, disliked, np.nan).astype(np.float32),
        valid=valid,
    )
    a["target_mask"] = valid & (rng.random((B, L)) < 0.9)
    return a


def random_sequence_batch(B: int, L: int, seed: int = 0, **kw) -> SequenceBatch:
    return SequenceBatch.from_numpy(random_sequence_arrays(B, L, seed, **kw))


def random_finetune_batch(B: int, L: int, K: int, P: int, seed: int = 0, lag_s: int = 5000,
                          n_items: int = 50, min_len: int = 1, min_impressions: int = 2) -> FinetuneBatch:
    """Impression times span before the first event to after the last one (so some map to the
    empty state), some exactly at an event time + lag (ties); pairs index valid impressions."""
    a = random_sequence_arrays(B, L, seed, n_items=n_items, min_len=min_len)
    rng = np.random.default_rng(seed + 1)
    lo, hi = a["timestamp"][:, :1] - 10_000, a["timestamp"].max(1, keepdims=True) + 2 * lag_s
    imp_time = (lo + rng.random((B, K)) * (hi - lo)).astype(np.int64)
    tie = rng.random((B, K)) < 0.2  # exactly event time + lag
    ev = a["timestamp"][np.arange(B)[:, None], rng.integers(0, a["valid"].sum(1)[:, None], size=(B, K))]
    imp_time = np.where(tie, ev + lag_s, imp_time)
    n_imp = rng.integers(min(min_impressions, K), K + 1, size=B)
    imp_valid = np.arange(K)[None, :] < n_imp[:, None]
    pa_ = rng.integers(0, n_imp[:, None], size=(B, P))
    pb_ = rng.integers(0, n_imp[:, None], size=(B, P))
    w = rng.integers(1, 4, size=(B, P)).astype(np.float32) * (pa_ != pb_) * (rng.random((B, P)) < 0.9)
    a.update(imp_item=(rng.integers(1, n_items + 1, size=(B, K)) * 7919 + 10**9).astype(np.int64),
             imp_time=imp_time, imp_valid=imp_valid, pair_a=pa_.astype(np.int64), pair_b=pb_.astype(np.int64),
             pair_w=w.astype(np.float32))
    return FinetuneBatch.from_numpy(a)
