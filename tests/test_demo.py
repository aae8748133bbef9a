"""`argusrank demo --no-serve --json` end to end on a tiny synthetic set: every stage runs for
real (Ray Train, MLflow registry, Ray Data export, Feast SQLite, XGBoost) and the last stdout
line is the uplift JSON contract."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.ray

TINY = [
    "data.synth.n_users=150", "data.synth.n_items=120", "data.synth.days=21", "data.test_days=5",
    "model.preset=tiny", "train.epochs=1", "finetune.epochs=1", "train.show_progress=false",
]


def _env() -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env.pop("ARGUSRANK_CONFIG", None), env.pop("MLFLOW_TRACKING_URI", None), env.pop("MLFLOW_EXPERIMENT_ID", None)
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "argusrank.platform.cli", "demo", "--no-serve", "--json", "--seed", "3",
           "--set", f"paths.home={home}"]
    for s in TINY:
        cmd += ["--set", s]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    return home, out


def test_demo_no_serve_json_runs_every_stage(demo_run):
    home, out = demo_run
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_direct_ingress_answers_and_stops_on_repeated_sigterm(demo_run, tmp_path):
    """`argusrank serve` on what the demo registered, fused + direct ingress: the printed replica URL answers,
    the proxy too; two SIGTERMs (a supervisor and `timeout` both signalling) still stop it cleanly."""
    home, out = demo_run
    assert out.returncode == 0, out.stderr[-4000:]
    port, direct = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "argusrank.platform.cli", "serve", "--port", str(port), "--set", f"paths.home={home}",
           "--set", "serve.topology=fused", "--set", "serve.ingress=direct", "--set", f"serve.direct_port={direct}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:  # until the start-up line (or the process ends)
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        started = "".join(lines)
        assert "Ctrl-C stops" in started, started
        url = re.search(r"no proxy hop\): (http://\S+)", started).group(1)
        # the first free port from serve.direct_port on (Ray's own processes may take the one picked here first)
        got = int(url.rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:") and direct <= got < direct + 64 and got != port
        body = {"user_id": 0, "k": 5}
        a = httpx.post(f"{url}/recommend", json=body, timeout=30)
        b = httpx.post(f"http://127.0.0.1:{port}/recommend", json=body, timeout=30)
        assert a.status_code == b.status_code == 200
        assert a.json()["items"] == b.json()["items"] and len(a.json()["items"]) == 5
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopping Serve" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
