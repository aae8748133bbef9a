"""Weighted PairAccuracy: the one formula training, evaluation and the ranker report share.

A pair (a, b) says "a should outrank b" with weight w >= 0 (the feedback-grade difference;
0 for padding or a pair touching an invalid impression). PairAccuracy = the weight of
correctly ordered pairs (ties count half) / the total weight. Works on numpy arrays and
torch tensors alike.
"""
from __future__ import annotations

from typing import Any


def pair_accuracy_terms(score_a: Any, score_b: Any, weight: Any) -> tuple[Any, Any]:
    """``(correct weight, total weight)`` of pairs scored ``score_a`` vs ``score_b`` (same shapes)."""
    correct = (weight * ((score_a > score_b) * 1.0 + (score_a == score_b) * 0.5)).sum()
    return correct, weight.sum()
