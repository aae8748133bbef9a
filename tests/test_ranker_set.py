"""The ranker's training set written by user bucket (``ranker.training_set=parts``) against the one in memory."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_final_list import _events, _home

from argusrank.platform.config import with_overrides


def _per_user_requests(events: pa.Table) -> pa.Table:
    """Request IDs of one user each (as served logs have them): ``request_id * 64 + user_id``."""
    rid = pc.add(pc.multiply(events["request_id"], 64), events["user_id"])
    return events.set_column(events.schema.get_field_index("request_id"), "request_id", rid)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["request_id", "item_id", "ts", "user_id"], kind="stable").reset_index(drop=True)


def test_parts_hold_the_frames_rows_and_train_the_same_rankers(tmp_path):
    """Written one user bucket at a time (several buckets), the parts hold exactly the rows, features and train
    split of the frame in memory, each request in one part; XGBoost fed part by part learns the same rankers, in
    the job's process or with Ray Train's XGBoostTrainer over 2 workers."""
    from argusrank.features.baseline import BASE_FEATURES
    from argusrank.models.ranker import pair_accuracy, score, train_ranker_on_batches
    from argusrank.platform.ranker_job import _argus_needed, ranker_rows, train_rankers
    from argusrank.platform.training.ranker_set import RankerRows, write_ranker_set

    base, data = _home(tmp_path, _per_user_requests(_events(seed=7, n=1500, requests=True)))
    cfg = with_overrides(base, {"features.materialize_bucket_rows": 40})  # many buckets
    feats, is_train, version = ranker_rows(cfg, data)
    # the split read one user bucket at a time as one row per request: the frame's (IDs, rows, split time)
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training.ranker_set import impressions, split_requests, split_time, train_request_ids

    split = dataset_split(data, "temporal", cfg.data.test_days)
    imp = impressions(data, split.T, split.T_end)
    want = split_requests(imp, cfg.ranker.train_frac)
    ids, n_rows, t_split = train_request_ids(data, split.T, split.T_end, cfg.ranker.train_frac)
    np.testing.assert_array_equal(ids, np.unique(imp["request_id"].to_numpy()[want]))
    assert n_rows == len(imp) and 0 < want.sum() < len(imp)
    assert t_split == split_time(imp, want, split.T, split.T_end, cfg.ranker.train_frac)
    rs = write_ranker_set(cfg, data, tmp_path / "set", argus=_argus_needed(cfg), progress=False)
    assert len(rs.parts) > 2 and rs.n_buckets >= len(rs.parts)
    assert (rs.rows, rs.train_rows, rs.model_version) == (len(feats), int(is_train.sum()), version)
    assert rs.dot_sum == pytest.approx(float(np.nansum(feats["argus_dot"])), rel=1e-6)
    parts = [pd.read_parquet(p) for p in rs.parts]
    for p in parts:  # a request's rows: one part, one run of rows (XGBoost's query groups)
        rid = p["request_id"].to_numpy()
        assert (np.diff(rid) >= 0).all()
    by_part = pd.concat([pd.Series(p["request_id"].unique()) for p in parts])
    assert by_part.is_unique
    got = _sorted(pd.concat(parts, ignore_index=True))
    want = _sorted(feats.assign(is_train=is_train))
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)

    r = cfg.ranker
    hp = dict(n_estimators=r.n_estimators, max_depth=r.max_depth, learning_rate=r.learning_rate, seed=cfg.seed)
    mem, disk = RankerRows.of_frame(feats, is_train), RankerRows.of_parts(rs.parts)
    scores = {}
    for label, rows in (("mem", mem), ("disk", disk)):
        for names in (BASE_FEATURES, (*BASE_FEATURES, "argus_dot")):
            model = train_ranker_on_batches(lambda rows=rows, names=names: rows.batches(names, train=True), **hp)
            test = rows.columns(["request_id", "item_id", "grade"], train=False)
            s = np.concatenate([score(model, X) for X, _, _ in rows.batches(names, train=False)])
            scores[label, len(names)] = (_sorted(test.assign(s=s, ts=0, user_id=0))["s"].to_numpy(),
                                         pair_accuracy(s, test["grade"].to_numpy(), test["request_id"].to_numpy()))
    for key in scores:
        if key[0] == "disk":
            assert scores[key][1] == pytest.approx(scores["mem", key[1]][1], abs=1e-12)
            np.testing.assert_allclose(scores[key][0], scores["mem", key[1]][0], atol=1e-6)

    # Ray Train's XGBoostTrainer, 2 workers with half the parts each: one booster of all the rows (the same trees),
    # not worker 0's half alone
    import ray

    from argusrank.platform.training.ranker_ray import train_ranker_on_ray

    names = (*BASE_FEATURES, "argus_dot")
    X = pd.concat([b[0] for b in disk.batches(names, train=False)], ignore_index=True)
    alone = RankerRows.of_parts(rs.parts[0::2])
    models = {"one": train_ranker_on_batches(lambda: disk.batches(names, train=True), **hp),
              "half": train_ranker_on_batches(lambda: alone.batches(names, train=True), **hp)}
    try:
        models["ray"] = train_ranker_on_ray(cfg, rs.parts, names, n_workers=2, **hp)
    finally:
        ray.shutdown()
    np.testing.assert_allclose(score(models["ray"], X), score(models["one"], X), atol=1e-6)
    assert np.abs(score(models["half"], X) - score(models["one"], X)).max() > 0.01

    # the job with training_set=parts: the frame's figures (a memory-mode job trains through the same batches)
    out = train_rankers(with_overrides(base, {"ranker.training_set": "parts"}), data)  # default buckets: one here
    assert out["training_set"] == "parts" and list((base.paths.home / "ranker_set").glob("part-*"))
    assert out["pair_accuracy_base"] == pytest.approx(scores["mem", len(BASE_FEATURES)][1], abs=1e-12)
    assert out["pair_accuracy_argus"] == pytest.approx(scores["mem", len(BASE_FEATURES) + 1][1], abs=1e-12)
    assert (out["n_impressions"], out["model_version"]) == (len(feats), version)
    assert out["n_train_requests"] == feats.loc[is_train, "request_id"].nunique()
    assert out["n_test_requests"] == feats.loc[~is_train, "request_id"].nunique()
    assert out["dot_coverage"] == pytest.approx(float(np.isfinite(feats["argus_dot"]).mean()))


def test_parts_refuse_requests_shared_by_users(tmp_path):
    """A request serves one user: logs where one request ID holds several users' impressions are refused (their
    rows would fall into several parts), naming a request and its users."""
    from argusrank.platform.ranker_job import _argus_needed
    from argusrank.platform.training.ranker_set import write_ranker_set

    cfg, data = _home(tmp_path, _events(seed=7, n=400, requests=True))
    with pytest.raises(ValueError, match=r"request_id \d+ .*users \[\d+, \d+"):
        write_ranker_set(cfg, data, tmp_path / "set", argus=_argus_needed(cfg), progress=False)


def test_parts_refuse_what_they_cannot_hold():
    """Candidate rows and fresh user vectors are built in memory: the config names the fields to change."""
    from argusrank.platform.config import load_config

    with pytest.raises(ValueError, match="ranker.train_on=impressions and ranker.user_vectors=daily"):
        load_config(env={}, overrides={"ranker.training_set": "parts", "ranker.train_on": "candidates"})
    assert load_config(env={}, overrides={"ranker.training_set": "parts"}).ranker.training_set == "parts"
