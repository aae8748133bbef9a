"""The ranker's ARGUS features from exported vectors: the one place they are computed, offline and online.

Training (``features.store.historical_features``: point-in-time rows, one user per row) and serving
(``platform/serving``: one user, N candidates, vectors from Feast and RAM) both call
:func:`argus_features` on the same vectors of one model version, so the ranker sees the same numbers.

Features (each from one pair of vector kinds, ``features/vectors.py``):

- ``argus_dot``: fine-tuned user tower . item tower (the two-tower feature, ARGUS.md section 3);
- ``argus_dot_b<k>of<B>``: the same dot product over the k-th of B equal blocks of dimensions (a compact
  projection of the two vectors: the blocks sum to ``argus_dot``);
- ``nip_dot``: the NIP head's user query (next feed event) . the item's NIP embedding (next-item affinity);
- ``fp_liked``, ``fp_disliked``, ``fp_skip``, ``fp_played``: the FP head's predictions for the candidate as
  the user's next feed event, p(like), p(dislike), p(skip), E[played ratio]. The FP head's first layer is
  linear, so the export writes its user part (``user_fp``) and item part (``item_fp``) as vectors and the
  output layer as a per-version head file (:func:`features.vectors.write_head`); here
  ``sigmoid(out(GELU(user_fp + item_fp)))``: O(N x hidden) per request.

Missing vectors give NaN (XGBoost's missing value).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from argusrank.features.vectors import KINDS, read_head

DOT = "argus_dot"
NIP_DOT = "nip_dot"
#: FP feature name -> the FP head's target (models.config.FEEDBACK_TARGETS order is the head's row order)
FP_FEATURES: dict[str, str] = {"fp_liked": "liked", "fp_disliked": "disliked", "fp_skip": "skip",
                               "fp_played": "played_ratio"}
FP_TARGETS: tuple[str, ...] = ("played_ratio", "liked", "disliked", "skip")  # = models.config.FEEDBACK_TARGETS
FP_HEAD = "fp"  # the head file's name (features.vectors.read_head)
_BLOCK = re.compile(r"^argus_dot_b(\d+)of(\d+)$")


def block_features(n_blocks: int) -> tuple[str, ...]:
    """Names of the ``n_blocks`` partial tower dot products."""
    return tuple(f"argus_dot_b{k}of{n_blocks}" for k in range(n_blocks))


def is_argus_feature(name: str) -> bool:
    """Whether :func:`argus_features` computes ``name``."""
    m = _BLOCK.match(name)
    return name in (DOT, NIP_DOT) or name in FP_FEATURES or bool(m and int(m.group(1)) < int(m.group(2)))


def kinds_for(names: Sequence[str]) -> tuple[str, ...]:
    """The vector kinds the ARGUS features among ``names`` read, in ``features.vectors.KINDS`` order."""
    kinds: list[str] = []
    for n in names:
        if n == DOT or _BLOCK.match(n):
            kinds += ["user", "item"]
        elif n == NIP_DOT:
            kinds += ["user_nip", "item_nip"]
        elif n in FP_FEATURES:
            kinds += ["user_fp", "item_fp"]
    return tuple(k for k in KINDS if k in kinds)


def needs_fp_head(names: Sequence[str]) -> bool:
    return any(n in FP_FEATURES for n in names)


def _rows(user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(N, d) float64 user (broadcast from (1, d) or (d,)) and item rows; None when either side has no dims."""
    user, item = np.atleast_2d(np.asarray(user, np.float64)), np.atleast_2d(np.asarray(item, np.float64))
    if user.shape[-1] == 0 or item.shape[-1] == 0:
        return None
    if user.shape[-1] != item.shape[-1]:
        raise ValueError(f"user vectors have {user.shape[-1]} dims, item vectors {item.shape[-1]}")
    return np.broadcast_to(user, item.shape) if len(user) == 1 else user, item


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, the FP head's (torch ``nn.GELU()``: x * Phi(x)), computed by torch in float64: its vectorized
    erf takes ~0.1 ms for 500 x 64 here, numpy/scipy ~0.7 ms (torch is imported on first use)."""
    import torch

    return torch.nn.functional.gelu(torch.from_numpy(np.ascontiguousarray(x, np.float64))).numpy()


def fp_predictions(user_fp: np.ndarray, item_fp: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(N, n_targets) FP probabilities from user parts ((1, H) or (N, H)) and item parts (N, H), the output
    layer ``weight`` (n_targets, H), ``bias`` (n_targets,); NaN rows where a part is missing."""
    rows = _rows(user_fp, item_fp)
    n = max(len(np.atleast_2d(user_fp)), len(np.atleast_2d(item_fp)))
    if rows is None:
        return np.full((n, len(bias)), np.nan)
    logits = _gelu(rows[0] + rows[1]) @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


def argus_features(names: Sequence[str], vectors: Mapping[str, np.ndarray],
                   fp_head: Mapping[str, np.ndarray] | None = None, n: int | None = None) -> dict[str, np.ndarray]:
    """``{name: (N,) float64}`` of the ARGUS features among ``names`` (others are skipped).

    ``vectors`` maps a kind (``user``, ``item``, ``user_nip``, ...) to its vectors: user kinds (1, d) (one
    user, broadcast) or (N, d), item kinds (N, d); NaN rows where missing; a kind absent gives NaN features.
    ``fp_head``: ``{"weight", "bias"}`` of the FP output layer (needed for FP features; None gives NaN).
    """
    n = n if n is not None else max((len(v) for k, v in vectors.items() if k.startswith("item")), default=0)
    out: dict[str, np.ndarray] = {}
    pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = {}

    def pair(u: str, i: str):
        if (u, i) not in pairs:
            pairs[(u, i)] = _rows(vectors[u], vectors[i]) if u in vectors and i in vectors else None
        return pairs[(u, i)]

    for name in names:
        m = _BLOCK.match(name)
        if name in (DOT, NIP_DOT):
            p = pair("user", "item") if name == DOT else pair("user_nip", "item_nip")
            out[name] = np.full(n, np.nan) if p is None else np.einsum("nd,nd->n", *p)
        elif m:
            p = pair("user", "item")
            k, b = int(m.group(1)), int(m.group(2))
            if p is None:
                out[name] = np.full(n, np.nan)
            else:
                sl = np.array_split(np.arange(p[0].shape[1]), b)[k]
                out[name] = np.einsum("nd,nd->n", p[0][:, sl], p[1][:, sl])
    fp = [f for f in names if f in FP_FEATURES]
    if fp:
        p = pair("user_fp", "item_fp")
        probs = (np.full((n, len(FP_TARGETS)), np.nan) if p is None or fp_head is None
                 else fp_predictions(p[0], p[1], fp_head["weight"], fp_head["bias"]))
        for f in fp:
            out[f] = probs[:, FP_TARGETS.index(FP_FEATURES[f])]
    return out


def all_features(n_blocks: int = 4) -> tuple[str, ...]:
    """Every ARGUS feature :func:`argus_features` computes (with ``n_blocks`` partial tower dot products)."""
    return (DOT, *(block_features(n_blocks) if n_blocks > 1 else ()), NIP_DOT, *FP_FEATURES)


def features_of_rows(cfg, names: Sequence[str], vectors: Mapping[str, np.ndarray],
                     versions: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`argus_features` of N rows that may span model versions (point-in-time training sets): each
    version's rows with that version's FP head (``features.vectors.read_head``; a version without one
    gives NaN FP features). ``vectors``: kind -> (N, d); ``versions`` (N,) int, -1 where no vector."""
    n = len(versions)
    out = {f: np.full(n, np.nan) for f in names if is_argus_feature(f)}
    for v in np.unique(versions):
        rows = np.flatnonzero(versions == v)
        head = None
        if needs_fp_head(names) and v >= 0:
            try:
                head = read_head(cfg, FP_HEAD, int(v))
            except LookupError:
                head = None
        got = argus_features(names, {k: np.asarray(x)[rows] for k, x in vectors.items()}, head, n=len(rows))
        for f, x in got.items():
            out[f][rows] = x
    return out


#: the ablation's groups (``ranker.ablation``): each is added alone to base + argus_dot
ABLATION_GROUPS: dict[str, tuple[str, ...]] = {
    NIP_DOT: (NIP_DOT,), **{f: (f,) for f in ("fp_liked", "fp_skip", "fp_disliked")}, "fp": tuple(FP_FEATURES),
    "tower_blocks": block_features(4),
}
