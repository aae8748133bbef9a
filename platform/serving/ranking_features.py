"""Ranker features of (user, candidates) from the Feast online store, as the ranker was trained on them.

``serve.features_path``: ``cached_items`` keeps item stats in RAM (:class:`ItemFeatureCache`) and reads
one Feast row for the user; ``feast_batched`` reads every candidate row from Feast in one call.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow.dataset as ds

from argusrank.features.argus_features import DOT
from argusrank.features.baseline import ITEM_STATS, USER_ITEM_PRIORS, USER_STATS, lookup_sorted, priors_for
from argusrank.features.vectors import VectorVersionMismatch
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import VersionMismatch


def raw_features(cfg: ArgusrankConfig, user_id: int, item_ids: Sequence[int], argus_version: int,
                 argus: Sequence[str] = (DOT,)) -> dict[str, np.ndarray]:
    """Raw ranker features (baseline + the ARGUS features ``argus``) of (user, items) in ONE batched Feast call
    (``features.store.online_features``: vectors read from Feast, features vectorized there).

    Raises :class:`VersionMismatch` when the vectors read carry another version than ``argus_version``.
    """
    from argusrank.features.store import online_features

    try:
        raw = online_features(cfg, int(user_id), [int(i) for i in item_ids], argus=argus)
    except VectorVersionMismatch as exc:
        raise VersionMismatch(str(exc)) from exc
    got = np.unique(raw.pop("model_version"))
    got = got[got >= 0]
    if got.size and int(got[0]) != int(argus_version):
        raise VersionMismatch(f"online vectors are model version {int(got[0])}, the served bundle is {argus_version}")
    return raw


def features_for(cfg: ArgusrankConfig, user_id: int, cand: dict[str, Any], items: "ItemFeatureCache | None") -> dict:
    """Raw features of a candidate answer, by ``cfg.serve.features_path`` (``items`` needed for cached_items);
    the candidate answer's ``argus`` names the ARGUS features the served ranker reads."""
    if items is None:
        return raw_features(cfg, user_id, cand["item_ids"], cand["model_versions"]["argus"], list(cand["argus"]))
    return raw_features_cached(cfg, user_id, cand["item_ids"], cand["argus"], items)


class ItemFeatureCache:
    """Item-level baseline features (``item_stats``) of the whole catalog, read from the Feast online
    store in bulk and held in RAM; rebuilt (then swapped whole) when a materialization lands.

    Used by ``serve.features_path="cached_items"``: per request only the user's row is read
    from Feast (``user_stats`` + ``user_item_priors``), and the ARGUS features (``argus_dot``, ...) are the
    candidate generator's, from the pinned version's item vectors in RAM.
    """

    def __init__(self, cfg: ArgusrankConfig):
        from argusrank.features.store import get_store

        self.names = ITEM_STATS.features
        path = cfg.paths.baseline_dir / ITEM_STATS.name
        ids = (np.unique(ds.dataset(path, format="parquet").to_table(columns=["item_id"])["item_id"].to_numpy())
               if path.is_dir() and any(path.glob("*.parquet")) else np.zeros(0, np.int64))
        refs = [f"{ITEM_STATS.name}:{f}" for f in self.names]
        cols = {f: [] for f in self.names}
        store = get_store(cfg)
        for lo in range(0, len(ids), 5000):  # (N,) in chunks: one Feast call each
            r = store.get_online_features(features=refs, entity_rows={"item_id": ids[lo:lo + 5000].tolist()}).to_dict()
            for f in self.names:
                cols[f].append(np.asarray([np.nan if v is None else v for v in r[f]], np.float64))
        self.ids = ids.astype(np.int64)  # (N,) sorted
        self.values = {f: np.concatenate(cols[f]) if cols[f] else np.zeros(0) for f in self.names}

    def lookup(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Item features of ``item_ids`` (N,): NaN for items without stats."""
        pos, ok = lookup_sorted(self.ids, item_ids)
        return {f: np.where(ok, v[pos], np.nan) if len(v) else np.full(len(item_ids), np.nan)
                for f, v in self.values.items()}


def raw_features_cached(cfg: ArgusrankConfig, user_id: int, item_ids: np.ndarray, argus: dict[str, np.ndarray],
                        items: ItemFeatureCache) -> dict[str, np.ndarray]:
    """Raw ranker features with item stats from RAM and ONE single-row Feast read for the user:
    ``user_stats`` and ``user_item_priors`` (the user's prior items as arrays, joined to the candidates
    here by a vectorized search), so the cost does not grow with the number of candidates.

    ``argus``: ``{feature: (N,)}`` the ARGUS features from the candidate generator (exact, pinned version).
    """
    from argusrank.features.store import get_store

    n = len(item_ids)
    refs = [f"{v.name}:{f}" for v in (USER_STATS, USER_ITEM_PRIORS) for f in v.features]
    u = get_store(cfg).get_online_features(features=refs, entity_rows={"user_id": [int(user_id)]}).to_dict()
    raw = items.lookup(np.asarray(item_ids, np.int64))
    for f in USER_STATS.features:
        raw[f] = np.full(n, np.nan if u[f][0] is None else float(u[f][0]))
    raw.update(priors_for({f: u[f][0] for f in USER_ITEM_PRIORS.features}, item_ids))
    raw.update({f: np.asarray(x, np.float64) for f, x in argus.items()})
    return raw


def features_or_mismatch(cfg: ArgusrankConfig, user_id: int, cand: dict[str, Any],
                         items: "ItemFeatureCache | None") -> dict[str, Any]:
    """``{"raw": {feature: (N,)}}``, or ``{"mismatch": reason}`` when the store holds another version."""
    try:
        return {"raw": features_for(cfg, user_id, cand, items)}
    except VersionMismatch as exc:
        return {"mismatch": str(exc)}
