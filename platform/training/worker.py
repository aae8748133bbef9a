"""The Ray Train worker: its data shard, the training loop, checkpoints with exact resume.

Inside a worker (:func:`train_loop`):

- data: worker ``r`` of ``W`` reads only the ``user_bucket`` shards ``b % W == r``
  of the parquet events (no full copy per worker) and builds its own arrays; with more
  workers than buckets, workers share a bucket and split its users (``worker_shard``);
  with ``train.feed=ray_data`` Ray Data builds them bucket by bucket and the worker
  streams them through ``get_dataset_shard`` (training/feed.py);
  every worker runs the same number of steps per epoch (shorter shards wrap).
- order: epoch ``e`` of worker ``r`` shuffles with seed ``(seed, e, r)``, so a
  resumed run sees exactly the batches an uninterrupted one would;
- checkpoints (every ``train.checkpoint_every`` steps, else every epoch) hold
  model, optimizer, LR schedule, per-rank RNG states, the running epoch sums
  and the position (epoch, step): a resumed run ends with the same metrics.
- steps: bf16 autocast on GPU, gradient clipping, AdamW with linear warmup and
  cosine decay over ``epochs * steps_per_epoch`` (or constant); batches trimmed to their
  longest sequence, optionally of similar lengths (``train.length_buckets``);
- early stopping (``train.valid_every`` / ``finetune.valid_every``): NDCG@10 (pre-training) or the dot's
  weighted PairAccuracy (fine-tuning) on the validation split after every ``valid_every`` epochs, the best
  weights kept (and in the checkpoint), training ends after ``patience`` validations without improvement
  and at least ``train.patience_steps`` optimizer steps since the best (``early_stop``);
  the final checkpoint holds the best.
"""
from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from argusrank.features.splits import Split
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.training.checks import worker_cpus
from argusrank.platform.training.feed import (
    StreamedShard, epoch_batches, has_validation, mix_seed, n_rows, worker_arrays,
)
from argusrank.platform.training.state import (
    all_gather, all_reduce, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)


def negative_catalog(dataset_dir: str | Path, split: Split | None) -> np.ndarray:
    """Item IDs the NIP loss draws uniform negatives from: items seen before T (all for loo or
    ``split`` None)."""
    import pyarrow.parquet as pq

    items = pq.read_table(Path(dataset_dir) / "items.parquet", columns=["item_id", "first_ts"])
    ids, first = items["item_id"].to_numpy(), items["first_ts"].to_numpy()
    if split is not None and split.T is not None:
        ids = ids[first < split.T]
    return ids.astype(np.int64)


class _Objective(torch.nn.Module):
    """Routes DDP's ``forward`` to the stage's loss so gradient sync hooks fire.

    Fine-tuning with ``runtime_share`` > 0 scores that share of each step's user rows (drawn from the
    worker's seeded torch RNG, saved with checkpoints) with the user state at ``runtime_lag_s``, the rest at
    ``lag_s``: one model for the daily lagged vectors and the fresh runtime ones."""

    def __init__(self, model: torch.nn.Module, stage: str, lag_s: int, runtime_lag_s: int = 0,
                 runtime_share: float = 0.0) -> None:
        super().__init__()
        self.model, self.stage, self.lag_s = model, stage, lag_s
        self.runtime_lag_s, self.runtime_share = runtime_lag_s, runtime_share

    def forward(self, batch) -> dict[str, torch.Tensor]:
        if self.stage == "pretrain":
            return self.model.pretrain_losses(batch)
        lag: int | torch.Tensor = self.lag_s
        if self.runtime_share > 0:
            rows = torch.rand(batch.imp_time.shape[0], 1) < self.runtime_share
            lag = torch.where(rows, self.runtime_lag_s, self.lag_s).to(batch.imp_time.device)
        return self.model.finetune_loss(batch, lag)


def lr_lambda(warmup: int, total: int, schedule: str = "cosine"):
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to 0 at ``total`` (or constant)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def early_stop(best: dict, step: int, patience: int, patience_steps: int = 0) -> bool:
    """Stop when the last ``patience`` validations did not improve on the best one and at least
    ``patience_steps`` optimizer steps have passed since it (``best``: ``{"bad", "step"}``)."""
    return best["bad"] >= patience and step - best.get("step", 0) >= patience_steps


def train_loop(config: dict) -> None:
    """``train_loop_per_worker``: see the module docstring for what it guarantees."""  # noqa: C901
    import ray.train
    import ray.train.torch
    from tqdm import tqdm

    from argusrank.features.io import user_buckets_of, worker_shard
    from argusrank.models.batch import FinetuneBatch, SequenceBatch
    from argusrank.models.factory import model_from_config
    from argusrank.platform.training.evaluate import pair_accuracy_sums, validation_sums

    cfg = ArgusrankConfig.model_validate(config["cfg"])
    stage, split = config["stage"], Split.from_dict(config["split"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(worker_cpus(cfg))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    seed = cfg.seed
    t_cfg = cfg.train
    sched = cfg.stage_schedule(stage)
    epochs, batch_size, lr = sched.epochs, sched.batch_size, sched.lr

    # ---- data: this worker's shards only
    buckets, *users = worker_shard(rank, world, user_buckets_of(config["dataset_dir"]))
    streamed = t_cfg.feed == "ray_data"
    if streamed:  # Ray Data builds the rows bucket by bucket (training/feed.py); this worker holds one window
        shard = StreamedShard.of_worker(rank, batch_size, t_cfg.feed_window, t_cfg.length_buckets,
                                        has_validation(cfg, stage, split))
        n_train, valid = shard.count(), shard.valid()
    else:
        arrays, valid = worker_arrays(cfg, config["dataset_dir"], stage, split, buckets,
                                      config["model_cfg"]["max_len"], users=tuple(users))
        n_train = n_rows(arrays)
    n_local = math.ceil(n_train / batch_size)
    steps_per_epoch = int(all_reduce([n_local], "max")[0])
    if steps_per_epoch == 0:
        held = f" or for its validation window ({sched.section}.valid_every=0 trains on it)" if valid is not None else ""
        raise RuntimeError(f"{stage}: no training rows on any worker (dataset too small for the split{held}?)")
    if n_local == 0:
        raise RuntimeError(f"{stage}: worker {rank} got no training rows from user buckets {buckets} "
                           f"(users {users[1]} mod {users[0]}); use fewer workers")
    total_steps = epochs * steps_per_epoch

    # ---- model, optimizer, schedule (same init on every rank; DDP also broadcasts it)
    torch.manual_seed(seed)
    model = model_from_config(config["model_cfg"])
    all_items = negative_catalog(config["dataset_dir"], None)
    model.set_vocab(torch.as_tensor(all_items))
    if config.get("init_state"):
        model.load_state_dict(torch.load(config["init_state"], map_location="cpu", weights_only=True))
    model.to(device)
    model.set_catalog(torch.as_tensor(negative_catalog(config["dataset_dir"], split)))
    optimizer = model.configure_optimizer(lr, t_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(t_cfg.warmup_steps, total_steps // 2),
                                                                       total_steps, t_cfg.lr_schedule))
    clip = getattr(model, "clip_grad", True)
    random.seed(mix_seed(seed, rank))
    np.random.seed(mix_seed(seed, rank) % (2**32))
    torch.manual_seed(mix_seed(seed, rank, 1))

    # ---- resume
    epoch, step_in_epoch, history, sums = 0, 0, [], {}
    best = {"metric": -math.inf, "bad": 0, "step": 0, "state": None}  # early stopping on the validation split
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            st = load_checkpoint(d)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        epoch, step_in_epoch, history = st["epoch"], st["step_in_epoch"], st["history"]
        best = st.get("best", best)
        per_rank = st["per_rank"][rank] if len(st["per_rank"]) == world else None
        if per_rank is None:
            raise RuntimeError(f"checkpoint was written by {len(st['per_rank'])} workers, this run has {world}")
        set_rng_state(per_rank["rng"])
        sums = per_rank["sums"]

    ddp = ray.train.torch.prepare_model(_Objective(model, stage, cfg.finetune.lag_s, cfg.finetune.runtime_lag_s,
                                                   cfg.finetune.runtime_lag_share),
                                        parallel_strategy_kwargs={"find_unused_parameters": True})
    mlf = None
    if rank == 0 and config.get("mlflow_run_id"):
        from mlflow.tracking import MlflowClient

        mlf = MlflowClient(tracking_uri=config["tracking_uri"])
    from argusrank.platform.tracking import log_metrics_rows

    def save_and_report(metrics: dict, final: bool = False) -> None:
        per_rank = all_gather({"rng": rng_state(), "sums": dict(sums)}, world)
        tmp = None
        checkpoint = None
        if rank == 0:
            tmp = tempfile.mkdtemp(prefix="argus-ckpt-")
            state = best["state"] if final and best["state"] is not None else model.state_dict()
            save_checkpoint(tmp, {"model": state, "best": best, "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                                  "history": history, "per_rank": per_rank, "model_cfg": config["model_cfg"],
                                  "final": final})
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({**metrics, "final": final}, checkpoint=checkpoint)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    t_start = time.monotonic()
    steps_this_run = 0
    stop = converged = False
    budget = t_cfg.time_budget_s
    while epoch < epochs and not stop and not converged:
        ddp.train()
        bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"{stage} epoch {epoch + 1}/{epochs}",
                   disable=rank != 0 or not t_cfg.show_progress, mininterval=2.0)
        batches = shard.epoch_batches(steps_per_epoch, seed, epoch) if streamed else \
            epoch_batches(arrays, batch_size, steps_per_epoch, seed, epoch, rank, t_cfg.length_buckets)
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
            gnorm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), t_cfg.grad_clip if clip else math.inf)
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
                stop = all_reduce([float(time.monotonic() - t_start > budget)], "max")[0] > 0
            if t_cfg.stop_after_steps is not None and steps_this_run >= t_cfg.stop_after_steps:
                stop = True
            if stop:
                break
            if t_cfg.checkpoint_every and global_step % t_cfg.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                save_and_report({"epoch": epoch, "step": global_step})
        bar.close()
        if step_in_epoch == steps_per_epoch:  # epoch finished: aggregate over workers
            keys = sorted(sums)
            tot = dict(zip(keys, all_reduce([sums[k] for k in keys], "sum")))
            n = tot.pop("_steps")
            history.append({"epoch": epoch + 1, **{k: v / n for k, v in tot.items()},
                            "lr": scheduler.get_last_lr()[0]})
            epoch, step_in_epoch, sums = epoch + 1, 0, {}
            if valid is not None and (epoch % sched.valid_every == 0 or epoch == epochs):
                model.eval()
                if stage == "pretrain":
                    metric, (v_sum, n) = "valid_ndcg@10", all_reduce(list(validation_sums(model, valid, all_items)), "sum")
                else:
                    c, w, _ = pair_accuracy_sums(model, valid, cfg.finetune.lag_s, device=device)
                    metric, (v_sum, n) = "valid_pair_accuracy", all_reduce([c, w], "sum")
                model.train()
                history[-1][metric] = v_sum / max(n, 1e-12)
                if n == 0:  # no validation targets: train on to the epoch count or the budget
                    pass
                elif history[-1][metric] > best["metric"]:
                    best = {"metric": history[-1][metric], "bad": 0, "step": epoch * steps_per_epoch,
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                else:
                    best["bad"] += 1
                converged = early_stop(best, epoch * steps_per_epoch, sched.patience, sched.patience_steps)
            if mlf is not None:
                log_metrics_rows(mlf, config["mlflow_run_id"],
                                 [(f"{stage}/{k}", v, epoch) for k, v in history[-1].items() if k != "epoch"])
            done = epoch == epochs
            save_and_report({**history[-1], "step": epoch * steps_per_epoch}, final=(done or converged) and not stop)
    if stop:  # interrupted (budget / stop_after_steps): checkpoint where we are
        reached_end = epoch == epochs
        save_and_report({"epoch": epoch, "step": epoch * steps_per_epoch + step_in_epoch,
                         "stopped_early": True}, final=reached_end or budget is not None)
