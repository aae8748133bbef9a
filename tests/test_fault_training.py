"""Training killed with SIGKILL mid-epoch — a worker, then the driver — resumes to the same result.

The job runs in its own process group (as `argusrank pretrain` would run). Once a checkpoint exists a Ray Train
worker is killed: `train.max_failures` restarts the worker group from that checkpoint. Once the restarted group
has written the next one, the whole group (driver and its local Ray) is killed and the same command is rerun:
the run resumes from its newest checkpoint (same fingerprint) and ends with metrics equal to an uninterrupted run
(tests/train_jobs.py: the same job the cluster test runs on two nodes).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_train_ray import make_cfg
from train_jobs import start_job, wait_result

pytestmark = pytest.mark.ray


def _checkpoints(home: Path) -> set[Path]:
    return set((home / "ray_results").glob("pretrain-*/checkpoint_*"))


def _wait_for_checkpoint(home: Path, proc: subprocess.Popen | None = None, timeout: float = 300,
                         known: frozenset = frozenset()) -> Path:
    """The first checkpoint under ``home`` that is not one of ``known``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(_checkpoints(home) - known)
        if found:
            return found[0]
        assert proc is None or proc.poll() is None, "the job ended before its first checkpoint"
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


def _train_workers(root: int) -> list[int]:
    """PIDs of the Ray Train workers among the descendants of process ``root`` (a job's own local Ray)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    procs = {int(r[0]): (int(r[1]), r[2]) for r in (line.split(None, 2) for line in out.splitlines()) if len(r) == 3}

    def descends(pid: int) -> bool:
        while pid > 1 and pid in procs:
            if pid == root:
                return True
            pid = procs[pid][0]
        return False

    return [pid for pid, (_, args) in procs.items() if "RayTrainWorker" in args and descends(pid)]


def test_worker_then_driver_killed_mid_epoch_resume_to_the_same_metrics(tmp_path, small_planted,
                                                                         uninterrupted_pretrain):
    """One job, two faults (one run less than a job per fault): a Ray Train worker is SIGKILLed after the first
    checkpoint (``train.max_failures`` restarts the worker group from it, which goes on to write the next
    checkpoint), then the driver with its whole process group (its local Ray); the same command resumes from the
    newest checkpoint and ends with the uninterrupted run's history and metrics."""
    home = tmp_path / "killed"
    proc = start_job(home, small_planted, **{"train.max_failures": 1})
    first = _wait_for_checkpoint(home, proc)
    workers = _train_workers(proc.pid)
    assert workers, "no RayTrainWorker process under the job's driver"
    os.kill(workers[0], signal.SIGKILL)
    _wait_for_checkpoint(home, proc, known=frozenset(_checkpoints(home)))  # the restarted group goes on
    assert first in _checkpoints(home)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process it started (its local Ray)
    proc.wait(timeout=60)
    resumed = wait_result(start_job(home, small_planted))
    assert resumed["final"] and Path(resumed["run_dir"]).parent == home / "ray_results"
    assert resumed["history"] == uninterrupted_pretrain["history"]
    assert resumed["metrics"] == uninterrupted_pretrain["metrics"]


def test_resume_is_keyed_by_the_dataset_contents_not_its_path(tmp_path):
    from argusrank.platform.training.jobs import fingerprint

    cfg = make_cfg(tmp_path / "home")
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "metadata.json").write_text('{"n_events": 10, "max_timestamp": 99}')
    assert fingerprint(cfg, a, "pretrain") == fingerprint(cfg, b, "pretrain")  # same data elsewhere
    before = fingerprint(cfg, a, "pretrain")
    (a / "metadata.json").write_text('{"n_events": 11, "max_timestamp": 99}')  # other data, same path
    assert fingerprint(cfg, a, "pretrain") != before


def test_checkpoints_load_weights_only(tmp_path):
    import random

    import numpy as np
    import torch

    from argusrank.platform.training.state import load_checkpoint, rng_state, save_checkpoint, set_rng_state

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path, {"rng": rng_state(), "step": 3})
    want = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path)["rng"])  # every RNG state survives a weights-only load
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]

    class Payload:  # a pickled object that would run code on load
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"model": Payload()}, tmp_path / "state.pt")
    with pytest.raises(Exception, match="[Ww]eights"):
        load_checkpoint(tmp_path)
