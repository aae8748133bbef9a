"""argusrank on a real two-node Ray cluster (``ray.address``): Ray Train places workers on both nodes, fed by Ray
Data (``train.feed=ray_data``: each worker reads its rows through ``get_dataset_shard``), and the results equal a
run of the in-memory ``arrays`` feed on a plain local Ray with the same seed and worker count (the shared job of tests/train_jobs.py,
whose local run the fault test also compares against); the export's Ray Data model actors run user-bucket tasks on
both nodes, and the vectors equal an in-process computation.

The cluster is two ``ray start`` nodes on this machine (1 CPU and its own object store each; tests/ray_cluster.py),
stopped by PID at the end, never with ``ray stop``.
"""
from __future__ import annotations

import pytest

from argusrank.platform.config import load_config

pytestmark = pytest.mark.ray

#: a small pre-training config (the fingerprint test below)
SETS = {"model.preset": "tiny", "train.num_workers": 2, "train.epochs": 1, "train.batch_size": 16,
        "train.warmup_steps": 2, "train.show_progress": False, "data.max_len": 32, "data.test_days": 3,
        "data.synth.n_users": 120, "data.synth.n_items": 80, "data.synth.days": 14, "data.synth.organic_per_user": 20,
        "data.synth.requests_per_user": 4, "eval.ks": [10], "seed": 3}


def make_cfg(home, address=None, tracking_uri=None):
    return load_config(None, {**SETS, "paths.home": str(home), "ray.address": address,
                              "mlflow.tracking_uri": tracking_uri}, env={})


def test_ray_address_comes_from_the_config_or_ray_address_env(tmp_path):
    from argusrank.platform.training.jobs import fingerprint

    assert load_config(None, env={}).ray.address is None
    assert load_config(None, env={"RAY_ADDRESS": "10.0.0.5:6379"}).ray.address == "10.0.0.5:6379"
    cfg = load_config(None, ["ray.address=auto"], env={"RAY_ADDRESS": "10.0.0.5:6379"})
    assert cfg.ray.address == "auto"  # --set wins over the environment
    (tmp_path / "metadata.json").write_text("{}")
    # where Ray runs does not change what a run computes: a rerun on a cluster resumes a local run and back
    fp = fingerprint(make_cfg(tmp_path, "10.0.0.5:6379"), tmp_path, "pretrain")
    assert fp == fingerprint(make_cfg(tmp_path), tmp_path, "pretrain")
    assert fp != fingerprint(make_cfg(tmp_path), tmp_path, "finetune")


def _pretrain_on(address: str, home, data) -> dict:
    """tests/train_jobs.py's job run from this process against the cluster at ``address`` (``ray.address``), its
    workers fed by Ray Data (``train.feed=ray_data``)."""
    import ray

    from argusrank.platform.config import load_config
    from argusrank.platform.training.jobs import run_pretrain
    from train_jobs import job_overrides, job_result

    try:
        out = job_result(run_pretrain(load_config(None, {**job_overrides(home), "ray.address": address, "train.feed": "ray_data"}, env={}),
                                      data, register=False))
        assert ray.is_initialized()
        out["cluster_resources"] = ray.cluster_resources()
        out["alive_nodes"] = sum(n["Alive"] for n in ray.nodes())
        out["gcs_address"] = ray.get_runtime_context().gcs_address
        return out
    finally:
        ray.shutdown()


def _export_on(address: str, home, data) -> tuple[dict, object]:
    """A registered tiny model's export (Ray Data, 2 model actors) run from this process against the cluster."""
    import ray
    import ray.data
    import torch

    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import preset
    from argusrank.platform import registry, tracking
    from argusrank.platform.export import export_vectors

    cfg = load_config(None, {"paths.home": str(home), "ray.address": address, "data.test_days": 3,
                             "features.export_actors": 2, "features.export_batch_size": 16}, env={})
    torch.manual_seed(0)
    model = ArgusModel(preset("tiny")).eval()
    with tracking.start_run(cfg, "test-register"):
        registry.log_argus_model(cfg, model)
    ctx = ray.data.DataContext.get_current()
    wait = ctx.wait_for_min_actors_s
    ctx.wait_for_min_actors_s = 120  # both model actors up before the 8 small bucket tasks start (else the first
    try:                             # actor up, on either node, may finish them all: the data is tiny)
        return export_vectors(cfg, data, model_ref="candidate"), model
    finally:
        ctx.wait_for_min_actors_s = wait
        ray.shutdown()


def test_pretrain_and_export_run_on_both_nodes_and_equal_a_local_run(tmp_path, monkeypatch, small_planted,
                                                                    uninterrupted_pretrain):
    """The shared pre-training job (2 workers, tests/train_jobs.py) on a two-node cluster, fed by Ray Data: one
    worker per node, and the history and metrics of the same job run on a plain local Ray with the in-memory feed
    (the fault test's reference run; each worker's shard fits one feed window, so the batches are the same). Then the
    export on the same cluster: its Ray Data model actors ran user-bucket tasks on both nodes, and every user
    vector equals the one computed in this process over all users at once."""
    import ray
    from ray.util.state import list_actors, list_nodes, list_tasks

    from ray_cluster import ClusterUnavailable, start_cluster

    if ray.is_initialized():
        pytest.fail("a Ray runtime is already initialized in this process: the test must connect through ray.address")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    try:
        cluster = start_cluster(nodes=2, cpus_per_node=1, env={"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"})
    except ClusterUnavailable as exc:
        pytest.skip(f"cannot start a two-node Ray cluster with `ray start` here: {exc}")
    try:
        on_cluster = _pretrain_on(cluster.address, tmp_path / "cluster", small_planted)
        nodes = {n.node_id for n in list_nodes(address=cluster.dashboard) if n.state == "ALIVE"}
        workers = [a for a in list_actors(address=cluster.dashboard, detail=True, limit=1000)
                   if "RayTrainWorker" in (a.class_name or "")]
        exported, model = _export_on(cluster.address, tmp_path / "export", small_planted)
        bucket_tasks = [t for t in list_tasks(address=cluster.dashboard, detail=True, limit=10000)
                        if "UserVectors" in (t.name or "") and (t.name or "").endswith(".submit")
                        and t.state == "FINISHED"]
    finally:
        cluster.stop()
    assert not cluster.pids(), "the test cluster left processes behind"
    # the driver joined the cluster (2 nodes x 1 CPU), it did not start a Ray of its own
    assert on_cluster["gcs_address"].endswith(cluster.address.rsplit(":", 1)[1])
    assert on_cluster["alive_nodes"] == 2 and on_cluster["cluster_resources"]["CPU"] == 2
    assert len(nodes) == 2
    assert len(workers) == 2 and {a.node_id for a in workers} == nodes, [(a.class_name, a.node_id) for a in workers]

    local = uninterrupted_pretrain  # the same job on a plain local Ray, in its own process
    assert on_cluster["final"] and local["final"]
    assert len(on_cluster["history"]) == len(local["history"]) == 2
    for hc, hl in zip(on_cluster["history"], local["history"]):
        assert hc == pytest.approx(hl, rel=1e-6)
    assert on_cluster["history"] == local["history"]  # the same batches, the same floats
    numeric = {k: v for k, v in local["metrics"].items() if isinstance(v, (int, float))}
    assert {k: on_cluster["metrics"][k] for k in numeric} == pytest.approx(numeric, rel=1e-6)
    assert "ndcg@10" in numeric and "nip_loss" in numeric
    assert on_cluster["metrics"]["n_targets"] > 0 and on_cluster["history"][0]["loss"] > 0

    # the export: model actors' bucket tasks on both nodes, every (user, snapshot) vector as computed in-process
    import numpy as np
    import pyarrow.parquet as pq

    assert {t.node_id for t in bucket_tasks} == nodes, [(t.name, t.node_id) for t in bucket_tasks]
    got = pq.read_table(exported["user_vectors"]).to_pandas()
    got["as_of"] = [int(x.timestamp()) for x in got["event_timestamp"]]
    got = got.sort_values(["user_id", "as_of"])
    from argusrank.features.io import read_events
    from test_features_export import reference_user_vectors

    want, ref = reference_user_vectors(model, read_events(small_planted), np.asarray(exported["as_of"], np.int64), 0)
    keys = want[["user_id", "as_of"]].to_numpy()
    assert exported["user_rows"] == len(got) == len(keys) > 48
    np.testing.assert_array_equal(got[["user_id", "as_of"]].to_numpy(), keys)
    np.testing.assert_allclose(np.stack(got["user_vector"].to_numpy()), ref, rtol=1e-4, atol=1e-5)
