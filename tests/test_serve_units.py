"""Serving pieces that need no Serve: batch failure isolation, the ranker cache, the registry pairing rules."""
from __future__ import annotations

import numpy as np
import pytest

from argusrank.platform.config import load_config
from argusrank.platform.serving.flow import StageFailed, _checked, isolate_failures
from argusrank.platform.serving.ranking import RankerCache


def test_a_failing_request_fails_alone_in_its_batch():
    def batch_fn(reqs):
        if any(r < 0 for r in reqs):
            raise OverflowError("Python int too large to convert to C long")
        return [r * 10 for r in reqs]

    out = isolate_failures(batch_fn, [1, -5, 3])
    assert out[0] == 10 and out[2] == 30
    assert "OverflowError" in out[1]["error"]
    with pytest.raises(StageFailed, match="OverflowError"):
        _checked(out[1])
    assert isolate_failures(batch_fn, [2, 4]) == [20, 40]
    with pytest.raises(OverflowError):  # a batch of one raises as it is
        isolate_failures(batch_fn, [-1])


def test_ranker_cache_keeps_the_most_recently_used_versions():
    loads = []

    def loader(cfg, version):
        loads.append(version)
        return f"ranker v{version}"

    cache = RankerCache(cfg=None, keep=2, loader=loader)
    for v in (5, 6, 4):  # served 5, then 6; the alias rolls back to 4
        cache.get(v)
    for _ in range(3):
        assert cache.get(4) == "ranker v4"  # stays loaded: no reload per request
    assert loads == [5, 6, 4] and cache.versions() == [4, 6]
    cache.get(6)
    cache.get(7)  # evicts 4, the least recently used, not the lowest number
    assert cache.versions() == [6, 7]


@pytest.fixture()
def registry_cfg(tmp_path):
    return load_config(env={}, overrides={"paths.home": str(tmp_path)})


def _register_ranker(cfg):
    import pandas as pd
    import xgboost as xgb

    from argusrank.platform.tracking import start_run

    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    model = xgb.XGBRanker(n_estimators=2, max_depth=2).fit(X, np.arange(20) % 3, qid=np.repeat(np.arange(4), 5))
    from argusrank.platform.registry import log_ranker
    with start_run(cfg, "test-ranker"):
        info = log_ranker(model, registered_model_name=cfg.mlflow.ranker_model_name)
    return int(info.registered_model_version)


def test_a_ranker_without_its_argus_version_is_refused(registry_cfg):
    from argusrank.platform.serving.bundle import NothingToServe, resolve_bundle
    from argusrank.platform.tracking import setup

    cfg = registry_cfg
    v = _register_ranker(cfg)
    setup(cfg).set_registered_model_alias(cfg.mlflow.ranker_model_name, "champion", str(v))
    with pytest.raises(NothingToServe, match="argus_model_version"):
        resolve_bundle(cfg)


def test_publish_ranker_tags_before_it_moves_the_alias(registry_cfg, monkeypatch):
    from argusrank.platform import registry
    from argusrank.platform.serving.bundle import resolve_bundle
    from argusrank.platform.tracking import setup

    cfg = registry_cfg
    v = _register_ranker(cfg)
    client = setup(cfg)
    calls = []

    class Recording:
        def __getattr__(self, name):
            def call(*args):
                calls.append(name)
                return getattr(client, name)(*args)
            return call

    monkeypatch.setattr(registry, "setup", lambda cfg: Recording())
    registry.publish_ranker(cfg, v, 7, "champion")
    assert calls == ["set_model_version_tag", "set_registered_model_alias"]
    monkeypatch.undo()
    assert resolve_bundle(cfg).as_dict() == {"argus": 7, "ranker": v}


def test_events_bodies_one_event_a_wrapped_batch_or_a_bare_list():
    from fastapi import HTTPException

    from argusrank.platform.serving.http import parse_events

    e = {"user_id": 1, "item_id": 2, "timestamp": 3}
    assert parse_events(e, 10) == [e]
    assert parse_events({"events": [e, e]}, 10) == [e, e]
    assert parse_events([e, e, e], 10) == [e, e, e]  # a bare JSON array is a batch, not one (invalid) event
    for bad, text in (([], "non-empty"), ({"events": {}}, "non-empty"), ([e] * 11, "at most 10")):
        with pytest.raises(HTTPException) as err:
            parse_events(bad, 10)
        assert err.value.status_code == 422 and text in str(err.value.detail)
