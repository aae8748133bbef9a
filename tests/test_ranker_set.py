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
    split of the frame in memory, each request in one part; XGBoost fed part by part learns the same rankers."""
    from argusrank.features.baseline import BASE_FEATURES
    from argusrank.models.ranker import pair_accuracy, score, train_ranker_on_batches
    from argusrank.platform.ranker_job import _argus_needed, ranker_rows, train_rankers
    from argusrank.platform.training.ranker_set import RankerRows, write_ranker_set

    cfg, data = _home(tmp_path, _per_user_requests(_events(seed=7, n=1500, requests=True)))
    cfg = with_overrides(cfg, {"features.materialize_bucket_rows": 40})
    feats, is_train, version = ranker_rows(cfg, data)
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

    names = (*BASE_FEATURES, "argus_dot")
    hp = dict(n_estimators=8, max_depth=3, learning_rate=0.2, seed=0)
    mem, disk = RankerRows.of_frame(feats, is_train), RankerRows.of_parts(rs.parts)
    scores = {}
    for label, rows in (("mem", mem), ("disk", disk)):
        model = train_ranker_on_batches(lambda rows=rows: rows.batches(names, train=True), **hp)
        test = rows.columns(["request_id", "item_id", "grade"], train=False)
        s = np.concatenate([score(model, X) for X, _, _ in rows.batches(names, train=False)])
        scores[label] = (_sorted(test.assign(s=s, ts=0, user_id=0))["s"].to_numpy(),
                         pair_accuracy(s, test["grade"].to_numpy(), test["request_id"].to_numpy()))
    assert scores["mem"][1] == pytest.approx(scores["disk"][1], abs=1e-12)
    np.testing.assert_allclose(scores["mem"][0], scores["disk"][0], atol=1e-6)

    out_mem = train_rankers(cfg, data)
    out_disk = train_rankers(with_overrides(cfg, {"ranker.training_set": "parts"}), data)
    assert out_disk["training_set"] == "parts" and (cfg.paths.home / "ranker_set").is_dir()
    for key in ("pair_accuracy_base", "pair_accuracy_argus", "ndcg_argus", "n_train_requests", "n_test_requests",
                "n_impressions", "dot_coverage", "model_version"):
        assert out_disk[key] == pytest.approx(out_mem[key], abs=1e-9), key


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
