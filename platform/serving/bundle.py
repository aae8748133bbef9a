"""What one request is pinned to: the ranker version behind the alias and the ARGUS version it was trained on.

Requests carry the bundle through candidates, features and ranker, which check that the vectors they
read carry the same version and never mix two. Errors a user can act on are :class:`NothingToServe`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from argusrank.features.argus_features import DOT, is_argus_feature
from argusrank.features.baseline import BASE_FEATURES
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig


class NothingToServe(RuntimeError):
    """No registered ranker / exported vectors yet: tells the user what to run."""


class VersionMismatch(RuntimeError):
    """Vectors read online carry another model version than the pinned bundle."""


@dataclass(frozen=True)
class Bundle:
    """The model versions one request uses, and the features the ranker was trained on."""

    argus_version: int
    ranker_version: int
    #: the ranker's feature list (registry tag ``ranker_features``); None: a ranker registered before the tag,
    #: whose features can only be the baseline ones and ``argus_dot`` (checked against its booster at load)
    features: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, int]:
        return {"argus": self.argus_version, "ranker": self.ranker_version}

    @property
    def argus_features(self) -> tuple[str, ...]:
        """The ARGUS features serving computes for this ranker (``argus_dot`` always: the candidates' score)."""
        return tuple(dict.fromkeys([DOT, *(f for f in self.features or () if is_argus_feature(f))]))


def check_features(names: tuple[str, ...] | list[str], what: str) -> None:
    """Raise :class:`NothingToServe` when ``names`` holds a feature serving cannot compute."""
    bad = [f for f in names if f not in BASE_FEATURES and not is_argus_feature(f)]
    if bad:
        raise NothingToServe(f"{what} was trained on features {bad} this argusrank cannot compute "
                             "(features/baseline.py, features/argus_features.py): retrain it (`argusrank ranker train`)")


def resolve_bundle(cfg: ArgusrankConfig, ranker_ref: str | int | None = None) -> Bundle:
    """Versions to serve: the ranker behind ``cfg.serve.ranker_alias`` (or ``ranker_ref``) and the ARGUS
    version it was trained with (its ``argus_model_version`` tag; a ranker without it is refused).
    Raises :class:`NothingToServe` when nothing is registered yet."""
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise NothingToServe(f"no MLflow registry at {uri}: run `argusrank demo --no-serve` (or the pipeline) first")
    ref = ranker_ref or cfg.serve.ranker_alias
    try:
        mv = registry.resolve(cfg, cfg.mlflow.ranker_model_name, ref)
    except LookupError as exc:
        raise NothingToServe(f"{exc}: run `argusrank demo --no-serve` (or the pipeline: export, materialize, "
                             "`argusrank ranker train`) first") from exc
    try:
        argus = registry.ranker_argus_version(cfg, mv)
    except LookupError as exc:
        raise NothingToServe(str(exc)) from exc
    features = registry.ranker_feature_names(mv)
    if features is not None:
        check_features(features, f"ranker {cfg.mlflow.ranker_model_name!r} version {mv.version}")
    return Bundle(argus_version=argus, ranker_version=int(mv.version), features=features)


def request_time(cfg: ArgusrankConfig, as_of: float | None = None) -> float:
    """The request time recency features use: the request's ``as_of``, else ``cfg.serve.as_of``, else now."""
    return float(as_of if as_of is not None else cfg.serve.as_of if cfg.serve.as_of is not None else time.time())
