"""One small pre-training job, run as `argusrank pretrain` would run it (its own process and process group, its own
local Ray), shared by the fault test (killed and resumed) and the cluster test (the same job on a two-node
cluster): both compare against one uninterrupted run of it (the ``uninterrupted_pretrain`` fixture, conftest.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train_ray import make_cfg

# 2 workers (each restores its own RNG and sums), 2 epochs of 6 steps, a checkpoint every 4: a kill lands
# mid-epoch, after at least one checkpoint
OVER = {"train.num_workers": 2, "train.cpus_per_worker": 1, "train.epochs": 2, "train.batch_size": 4,
        "train.checkpoint_every": 4}
JOB = """
import json, sys
from argusrank.platform.config import load_config
from argusrank.platform.training.jobs import run_pretrain
cfg = load_config(None, json.loads(sys.argv[1]), env={})
res = run_pretrain(cfg, sys.argv[2], register=False)
print("RESULT " + json.dumps({k: res[k] for k in ("final", "history", "metrics", "run_dir")}, default=str))
"""


def job_overrides(home: Path, **extra) -> dict:
    """The job's whole config as overrides (what a rerun of the same command passes)."""
    return make_cfg(home, **OVER, **extra).model_dump(mode="json")


def job_result(res: dict) -> dict:
    """What the job reports, as it crosses a process boundary (JSON)."""
    return json.loads(json.dumps({k: res[k] for k in ("final", "history", "metrics", "run_dir")}, default=str))


def start_job(home: Path, data: Path, **extra) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(job_overrides(home, **extra)), str(data)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)


def wait_result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-2000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])
