"""`export_vectors` with Ray Data on a registered (untrained, tiny) model: rows equal a direct model call."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from argusrank.platform.config import load_config

pytestmark = pytest.mark.ray
PARENT: dict = {}  # the fixture's pre-trained parent model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import ray

    from argusrank.features.synth import synthesize
    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import preset
    from argusrank.platform import registry, tracking
    from argusrank.platform.export import export_vectors

    home = tmp_path_factory.mktemp("home")
    cfg = load_config(env={}, overrides={"paths.home": str(home), "data.synth.n_users": 60, "data.synth.n_items": 80,
                                         "data.synth.days": 10, "data.test_days": 3, "features.export_batch_size": 16})
    ds = home / "data" / "synth"
    synthesize(cfg.data.synth, ds, seed=0)
    torch.manual_seed(0)
    parent = ArgusModel(preset("tiny")).eval()  # the "pre-trained" version, then one "fine-tuned" from it
    model = ArgusModel(preset("tiny")).eval()
    with tracking.start_run(cfg, "test-register"):
        parent_version = registry.log_argus_model(cfg, parent)
        version = registry.log_argus_model(cfg, model, tags={"init_version": str(parent_version)})
    PARENT["model"] = parent
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, log_to_driver=False)
    try:
        rep = export_vectors(cfg, ds, model_ref="candidate", lag_s=3600)
    finally:
        ray.shutdown()
    return cfg, ds, model, version, rep


def test_export_report_and_columns(exported):
    cfg, ds, model, version, rep = exported
    assert rep["model_version"] == version and rep["user_rows"] > 0 and rep["item_rows"] == 80
    assert rep["user_rows_per_s"] > 0 and len(rep["as_of"]) >= 3
    for kind in ("user", "item"):
        t = pq.read_table(rep[f"{kind}_vectors"])
        assert {f"{kind}_id", f"{kind}_vector", f"{kind}_model_version", "event_timestamp", "created"} <= set(t.column_names)
        assert set(t[f"{kind}_model_version"].to_pylist()) == {version}
        assert t["created"].null_count == 0 and t["event_timestamp"].null_count == 0
    for view in ("item_stats", "user_stats", "user_item"):
        assert any((cfg.paths.home / "baseline" / view).glob("*.parquet"))


def test_user_vectors_equal_direct_model_call_with_lag(exported):
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.models.batch import SequenceBatch

    cfg, ds, model, _, rep = exported
    t = pq.read_table(rep["user_vectors"]).to_pandas()
    hist = build_histories(read_events(ds))
    for _, row in t.sample(6, random_state=0).iterrows():
        as_of = int(row.event_timestamp.timestamp())
        ev = hist.events_of(int(row.user_id))
        keep = ev["timestamp"] <= as_of - 3600  # the lag: state as of as_of - lag
        assert keep.any()
        one = {k: v[keep][None] for k, v in ev.items()}
        one["valid"] = np.ones_like(one["item_id"], dtype=bool)
        with torch.no_grad():
            ref = model.user_vectors(SequenceBatch.from_numpy(one)).numpy()[0]
        np.testing.assert_allclose(row.user_vector, ref, rtol=1e-4, atol=1e-5)


def test_item_vectors_equal_item_tower(exported):
    _, _, model, _, rep = exported
    t = pq.read_table(rep["item_vectors"])
    ids = t["item_id"].to_numpy()
    with torch.no_grad():
        ref = model.item_vectors(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(np.stack(t["item_vector"].to_numpy(zero_copy_only=False)), ref, rtol=1e-5, atol=1e-6)


def test_fp_space_is_the_pretrained_parents_fp_head_under_the_exported_version(exported):
    """features.fp_from=parent: the FP user / item parts and output layer of the version the exported one was
    fine-tuned from (its FP head is the trained one), labelled with the exported version (one bundle)."""
    from argusrank.features import vectors
    from argusrank.features.argus_features import FP_HEAD
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.platform.inference import user_vectors, window_arrays

    cfg, ds, model, version, rep = exported
    parent = PARENT["model"]
    assert rep["spaces"] == ["tower", "fp", "nip"]
    assert rep["fp_model_version"] == version - 1
    ids, got = vectors.read_version(cfg, "item_fp", version)
    with torch.no_grad():
        np.testing.assert_allclose(got, parent.fp_item_parts(torch.as_tensor(ids)).numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, model.fp_item_parts(torch.as_tensor(ids)).numpy(), atol=1e-3)
    head = vectors.read_head(cfg, FP_HEAD, version)
    np.testing.assert_allclose(head["weight"], parent.fp.output_layer()[0].numpy())
    t = pq.read_table(rep["fp_user_vectors"]).to_pandas().sample(4, random_state=0)
    hist = build_histories(read_events(ds))
    uidx = np.searchsorted(hist.user_ids, t["user_id"].to_numpy())
    as_of = np.array([int(x.timestamp()) for x in t["event_timestamp"]])
    end = np.array([np.searchsorted(hist.timestamp[hist.offsets[u]:hist.offsets[u + 1]], a - 3600, side="right")
                    for u, a in zip(uidx, as_of)]) + hist.offsets[uidx]
    start = np.maximum(hist.offsets[uidx], end - parent.cfg.max_len)
    ref = user_vectors(parent, window_arrays(hist, start, end - start, as_of, "fp", parent.cfg.max_len), "fp")
    np.testing.assert_allclose(np.stack(t["user_fp_vector"].to_numpy()), ref, rtol=1e-4, atol=1e-5)


def reference_user_vectors(model, events, snaps: np.ndarray, lag_s: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The export's (user, snapshot) rows, sorted, and their tower vectors computed in this process over all users at
    once (no Ray, no buckets): the reference of this module and of the two-node test."""
    from argusrank.features.histories import build_histories
    from argusrank.platform.export import user_windows
    from argusrank.platform.inference import user_vectors, window_arrays

    hist = build_histories(events)
    want = user_windows(hist, snaps, lag_s, model.cfg.max_len).to_pandas().sort_values(["user_id", "as_of"])
    ref = user_vectors(model, window_arrays(hist, want["start"].to_numpy(), want["length"].to_numpy(),
                                            want["as_of"].to_numpy(), "tower", model.cfg.max_len), "tower")
    return want, ref


def test_export_by_user_bucket_equals_one_pass_over_all_users(exported):
    """Export reads one user bucket per Ray Data call (vectors) and per step (baseline views): every (user, snapshot)
    row and every baseline row equals what one pass over all events at once gives."""
    from argusrank.features import baseline
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events, user_buckets_of

    cfg, ds, model, _, rep = exported
    assert user_buckets_of(ds) >= 8
    events = read_events(ds)
    hist = build_histories(events)
    snaps = np.asarray(rep["as_of"], np.int64)
    want, ref = reference_user_vectors(model, events, snaps, 3600)
    got = pq.read_table(rep["user_vectors"]).to_pandas()
    got["as_of"] = [int(x.timestamp()) for x in got["event_timestamp"]]
    got = got.sort_values(["user_id", "as_of"])
    assert rep["user_rows"] == len(got) == len(want) > 100
    np.testing.assert_array_equal(got[["user_id", "as_of"]].to_numpy(), want[["user_id", "as_of"]].to_numpy())
    np.testing.assert_allclose(np.stack(got["user_vector"].to_numpy()), ref, rtol=1e-4, atol=1e-5)

    from argusrank.platform.export import UserVectors

    early = UserVectors({"tower": model}, str(ds), [int(hist.timestamp.min())], 3600, 16, "cpu")({"bucket": np.array([0])})
    assert early["user_id"].shape == (0,) and early["vector_tower"].shape == (0, got["user_vector"].iloc[0].shape[0])

    whole = baseline.compute_baseline(events, snaps)
    for view, t in whole.items():
        files = sorted((cfg.paths.baseline_dir / view).glob("*.parquet"))
        assert len(files) == 1 and rep["baseline_rows"][view] == t.num_rows > 0, view
        keys = [c for c in t.column_names if c.endswith("_id")] + ["event_timestamp"]
        a = pq.read_table(files[0]).to_pandas().sort_values(keys, kind="stable").reset_index(drop=True)
        b = t.to_pandas().sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(_as_tuples(a), _as_tuples(b), obj=view)


def _as_tuples(df):
    """List cells (the priors' arrays) as tuples, so frames compare cell by cell."""
    return df.apply(lambda col: col.map(lambda x: tuple(np.asarray(x).tolist()) if isinstance(x, (list, np.ndarray))
                                        else x) if col.dtype == object else col)


def test_an_export_that_dies_mid_write_leaves_the_previous_version_readable(tmp_path):
    """Vectors stream into a hidden file renamed into place only when complete; other versions are archived
    only after that, so a crash leaves no truncated parquet and the previous version still reads."""
    from argusrank.features import vectors
    from argusrank.platform.export import _stream

    cfg = load_config(env={}, overrides={"paths.home": str(tmp_path)})
    ids = np.arange(6)
    old = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    vectors.write_vectors(cfg, "item", vectors.vector_table("item", ids, old, 1, 100, 1.0), "v1_0_0_1")

    class DiesMidway:
        def iter_batches(self, **_):
            yield {"item_id": ids[:3], "vector_tower": old[:3] + 1, "vector_nip": old[:3]}
            raise RuntimeError("worker killed")

    out, out_nip = vectors.vector_path(cfg, "item", "v2_0_0_2"), vectors.vector_path(cfg, "item_nip", "v2_0_0_2")
    with pytest.raises(RuntimeError, match="worker killed"):
        _stream(DiesMidway(), {"vector_tower": ("item", out), "vector_nip": ("item_nip", out_nip)}, 6, 2, 2.0, 100)
    assert not out.exists() and not list(out_nip.parent.iterdir())  # neither space leaves a partial or hidden file
    assert sorted(p.name for p in out.parent.iterdir()) == ["v1_0_0_1.parquet"]  # no partial or hidden file
    got_ids, got = vectors.read_version(cfg, "item", 1)
    np.testing.assert_array_equal(got, old)
    assert vectors.newest_version(cfg, "item") == 1
