"""Everything checked before a training job starts: the model config, CPUs/GPUs, the dataset.

Errors are :class:`ConfigError` and name the config field."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from argusrank.platform.config import ArgusrankConfig


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


def model_config(cfg: ArgusrankConfig, data_meta: dict | None = None):
    """The model config of ``cfg.model``: an ``ArgusConfig`` (preset + overrides, SASRec ablation for
    kind=sasrec) or, for kind=sasrec-classic, a ``SASRecClassicConfig`` (paper sizes + overrides).

    ``model.overrides.item_table: auto``: one table row per item when the catalog fits in
    ``hash_buckets`` rows, hashing otherwise. sasrec-classic's dropout (unless overridden)
    follows the paper: 0.2 on dense data (>= 50 events per user), 0.5 on sparse data."""
    from argusrank.models.config import preset, sasrec_config
    from argusrank.models.sasrec_classic import SASRecClassicConfig

    meta = data_meta or {}
    over = dict(cfg.model.overrides)
    n_items = int(meta.get("n_items") or 0)
    try:
        if cfg.model.kind == "sasrec-classic":
            dense = meta.get("n_users") and meta.get("n_events", 0) / meta["n_users"] >= 50
            over.setdefault("dropout", 0.2 if dense else 0.5)
            return SASRecClassicConfig(**{"max_len": cfg.data.max_len, "n_items": max(n_items, 1), **over})
        if over.get("item_table") == "auto":
            fits = 0 < n_items <= over.get("hash_buckets", preset(cfg.model.preset).hash_buckets)
            over.update(item_table="catalog" if fits else "hashed", n_items=n_items if fits else 0)
        mc = preset(cfg.model.preset, encoder=cfg.model.encoder, **over)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.preset/model.overrides: {exc}") from exc
    if "max_item_id" in meta and "item_id_max" not in over:
        mc.item_id_max = max(1, int(meta["max_item_id"]))
    return sasrec_config(mc) if cfg.model.kind == "sasrec" else mc


def available_cpus() -> int:
    """CPUs of the running Ray (all nodes of a cluster), else of this machine."""
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", 0))
    return os.cpu_count() or 1


def largest_node_cpus() -> int:
    """CPUs of the biggest alive Ray node (a worker cannot span nodes), else of this machine."""
    import ray

    if ray.is_initialized():
        return int(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0))
    return os.cpu_count() or 1


def available_gpus() -> int:
    """GPUs of the running Ray (a cluster's driver may have none), else the ones torch sees here."""
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources().get("GPU", 0))
    return torch.cuda.device_count()


def worker_cpus(cfg: ArgusrankConfig) -> int:
    """CPUs (and torch threads) per Ray Train worker: ``train.cpus_per_worker``, or the
    CPUs shared evenly among the workers when that is unset (at most one node's)."""
    return cfg.train.cpus_per_worker or max(1, min(available_cpus() // cfg.train.num_workers, largest_node_cpus()))


def training_feed(cfg: ArgusrankConfig, dataset_dir: str | Path) -> str:
    """``train.feed``, with ``auto`` resolved: ``ray_data`` when a worker's share of the dataset's events is over
    ``train.feed_auto_events`` (its arrays would grow with the data), else ``arrays``."""
    if cfg.train.feed != "auto":
        return cfg.train.feed
    from argusrank.features.io import read_metadata

    per_worker = int(read_metadata(dataset_dir).get("n_events", 0)) / cfg.train.num_workers
    return "ray_data" if per_worker > cfg.train.feed_auto_events else "arrays"


def use_gpu(cfg: ArgusrankConfig) -> bool:
    if cfg.train.use_gpu == "auto":
        return available_gpus() > 0
    return cfg.train.use_gpu is True


def validate(cfg: ArgusrankConfig, dataset_dir: str | Path, stage: str) -> dict:
    """Check everything that can be checked before training; raise :class:`ConfigError`.

    Returns the dataset metadata.
    """
    from argusrank.features.io import read_metadata

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
    n_users = int(meta.get("n_users") or 0)
    if n_users and t.num_workers > n_users:
        raise ConfigError(f"train.num_workers={t.num_workers}: more workers than the dataset's {n_users} "
                          "users (each worker trains on its own users)")
    need, have = t.num_workers * worker_cpus(cfg), available_cpus()
    if need > have:
        raise ConfigError(f"train.num_workers * train.cpus_per_worker = {need} CPUs, but only {have} are available")
    gpus = available_gpus()
    if t.use_gpu is True and not gpus:
        raise ConfigError("train.use_gpu=true but no CUDA device is available (use 'auto' or 'false')")
    if use_gpu(cfg) and t.num_workers > gpus:
        raise ConfigError(f"train.num_workers={t.num_workers}: one GPU per worker, but only "
                          f"{gpus} GPU(s) are visible")
    if cfg.data.max_len > mc.max_len:
        raise ConfigError(f"data.max_len={cfg.data.max_len} exceeds the model's max_len={mc.max_len} "
                          f"(preset {cfg.model.preset!r}; raise model.overrides.max_len)")
    if stage == "finetune" and cfg.model.kind == "sasrec-classic":
        raise ConfigError("model.kind=sasrec-classic is a pre-training reference only (no towers to fine-tune)")
    if stage == "finetune" and cfg.finetune.max_history < cfg.finetune.min_history:
        raise ConfigError(f"finetune.max_history={cfg.finetune.max_history} < finetune.min_history="
                          f"{cfg.finetune.min_history}")
    if cfg.eval.negatives == "100" and cfg.eval.protocol == "loo" and meta.get("n_items", 0) <= 101:
        raise ConfigError(f"eval.negatives=100 needs more than 101 items; the dataset has {meta.get('n_items')}")
    if any(k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks must be positive, got {cfg.eval.ks}")
    return meta
