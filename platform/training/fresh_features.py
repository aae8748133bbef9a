"""Fresh user vectors as ranker features offline: the tower features of ranker rows at request time.

A *fresh* user vector is the tower vector after every event before the request, as ``POST /events`` would
have pushed it (the same model version, lag 0); a *lagged* one is the daily snapshot's (what Feast serves
offline). The ranker job trains on fresh tower features with ``ranker.user_vectors=fresh`` (a ranker to serve
with fresh vectors); ``training.fresh_eval`` replays its test requests with both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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


def tower_feature_names(names) -> list[str]:
    """The features among ``names`` computed from the user tower vector (``argus_dot`` and its blocks)."""
    from argusrank.features.argus_features import is_argus_feature, kinds_for

    return [f for f in names if is_argus_feature(f) and kinds_for([f]) == ("user", "item")]


def fresh_tower_features(cfg: ArgusrankConfig, dataset_dir: str | Path, rows: pd.DataFrame, version: int,
                         names) -> dict[str, np.ndarray]:
    """``{feature: (N,) float64}``: the tower features among ``names`` of ranker ``rows`` (user_id, item_id,
    request_id, ts) from fresh user vectors at each request's time (its earliest ``ts``; events strictly
    before it) and the item vectors of model ``version``; NaN where either vector is missing."""
    from argusrank.features import vectors
    from argusrank.features.argus_features import argus_features
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.platform import registry

    tower = tower_feature_names(names)
    if not tower or rows.empty:
        return {f: np.full(len(rows), np.nan) for f in tower}
    model, _ = registry.load_argus(cfg, version)
    hist = build_histories(read_events(dataset_dir))
    start = rows.groupby("request_id")["ts"].transform("min").to_numpy()  # the request's time
    pairs, inv = np.unique(np.stack([rows["user_id"].to_numpy(), start], 1), axis=0, return_inverse=True)
    users = fresh_user_vectors(model, hist, pairs[:, 0], pairs[:, 1])[inv.ravel()]  # (n, d)
    ids, items = vectors.read_version(cfg, "item", version)
    item_ids = rows["item_id"].to_numpy()
    pos = np.minimum(np.searchsorted(ids, item_ids), len(ids) - 1)
    item_rows = np.where((ids[pos] == item_ids)[:, None], items[pos], np.nan)
    return argus_features(tower, {"user": users, "item": item_rows}, n=len(rows))
