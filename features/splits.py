"""The split of a dataset into what models train on and what they are evaluated on.

Decided once per dataset and asked by every stage (training, evaluation, export, ranker):

- ``temporal`` (global temporal split, ARGUS.md section 4): the test window is
  ``[T, T_end)`` with ``T_end`` = the last timestamp + 1 and ``T = T_end - test_days``,
  read from ``metadata.json`` (no stage re-reads the events for it). Models train on
  events before T.
- ``loo`` (leave-one-out): each user's last event is the test target, the one before it
  the validation target; training drops both.

The target rule, the same in both protocols: only positive events (grade >= listen) are
targets, so ARGUS and SASRec (which drops negative events) are scored on the same targets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from argusrank.features.histories import Histories, drop_last, restrict
from argusrank.features.io import read_metadata
from argusrank.features.sequences import loo_eval_arrays, temporal_eval_arrays

PROTOCOLS = ("temporal", "loo")
#: the smallest feedback grade that counts as a target (listen; like is 2)
POSITIVE_GRADE = 1


@dataclass(frozen=True)
class Split:
    """``protocol`` plus, for ``temporal``, the test window ``[T, T_end)`` in seconds."""

    protocol: str
    T: int | None = None
    T_end: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(d["protocol"], d.get("T"), d.get("T_end"))


def temporal_window(max_timestamp: int, test_days: float) -> tuple[int, int]:
    """``(T, T_end)``: ``T_end = max_timestamp + 1``, ``T = T_end - test_days`` (rounded to seconds)."""
    t_end = int(max_timestamp) + 1
    return t_end - int(round(test_days * 86400)), t_end


def dataset_split(dataset_dir: str | Path, protocol: str, test_days: float) -> Split:
    """The split of a dataset directory, from its metadata (its time range)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "loo":
        return Split("loo")
    meta = read_metadata(dataset_dir)
    if meta.get("max_timestamp") is None:
        raise ValueError(f"dataset {dataset_dir} has no events (metadata.json holds no time range)")
    return Split("temporal", *temporal_window(meta["max_timestamp"], test_days))


def train_histories(hist: Histories, split: Split, positives_only: bool = False) -> Histories:
    """What a model may train on: events before T (temporal) or all but each user's last two
    events (loo); ``positives_only`` keeps grade >= listen events only (the SASRec ablation)."""
    hist = restrict(hist, before_ts=split.T) if split.protocol == "temporal" else drop_last(hist, 2)
    return restrict(hist, positives_only=True) if positives_only else hist


def train_item_ids(hist: Histories, split: Split) -> np.ndarray:
    """Item IDs of the training events (what popularity is counted on)."""
    return train_histories(hist, split).item_id


def eval_arrays(hist: Histories, split: Split, max_len: int, positives_only_targets: bool = True) -> dict[str, np.ndarray]:
    """Evaluation rows of the split: the users' histories with ``target_mask`` on the test targets
    (in the temporal window, or each user's last event for loo), positive targets only unless told."""
    if split.protocol == "temporal":
        return temporal_eval_arrays(hist, split.T, split.T_end, max_len, positives_only_targets=positives_only_targets)
    arrays = loo_eval_arrays(hist, max_len, split="test")
    if positives_only_targets:
        arrays["target_mask"] = arrays["target_mask"] & (arrays["grade"] >= POSITIVE_GRADE)
    return arrays


def validation_split(split: Split, valid_days: float) -> Split:
    """The validation split held out like the test one: ``loo`` stays ``loo`` (its target is each
    user's second-to-last event); ``temporal`` becomes the window ``[T - valid_days, T)``."""
    if split.protocol == "loo":
        return split
    return Split("temporal", split.T - int(round(valid_days * 86400)), split.T)


def valid_arrays(hist: Histories, split: Split, max_len: int) -> dict[str, np.ndarray]:
    """Validation rows for :func:`validation_split`'s result: LOO's second-to-last events, or the
    temporal window's events (histories before it fed in), positive targets only."""
    if split.protocol == "temporal":
        return temporal_eval_arrays(hist, split.T, split.T_end, max_len, positives_only_targets=True)
    arrays = loo_eval_arrays(hist, max_len, split="valid")
    arrays["target_mask"] = arrays["target_mask"] & (arrays["grade"] >= POSITIVE_GRADE)
    return arrays
