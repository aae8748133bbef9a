"""The final ranker online: registered XGBoost versions held in RAM, scoring all candidates in one call."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from argusrank.features.baseline import ranker_features
from argusrank.models.ranker import score
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import NothingToServe, check_features


@dataclass
class RankerState:
    """One registered XGBoost ranker version: booster and its feature order."""

    version: int
    booster: Any  # xgboost.Booster
    feature_names: tuple[str, ...]

    def score(self, raw: dict[str, np.ndarray], request_ts: float | np.ndarray) -> np.ndarray:
        """Scores (N,) float32 of N rows of raw features."""
        return self.score_many([(raw, request_ts)])[0]

    def score_many(self, rows: Sequence[tuple[dict[str, np.ndarray], float]]) -> list[np.ndarray]:
        """Scores of several requests' ``(raw features, request time)`` in ONE ``inplace_predict`` call."""
        mats = [ranker_features(raw, ts, self.feature_names) for raw, ts in rows]  # (N_i, F) float32 each
        scores = score(self.booster, np.concatenate(mats, axis=0)) if mats else np.zeros(0, np.float32)
        return np.split(scores, np.cumsum([m.shape[0] for m in mats])[:-1])


def load_ranker_state(cfg: ArgusrankConfig, version: int) -> RankerState:
    """Ranker ``version`` of ``cfg.mlflow.ranker_model_name`` from the registry, set to one thread.

    Its features are the booster's, which must equal the version's ``ranker_features`` tag when it has one
    and be features serving computes (else :class:`NothingToServe`, naming them)."""
    model, got, names = registry.load_ranker(cfg, int(version))
    what = f"ranker {cfg.mlflow.ranker_model_name!r} version {got}"
    tagged = registry.ranker_feature_names(registry.resolve(cfg, cfg.mlflow.ranker_model_name, got))
    if tagged is not None and tuple(tagged) != tuple(names):
        raise NothingToServe(f"{what}: its booster's features {list(names)} differ from its "
                             f"{registry.FEATURES_TAG!r} tag {list(tagged)}: retrain it (`argusrank ranker train`)")
    check_features(names, what)
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    booster.set_param({"nthread": 1})  # one request's 500 rows: threads only add overhead under load
    return RankerState(int(got), booster, tuple(names))


class RankerCache:
    """Ranker versions loaded on first use, the ``keep`` most recently used kept (a rollback to an
    older version stays loaded); thread-safe."""

    def __init__(self, cfg: ArgusrankConfig, keep: int = 2, loader=load_ranker_state):
        self.cfg, self.keep, self._load = cfg, keep, loader
        self._lock, self._states = threading.Lock(), OrderedDict()

    def get(self, version: int) -> RankerState:
        version = int(version)
        with self._lock:
            st = self._states.get(version)
            if st is None:
                st = self._states[version] = self._load(self.cfg, version)
            self._states.move_to_end(version)
            while len(self._states) > self.keep:
                self._states.popitem(last=False)
            return st

    def versions(self) -> list[int]:
        return sorted(self._states)
