"""What a Ray Train worker trains on: its shard of the dataset, as batches in a seeded order (``train.feed``).

- ``arrays`` (default): the worker reads its user buckets (features/io.py ``worker_shard``) and builds all its
  training rows in memory (:func:`worker_arrays`); each epoch shuffles them with seed ``(seed, epoch, rank)``.
- ``ray_data``: the driver gives every worker a Ray Dataset of its buckets (:func:`stream_datasets`); Ray Data
  tasks build one bucket's rows at a time and the worker reads them through ``ray.train.get_dataset_shard``
  (:class:`StreamedShard`), holding one window of ``train.feed_window`` batches: rows are shuffled (and
  length-bucketed) within a window, with seed ``(seed, epoch, rank, window)``. Memory per worker is one window plus
  the bucket being built, not its whole shard. Row order is fixed by the data (buckets in order, users sorted in a
  bucket), so a resumed run replays an epoch's stream and skips what it trained on: exact resume stays exact. A
  shard that fits one window trains exactly as ``arrays`` does (tested). Pre-training and fine-tuning alike:
  fine-tuning rows of different buckets differ in width (history, impressions, pairs); a window right-pads them to
  its widest (features/sequences.py ``concat_rows``), the padding masked as in one in-memory build.

Both feeds give every worker the same number of steps per epoch (shorter shards wrap around).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from argusrank.features.splits import Split, train_histories, valid_arrays, validation_split
from argusrank.platform.config import ArgusrankConfig


def mix_seed(*parts: int) -> int:
    """One well-mixed 32-bit seed from several integers."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def finetune_rows(cfg: ArgusrankConfig, hist, model_max_len: int | None, t_from: int | None,
                  t_to: int | None) -> dict[str, np.ndarray]:
    """The fine-tuning job's rows of ``hist`` (``finetune`` config) with impressions in ``[t_from, t_to)``;
    histories cut to the model's positions table (``model_max_len``) when ``finetune.max_history`` is longer."""
    from argusrank.features.sequences import finetune_arrays

    f = cfg.finetune
    return finetune_arrays(hist, f.lag_s, min(f.max_history, model_max_len or f.max_history), f.min_history,
                           f.max_impressions, t_from=t_from, t_to=t_to, window_s=cfg.data.pair_window_s)


def worker_arrays(cfg: ArgusrankConfig, dataset_dir: str, stage: str, split: Split, buckets: list[int],
                  model_max_len: int | None = None, users: tuple[int, int] = (1, 0)) -> tuple[dict, dict | None]:
    """This worker's training arrays (and validation rows when ``train.valid_every`` /
    ``finetune.valid_every``), built from its own user_bucket shards only (and of them, the users of
    ``users`` = (modulus, remainder): features/io.py ``worker_shard``).

    With validation on a temporal split, training stops at the validation window
    ``[T - valid_days, T)`` (features/splits.py ``validation_split``): its events (pre-training) or its
    impressions' pairs (fine-tuning) validate. Fine-tuning histories
    are cut to the model's positions table (``model_max_len``) when ``finetune.max_history`` is longer."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.sequences import pretrain_arrays

    hist = build_histories(read_events(dataset_dir, user_buckets=buckets, users=users))  # only this worker's users
    if stage == "pretrain":
        valid = None
        if has_validation(cfg, stage, split):
            split = validation_split(split, cfg.train.valid_days or cfg.data.test_days)
            valid = valid_arrays(hist, split, cfg.data.max_len)
            split = Split("temporal", split.T) if split.protocol == "temporal" else split
        train = train_histories(hist, split, positives_only=cfg.model.kind in ("sasrec", "sasrec-classic"))
        arrays = pretrain_arrays(train, cfg.data.max_len, min_len=cfg.data.min_history)
        if cfg.train.positive_targets_only:  # ablation: predict only what evaluation counts
            arrays["target_mask"] = arrays["target_mask"] & (arrays["grade"] >= 1)
        return arrays, valid
    f = cfg.finetune
    t_to, valid = split.T, None
    if has_validation(cfg, stage, split):  # impressions of [T - valid_days, T) validate, earlier ones train
        held = validation_split(split, f.valid_days or cfg.data.test_days)
        valid = finetune_rows(cfg, hist, model_max_len, held.T, held.T_end)
        t_to = held.T
    return finetune_rows(cfg, hist, model_max_len, None, t_to), valid


def n_rows(arrays: dict | None) -> int:
    """Rows of a dict of equal-length arrays (0 for None or empty)."""
    return int(len(next(iter(arrays.values())))) if arrays else 0


def epoch_batches(arrays: dict, batch_size: int, n_steps: int, seed: int, epoch: int, rank: int,
                  buckets: int = 0) -> Iterator[dict]:
    """``arrays`` feed: exactly ``n_steps`` batches for this epoch; the shard wraps around if it is short."""
    from argusrank.features.sequences import iterate_batches

    made, cycle = 0, 0
    while made < n_steps:
        for arr in iterate_batches(arrays, batch_size, shuffle=True, seed=mix_seed(seed, epoch, rank, cycle), trim=True,
                                   bucket=buckets):
            yield arr
            made += 1
            if made == n_steps:
                return
        cycle += 1


# ---- the ray_data feed ------------------------------------------------------------------------------------------

def has_validation(cfg: ArgusrankConfig, stage: str, split: Split) -> bool:
    """Whether :func:`worker_arrays` gives ``stage`` validation rows (``train.valid_every`` /
    ``finetune.valid_every``; fine-tuning validates on a temporal split only)."""
    if stage == "pretrain":
        return bool(cfg.train.valid_every)
    return bool(cfg.finetune.valid_every) and split.T is not None


def _bucket_rows(batch: dict, *, cfg: dict, dataset_dir: str, split: dict, stage: str, part: str,
                 model_max_len: int | None) -> dict:
    """Ray Data task: one unit (a bucket and a share of its users) -> its training (``part="train"``) or
    validation rows for ``stage``, sorted by user (the order :func:`worker_arrays` gives them)."""
    cfg_obj = ArgusrankConfig.model_validate(cfg)
    (bucket,), (modulus,), (remainder,) = batch["bucket"], batch["modulus"], batch["remainder"]
    train, valid = worker_arrays(cfg_obj, dataset_dir, stage, Split.from_dict(split), [int(bucket)], model_max_len,
                                 users=(int(modulus), int(remainder)))
    return dict(train if part == "train" else valid)


def stream_datasets(cfg: ArgusrankConfig, dataset_dir: str, split: Split, world: int, stage: str = "pretrain",
                    model_max_len: int | None = None) -> dict:
    """Driver side of the ``ray_data`` feed: per worker rank ``r``, ``train_r`` (and ``valid_r`` when
    :func:`has_validation`): Ray Datasets over its units (the buckets and user share of ``worker_shard``),
    one block per unit, built lazily by Ray Data tasks of ``train.feed_cpus`` CPUs, at most
    ``train.feed_concurrency`` at once."""
    import ray.data

    from argusrank.features.io import user_buckets_of, worker_shard

    n_buckets = user_buckets_of(dataset_dir)
    out = {}
    for rank in range(world):
        buckets, modulus, remainder = worker_shard(rank, world, n_buckets)
        units = [{"bucket": b, "modulus": modulus, "remainder": remainder} for b in buckets]
        for part in ["train"] + (["valid"] if has_validation(cfg, stage, split) else []):
            ds = ray.data.from_items(units, override_num_blocks=len(units))
            ds.context.execution_options.preserve_order = True  # the stream is the same in every run
            out[f"{part}_{rank}"] = ds.map_batches(
                _bucket_rows, batch_size=1, batch_format="numpy", num_cpus=cfg.train.feed_cpus,
                concurrency=cfg.train.feed_concurrency,
                fn_kwargs={"cfg": cfg.model_dump(mode="json"), "dataset_dir": dataset_dir, "split": split.as_dict(),
                           "stage": stage, "part": part, "model_max_len": model_max_len})
    return out


def stream_data_config():
    """Ray Train's DataConfig for :func:`stream_datasets`: nothing split (each worker reads its own datasets),
    order preserved (the stream is the same in every run)."""
    import ray.train
    from ray.data import ExecutionOptions

    return ray.train.DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True))


def _by_user(rows: dict) -> dict:
    """Rows stably sorted by user: a window spanning units in the order one in-memory build gives."""
    order = np.argsort(rows["user_id"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def _blocks(it) -> Iterator[dict]:
    """The non-empty blocks (one unit's rows, or a part of them) of a Ray Data iterator, as numpy dicts: blocks are
    never merged by Ray Data, so fine-tuning columns of different widths arrive as they were built."""
    for rows in it.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        if n_rows(rows):
            yield rows


class StreamedShard:
    """Worker side of the ``ray_data`` feed: iterators over this rank's ``train_r`` / ``valid_r`` datasets
    (:meth:`of_worker` takes them from Ray Train's ``get_dataset_shard``)."""

    def __init__(self, train, valid, rank: int, batch_size: int, window: int, length_buckets: int) -> None:
        self.train, self._valid = train, valid
        self.rank, self.batch_size, self.length_buckets = rank, batch_size, length_buckets
        self.window_rows = batch_size * window

    @classmethod
    def of_worker(cls, rank: int, batch_size: int, window: int, length_buckets: int,
                  with_valid: bool) -> "StreamedShard":
        """This Ray Train worker's shards (inside ``train_loop_per_worker``)."""
        import ray.train

        valid = ray.train.get_dataset_shard(f"valid_{rank}") if with_valid else None
        return cls(ray.train.get_dataset_shard(f"train_{rank}"), valid, rank, batch_size, window, length_buckets)

    def _windows(self) -> Iterator[dict]:
        """The stream cut in windows of ``window_rows`` rows (the last one shorter), each sorted by user."""
        from argusrank.features.sequences import concat_rows

        held: list[dict] = []
        n_held = 0
        for block in _blocks(self.train):
            held.append(block)
            n_held += n_rows(block)
            while n_held >= self.window_rows:
                rows = concat_rows(held)
                yield _by_user({k: v[:self.window_rows] for k, v in rows.items()})
                n_held -= self.window_rows
                held = [{k: v[self.window_rows:] for k, v in rows.items()}] if n_held else []
        if n_held:
            yield _by_user(concat_rows(held))

    def count(self) -> int:
        """Training rows of this shard (one pass of the stream)."""
        return sum(n_rows(b) for b in _blocks(self.train))

    def valid(self) -> dict | None:
        """All validation rows of this shard (one row or a few per user), sorted by user; None without validation."""
        from argusrank.features.sequences import concat_rows

        if self._valid is None:
            return None
        parts = list(_blocks(self._valid))
        return _by_user(concat_rows(parts)) if parts else {}

    def epoch_batches(self, n_steps: int, seed: int, epoch: int) -> Iterator[dict]:
        """Exactly ``n_steps`` batches for this epoch, window by window; the stream restarts if it is short.
        Window 0 uses the ``arrays`` feed's seed, so a shard that fits one window gets the same batches."""
        from argusrank.features.sequences import iterate_batches

        made, cycle = 0, 0
        while made < n_steps:
            for w, rows in enumerate(self._windows()):
                s = mix_seed(seed, epoch, self.rank, cycle) if w == 0 else mix_seed(seed, epoch, self.rank, cycle, w)
                for arr in iterate_batches(rows, self.batch_size, shuffle=True, seed=s, trim=True,
                                           bucket=self.length_buckets):
                    yield arr
                    made += 1
                    if made == n_steps:
                        return
            cycle += 1
