"""The ``ray_data`` training feed (platform/training/feed.py): Ray Data builds a worker's rows bucket by bucket and
the worker streams them window by window. Compared with the in-memory ``arrays`` feed it replaces: the same rows
once per epoch, the same batches when a shard fits one window, a replayable order (exact resume). A whole Ray
Train job through ``get_dataset_shard`` equal to the ``arrays`` job: tests/test_cluster.py (the shared pre-training
job on two nodes) and test_train_ray.py (fine-tuning)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from test_train_ray import make_cfg, planted_dataset

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    """48 users in 4 user buckets, with a temporal validation window."""
    d = tmp_path_factory.mktemp("data") / "planted"
    planted_dataset(d, n_users=48, length=60, user_buckets=4)
    return d


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """60 synthetic users of different history lengths and request counts, in 4 user buckets."""
    from argusrank.features.config import SynthConfig
    from argusrank.features.synth import synthesize

    d = tmp_path_factory.mktemp("data") / "synth"
    synthesize(SynthConfig(n_users=60, n_items=80, days=20), d, seed=0, user_buckets=4)
    return d


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def _feeds(home, data, rank: int, world: int, window: int, stage: str = "pretrain", **over):
    """(the ``arrays`` feed's rows and validation rows, a StreamedShard) of worker ``rank`` of ``world``."""
    from argusrank.features.io import user_buckets_of, worker_shard
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training.feed import StreamedShard, stream_datasets, worker_arrays

    cfg = make_cfg(home, **{"train.valid_every": 1, "finetune.valid_every": 1, "data.max_len": 16, **over})
    split = dataset_split(data, "temporal", cfg.data.test_days)
    buckets, *users = worker_shard(rank, world, user_buckets_of(data))
    arrays, valid = worker_arrays(cfg, str(data), stage, split, buckets, cfg.data.max_len, users=tuple(users))
    ds = stream_datasets(cfg, str(data), split, world, stage, cfg.data.max_len)
    shard = StreamedShard(ds[f"train_{rank}"].iterator(), ds[f"valid_{rank}"].iterator(), rank,
                          cfg.train.batch_size, window, cfg.train.length_buckets)
    return arrays, valid, shard


def _row_keys(rows: dict) -> list[tuple]:
    """One hashable key per row: user, length and every event's item and time."""
    return sorted((int(u), *it[v].tolist(), *ts[v].tolist())
                  for u, it, ts, v in zip(rows["user_id"], rows["item_id"], rows["timestamp"], rows["valid"]))


def _same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("world", [3, 6])  # 3 workers over 4 buckets; 6 workers, two of them sharing a bucket
def test_streamed_epoch_holds_every_row_of_the_shard_once_in_small_windows(tmp_path, bucketed, local_ray, world):
    from argusrank.platform.training.feed import n_rows

    for rank in range(world):
        arrays, valid, shard = _feeds(tmp_path, bucketed, rank, world, window=2, **{"train.batch_size": 4})
        assert shard.count() == n_rows(arrays) > 8  # several windows of 8 rows
        windows = list(shard._windows())
        assert len(windows) > 1 and max(n_rows(w) for w in windows) <= 8  # the worker holds one window
        steps = -(-n_rows(arrays) // 4)
        batches = list(shard.epoch_batches(steps, seed=0, epoch=0))
        assert len(batches) == steps
        assert sorted(k for b in batches for k in _row_keys(b)) == _row_keys(arrays)  # the same rows, each once
        sv = shard.valid()
        assert n_rows(sv) == n_rows(valid) > 0 and _row_keys(sv) == _row_keys(valid)


def test_streamed_order_is_replayable_wraps_and_differs_by_epoch(tmp_path, bucketed, local_ray):
    """Exact resume skips the batches a checkpoint trained on in a replay of the epoch's stream: the replay must
    be the same; a shard shorter than the epoch wraps around; epochs differ."""
    arrays, _, shard = _feeds(tmp_path, bucketed, 0, 2, window=2, **{"train.batch_size": 4,
                                                                      "train.length_buckets": 2})
    steps = -(-len(arrays["user_id"]) // 4)
    first = list(shard.epoch_batches(steps + 3, seed=5, epoch=1))
    assert len(first) == steps + 3 and _same_batches(first, list(shard.epoch_batches(steps + 3, seed=5, epoch=1)))
    resumed = shard.epoch_batches(steps + 3, seed=5, epoch=1)
    for _ in range(4):
        next(resumed)
    assert _same_batches(first[4:], list(resumed))
    assert not _same_batches(first[:steps], list(shard.epoch_batches(steps, seed=5, epoch=2)))


def test_one_window_gives_the_arrays_feeds_batches(tmp_path, bucketed, local_ray):
    from argusrank.platform.training.feed import epoch_batches

    arrays, valid, shard = _feeds(tmp_path, bucketed, 1, 2, window=1000, **{"train.length_buckets": 3})
    steps = -(-len(arrays["user_id"]) // 8) + 2  # and wraps
    want = list(epoch_batches(arrays, 8, steps, seed=0, epoch=3, rank=1, buckets=3))
    assert _same_batches(want, list(shard.epoch_batches(steps, seed=0, epoch=3)))
    sv = shard.valid()
    assert all(np.array_equal(sv[k], valid[k], equal_nan=True) for k in valid)  # same rows, same order


def _unpadded(rows: dict) -> list[tuple]:
    """Fine-tuning rows without their padding, one key per row: user, history items, impressions and pairs."""
    return sorted((int(rows["user_id"][r]), tuple(rows["item_id"][r][rows["valid"][r]].tolist()),
                   tuple(rows["imp_item"][r][rows["imp_valid"][r]].tolist()),
                   tuple(rows["imp_grade"][r][rows["imp_valid"][r]].tolist()),
                   tuple(zip(*(rows[k][r][rows["pair_w"][r] > 0].tolist() for k in ("pair_a", "pair_b", "pair_w")))))
                  for r in range(len(rows["user_id"])))


def test_finetune_rows_of_different_widths_stream_padded_and_one_window_gives_the_arrays_batches(
        tmp_path, varied, local_ray):
    """Fine-tuning rows differ in history, impression and pair widths from bucket to bucket: a window pads them to
    its widest (masked), every row arrives once; a shard in one window gives the ``arrays`` feed's batches."""
    from argusrank.features.sequences import concat_rows
    from argusrank.platform.training.feed import epoch_batches, n_rows

    arrays, valid, shard = _feeds(tmp_path, varied, 0, 1, window=1, stage="finetune",
                                  **{"train.batch_size": 5, "finetune.max_impressions": 9})
    assert {"imp_item", "pair_a"} <= arrays.keys() and n_rows(arrays) > 10
    windows = list(shard._windows())
    assert len(windows) > 2 and max(n_rows(w) for w in windows) <= 5
    assert len({w["pair_a"].shape[1] for w in windows}) > 1  # widths differ from window to window
    assert _unpadded(concat_rows(windows)) == _unpadded(arrays)  # the same rows, each once, padding masked
    assert _unpadded(shard.valid()) == _unpadded(valid) and n_rows(valid) > 0

    _, _, whole = _feeds(tmp_path, varied, 0, 1, window=1000, stage="finetune", **{"finetune.max_impressions": 9})
    steps = -(-n_rows(arrays) // 8)
    want = list(epoch_batches(arrays, 8, steps, seed=1, epoch=0, rank=0))
    assert _same_batches(want, list(whole.epoch_batches(steps, seed=1, epoch=0)))


def test_auto_feed_streams_once_a_workers_share_of_the_events_is_large(tmp_path):
    """``train.feed=auto`` (the default): ``arrays`` while a worker's share of the events is small, ``ray_data``
    past ``train.feed_auto_events``; an explicit feed is kept."""
    import json

    from argusrank.platform.config import load_config
    from argusrank.platform.training.checks import training_feed

    (tmp_path / "metadata.json").write_text(json.dumps({"n_events": 3_000_000}))
    feed = lambda **over: training_feed(load_config(None, {"paths.home": str(tmp_path), **over}, env={}), tmp_path)
    assert load_config(None, {"paths.home": str(tmp_path)}, env={}).train.feed == "auto"
    assert feed() == "ray_data" and feed(**{"train.num_workers": 2}) == "arrays"
    assert feed(**{"train.feed_auto_events": 3_000_000}) == "arrays"
    assert feed(**{"train.feed": "arrays"}) == "arrays"
    assert feed(**{"train.feed": "ray_data", "train.num_workers": 4}) == "ray_data"
