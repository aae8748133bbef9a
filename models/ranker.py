"""The final ranker (XGBoost ``rank:pairwise``, query groups = requests) and its metrics.

Metrics (ARGUS.md section 4), all vectorized over requests:

- :func:`pair_accuracy`: share of same-request pairs with different feedback
  grades that the scores order correctly, each pair weighted by the grade
  difference (like-vs-skip weighs twice listen-vs-skip); score ties count half.
- :func:`ndcg_at_k`: NDCG@K per request (gain ``2^rel - 1``, ``rel = grade + 1``),
  averaged over requests with at least one positive-gain item.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from argusrank.models.metrics import pair_accuracy_terms


def _group_layout(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable order by group; (order (N,), starts (G,), sizes (G,)) in that order."""
    order = np.argsort(groups, kind="stable")
    g = np.asarray(groups)[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(g)])
    return order, starts, sizes


def within_group_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, of rows sharing a group: two (sum n_g^2 - n_g,) index arrays."""
    order, starts, sizes = _group_layout(np.asarray(groups))
    size_row = np.repeat(sizes, sizes)  # (N,) size of the row's group (in sorted order)
    start_row = np.repeat(starts, sizes)
    i = np.repeat(np.arange(len(order)), size_row)
    first = np.repeat(np.cumsum(size_row) - size_row, size_row)
    j = np.repeat(start_row, size_row) + (np.arange(len(i)) - first)
    keep = i != j
    return order[i[keep]], order[j[keep]]


def _graded_pairs(grades: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i, j) of one group with grade i > grade j, and their weights (the grade difference)."""
    gr = np.asarray(grades, np.float64)
    i, j = within_group_pairs(groups)
    better = gr[i] > gr[j]
    i, j = i[better], j[better]
    return i, j, gr[i] - gr[j]


def pair_accuracy(scores: np.ndarray, grades: np.ndarray, groups: np.ndarray) -> float:
    """Weighted PairAccuracy; NaN when no pair has different grades."""
    s = np.asarray(scores, np.float64)
    i, j, w = _graded_pairs(grades, groups)
    correct, total = pair_accuracy_terms(s[i], s[j], w)
    return float(correct / total) if total > 0 else float("nan")


def pair_accuracy_diff_se(scores_a: np.ndarray, scores_b: np.ndarray, grades: np.ndarray, groups: np.ndarray,
                          n_boot: int = 1000, seed: int = 0) -> float:
    """Standard error of ``pair_accuracy(scores_a) - pair_accuracy(scores_b)`` on the same rows: a paired bootstrap
    that resamples whole groups (requests), the unit the pairs are drawn within."""
    i, j, w = _graded_pairs(grades, groups)
    _, gidx = np.unique(np.asarray(groups)[i], return_inverse=True)
    n_groups = int(gidx.max()) + 1 if len(gidx) else 0
    if n_groups < 2:
        return float("nan")

    def per_group(s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, np.float64)
        ok = w * ((s[i] > s[j]) * 1.0 + (s[i] == s[j]) * 0.5)
        return np.bincount(gidx, ok, n_groups)

    ca, cb, tot = per_group(scores_a), per_group(scores_b), np.bincount(gidx, w, n_groups)
    counts = np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot)
    t = counts @ tot
    return float(np.std((counts @ ca - counts @ cb) / t, ddof=1))


def _dcg(order_key: np.ndarray, gains: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group DCG@k of gains ranked by descending ``order_key``: (group ids, dcg)."""
    o = np.lexsort((-order_key, groups))
    g, gain = groups[o], gains[o]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, sizes)
    disc = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    gid = np.repeat(np.arange(len(starts)), sizes)
    return g[starts], np.bincount(gid, weights=gain * disc, minlength=len(starts))


def ndcg_at_k(scores: np.ndarray, grades: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over requests whose ideal DCG is positive."""
    gains = np.exp2(np.asarray(grades, np.float64) + 1.0) - 1.0
    groups = np.asarray(groups)
    _, dcg = _dcg(np.asarray(scores, np.float64), gains, groups, k)
    _, idcg = _dcg(gains, gains, groups, k)
    ok = idcg > 0
    return float(np.mean(dcg[ok] / idcg[ok])) if ok.any() else float("nan")


def train_ranker(
    X: pd.DataFrame, grades: np.ndarray, groups: np.ndarray, *, n_estimators: int, max_depth: int,
    learning_rate: float, seed: int, n_jobs: int = 2,
):
    """Fit ``XGBRanker(rank:pairwise)``; rows are sorted by group here (XGBoost needs contiguous queries).

    ``X`` (N, F) with named columns (kept as the booster's feature names),
    ``grades`` (N,) feedback grades (-1..2, label = grade + 1), ``groups`` (N,) request IDs.
    """
    import xgboost as xgb

    order = np.argsort(np.asarray(groups), kind="stable")
    model = xgb.XGBRanker(
        objective="rank:pairwise", tree_method="hist", n_estimators=n_estimators, max_depth=max_depth,
        learning_rate=learning_rate, random_state=seed, n_jobs=n_jobs,
    )
    model.fit(X.iloc[order], np.asarray(grades)[order] + 1, qid=np.asarray(groups)[order])
    return model


def score(model, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Ranker scores (N,) float32 of the rows of ``X`` (columns in the booster's feature order) in
    ONE ``inplace_predict`` call (no DMatrix); the one scoring path of training, evaluation and serving."""
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if X.shape[0] == 0:
        return np.zeros(0, np.float32)
    return np.asarray(booster.inplace_predict(X), dtype=np.float32).reshape(-1)


def train_ranker_on_batches(
    batches, *, n_estimators: int, max_depth: int, learning_rate: float, seed: int, n_jobs: int = 2,
    max_bin: int = 256,
):
    """:func:`train_ranker` for rows too many to hold: ``batches()`` yields ``(X, grades, groups)`` one batch at a
    time (each batch whole requests, rows of a request contiguous; ``X`` a DataFrame of the feature columns) and is
    called again for each pass. XGBoost quantizes the batches as they come (``QuantileDMatrix`` from a
    ``DataIter``: about one byte per feature value instead of the rows' floats) and trains the same
    ``rank:pairwise`` hist booster; returns the ``Booster``. Inside a Ray Train XGBoost worker (XGBoost's
    collective set up) the workers' batches train one booster together."""
    import xgboost as xgb

    class Batches(xgb.DataIter):
        def __init__(self) -> None:
            self._it = None
            super().__init__(release_data=True)

        def next(self, input_data) -> bool:
            if self._it is None:
                self._it = iter(batches())
            for X, grades, groups in self._it:
                if len(X):
                    input_data(data=X, label=np.asarray(grades) + 1, qid=np.asarray(groups))
                    return True
            return False

        def reset(self) -> None:
            self._it = None

    data = xgb.QuantileDMatrix(Batches(), max_bin=max_bin, nthread=n_jobs)
    params = {"objective": "rank:pairwise", "tree_method": "hist", "max_depth": max_depth, "eta": learning_rate,
              "seed": seed, "nthread": n_jobs, "max_bin": max_bin}
    return xgb.train(params, data, num_boost_round=n_estimators)
