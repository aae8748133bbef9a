"""Ray Train jobs on CPU with 2 workers, MLflow registry, resume, promotion, bad configs.

One tiny synthetic dataset and one local Ray runtime for the module; every
run writes to its own home (SQLite MLflow DB + Ray results) under tmp_path.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from argusrank.platform.config import load_config

pytestmark = pytest.mark.ray

BASE = {"model.preset": "tiny", "train.num_workers": 2, "train.epochs": 6, "train.batch_size": 8,
        "train.lr": 1e-3, "train.warmup_steps": 5, "data.max_len": 64, "data.test_days": 3,
        "finetune.max_history": 64, "finetune.epochs": 3, "finetune.lr": 1e-3, "finetune.batch_size": 8,
        "finetune.lag_s": 0, "train.show_progress": False, "eval.ks": [10, 50], "seed": 0}


def make_cfg(home, **over):
    return load_config(None, {**BASE, "paths.home": str(home), **over}, env={})


def planted_dataset(out, n_users=200, n_items=60, length=60, seed=0, user_buckets=None) -> dict:
    """Tiny synthetic log with a planted sequential pattern popularity cannot capture.

    Each user walks the catalog with a private step (item_{k+1} = item_k + s_u mod n,
    10% random noise), one event per 6 h. Between two events the user gets a request
    of 4 items: the next item of the walk (liked) and 3 random ones (skipped).
    """
    import pyarrow as pa

    from argusrank.features.io import write_dataset
    from argusrank.features.schema import EVENT_SCHEMA, EVENT_TYPE_CODE

    rng = np.random.default_rng(seed)
    users = np.arange(1, n_users + 1)
    step, start = rng.integers(1, 4, n_users), rng.integers(0, n_items, n_users)
    k = np.arange(length)
    walk = (start[:, None] + step[:, None] * k[None, :]) % n_items + 1  # (U, length)
    noise = rng.random(walk.shape) < 0.1
    walk = np.where(noise, rng.integers(1, n_items + 1, walk.shape), walk)
    t0 = 1_700_000_000
    ts = t0 + k[None, :] * 6 * 3600 + rng.integers(0, 600, walk.shape)
    n = walk.size
    organic = {"user_id": np.repeat(users, length), "timestamp": ts.ravel(), "item_id": walk.ravel(),
               "is_organic": np.ones(n, bool), "surface": np.full(n, 1, np.int8), "request_id": np.full(n, -1),
               "position": np.full(n, -1, np.int16), "played_ratio": rng.uniform(0.4, 1.0, n).astype(np.float32),
               "liked": rng.random(n) < 0.2}
    # requests every 4th gap: [next walk item (liked), 3 random (skipped)], shuffled positions
    rk = k[1:-1:4]
    R = n_users * rk.size
    shown = np.concatenate([walk[:, rk + 1].reshape(-1, 1), rng.integers(1, n_items + 1, (R, 3))], axis=1)
    perm = rng.permuted(np.tile(np.arange(4), (R, 1)), axis=1)
    shown = np.take_along_axis(shown, perm, axis=1)
    is_next = perm == 0
    req_ts = (ts[:, rk] + 3 * 3600).reshape(-1, 1) + np.arange(4)[None, :]
    m = R * 4
    recs = {"user_id": np.repeat(np.repeat(users, rk.size), 4), "timestamp": req_ts.ravel(), "item_id": shown.ravel(),
            "is_organic": np.zeros(m, bool), "surface": np.full(m, 4, np.int8),
            "request_id": np.repeat(np.arange(R), 4), "position": np.tile(np.arange(4, dtype=np.int16), R),
            "played_ratio": np.where(is_next.ravel(), 0.9, 0.1).astype(np.float32), "liked": is_next.ravel()}
    cols = {c: np.concatenate([organic[c], recs[c]]) for c in organic}
    N = len(cols["user_id"])
    table = pa.table({
        **{c: cols[c] for c in ("user_id", "timestamp", "item_id", "is_organic", "surface", "played_ratio", "liked")},
        "request_id": pa.array(cols["request_id"], mask=cols["request_id"] < 0, type=pa.int64()),
        "position": pa.array(cols["position"], mask=cols["position"] < 0, type=pa.int16()),
        "event_type": np.full(N, EVENT_TYPE_CODE["listen"], np.int8), "disliked": np.zeros(N, bool),
        "rating": pa.nulls(N, pa.float32())})
    return write_dataset(out, table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), None, {"format": "planted"},
                         user_buckets=user_buckets)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One user bucket: the jobs' 2 workers share it, each training on half its users (features/io.py
    ``worker_shard``); the fault and cluster tests' dataset has 8 buckets, one worker per 4."""
    d = tmp_path_factory.mktemp("data") / "planted"
    planted_dataset(d, user_buckets=1)
    return d


@pytest.fixture(scope="module")
def ray_runtime():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"
    # Ray's memory monitor can count reclaimable page cache as used where the cgroup limit is not below the host's
    # memory (ray-project/ray#59796) and kill a worker of a tiny job on a busy CI box; the kernel still guards
    # real exhaustion
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset, ray_runtime):
    """One pre-training + one fine-tuning run, shared by the tests below. A worker lost to the machine (a CI run lost
    one mid-epoch, cause not recorded) restarts the group from its last checkpoint (``train.max_failures``; resume
    is exact: tests/test_fault_training.py), so the results are the same; a failure of the code fails twice."""
    from argusrank.platform.training.jobs import run_finetune, run_pretrain

    cfg = make_cfg(tmp_path_factory.mktemp("home"), **{"train.max_failures": 1})
    pre = run_pretrain(cfg, dataset)
    fin = run_finetune(cfg, dataset, init="candidate")
    return cfg, pre, fin


def test_pretrain_learns_and_beats_popularity(trained, dataset):
    from argusrank.platform.training.evaluate import evaluate_model

    cfg, pre, _ = trained
    nip = [h["nip"] for h in pre["history"]]
    assert len(nip) == cfg.train.epochs
    assert nip[-1] < 0.8 * nip[0]
    assert pre["history"][-1]["loss"] < pre["history"][0]["loss"]
    pop = evaluate_model(cfg, dataset, "popularity", stages=("ranking",))
    m = pre["metrics"]
    assert m["n_targets"] == pop["n_targets"] > 100
    assert m["ndcg@10"] > pop["ndcg@10"] + 0.01, (m["ndcg@10"], pop["ndcg@10"])
    assert m["recall@10"] > pop["recall@10"]
    assert np.isfinite(m["nip_loss"]) and np.isfinite(m["fp_skip_loss"])
    assert pre["model_version"] == 1


def test_registered_model_loads_by_alias_with_same_scores(trained, dataset):
    import mlflow

    from argusrank.platform.training.evaluate import evaluate
    from argusrank.platform.registry import load_argus

    cfg, pre, fin = trained
    assert fin["model_version"] == 2 and fin["init_version"] == 1
    model, version = load_argus(cfg, "candidate")
    assert version == 2
    v1, _ = load_argus(cfg, 1)
    # evaluating the registered pre-trained model reproduces the metrics computed at training time
    again = evaluate(cfg, dataset, 1, protocol="temporal", negatives="all", log=False)
    for k in ("ndcg@10", "recall@10", "mrr", "nip_loss"):
        assert again[k] == pytest.approx(pre["metrics"][k], rel=1e-6), k
    # the pyfunc flavor (by alias) serves the item tower of the same weights
    pyf = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.argus_model_name}@candidate")
    ids = np.array([1, 5, 17, 42], dtype=np.int64)
    out = pyf.predict(pd.DataFrame({"item_id": ids}))
    with torch.no_grad():
        ref = model.item_vectors(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    # fine-tuning ran on the impression pairs and changed the towers (whether the tiny model
    # learns the pairwise task in 3 epochs is a model question, not a platform one)
    assert 0.0 <= fin["metrics"]["pair_accuracy"] <= 1.0 and fin["metrics"]["n_pairs"] > 100
    assert len(fin["history"]) == cfg.finetune.epochs
    # early stopping's validation (the impressions just before T) ran after every epoch
    assert all(0.0 <= h["valid_pair_accuracy"] <= 1.0 for h in fin["history"])
    with torch.no_grad():
        assert not torch.allclose(v1.item_vectors(torch.as_tensor(ids)), torch.as_tensor(ref))


def test_promote_only_when_better(trained, dataset):
    from argusrank.platform.registry import CHAMPION, resolve_version, set_version_metrics
    from argusrank.platform.training.promote import promote

    cfg, _, _ = trained
    first = promote(cfg, version=1)
    assert first["promoted"] and resolve_version(cfg, CHAMPION) == 1
    # version 2 was evaluated on the same data/protocol: promoted iff its metric is higher
    res = promote(cfg)  # the candidate (2)
    assert res["metric"] == "ndcg@10"
    assert res["promoted"] == (res["candidate_value"] > res["champion_value"])
    assert resolve_version(cfg, CHAMPION) == (2 if res["promoted"] else 1)
    # a clearly worse candidate is refused, unless forced
    set_version_metrics(cfg, 2, {"ndcg@10": -1.0})
    if resolve_version(cfg, CHAMPION) == 2:
        promote(cfg, version=1, force=True)
    refused = promote(cfg, version=2)
    assert not refused["promoted"] and resolve_version(cfg, CHAMPION) == 1
    forced = promote(cfg, version=2, force=True)
    assert forced["promoted"] and resolve_version(cfg, CHAMPION) == 2


def test_finetune_job_on_the_streamed_feed_equals_the_arrays_job(trained, dataset):
    """``train.feed=ray_data`` fine-tunes from rows Ray Data builds and the worker reads through
    ``get_dataset_shard`` (their widths padded per window): with the shard in one window, the same run."""
    from argusrank.platform.training.jobs import run_finetune

    cfg, _, fin = trained
    streamed = run_finetune(cfg.model_copy(update={"train": cfg.train.model_copy(update={"feed": "ray_data"})}),
                            dataset, init=fin["init_version"], register=False)
    assert streamed["history"] == fin["history"] and len(fin["history"]) == cfg.finetune.epochs
    assert streamed["metrics"]["pair_accuracy"] == fin["metrics"]["pair_accuracy"]


def test_bad_configs_fail_before_training(tmp_path, dataset):
    import pydantic
    import ray

    from argusrank.platform.training.checks import ConfigError
    from argusrank.platform.training.jobs import run_finetune, run_pretrain

    was_running = ray.is_initialized()
    cases = [
        ({"train.num_workers": 16}, "train.num_workers"),
        ({"train.num_workers": 2, "train.cpus_per_worker": 64}, "train.cpus_per_worker"),
        ({"model.preset": "huge"}, "preset"),
        ({"model.overrides": {"d_model": 30, "n_heads": 4}}, "d_model"),
        ({"model.overrides": {"no_such_field": 1}}, "no_such_field"),
        ({"data.max_len": 1000}, "data.max_len"),
    ]
    for over, needle in cases:
        cfg = make_cfg(tmp_path / "h", **over)
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            run_pretrain(cfg, dataset)
    with pytest.raises(ConfigError, match="finetune.max_history"):
        run_finetune(make_cfg(tmp_path / "h", **{"finetune.max_history": 2, "finetune.min_history": 5}), dataset,
                     init=None)
    with pytest.raises(ConfigError, match="eval.ks"):
        run_pretrain(make_cfg(tmp_path / "h", **{"eval.ks": [10, 0]}), dataset)
    with pytest.raises(ConfigError, match="metadata.json"):
        run_pretrain(make_cfg(tmp_path / "h"), tmp_path / "no-such-dataset")
    with pytest.raises(pydantic.ValidationError, match="train.lr"):
        make_cfg(tmp_path / "h", **{"train.lr": -1})
    with pytest.raises(pydantic.ValidationError, match="eval.negatives"):
        make_cfg(tmp_path / "h", **{"eval.negatives": 7})
    # nothing started: no Ray runtime of our own, no MLflow database, no Ray results
    assert ray.is_initialized() == was_running
    assert not (tmp_path / "h" / "mlflow.db").exists()
    assert not (tmp_path / "h" / "ray_results").exists()
