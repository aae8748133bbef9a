"""The final ranker trained on a Ray cluster: Ray Train's ``XGBoostTrainer`` over the parts of a ranker set.

With ``ranker.num_workers`` > 0 (and ``ranker.training_set=parts``) each ranker is trained by that many Ray Train
workers. The trainer sets up XGBoost's collective, so ``xgboost.train`` in the workers builds one booster from all
of them (quantile sketches merged, gradient histograms summed). Worker ``r`` of ``n`` reads parts ``r, r + n, ...``
(whole requests, as the ranking objective needs) part by part into a ``QuantileDMatrix``
(``models.ranker.train_ranker_on_batches``). The parts live under the home, which every node must see at the
same path (as for pre-training's checkpoints).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Sequence

from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.ray_runtime import start_local_ray


MODEL_FILE = "model.ubj"


def _train_worker(config: dict) -> None:
    import tempfile

    import ray.train

    from argusrank.models.ranker import train_ranker_on_batches
    from argusrank.platform.training.ranker_set import RankerRows

    ctx = ray.train.get_context()
    rows = RankerRows.of_parts([Path(p) for p in config["parts"][ctx.get_world_rank()::ctx.get_world_size()]])
    booster = train_ranker_on_batches(lambda: rows.batches(config["names"], train=True), **config["hp"])
    with tempfile.TemporaryDirectory() as d:  # one report at the end (not one per round): rank 0's booster
        if ctx.get_world_rank() == 0:
            booster.save_model(str(Path(d) / MODEL_FILE))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d) if ctx.get_world_rank() == 0 else None)


def train_ranker_on_ray(cfg: ArgusrankConfig, parts: Sequence[Path], names: Sequence[str], *, n_workers: int,
                        cpus_per_worker: int = 1, **hp):
    """A ``rank:pairwise`` booster of the features ``names`` trained by ``n_workers`` Ray Train workers (at most
    one per part) on the train rows of ``parts``; ``hp``: ``train_ranker_on_batches``' hyperparameters."""
    import ray.train
    import xgboost as xgb
    from ray.train.xgboost import XGBoostTrainer

    if not parts:
        raise ValueError("the ranker set has no parts to train on")
    start_local_ray(dashboard=True, log_to_driver=True, address=cfg.ray.address)
    cfg.paths.runs_dir.mkdir(parents=True, exist_ok=True)
    trainer = XGBoostTrainer(
        _train_worker,
        train_loop_config={"parts": [str(p) for p in parts], "names": list(names),
                           "hp": {**hp, "n_jobs": cpus_per_worker}},
        scaling_config=ray.train.ScalingConfig(num_workers=max(1, min(n_workers, len(parts))),
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(name=f"ranker-{uuid.uuid4().hex[:8]}", storage_path=str(cfg.paths.runs_dir)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("the Ray Train XGBoost run produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        return xgb.Booster(model_file=str(Path(d) / MODEL_FILE))
