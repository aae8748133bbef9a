"""What one request is pinned to: the ranker version behind the alias and the ARGUS version it was trained on.

Requests carry the bundle through candidates, features and ranker, which check that the vectors they
read carry the same version and never mix two. Errors a user can act on are :class:`NothingToServe`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig


class NothingToServe(RuntimeError):
    """No registered ranker / exported vectors yet: tells the user what to run."""


class VersionMismatch(RuntimeError):
    """Vectors read online carry another model version than the pinned bundle."""


@dataclass(frozen=True)
class Bundle:
    """The model versions one request uses."""

    argus_version: int
    ranker_version: int

    def as_dict(self) -> dict[str, int]:
        return {"argus": self.argus_version, "ranker": self.ranker_version}


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
    return Bundle(argus_version=argus, ranker_version=int(mv.version))


def request_time(cfg: ArgusrankConfig, as_of: float | None = None) -> float:
    """The request time recency features use: the request's ``as_of``, else ``cfg.serve.as_of``, else now."""
    return float(as_of if as_of is not None else cfg.serve.as_of if cfg.serve.as_of is not None else time.time())
