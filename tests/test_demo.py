"""`argusrank demo --no-serve --json` end to end on a tiny synthetic set: every stage runs for
real (Ray Train, MLflow registry, Ray Data export, Feast SQLite, XGBoost) and the last stdout
line is the uplift JSON contract."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

TINY = [
    "data.synth.n_users=150", "data.synth.n_items=120", "data.synth.days=21", "data.test_days=5",
    "model.preset=tiny", "train.epochs=1", "finetune.epochs=1", "train.show_progress=false",
]


def test_demo_no_serve_json_runs_every_stage(tmp_path):
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "argusrank.platform.cli", "demo", "--no-serve", "--json", "--seed", "3",
           "--set", f"paths.home={home}"]
    for s in TINY:
        cmd += ["--set", s]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env.pop("ARGUSRANK_CONFIG", None), env.pop("MLFLOW_TRACKING_URI", None), env.pop("MLFLOW_EXPERIMENT_ID", None)
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("pair_accuracy_base", "pair_accuracy_argus", "uplift_rel", "oracle_pair_accuracy"):
        assert 0.0 <= result[key] <= 1.0 if key != "uplift_rel" else -1.0 < result[key] < 1.0, key
    assert result["uplift_rel"] == pytest.approx(result["pair_accuracy_argus"] / result["pair_accuracy_base"] - 1)
    # the planted truth orders pairs better than any learned ranker
    assert result["oracle_pair_accuracy"] > max(result["pair_accuracy_base"], result["pair_accuracy_argus"])
    assert result["finetune_model_version"] > result["pretrain_model_version"]
    # what later commands rely on: dataset, tracking store + registry, vectors, Feast repo
    assert (home / "data" / "synth" / "events").is_dir()
    assert (home / "mlflow.db").is_file()
    assert any((home / "vectors" / "user_vectors").glob("*.parquet"))
    assert "uplift" in out.stderr
