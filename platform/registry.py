"""The MLflow Model Registry: ARGUS and ranker versions, aliases, and the tags that link them.

- The ARGUS model is logged as a state dict + its ``ArgusConfig`` (JSON) with a pyfunc
  wrapper logged as models-from-code (``platform/argus_pyfunc.py``: nothing is unpickled on
  load), a signature and an input example, registered under
  ``cfg.mlflow.argus_model_name`` and aliased ``candidate``.
- Every lookup goes through :func:`resolve` (an alias such as ``candidate`` /
  ``champion``, or a version number), never a run path.
- A ranker version carries the ARGUS version it was trained on (tag
  ``argus_model_version``); :func:`publish_ranker` sets that tag before it moves the
  alias, so a serving replica never pairs a ranker with the wrong vectors.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.tracking import safe_key, setup

CANDIDATE = "candidate"
CHAMPION = "champion"
#: model-version tags that hold evaluation results (``eval.<metric>``)
EVAL_TAG_PREFIX = "eval."
#: ranker-version tag naming the ARGUS version whose vectors it was trained with
ARGUS_VERSION_TAG = "argus_model_version"
#: ranker-version tag: the JSON list of its features in matrix order (what serving must compute for it)
FEATURES_TAG = "ranker_features"
#: ranker-version tag: the user vectors its tower features were trained on, "daily" (snapshots) or "fresh"
USER_VECTORS_TAG = "ranker_user_vectors"
#: the ARGUS pyfunc's code, logged with each version (MLflow models-from-code)
PYFUNC_CODE = Path(__file__).resolve().parent / "argus_pyfunc.py"


def resolve(cfg: ArgusrankConfig, name: str, alias_or_version: str | int) -> ModelVersion:
    """The version of registered model ``name`` behind an alias or a version number.

    Raises LookupError naming the model and the reference when there is none."""
    client = setup(cfg)
    ref = str(alias_or_version)
    try:
        return client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except mlflow.exceptions.MlflowException as exc:
        what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
        raise LookupError(f"registered model {name!r} has no {what} in {cfg.tracking_uri} "
                          "(train, or promote, first)") from exc


def pinned(*distributions: str) -> list[str]:
    """``name==installed version`` per distribution: a logged model's pip requirements, given explicitly (MLflow
    would otherwise infer them by importing the model in a subprocess: ~5 s per logged model here)."""
    from importlib.metadata import version

    return [f"{d}=={version(d).split('+')[0]}" for d in distributions]


#: what a logged XGBoost ranker needs to load (mlflow.xgboost loads the scikit-learn wrapper class)
RANKER_REQUIREMENTS = ("mlflow", "xgboost", "scikit-learn", "scipy", "numpy", "pandas")


def log_ranker(model, name: str = "ranker", registered_model_name: str | None = None, input_example=None):
    """Log an XGBoost ranker to the active MLflow run (registered under ``registered_model_name`` if given) with
    :data:`RANKER_REQUIREMENTS` pinned; returns MLflow's ``ModelInfo``."""
    import mlflow.xgboost

    return mlflow.xgboost.log_model(model, name=name, input_example=input_example,
                                    pip_requirements=pinned(*RANKER_REQUIREMENTS),
                                    registered_model_name=registered_model_name)


def _signature(dim: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("long", "item_id")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]),
    )


def log_argus_model(
    cfg: ArgusrankConfig,
    model: torch.nn.Module,
    *,
    register: bool = True,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> int | None:
    """Log ``model`` (state dict + config + pyfunc) to the active run; register it and
    alias it ``candidate``. Returns the registered version (None if not registered).
    ``metrics`` are stored on the version as ``eval.<key>`` tags (used by :func:`promote`)."""
    model = getattr(model, "module", model)
    with tempfile.TemporaryDirectory() as tmp:
        sd_path, conf_path = Path(tmp) / "state_dict.pt", Path(tmp) / "argus_config.json"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, sd_path)
        conf_path.write_text(json.dumps(model.cfg.to_dict(), indent=1, default=str))
        with torch.no_grad():
            dim = int(model.item_vectors(torch.tensor([1], dtype=torch.long)).shape[-1])
        info = mlflow.pyfunc.log_model(
            name="argus",
            python_model=str(PYFUNC_CODE),
            artifacts={"state_dict": str(sd_path), "config": str(conf_path)},
            signature=_signature(dim),
            input_example=pd.DataFrame({"item_id": np.arange(1, 4, dtype=np.int64)}),
            pip_requirements=pinned("torch", "mlflow", "numpy", "pandas"),
            registered_model_name=cfg.mlflow.argus_model_name if register else None,
        )
    if not register:
        return None
    version = int(info.registered_model_version)
    client = setup(cfg)
    client.set_registered_model_alias(cfg.mlflow.argus_model_name, CANDIDATE, str(version))
    for k, v in (tags or {}).items():
        client.set_model_version_tag(cfg.mlflow.argus_model_name, str(version), k, str(v))
    if metrics:
        set_version_metrics(cfg, version, metrics)
    return version


def resolve_version(cfg: ArgusrankConfig, alias_or_version: str | int) -> int:
    """Registry version number of the ARGUS model for an alias (``candidate``/``champion``) or a version."""
    return int(resolve(cfg, cfg.mlflow.argus_model_name, alias_or_version).version)


def load_argus(cfg: ArgusrankConfig, alias_or_version: str | int = CANDIDATE):
    """Load the registered ARGUS model by alias or version -> ``(ArgusModel, version)``, on CPU in eval mode."""
    version = resolve_version(cfg, alias_or_version)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.argus_model_name}/{version}")
    model = pyfunc.unwrap_python_model().model
    model.eval()
    return model, version


def parent_version(cfg: ArgusrankConfig, version: int) -> int | None:
    """The ARGUS version ``version`` was fine-tuned from (its ``init_version`` tag), None for a pre-trained one."""
    mv = setup(cfg).get_model_version(cfg.mlflow.argus_model_name, str(version))
    raw = str((mv.tags or {}).get("init_version", "")).strip()
    return None if raw in ("", "None") else int(float(raw))


def set_version_metrics(cfg: ArgusrankConfig, version: int, metrics: dict[str, Any]) -> None:
    """Store evaluation results on a model version (``eval.<metric>`` tags)."""
    client = setup(cfg)
    for k, v in metrics.items():
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            client.set_model_version_tag(cfg.mlflow.argus_model_name, str(version), EVAL_TAG_PREFIX + safe_key(k), str(v))


def version_metrics(cfg: ArgusrankConfig, version: int) -> dict[str, str]:
    """Evaluation results stored on a model version (``eval.`` prefix removed)."""
    mv = setup(cfg).get_model_version(cfg.mlflow.argus_model_name, str(version))
    return {k[len(EVAL_TAG_PREFIX) :].replace("_at_", "@"): v for k, v in mv.tags.items() if k.startswith(EVAL_TAG_PREFIX)}


# ------------------------------------------------------------------------------ rankers
def load_ranker(cfg: ArgusrankConfig, alias_or_version: str | int) -> tuple[Any, int, tuple[str, ...]]:
    """A registered ranker -> ``(xgboost model, version, feature names)``."""
    import mlflow.xgboost

    mv = resolve(cfg, cfg.mlflow.ranker_model_name, alias_or_version)
    model = mlflow.xgboost.load_model(f"models:/{cfg.mlflow.ranker_model_name}/{mv.version}")
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    return model, int(mv.version), tuple(booster.feature_names or ())


def ranker_argus_version(cfg: ArgusrankConfig, mv: ModelVersion) -> int:
    """The ARGUS version a ranker version was trained with (its ``argus_model_version`` tag).

    Raises LookupError when the tag is missing: such a ranker cannot be paired safely."""
    raw = str((mv.tags or {}).get(ARGUS_VERSION_TAG, "")).strip()
    if raw in ("", "None"):
        raise LookupError(f"ranker {cfg.mlflow.ranker_model_name!r} version {mv.version} has no "
                          f"{ARGUS_VERSION_TAG!r} tag: it cannot be paired with ARGUS vectors (retrain it with "
                          "`argusrank ranker train`)")
    return int(float(raw))


def ranker_feature_names(mv: ModelVersion) -> tuple[str, ...] | None:
    """The features a ranker version was trained on (its ``ranker_features`` tag), None for a ranker
    registered before the tag existed (its booster's feature names then say it)."""
    raw = (mv.tags or {}).get(FEATURES_TAG)
    return None if not raw else tuple(json.loads(raw))


def publish_ranker(cfg: ArgusrankConfig, version: int, argus_version: int | None, alias: str,
                   features: tuple[str, ...] | list[str] | None = None, user_vectors: str | None = None) -> None:
    """Tag ranker ``version`` with its ARGUS version (and its feature list, the user vectors it was trained on:
    daily or fresh), THEN move ``alias`` to it: a replica that reloads in between still sees a complete,
    correctly paired version behind the alias."""
    client = setup(cfg)
    name = cfg.mlflow.ranker_model_name
    client.set_model_version_tag(name, str(version), ARGUS_VERSION_TAG, str(argus_version))
    if features is not None:
        client.set_model_version_tag(name, str(version), FEATURES_TAG, json.dumps(list(features)))
    if user_vectors is not None:
        client.set_model_version_tag(name, str(version), USER_VECTORS_TAG, user_vectors)
    client.set_registered_model_alias(name, alias, str(version))
