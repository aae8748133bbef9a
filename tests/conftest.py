"""Session fixtures shared by several test modules (each expensive enough to build once)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_planted(tmp_path_factory):
    """A small planted-pattern dataset (48 users x 60 events, with requests) for the shared pre-training job."""
    from test_train_ray import planted_dataset

    d = tmp_path_factory.mktemp("data") / "planted"
    planted_dataset(d, n_users=48, length=60)
    return d


@pytest.fixture(scope="session")
def uninterrupted_pretrain(tmp_path_factory, small_planted):
    """tests/train_jobs.py's job run once, uninterrupted, on a plain local Ray: the reference its resumed (fault
    test) and two-node (cluster test) runs must equal."""
    from train_jobs import start_job, wait_result

    return wait_result(start_job(tmp_path_factory.mktemp("full"), small_planted))
