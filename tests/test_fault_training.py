"""Training killed with SIGKILL mid-epoch — a worker, then the driver — resumes to the same result.

The job runs in its own process group (as `argusrank pretrain` would run). Once a checkpoint exists a Ray Train
worker is killed: `train.max_failures` restarts the worker group from that checkpoint. Once the restarted group
has written the next one, the whole group (driver and its local Ray) is killed and the same command is rerun:
the run resumes from its newest checkpoint (same fingerprint) and ends with metrics equal to an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_ray import make_cfg, planted_dataset

pytestmark = pytest.mark.ray

# 2 workers (each restores its own RNG and sums), 2 epochs of 6 steps, a checkpoint every 4: the kill lands
# mid-epoch, after at least one checkpoint
OVER = {"train.num_workers": 2, "train.cpus_per_worker": 1, "train.epochs": 2, "train.batch_size": 4,
        "train.checkpoint_every": 4}
JOB = """
import json, sys
from argusrank.platform.config import load_config
from argusrank.platform.training.jobs import run_pretrain
cfg = load_config(None, json.loads(sys.argv[1]), env={})
res = run_pretrain(cfg, sys.argv[2], register=False)
print("RESULT " + json.dumps({"final": res["final"], "history": res["history"], "metrics": res["metrics"],
                              "run_dir": res["run_dir"]}, default=str))
"""


def _overrides(home: Path, **extra) -> dict:
    return make_cfg(home, **OVER, **extra).model_dump(mode="json")


def _job(home: Path, data: Path, **extra) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(_overrides(home, **extra)), str(data)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)


def _result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-2000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


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


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "planted"
    planted_dataset(d, n_users=48, length=60)
    return d


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    return _result(_job(tmp_path_factory.mktemp("full"), data))


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


def test_worker_then_driver_killed_mid_epoch_resume_to_the_same_metrics(tmp_path, data, uninterrupted):
    """One job, two faults (one run less than a job per fault): a Ray Train worker is SIGKILLed after the first
    checkpoint (``train.max_failures`` restarts the worker group from it, which goes on to write the next
    checkpoint), then the driver with its whole process group (its local Ray); the same command resumes from the
    newest checkpoint and ends with the uninterrupted run's history and metrics."""
    home = tmp_path / "killed"
    proc = _job(home, data, **{"train.max_failures": 1})
    first = _wait_for_checkpoint(home, proc)
    workers = _train_workers(proc.pid)
    assert workers, "no RayTrainWorker process under the job's driver"
    os.kill(workers[0], signal.SIGKILL)
    _wait_for_checkpoint(home, proc, known=frozenset(_checkpoints(home)))  # the restarted group goes on
    assert first in _checkpoints(home)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process it started (its local Ray)
    proc.wait(timeout=60)
    resumed = _result(_job(home, data))
    assert resumed["final"] and Path(resumed["run_dir"]).parent == home / "ray_results"
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["metrics"] == uninterrupted["metrics"]


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
