"""Ray Train jobs: ARGUS pre-training (NIP + FP) and pairwise fine-tuning.

``run_pretrain`` / ``run_finetune`` are plain functions of the config: they
validate it (before anything starts), compute the split on the driver, run a
``TorchTrainer`` (one worker per ``train.num_workers``, DDP, GPU when present),
then evaluate, log and register the model in MLflow.

Inside a worker (:func:`train_loop`):

- data: worker ``r`` of ``W`` reads only the ``user_bucket`` shards ``b % W == r``
  of the parquet events (no full copy per worker) and builds its own arrays;
  every worker runs the same number of steps per epoch (shorter shards wrap).
- order: epoch ``e`` of worker ``r`` shuffles with seed ``(seed, e, r)``, so a
  resumed run sees exactly the batches an uninterrupted one would;
- checkpoints (every ``train.checkpoint_every`` steps, else every epoch) hold
  model, optimizer, LR schedule, per-rank RNG states, the running epoch sums
  and the position (epoch, step): a resumed run ends with the same metrics.
  Ray Train V2 restores a run from ``storage_path/name``; the driver reuses the
  name of an unfinished run with the same fingerprint when ``train.resume``.
- steps: bf16 autocast on GPU, gradient clipping, AdamW with linear warmup and
  cosine decay over ``epochs * steps_per_epoch``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from argusrank.platform.config import ArgusrankConfig

DONE_MARKER = "_argusrank_done.json"  # written into a Ray run dir once the driver finished with it
CKPT_FILE = "state.pt"
#: config fields that do not change what a run computes (excluded from its fingerprint)
_VOLATILE = {("train", "resume"), ("train", "stop_after_steps"), ("train", "show_progress"),
             ("train", "log_every"), ("train", "max_failures"), ("train", "time_budget_s")}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


# ------------------------------------------------------------------------------ validation
def model_config(cfg: ArgusrankConfig, data_meta: dict | None = None):
    """The ``ArgusConfig`` of ``cfg.model`` (preset + overrides, SASRec ablation for kind=sasrec)."""
    from argusrank.models.config import preset, sasrec_config

    try:
        mc = preset(cfg.model.preset, encoder=cfg.model.encoder, **cfg.model.overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.preset/model.overrides: {exc}") from exc
    if data_meta and "max_item_id" in data_meta and "item_id_max" not in cfg.model.overrides:
        mc.item_id_max = max(1, int(data_meta["max_item_id"]))
    return sasrec_config(mc) if cfg.model.kind == "sasrec" else mc


def available_cpus() -> int:
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", 0))
    return os.cpu_count() or 1


def worker_cpus(cfg: ArgusrankConfig) -> int:
    """CPUs (and torch threads) per Ray Train worker: ``train.cpus_per_worker``, or the
    machine's CPUs shared evenly among the workers when that is unset."""
    return cfg.train.cpus_per_worker or max(1, available_cpus() // cfg.train.num_workers)


def use_gpu(cfg: ArgusrankConfig) -> bool:
    if cfg.train.use_gpu == "auto":
        return torch.cuda.is_available()
    return cfg.train.use_gpu is True


def validate(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str) -> dict:
    """Check everything that can be checked before training; raise :class:`ConfigError`.

    Returns the dataset metadata.
    """
    from argusrank.features.io import read_metadata
    from argusrank.features.schema import EVENT_PARTITIONS

    if stage not in ("pretrain", "finetune"):
        raise ConfigError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
    try:
        meta = read_metadata(dataset_dir)
    except FileNotFoundError as exc:
        raise ConfigError(f"dataset: {exc} (run `argusrank data synth` or an importer first)") from exc
    if not meta.get("n_events"):
        raise ConfigError(f"dataset: {dataset_dir} holds no events")
    mc = model_config(cfg, meta)
    t = cfg.train
    if t.num_workers > EVENT_PARTITIONS:
        raise ConfigError(f"train.num_workers={t.num_workers}: at most {EVENT_PARTITIONS} "
                          f"(workers read disjoint user_bucket shards of the events)")
    need, have = t.num_workers * worker_cpus(cfg), available_cpus()
    if need > have:
        raise ConfigError(f"train.num_workers * train.cpus_per_worker = {need} CPUs, but only {have} are available")
    if t.use_gpu is True and not torch.cuda.is_available():
        raise ConfigError("train.use_gpu=true but no CUDA device is available (use 'auto' or 'false')")
    if use_gpu(cfg) and t.num_workers > torch.cuda.device_count():
        raise ConfigError(f"train.num_workers={t.num_workers}: one GPU per worker, but only "
                          f"{torch.cuda.device_count()} GPU(s) are visible")
    if cfg.data.max_len > mc.max_len:
        raise ConfigError(f"data.max_len={cfg.data.max_len} exceeds the model's max_len={mc.max_len} "
                          f"(preset {cfg.model.preset!r}; raise model.overrides.max_len)")
    if stage == "finetune" and cfg.finetune.max_history < cfg.finetune.min_history:
        raise ConfigError(f"finetune.max_history={cfg.finetune.max_history} < finetune.min_history="
                          f"{cfg.finetune.min_history}")
    if cfg.eval.negatives == "100" and cfg.eval.protocol == "loo" and meta.get("n_items", 0) <= 101:
        raise ConfigError(f"eval.negatives=100 needs more than 101 items; the dataset has {meta.get('n_items')}")
    if any(k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks must be positive, got {cfg.eval.ks}")
    return meta


# ------------------------------------------------------------------------------ split / data
def compute_split(cfg: ArgusrankConfig, dataset_dir: str | Path, protocol: str) -> dict:
    """The global split, decided once on the driver: ``{"protocol", "T", "T_end"}``."""
    if protocol == "loo":
        return {"protocol": "loo", "T": None, "T_end": None}
    from argusrank.features.histories import build_histories, temporal_split_time
    from argusrank.features.io import read_events

    hist = build_histories(read_events(dataset_dir))
    T, T_end = temporal_split_time(hist, cfg.data.test_days)
    return {"protocol": "temporal", "T": int(T), "T_end": int(T_end)}


def train_histories(hist, split: dict, kind: str):
    """What a model may train on: events before T (temporal) or all but each user's
    last two target events (loo); SASRec keeps positives only."""
    from argusrank.features.histories import restrict

    if split["protocol"] == "temporal":
        hist = restrict(hist, before_ts=split["T"])
    else:
        hist = loo_train_histories(hist)
    if kind == "sasrec":
        hist = restrict(hist, positives_only=True)
    return hist


def loo_train_histories(hist):
    """Histories without the LOO validation and test targets (see features.sequences)."""
    from argusrank.features.histories import drop_last

    return drop_last(hist, 2)


def worker_arrays(cfg: ArgusrankConfig, dataset_dir: str, stage: str, split: dict, buckets: list[int],
                  model_max_len: int | None = None) -> dict:
    """This worker's training arrays, built from its own user_bucket shards only.

    Fine-tuning histories are cut to the model's positions table (``model_max_len``)
    when ``finetune.max_history`` is longer."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.sequences import finetune_arrays, pretrain_arrays

    hist = build_histories(read_events(dataset_dir, user_buckets=buckets))
    if stage == "pretrain":
        arrays = pretrain_arrays(train_histories(hist, split, cfg.model.kind), cfg.data.max_len,
                                 min_len=cfg.data.min_history)
        if cfg.train.positive_targets_only:  # ablation: predict only what evaluation counts
            arrays["target_mask"] = arrays["target_mask"] & (arrays["grade"] >= 1)
        return arrays
    f = cfg.finetune
    max_history = min(f.max_history, model_max_len or f.max_history)
    return finetune_arrays(hist, f.lag_s, max_history, f.min_history, f.max_impressions,
                           t_from=None, t_to=split["T"], window_s=cfg.data.pair_window_s)


def negative_catalog(dataset_dir: str | Path, split: dict) -> np.ndarray:
    """Item IDs the NIP loss draws uniform negatives from: items seen before T (all for loo)."""
    import pyarrow.parquet as pq

    items = pq.read_table(Path(dataset_dir) / "items.parquet", columns=["item_id", "first_ts"])
    ids, first = items["item_id"].to_numpy(), items["first_ts"].to_numpy()
    if split.get("T") is not None:
        ids = ids[first < split["T"]]
    return ids.astype(np.int64)


def _n_rows(arrays: dict) -> int:
    return int(len(next(iter(arrays.values())))) if arrays else 0


# ------------------------------------------------------------------------------ the worker loop
class _Objective(torch.nn.Module):
    """Routes DDP's ``forward`` to the stage's loss so gradient sync hooks fire."""

    def __init__(self, model: torch.nn.Module, stage: str, lag_s: int) -> None:
        super().__init__()
        self.model, self.stage, self.lag_s = model, stage, lag_s

    def forward(self, batch) -> dict[str, torch.Tensor]:
        if self.stage == "pretrain":
            return self.model.pretrain_losses(batch)
        return self.model.finetune_loss(batch, self.lag_s)


def lr_lambda(warmup: int, total: int):
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()


def _all_gather(obj: Any, world: int) -> list[Any]:
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _epoch_batches(arrays: dict, batch_size: int, n_steps: int, seed: int, epoch: int, rank: int):
    """Exactly ``n_steps`` batches for this epoch; the shard wraps around if it is short."""
    from argusrank.features.sequences import iterate_batches

    made, cycle = 0, 0
    while made < n_steps:
        for arr in iterate_batches(arrays, batch_size, shuffle=True, seed=_mix(seed, epoch, rank, cycle)):
            yield arr
            made += 1
            if made == n_steps:
                return
        cycle += 1


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def train_loop(config: dict) -> None:
    """``train_loop_per_worker``: see the module docstring for what it guarantees."""
    import ray.train
    import ray.train.torch
    from tqdm import tqdm

    from argusrank.features.schema import EVENT_PARTITIONS
    from argusrank.models.argus import ArgusModel
    from argusrank.models.batch import FinetuneBatch, SequenceBatch
    from argusrank.models.config import ArgusConfig

    cfg = ArgusrankConfig.model_validate(config["cfg"])
    stage, split = config["stage"], config["split"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(worker_cpus(cfg))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    seed = cfg.seed
    t_cfg = cfg.train
    epochs = t_cfg.epochs if stage == "pretrain" else cfg.finetune.epochs
    batch_size = t_cfg.batch_size if stage == "pretrain" else cfg.finetune.batch_size
    lr = t_cfg.lr if stage == "pretrain" else cfg.finetune.lr

    # ---- data: this worker's shards only
    buckets = [b for b in range(EVENT_PARTITIONS) if b % world == rank]
    arrays = worker_arrays(cfg, config["dataset_dir"], stage, split, buckets, config["model_cfg"]["max_len"])
    n_local = math.ceil(_n_rows(arrays) / batch_size)
    steps_per_epoch = int(_all_reduce([n_local], "max")[0])
    if steps_per_epoch == 0:
        raise RuntimeError(f"{stage}: no training rows on any worker (dataset too small for the split?)")
    if n_local == 0:
        raise RuntimeError(f"{stage}: worker {rank} got no training rows from user buckets {buckets}; use fewer workers")
    total_steps = epochs * steps_per_epoch

    # ---- model, optimizer, schedule (same init on every rank; DDP also broadcasts it)
    torch.manual_seed(seed)
    model = ArgusModel(ArgusConfig.from_dict(config["model_cfg"]))
    if config.get("init_state"):
        model.load_state_dict(torch.load(config["init_state"], map_location="cpu", weights_only=True))
    model.to(device)
    model.set_catalog(torch.as_tensor(negative_catalog(config["dataset_dir"], split)))
    optimizer = model.configure_optimizer(lr, t_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(t_cfg.warmup_steps, total_steps // 2), total_steps))
    random.seed(_mix(seed, rank))
    np.random.seed(_mix(seed, rank) % (2**32))
    torch.manual_seed(_mix(seed, rank, 1))

    # ---- resume
    epoch, step_in_epoch, history, sums = 0, 0, [], {}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = torch.load(Path(d) / CKPT_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        epoch, step_in_epoch, history = st["epoch"], st["step_in_epoch"], st["history"]
        per_rank = st["per_rank"][rank] if len(st["per_rank"]) == world else None
        if per_rank is None:
            raise RuntimeError(f"checkpoint was written by {len(st['per_rank'])} workers, this run has {world}")
        _set_rng_state(per_rank["rng"])
        sums = per_rank["sums"]

    ddp = ray.train.torch.prepare_model(_Objective(model, stage, cfg.finetune.lag_s),
                                        parallel_strategy_kwargs={"find_unused_parameters": True})
    mlf = None
    if rank == 0 and config.get("mlflow_run_id"):
        from mlflow.tracking import MlflowClient

        mlf = MlflowClient(tracking_uri=config["tracking_uri"])
    from argusrank.platform.registry import log_metrics_rows

    def save_and_report(metrics: dict, final: bool = False) -> None:
        per_rank = _all_gather({"rng": _rng_state(), "sums": dict(sums)}, world)
        tmp = None
        checkpoint = None
        if rank == 0:
            tmp = tempfile.mkdtemp(prefix="argus-ckpt-")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                        "history": history, "per_rank": per_rank, "model_cfg": config["model_cfg"],
                        "final": final}, Path(tmp) / CKPT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**metrics, "final": final}, checkpoint=checkpoint)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    t_start = time.monotonic()
    steps_this_run = 0
    stop = False
    budget = t_cfg.time_budget_s
    while epoch < epochs and not stop:
        ddp.train()
        bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"{stage} epoch {epoch + 1}/{epochs}",
                   disable=rank != 0 or not t_cfg.show_progress, mininterval=2.0)
        batches = _epoch_batches(arrays, batch_size, steps_per_epoch, seed, epoch, rank)
        for _ in range(step_in_epoch):  # skip what the checkpoint already trained on (same order)
            next(batches)
        rows: list[tuple[str, float, int]] = []
        for arr in batches:
            batch = (SequenceBatch if stage == "pretrain" else FinetuneBatch).from_numpy(arr, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on_gpu):
                out = ddp(batch)
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), t_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step_in_epoch += 1
            steps_this_run += 1
            vals = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
            vals["grad_norm"] = float(gnorm)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            sums["_steps"] = sums.get("_steps", 0.0) + 1
            global_step = epoch * steps_per_epoch + step_in_epoch
            if mlf is not None and global_step % t_cfg.log_every == 0:
                rows += [(f"{stage}/step_{k}", v, global_step) for k, v in vals.items()]
                rows.append((f"{stage}/lr", scheduler.get_last_lr()[0], global_step))
                log_metrics_rows(mlf, config["mlflow_run_id"], rows)
                rows = []
            bar.update(1)
            bar.set_postfix(loss=f"{vals['loss']:.4f}", refresh=False)
            if budget is not None:
                stop = _all_reduce([float(time.monotonic() - t_start > budget)], "max")[0] > 0
            if t_cfg.stop_after_steps is not None and steps_this_run >= t_cfg.stop_after_steps:
                stop = True
            if stop:
                break
            if t_cfg.checkpoint_every and global_step % t_cfg.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                save_and_report({"epoch": epoch, "step": global_step})
        bar.close()
        if step_in_epoch == steps_per_epoch:  # epoch finished: aggregate over workers
            keys = sorted(sums)
            tot = dict(zip(keys, _all_reduce([sums[k] for k in keys], "sum")))
            n = tot.pop("_steps")
            history.append({"epoch": epoch + 1, **{k: v / n for k, v in tot.items()},
                            "lr": scheduler.get_last_lr()[0]})
            epoch, step_in_epoch, sums = epoch + 1, 0, {}
            if mlf is not None:
                log_metrics_rows(mlf, config["mlflow_run_id"],
                                 [(f"{stage}/{k}", v, epoch) for k, v in history[-1].items() if k != "epoch"])
            done = epoch == epochs
            save_and_report({**history[-1], "step": epoch * steps_per_epoch}, final=done and not stop)
    if stop:  # interrupted (budget / stop_after_steps): checkpoint where we are
        reached_end = epoch == epochs
        save_and_report({"epoch": epoch, "step": epoch * steps_per_epoch + step_in_epoch,
                         "stopped_early": True}, final=reached_end or budget is not None)


# ------------------------------------------------------------------------------ driver side
def ensure_ray(cfg: ArgusrankConfig) -> None:
    """Start a local Ray runtime if none is running (capped object store). The dashboard runs, on
    loopback only: Ray Train's placement-group cleaner polls the State API it serves, and without it
    warns every few seconds ("Failed to query Ray Train Controller actor state")."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", object_store_memory=200_000_000,
                 log_to_driver=True, configure_logging=False)


def fingerprint(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str, extra: dict | None = None) -> str:
    tree = cfg.model_dump(mode="json")
    for sec, key in _VOLATILE:
        tree.get(sec, {}).pop(key, None)
    blob = json.dumps({"cfg": tree, "data": str(Path(dataset_dir).resolve()), "stage": stage, **(extra or {})},
                      sort_keys=True, default=str)
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


def fit(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str, split: dict, model_cfg: dict,
        init_state: str | None = None, mlflow_run_id: str | None = None, fp_extra: dict | None = None) -> dict:
    """Run the TorchTrainer; returns ``{"state", "history", "final", "run_dir", "train_seconds"}``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    ensure_ray(cfg)
    fp = fingerprint(cfg, dataset_dir, stage, fp_extra)
    name = run_name(cfg, fp, stage)
    cfg.paths.runs_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "stage": stage, "split": split,
                           "dataset_dir": str(Path(dataset_dir).resolve()), "model_cfg": model_cfg,
                           "init_state": init_state, "mlflow_run_id": mlflow_run_id,
                           "tracking_uri": cfg.tracking_uri},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu(cfg),
                                               resources_per_worker={"CPU": worker_cpus(cfg)}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(cfg.paths.runs_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures)),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"{stage}: the Ray Train run {name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        st = torch.load(Path(d) / CKPT_FILE, map_location="cpu", weights_only=False)
    run_dir = cfg.paths.runs_dir / name
    if st["final"]:
        (run_dir / DONE_MARKER).write_text(json.dumps({"history": st["history"]}, default=str))
    return {"state": st["model"], "history": st["history"], "final": bool(st["final"]), "run_dir": str(run_dir),
            "train_seconds": seconds, "epoch": st["epoch"], "step_in_epoch": st["step_in_epoch"]}


def _build_model(model_cfg: dict, state: dict):
    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import ArgusConfig

    model = ArgusModel(ArgusConfig.from_dict(model_cfg))
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
    from argusrank.platform import registry
    from argusrank.platform.evaluate import evaluate_model

    protocol = protocol or cfg.eval.protocol
    meta = validate(cfg, dataset_dir, "pretrain")
    mc = model_config(cfg, meta)
    split = compute_split(cfg, dataset_dir, protocol)
    with registry.start_run(cfg, "pretrain", tags={"dataset": str(Path(dataset_dir).resolve()),
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
        mlflow.log_param("n_parameters", res["n_parameters"])
        registry.log_curves(out["history"], "pretrain_curves")
        metrics = evaluate_model(cfg, dataset_dir, model, protocol=protocol, negatives=cfg.eval.negatives,
                                 split=split, stages=("ranking", "losses"))
        registry.log_metrics({**metrics, **_summary(out["history"]), "train_seconds": out["train_seconds"]})
        version = registry.log_argus_model(cfg, model, register=register, metrics=_tag_metrics(metrics, dataset_dir, protocol, cfg),
                                           tags={"stage": "pretrain", "run_dir": out["run_dir"]})
        res.update(model_version=version, metrics=metrics)
        return res


def run_finetune(cfg: ArgusrankConfig, dataset_dir: str | Path, init: str | None = "candidate",
                 register: bool = True) -> dict:
    """Pairwise fine-tuning (one causal pass per user, lagged user states) with Ray Train.

    ``init``: registry alias/version to start from (``None``: from scratch, the
    no-pre-training ablation). Trains on impressions before T, evaluates
    PairAccuracy on the test window, registers the result (alias ``candidate``).
    Returns ``{"run_id", "model_version", "init_version", "metrics", "history", "train_seconds", "final"}``.
    """
    from argusrank.platform import registry
    from argusrank.platform.evaluate import evaluate_model

    meta = validate(cfg, dataset_dir, "finetune")
    split = compute_split(cfg, dataset_dir, "temporal")
    with registry.start_run(cfg, "finetune", tags={"dataset": str(Path(dataset_dir).resolve()),
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
        registry.log_curves(out["history"], "finetune_curves")
        metrics = evaluate_model(cfg, dataset_dir, model, protocol="temporal", negatives=cfg.eval.negatives,
                                 split=split, stages=("pairs", "ranking"))
        registry.log_metrics({**metrics, **_summary(out["history"]), "train_seconds": out["train_seconds"]})
        version = registry.log_argus_model(cfg, model, register=register,
                                           metrics=_tag_metrics(metrics, dataset_dir, "temporal", cfg),
                                           tags={"stage": "finetune", "init_version": str(init_version),
                                                 "run_dir": out["run_dir"]})
        res.update(model_version=version, metrics=metrics)
        return res


def _tag_metrics(metrics: dict, dataset_dir: str | Path, protocol: str, cfg: ArgusrankConfig) -> dict:
    return {**metrics, "dataset": str(Path(dataset_dir).resolve()), "protocol": protocol,
            "negatives": cfg.eval.negatives}
