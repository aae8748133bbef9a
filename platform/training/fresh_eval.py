"""What fresh user vectors are worth: the served ranker's PairAccuracy with daily-lagged vs fresh vectors.

The test requests of the ranker window (``ranker_job.ranker_rows``) are replayed in time order: the
*lagged* rows carry ``argus_dot`` from the daily snapshot vectors (what Feast served offline, what
the ranker was trained with); the *fresh* rows from the user vector after every event before the
request, as ``POST /events`` would have pushed it (the same model version, lag 0). Both are scored
by the same registered ranker. Its other ARGUS features (``nip_dot``, ``fp_*``: NIP and FP head vectors)
stay the daily ones in both, as served: fresh vectors update the tower vector only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from argusrank.platform.config import ArgusrankConfig


def fresh_user_vectors(model, hist, user_ids: np.ndarray, before_ts: np.ndarray) -> np.ndarray:
    """(n, d) tower vectors after each user's last event strictly before ``before_ts`` (NaN rows for none)."""
    from argusrank.features.histories import events_until
    from argusrank.platform.inference import user_vectors, window_arrays

    uidx = np.searchsorted(hist.user_ids, user_ids)
    known = (uidx < hist.n_users) & (hist.user_ids[np.minimum(uidx, hist.n_users - 1)] == user_ids)
    end = events_until(hist, uidx, before_ts, inclusive=False)
    n = np.where(known, end - hist.offsets[np.minimum(uidx, hist.n_users - 1)], 0)
    ok = np.flatnonzero(n > 0)
    L = int(model.cfg.max_len)
    start = np.maximum(hist.offsets[uidx[ok]], end[ok] - L)
    vecs = [user_vectors(model, window_arrays(hist, start[i:i + 512], (end[ok] - start)[i:i + 512], None, "tower", L),
                         "tower") for i in range(0, len(ok), 512)]
    dim = vecs[0].shape[1] if vecs else 1
    out = np.full((len(user_ids), dim), np.nan, np.float32)
    if vecs:
        out[ok] = np.concatenate(vecs)
    return out


def fresh_vs_lagged(cfg: ArgusrankConfig, dataset_dir: str | Path, ranker_ref: str | int | None = None) -> dict[str, Any]:
    """``{"pair_accuracy_lagged", "pair_accuracy_fresh", "n_test_requests", "model_version"}`` of the ranker
    behind ``ranker_ref`` (default ``serve.ranker_alias``) on the ranker window's test requests."""
    from argusrank.features import vectors
    from argusrank.features.baseline import ranker_features
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.models.ranker import pair_accuracy, score
    from argusrank.platform import registry
    from argusrank.platform.ranker_job import ranker_rows

    feats, is_train, version = ranker_rows(cfg, dataset_dir)
    test = feats[~is_train].reset_index(drop=True)
    ranker, _, names = registry.load_ranker(cfg, ranker_ref or cfg.serve.ranker_alias)
    model, _ = registry.load_argus(cfg, version)
    hist = build_histories(read_events(dataset_dir))
    start = test.groupby("request_id")["ts"].transform("min").to_numpy()  # the request's time
    pairs, inv = np.unique(np.stack([test["user_id"].to_numpy(), start], 1), axis=0, return_inverse=True)
    users = fresh_user_vectors(model, hist, pairs[:, 0], pairs[:, 1])[inv.ravel()]  # (n, d)
    ids, items = vectors.read_version(cfg, "item", version)
    pos = np.searchsorted(ids, test["item_id"].to_numpy())
    pos_ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == test["item_id"].to_numpy())
    fresh_dot = np.where(pos_ok, np.einsum("nd,nd->n", users.astype(np.float64),
                                             items[np.minimum(pos, len(ids) - 1)].astype(np.float64)), np.nan)
    raw = {c: test[c].to_numpy() for c in test.columns}
    ts, grades, groups = test["ts"].to_numpy(), test["grade"].to_numpy(), test["request_id"].to_numpy()
    lagged = pair_accuracy(score(ranker, ranker_features(raw, ts, names)), grades, groups)
    fresh = pair_accuracy(score(ranker, ranker_features({**raw, "argus_dot": fresh_dot}, ts, names)), grades, groups)
    return {"pair_accuracy_lagged": lagged, "pair_accuracy_fresh": fresh, "model_version": version,
            "n_test_requests": int(np.unique(groups).size),
            "argus_dot_pair_accuracy_lagged": pair_accuracy(np.nan_to_num(raw["argus_dot"], nan=-1e9), grades, groups),
            "argus_dot_pair_accuracy_fresh": pair_accuracy(np.nan_to_num(fresh_dot, nan=-1e9), grades, groups)}
