"""MLflow tracking: where runs go, and what every run logs (config, system info, metrics, curves).

- Tracking URI and experiment come from the config (``cfg.tracking_uri`` is absolute;
  STACK.md explains why relative SQLite URIs break ``mlflow run``).
- A local store keeps its artifacts beside it under the home (``<home>/mlartifacts``).
- Inside an ``mlflow run`` child, MLflow hands the run to use (``MLFLOW_RUN_ID``).
"""
from __future__ import annotations

import contextlib
import os
import platform as _stdlib_platform
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from argusrank.platform.config import ArgusrankConfig


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


#: seconds between system-metric samples (CPU, RAM, disk, network, GPU when present)
SYSTEM_METRICS_INTERVAL_S = 5


@contextlib.contextmanager
def start_run(cfg: ArgusrankConfig, run_name: str, tags: dict[str, str] | None = None,
              system_metrics: bool = True) -> Iterator[mlflow.ActiveRun]:
    """Start a run (nested if one is active; the ``mlflow run`` entry point's run when
    launched by ``mlflow run``) and log the config + system info to it; ``system_metrics``:
    MLflow samples the machine's usage (psutil) into the run's ``system/*`` metrics."""
    setup(cfg)
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None, tags=tags,
                          log_system_metrics=system_metrics) as run:
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
    import torch

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
    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric(safe_key(k), float(v), now, int(s)) for k, v, s in rows if np.isfinite(v)]
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i : i + 500])


def safe_key(key: str) -> str:
    """A metric/tag key MLflow accepts (``ndcg@10`` -> ``ndcg_at_10``)."""
    return key.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    """Log scalar metrics to the active run (``@`` becomes ``_at_``: MLflow key rules)."""
    clean = {safe_key(prefix + k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
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
