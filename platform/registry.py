"""MLflow: run logging, the ARGUS model in the Model Registry, aliases and promotion.

- Tracking URI and experiment come from the config (``cfg.tracking_uri`` is
  absolute; STACK.md explains why relative SQLite URIs break ``mlflow run``).
- The ARGUS model is logged as a state dict + its ``ArgusConfig`` (JSON) with a
  pyfunc wrapper (:class:`ArgusPyfunc`) and a signature, then registered under
  ``cfg.mlflow.argus_model_name`` and aliased ``candidate``.
- Loading ALWAYS goes through the registry: :func:`load_argus` takes an alias
  (``candidate`` / ``champion``) or a version number.
- :func:`promote` moves ``champion`` to a version only when its evaluation beats
  the current champion's (or when forced).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform as _stdlib_platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec

from argusrank.platform.config import ArgusrankConfig

CANDIDATE = "candidate"
CHAMPION = "champion"
#: model-version tags that hold evaluation results (``eval.<metric>``)
EVAL_TAG_PREFIX = "eval."


# ------------------------------------------------------------------------------ tracking
def setup(cfg: ArgusrankConfig) -> MlflowClient:
    """Point MLflow at the configured tracking/registry URI and experiment.

    Inside an ``mlflow run`` child (MLflow hands it the run to use) the run's
    experiment wins over ``cfg.mlflow.experiment``.
    """
    from mlflow.environment_variables import MLFLOW_RUN_ID

    if cfg.tracking_uri.startswith("sqlite:///"):
        Path(cfg.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    if not MLFLOW_RUN_ID.get() and mlflow.active_run() is None:
        name = cfg.mlflow.experiment
        if cfg.tracking_uri.startswith("sqlite:") and client.get_experiment_by_name(name) is None:
            # a local store keeps its artifacts beside it under the home, not in ./mlruns of the cwd
            try:
                client.create_experiment(name, artifact_location=(cfg.paths.home / "mlartifacts").resolve().as_uri())
            except mlflow.exceptions.MlflowException:  # created meanwhile by another process
                pass
        mlflow.set_experiment(name)
    return client


@contextlib.contextmanager
def start_run(cfg: ArgusrankConfig, run_name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run (nested if one is active; the ``mlflow run`` entry point's run when
    launched by ``mlflow run``) and log the config + system info to it."""
    setup(cfg)
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None, tags=tags) as run:
        mlflow.set_tag("argusrank.stage", run_name)
        log_config(cfg)
        log_system_info()
        yield run


def log_config(cfg: ArgusrankConfig) -> None:
    """Flattened config as params (MLflow limits values to 6000 chars) + the YAML as an artifact."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = str(node)[:500]

    walk("", cfg.model_dump(mode="json"))
    params = [mlflow.entities.Param(k, v) for k, v in flat.items()]
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    existing = client.get_run(run_id).data.params
    params = [p for p in params if p.key not in existing]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    mlflow.log_text(cfg.to_yaml(), "config.yaml")


def system_info() -> dict[str, str]:
    """Machine and library versions (logged as tags of every run)."""
    import ray

    info = {
        "sys.python": sys.version.split()[0],
        "sys.platform": _stdlib_platform.platform(),
        "sys.cpus": str(os.cpu_count()),
        "sys.torch": torch.__version__,
        "sys.ray": ray.__version__,
        "sys.mlflow": mlflow.__version__,
        "sys.cuda": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        info["sys.gpu"] = torch.cuda.get_device_name(0)
    return info


def log_system_info() -> None:
    mlflow.set_tags(system_info())


def log_metrics_rows(client: MlflowClient, run_id: str, rows: list[tuple[str, float, int]]) -> None:
    """Batch-log ``(key, value, step)`` rows to ``run_id`` (used by the rank-0 Ray worker)."""
    import time

    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric(_safe_key(k), float(v), now, int(s)) for k, v, s in rows if np.isfinite(v)]
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i : i + 500])


def _safe_key(key: str) -> str:
    return key.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    """Log scalar metrics to the active run (``@`` becomes ``_at_``: MLflow key rules)."""
    clean = {_safe_key(prefix + k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    mlflow.log_metrics(clean, step=step)


def log_curves(history: list[dict[str, float]], name: str, x: str = "epoch") -> None:
    """Plot every metric of ``history`` (one dict per epoch) against ``x``; log as a PNG artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in history for k in row if k != x and isinstance(row[k], (int, float))})
    if not history or not keys:
        return
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs = [row.get(x, i) for i, row in enumerate(history) if key in row]
        ax.plot(xs, [row[key] for row in history if key in row], marker="o")
        ax.set_title(key)
        ax.set_xlabel(x)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    mlflow.log_figure(fig, f"plots/{name}.png")
    plt.close(fig)


# ------------------------------------------------------------------------------ the model
class ArgusPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: the ARGUS item tower. Input: DataFrame column ``item_id`` (int64);
    output: item vectors (N, d) float32. ``self.model`` is the full ``ArgusModel``
    (``load_argus`` returns it; the user tower is ``model.user_vectors``)."""

    def load_context(self, context) -> None:
        from argusrank.models.argus import ArgusModel
        from argusrank.models.config import ArgusConfig

        conf = json.loads(Path(context.artifacts["config"]).read_text())
        self.model = ArgusModel(ArgusConfig.from_dict(conf))
        state = torch.load(context.artifacts["state_dict"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(model_input["item_id"], dtype=np.int64))
        with torch.no_grad():
            return self.model.item_vectors(ids).float().cpu().numpy()


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
            python_model=ArgusPyfunc(),
            artifacts={"state_dict": str(sd_path), "config": str(conf_path)},
            signature=_signature(dim),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
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
    """Registry version number for an alias (``candidate``/``champion``) or a version."""
    client = setup(cfg)
    name = cfg.mlflow.argus_model_name
    ref = str(alias_or_version)
    if ref.isdigit():
        client.get_model_version(name, ref)  # raises a clear MlflowException if missing
        return int(ref)
    try:
        return int(client.get_model_version_by_alias(name, ref).version)
    except mlflow.exceptions.MlflowException as exc:
        raise LookupError(f"registered model {name!r} has no alias {ref!r} (train or promote first)") from exc


def load_argus(cfg: ArgusrankConfig, alias_or_version: str | int = CANDIDATE):
    """Load the registered ARGUS model by alias or version -> ``(ArgusModel, version)``.

    Always goes through the registry (``models:/<name>/<version>``), never a run path.
    The model is on CPU in eval mode.
    """
    version = resolve_version(cfg, alias_or_version)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.argus_model_name}/{version}")
    model = pyfunc.unwrap_python_model().model
    model.eval()
    return model, version


def set_version_metrics(cfg: ArgusrankConfig, version: int, metrics: dict[str, Any]) -> None:
    """Store evaluation results on a model version (``eval.<metric>`` tags)."""
    client = setup(cfg)
    for k, v in metrics.items():
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            client.set_model_version_tag(cfg.mlflow.argus_model_name, str(version), EVAL_TAG_PREFIX + _safe_key(k), str(v))


def version_metrics(cfg: ArgusrankConfig, version: int) -> dict[str, str]:
    """Evaluation results stored on a model version (``eval.`` prefix removed)."""
    mv = setup(cfg).get_model_version(cfg.mlflow.argus_model_name, str(version))
    return {k[len(EVAL_TAG_PREFIX) :].replace("_at_", "@"): v for k, v in mv.tags.items() if k.startswith(EVAL_TAG_PREFIX)}


def _pick_metric(cfg: ArgusrankConfig, a: dict[str, str], b: dict[str, str]) -> str:
    if cfg.mlflow.promote_metric != "auto":
        return cfg.mlflow.promote_metric
    for key in ("pair_accuracy", "ndcg@10", "hr@10"):
        if key in a and key in b:
            return key
    raise ValueError("no common evaluation metric on the two versions: run `argusrank evaluate` on both first")


def promote(
    cfg: ArgusrankConfig,
    version: int | None = None,
    force: bool = False,
    dataset_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Set alias ``champion`` on ``version`` (default: the ``candidate``) if it beats the champion.

    Both versions are compared on the same evaluation: with ``dataset_dir`` they are
    (re-)evaluated now with ``cfg.eval``; otherwise their stored ``eval.*`` tags are
    compared and must come from the same dataset and protocol. The metric is
    ``cfg.mlflow.promote_metric`` (auto: pair_accuracy, else ndcg@10; higher wins).
    Returns ``{"promoted", "version", "champion_before", "metric", "candidate_value", "champion_value", "reason"}``.
    """
    client = setup(cfg)
    name = cfg.mlflow.argus_model_name
    version = resolve_version(cfg, CANDIDATE if version is None else version)
    try:
        current = int(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        current = None
    out: dict[str, Any] = {"version": version, "champion_before": current, "metric": None,
                           "candidate_value": None, "champion_value": None}
    if dataset_dir is not None:
        from argusrank.platform.evaluate import evaluate

        for v in {version, current} - {None}:
            evaluate(cfg, dataset_dir, v, protocol=cfg.eval.protocol, negatives=cfg.eval.negatives)
    if current == version:
        return {**out, "promoted": False, "reason": f"version {version} is already the champion"}
    if current is None:
        promoted, reason = True, "no champion yet"
    elif force:
        promoted, reason = True, "forced"
    else:
        cand, champ = version_metrics(cfg, version), version_metrics(cfg, current)
        if not cand:
            raise ValueError(f"version {version} has no evaluation: run `argusrank evaluate --model {version}` first")
        for key in ("dataset", "protocol", "negatives"):
            if champ.get(key) != cand.get(key):
                raise ValueError(
                    f"versions {version} and {current} were evaluated differently ({key}: "
                    f"{cand.get(key)!r} vs {champ.get(key)!r}); pass a dataset to re-evaluate both"
                )
        metric = _pick_metric(cfg, cand, champ)
        cv, hv = float(cand[metric]), float(champ[metric])
        out.update(metric=metric, candidate_value=cv, champion_value=hv)
        promoted = cv > hv
        reason = f"{metric} {cv:.5f} {'>' if promoted else '<='} champion's {hv:.5f}"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return {**out, "promoted": promoted, "reason": reason}
