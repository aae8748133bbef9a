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


#: the user-vector kinds a fresh event moves online (serving/fresh.py: the tower vector, and the NIP query with
#: ``serve.fresh_nip``) -> the inference space computing them; the FP user part stays daily
FRESH_KINDS: dict[str, str] = {"user": "tower", "user_nip": "nip"}


def fresh_user_vectors(model, hist, user_ids: np.ndarray, before_ts: np.ndarray, space: str = "tower") -> np.ndarray:
    """(n, d) vectors of ``space`` after each user's last event strictly before ``before_ts`` (NaN rows for none):
    the tower vector, or the NIP query of a feed request at that last event's time (what ``POST /events``
    writes)."""
    from argusrank.features.histories import events_until
    from argusrank.platform.inference import space_dim, user_vectors, window_arrays

    uidx = np.searchsorted(hist.user_ids, user_ids)
    known = (uidx < hist.n_users) & (hist.user_ids[np.minimum(uidx, hist.n_users - 1)] == user_ids)
    end = events_until(hist, uidx, before_ts, inclusive=False)
    n = np.where(known, end - hist.offsets[np.minimum(uidx, hist.n_users - 1)], 0)
    ok = np.flatnonzero(n > 0)
    L = int(model.cfg.max_len)
    start, stop = np.maximum(hist.offsets[uidx[ok]], end[ok] - L), end[ok]
    as_of = hist.timestamp[stop - 1].astype(np.int64) if len(ok) else None
    vecs = [user_vectors(model, window_arrays(hist, start[i:i + 512], (stop - start)[i:i + 512],
                                              None if as_of is None else as_of[i:i + 512], space, L), space)
            for i in range(0, len(ok), 512)]
    out = np.full((len(user_ids), space_dim(model, space)), np.nan, np.float32)
    if vecs:
        out[ok] = np.concatenate(vecs)
    return out


def fresh_feature_names(names) -> list[str]:
    """The ARGUS features among ``names`` that fresh user vectors change (tower dots, ``nip_dot``)."""
    from argusrank.features.argus_features import is_argus_feature, kinds_for

    return [f for f in names if is_argus_feature(f) and kinds_for([f])[0] in FRESH_KINDS]


def fresh_user_features(cfg: ArgusrankConfig, dataset_dir: str | Path, rows: pd.DataFrame, version: int,
                        names) -> dict[str, np.ndarray]:
    """``{feature: (N,) float64}``: the features among ``names`` that fresh vectors change (:func:`fresh_feature_names`)
    of ranker ``rows`` (user_id, item_id, request_id, ts), from the user vectors after every event before each
    request's time (its earliest ``ts``) and the item vectors of model ``version``; NaN where either is missing."""
    from argusrank.features import vectors
    from argusrank.features.argus_features import argus_features, kinds_for
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events, user_buckets_of
    from argusrank.platform import registry
    from argusrank.platform.inference import space_dim

    fresh = fresh_feature_names(names)
    if not fresh or rows.empty:
        return {f: np.full(len(rows), np.nan) for f in fresh}
    model, _ = registry.load_argus(cfg, version)
    start = rows.groupby("request_id")["ts"].transform("min").to_numpy()  # the request's time
    pairs, inv = np.unique(np.stack([rows["user_id"].to_numpy(), start], 1), axis=0, return_inverse=True)
    item_ids = rows["item_id"].to_numpy()
    user_kinds = [k for k in FRESH_KINDS if k in kinds_for(fresh)]
    per_pair = {k: np.full((len(pairs), space_dim(model, FRESH_KINDS[k])), np.nan, np.float32) for k in user_kinds}
    bucket = pairs[:, 0] % user_buckets_of(dataset_dir)
    for b in np.unique(bucket):  # one user bucket's histories at a time: only the buckets of the rows' users
        sel = np.flatnonzero(bucket == b)
        hist = build_histories(read_events(dataset_dir, user_buckets=[int(b)]))
        for kind in user_kinds:
            per_pair[kind][sel] = fresh_user_vectors(model, hist, pairs[sel, 0], pairs[sel, 1], FRESH_KINDS[kind])
    vecs: dict[str, np.ndarray] = {}
    for user_kind in user_kinds:
        vecs[user_kind] = per_pair[user_kind][inv.ravel()]
        item_kind = user_kind.replace("user", "item")
        ids, items = vectors.read_version(cfg, item_kind, version)
        pos = np.minimum(np.searchsorted(ids, item_ids), len(ids) - 1)
        vecs[item_kind] = np.where((ids[pos] == item_ids)[:, None], items[pos], np.nan)
    return argus_features(fresh, vecs, n=len(rows))
