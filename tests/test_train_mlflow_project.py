"""`mlflow run mlflow_projects -e synth|pretrain --env-manager local` against a SQLite store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

PROJECT = Path(__file__).resolve().parents[1] / "mlflow_projects"


def _mlflow_run(entry: str, params: dict[str, str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(PROJECT), "-e", entry, "--env-manager", "local",
           "--experiment-name", "argusrank"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    # cwd: `mlflow run` creates the experiment with MLflow's default artifact root ./mlruns
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_mlflow_run_synth_then_pretrain(tmp_path):
    from mlflow.tracking import MlflowClient

    home = tmp_path / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"  # absolute (STACK.md)
    home.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RAY_AUTH_MODE": "disabled",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for var in ("ARGUSRANK_HOME", "ARGUSRANK_CONFIG", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        env.pop(var, None)  # set by earlier in-process MLflow use (set_experiment exports the id)
    synth = _mlflow_run("synth", {"home": str(home), "n_users": "150", "n_items": "80", "days": "15",
                                  "sets": "data.synth.organic_per_user=10 data.synth.requests_per_user=3"}, env, tmp_path)
    assert synth.returncode == 0, synth.stderr[-3000:]
    assert (home / "data" / "synth" / "metadata.json").is_file()
    pre = _mlflow_run("pretrain", {"home": str(home), "epochs": "1", "preset": "tiny", "num_workers": "1",
                                   "sets": "data.max_len=32 data.test_days=3 train.batch_size=16 "
                                           "train.show_progress=false train.warmup_steps=2"}, env, tmp_path)
    assert pre.returncode == 0, pre.stderr[-3000:]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("argusrank")
    runs = client.search_runs([exp.experiment_id])
    by_stage = {r.data.tags.get("argusrank.stage"): r for r in runs}
    assert set(by_stage) == {"synth", "pretrain"}  # one logged run per step, the entry point's own
    assert all(r.info.status == "FINISHED" for r in runs)
    assert by_stage["synth"].data.metrics["n_events"] > 0
    assert by_stage["synth"].data.params["data.synth.n_users"] == "150"  # typed parameter reached the config
    m = by_stage["pretrain"].data.metrics
    assert "ndcg_at_10" in m and "pretrain/loss" in m
    assert by_stage["pretrain"].data.params["train.epochs"] == "1"
    mv = client.get_model_version_by_alias("argus", "candidate")
    assert mv.run_id == by_stage["pretrain"].info.run_id
