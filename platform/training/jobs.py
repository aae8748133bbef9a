"""Ray Train jobs: ARGUS pre-training (NIP + FP) and pairwise fine-tuning, driver side.

``run_pretrain`` / ``run_finetune`` are plain functions of the config: they check it
(before anything starts, ``training/checks.py``), take the dataset's split
(``features/splits.py``), run a ``TorchTrainer`` (one worker per ``train.num_workers``,
DDP, GPU when present; the loop is ``training/worker.py``), then evaluate, log and
register the model in MLflow. Ray Train V2 restores a run from ``storage_path/name``;
the driver reuses the name of an unfinished run with the same fingerprint when
``train.resume``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from argusrank.features.splits import Split, dataset_split
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.ray_runtime import is_cluster, start_local_ray
from argusrank.platform.tracking import log_curves, log_metrics, start_run
from argusrank.platform.training.checks import model_config, training_feed, use_gpu, validate, worker_cpus
from argusrank.platform.training.evaluate import evaluate_model
from argusrank.platform.training.state import load_checkpoint
from argusrank.platform.training.worker import train_loop

DONE_MARKER = "_argusrank_done.json"  # written into a Ray run dir once the driver finished with it
#: config fields that do not change what a run computes (excluded from its fingerprint)
_VOLATILE = {("train", "resume"), ("train", "stop_after_steps"), ("train", "show_progress"),
             ("train", "log_every"), ("train", "max_failures"), ("train", "time_budget_s"), ("ray", "address")}


def fingerprint(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str, extra: dict | None = None) -> str:
    """What a run computes: the config (less what does not change results), the stage, and the dataset's
    CONTENT (a hash of its metadata.json, not its path: other data imported into the same path is another run)."""
    tree = cfg.model_dump(mode="json")
    for sec, key in _VOLATILE:
        tree.get(sec, {}).pop(key, None)
    tree.get("paths", {}).pop("home", None)
    data = hashlib.sha1((Path(dataset_dir) / "metadata.json").read_bytes()).hexdigest()
    blob = json.dumps({"cfg": tree, "data": data, "stage": stage, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_name(cfg: ArgusrankConfig, fp: str, stage: str) -> str:
    """Reuse the newest unfinished run dir of this fingerprint when resuming, else a new name."""
    root = cfg.paths.runs_dir
    prefix = f"{stage}-{fp}"
    existing = sorted(root.glob(f"{prefix}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]) if p.name.rsplit("-", 1)[1].isdigit() else -1)
    if cfg.train.resume and existing and not (existing[-1] / DONE_MARKER).exists():
        return existing[-1].name
    n = int(existing[-1].name.rsplit("-", 1)[1]) + 1 if existing else 0
    return f"{prefix}-{n}"


def fit(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str, split: Split, model_cfg: dict,
        init_state: str | None = None, mlflow_run_id: str | None = None, fp_extra: dict | None = None) -> dict:
    """Run the TorchTrainer; returns ``{"state", "history", "final", "run_dir", "train_seconds"}``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    start_local_ray(dashboard=True, log_to_driver=True, address=cfg.ray.address)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"feed": training_feed(cfg, dataset_dir)})})
    fp = fingerprint(cfg, dataset_dir, stage, fp_extra)
    name = run_name(cfg, fp, stage)
    cfg.paths.runs_dir.mkdir(parents=True, exist_ok=True)
    streamed = {}
    if cfg.train.feed == "ray_data":  # rows built and streamed by Ray Data (training/feed.py)
        from argusrank.platform.training.feed import stream_data_config, stream_datasets

        streamed = {"datasets": stream_datasets(cfg, str(Path(dataset_dir).resolve()), split, cfg.train.num_workers,
                                                stage, model_cfg["max_len"]),
                    "dataset_config": stream_data_config()}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "stage": stage, "split": split.as_dict(),
                           "dataset_dir": str(Path(dataset_dir).resolve()), "model_cfg": model_cfg,
                           "init_state": init_state, "mlflow_run_id": mlflow_run_id,
                           "tracking_uri": cfg.tracking_uri},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu(cfg),
                                               resources_per_worker={"CPU": worker_cpus(cfg)}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(cfg.paths.runs_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures)),
        **streamed,
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"{stage}: the Ray Train run {name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        st = load_checkpoint(d)
    run_dir = cfg.paths.runs_dir / name
    if st["final"]:
        (run_dir / DONE_MARKER).write_text(json.dumps({"history": st["history"]}, default=str))
    return {"state": st["model"], "history": st["history"], "final": bool(st["final"]), "run_dir": str(run_dir),
            "train_seconds": seconds, "epoch": st["epoch"], "step_in_epoch": st["step_in_epoch"]}


def _join_cluster(cfg: ArgusrankConfig) -> None:
    """With ``ray.address`` set, connect before the checks so they count the cluster's CPUs and GPUs."""
    if is_cluster(cfg.ray.address):
        start_local_ray(dashboard=True, log_to_driver=True, address=cfg.ray.address)


def _build_model(model_cfg: dict, state: dict):
    from argusrank.models.factory import model_from_config

    model = model_from_config(model_cfg)
    model.load_state_dict(state)
    return model.eval()


def _summary(history: list[dict]) -> dict:
    return {f"train_{k}": v for k, v in (history[-1] if history else {}).items() if k != "epoch"}


def run_pretrain(cfg: ArgusrankConfig, dataset_dir: str | Path, register: bool = True,
                 protocol: str | None = None) -> dict:
    """Pre-train ARGUS (NIP + FP) with Ray Train on the training part of ``protocol``
    (default ``cfg.eval.protocol``), evaluate, log to MLflow and register (alias ``candidate``).

    Returns ``{"run_id", "model_version", "metrics", "history", "train_seconds", "final"}``;
    an interrupted run (``train.stop_after_steps``) returns ``final=False`` and registers nothing.
    """
    protocol = protocol or cfg.eval.protocol
    _join_cluster(cfg)
    meta = validate(cfg, dataset_dir, "pretrain")
    mc = model_config(cfg, meta)
    split = dataset_split(dataset_dir, protocol, cfg.data.test_days)
    with start_run(cfg, "pretrain", tags={"dataset": str(Path(dataset_dir).resolve()),
                                                  "protocol": protocol}) as run:
        import mlflow

        out = fit(cfg, dataset_dir, "pretrain", split, mc.to_dict(), mlflow_run_id=run.info.run_id,
                  fp_extra={"protocol": protocol})
        res = {"run_id": run.info.run_id, "model_version": None, "metrics": {}, "history": out["history"],
               "train_seconds": out["train_seconds"], "final": out["final"], "run_dir": out["run_dir"]}
        if not out["final"] and cfg.train.time_budget_s is None:
            return res
        model = _build_model(mc.to_dict(), out["state"])
        res["n_parameters"] = model.num_parameters()
        res["model"] = model  # the trained model in memory (not in the JSON): quality's candidate recall
        mlflow.log_param("n_parameters", res["n_parameters"])
        log_curves(out["history"], "pretrain_curves")
        metrics = evaluate_model(cfg, dataset_dir, model, protocol=protocol, negatives=cfg.eval.negatives,
                                 split=split, stages=("ranking", "losses"))
        log_metrics({**metrics, **_summary(out["history"]), "train_seconds": out["train_seconds"]})
        version = None
        if cfg.model.kind != "sasrec-classic":  # the reference model has no towers to serve
            version = registry.log_argus_model(cfg, model, register=register,
                                               metrics=_tag_metrics(metrics, dataset_dir, protocol, cfg),
                                               tags={"stage": "pretrain", "run_dir": out["run_dir"]})
        res.update(model_version=version, metrics=metrics)
        return res


def lag_tags(cfg: ArgusrankConfig) -> dict[str, str]:
    """The user-state lags a fine-tuned version was trained for (model-version tags): the daily ``lag_s``, and the
    runtime lag with the share of rows trained at it (0: the version was not trained for fresh vectors)."""
    f = cfg.finetune
    return {"lag_s": str(f.lag_s), "runtime_lag_s": str(f.runtime_lag_s), "runtime_lag_share": str(f.runtime_lag_share)}


def run_finetune(cfg: ArgusrankConfig, dataset_dir: str | Path, init: str | None = "candidate",
                 register: bool = True) -> dict:
    """Pairwise fine-tuning (one causal pass per user, lagged user states) with Ray Train.

    ``init``: registry alias/version to start from (``None``: from scratch, the
    no-pre-training ablation). Trains on impressions before T, evaluates
    PairAccuracy on the test window, registers the result (alias ``candidate``).
    Returns ``{"run_id", "model_version", "init_version", "metrics", "history", "train_seconds", "final"}``.
    """
    _join_cluster(cfg)
    meta = validate(cfg, dataset_dir, "finetune")
    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    with start_run(cfg, "finetune", tags={"dataset": str(Path(dataset_dir).resolve()),
                                                  "init": str(init)}) as run:
        import mlflow

        init_version, init_path = None, None
        if init is not None:
            init_model, init_version = registry.load_argus(cfg, init)
            mc_dict = init_model.cfg.to_dict()
            tmpdir = Path(tempfile.mkdtemp(prefix="argus-init-", dir=cfg.paths.home))
            init_path = str(tmpdir / "init_state.pt")
            torch.save(init_model.state_dict(), init_path)
            mlflow.set_tag("init_version", str(init_version))
        else:
            mc_dict = model_config(cfg, meta).to_dict()
        try:
            out = fit(cfg, dataset_dir, "finetune", split, mc_dict, init_state=init_path,
                      mlflow_run_id=run.info.run_id, fp_extra={"init_version": init_version})
        finally:
            if init_path:
                shutil.rmtree(Path(init_path).parent, ignore_errors=True)
        res = {"run_id": run.info.run_id, "model_version": None, "init_version": init_version, "metrics": {},
               "history": out["history"], "train_seconds": out["train_seconds"], "final": out["final"],
               "run_dir": out["run_dir"]}
        if not out["final"] and cfg.train.time_budget_s is None:
            return res
        model = _build_model(mc_dict, out["state"])
        log_curves(out["history"], "finetune_curves")
        metrics = evaluate_model(cfg, dataset_dir, model, protocol="temporal", negatives=cfg.eval.negatives,
                                 split=split, stages=("pairs", "ranking"))
        log_metrics({**metrics, **_summary(out["history"]), "train_seconds": out["train_seconds"]})
        version = registry.log_argus_model(cfg, model, register=register,
                                           metrics=_tag_metrics(metrics, dataset_dir, "temporal", cfg),
                                           tags={"stage": "finetune", "init_version": str(init_version),
                                                 "run_dir": out["run_dir"], **lag_tags(cfg)})
        res.update(model_version=version, metrics=metrics)
        return res


def _tag_metrics(metrics: dict, dataset_dir: str | Path, protocol: str, cfg: ArgusrankConfig) -> dict:
    return {**metrics, "dataset": str(Path(dataset_dir).resolve()), "protocol": protocol,
            "negatives": cfg.eval.negatives}
