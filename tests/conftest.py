"""Session fixtures shared by several test modules (each expensive enough to build once), and the grouping of
tests for pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``)."""
from __future__ import annotations

from pathlib import Path

import pytest

#: modules that share the ``uninterrupted_pretrain`` job: one xdist worker runs them, so it runs once
PRETRAIN_JOB_MODULES = {"test_fault_training", "test_cluster"}


def pytest_collection_modifyitems(config, items):
    """One xdist group per module (module-scoped fixtures, e.g. the demo run, are built once, on one worker), the
    modules of the shared pre-training job in one group."""
    for item in items:
        module = Path(str(item.fspath)).stem
        item.add_marker(pytest.mark.xdist_group("pretrain_job" if module in PRETRAIN_JOB_MODULES else module))


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
