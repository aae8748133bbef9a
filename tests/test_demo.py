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
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from browser import rendered_figures
from serve_corpus import answer_items, assert_same_answer, check_bad_requests

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.synth.n_users=150", "data.synth.n_items=120", "data.synth.days=21", "data.test_days=5",
    "model.preset=tiny", "train.epochs=1", "finetune.epochs=1", "train.show_progress=false",
    # the ranker stage trains 2 rankers of 50 trees, not the ablation's 9 of 200 (XGBoost was ~60% of the stage)
    "ranker.ablation=false", "ranker.n_estimators=50",
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
    # quiet by default: argusrank's own output on the terminal, the libraries' logs in <home>/logs/
    assert f"{home / 'logs' / 'demo.log'}" in out.stderr.replace("\n", "")
    for noise in ("core_worker.cc", "CloudPickle", "input example", "INFO mlflow", "Downloading artifacts",
                  "RayTrainWorker", "logging_progress"):
        assert noise not in out.stderr, noise
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stderr.replace("\n", "")
    assert result["report"] == str(home / "report.html")
    recall = result["candidate_recall"]  # every source, on the temporal split
    assert set(recall) == {"popular", "tower", "nip", "merged"}
    for row in recall.values():
        assert 0.0 <= row["recall@100"] <= row["recall@500"] <= 1.0
        assert row["recall@100_seen_filtered"] <= row["recall@500_seen_filtered"]


def test_demo_report_shows_the_real_runs_and_every_figure_loads(demo_run, tmp_path):
    home, out = demo_run
    assert out.returncode == 0, out.stderr[-4000:]
    page = (home / "report.html").read_text()
    for text in ("ARGUS pre-trained", "ARGUS fine-tuned", "popularity", "oracle (true affinity)", "champion"):
        assert text in page, text
    figures, failed = rendered_figures(home / "report.html", tmp_path)
    assert failed == 0 and figures >= 4, (figures, failed)


def test_serve_run_of_the_repo_serve_yaml_answers_on_loopback(demo_run, tmp_path):
    """Ray Serve's own entry point: `serve run platform/serve.yaml` (the composed layout the file lists) on
    what the demo registered. The copy differs only in the proxy port (the repo file says 8000)."""
    home, out = demo_run
    assert out.returncode == 0, out.stderr[-4000:]
    conf = yaml.safe_load((ROOT / "platform" / "serve.yaml").read_text())
    assert conf["http_options"]["host"] == "127.0.0.1"
    port = _free_port()
    conf["http_options"]["port"] = port
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    serve_bin = os.path.join(os.path.dirname(sys.executable), "serve")
    env = {**_env(), "ARGUSRANK_HOME": str(home)}
    proc = subprocess.Popen([serve_bin, "run", str(tmp_path / "serve.yaml")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, r = time.time() + 360, None
        while time.time() < deadline and proc.poll() is None and (r is None or r.status_code != 200):
            try:  # the Ingress answers before the deployments behind it finished starting: retry /recommend
                r = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": 0, "k": 5}, timeout=60)
            except httpx.HTTPError:
                time.sleep(3)
        assert r is not None and r.status_code == 200, f"serve run did not answer (exit code {proc.poll()})"
        assert len(r.json()["items"]) == 5
        assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=30).json()["topology"] == "composed"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # serve run shuts Serve and its Ray down on Ctrl-C
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_direct_ingress_answers_and_stops_on_repeated_sigterm(demo_run, tmp_path):
    """`argusrank serve` on what the demo registered, fused + direct ingress: the printed replica URL answers like
    the proxy and like the in-process pipeline, hostile requests get their 4xx; two SIGTERMs (a supervisor and `timeout` both signalling) still stop it cleanly."""
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
        # the replica (direct) and the proxy answer alike, and like the whole path run in this process
        from argusrank.features import store
        from argusrank.platform.config import load_config
        from argusrank.platform.serving.flow import InProcessPipeline

        cfg = load_config(env={}, overrides={"paths.home": str(home)})
        pipe, as_of = InProcessPipeline(cfg), float(time.time())
        body = {"user_id": 0, "k": 5, "as_of": as_of}
        a = httpx.post(f"{url}/recommend", json=body, timeout=30)
        b = httpx.post(f"http://127.0.0.1:{port}/recommend", json=body, timeout=30)
        assert a.status_code == b.status_code == 200
        assert a.json()["items"] == b.json()["items"] and len(a.json()["items"]) == 5
        assert_same_answer(answer_items(a.json()), answer_items(pipe.recommend(0, 5, as_of=as_of)))
        given = list(range(1, 13))
        ranked = httpx.post(f"{url}/rank", json={"user_id": 1, "item_ids": given, "as_of": as_of}, timeout=30)
        assert_same_answer(answer_items(ranked.json()), answer_items(pipe.rank(1, given, as_of=as_of)))
        with httpx.Client(base_url=url, timeout=30) as direct:  # hostile requests: 4xx naming the field
            check_bad_requests(direct, {"user_id": 1, "k": 5}, rounds=1)
        # POST /events: the valid event is kept (and moves user 0's vector in the online store), the bad one named
        before = store.read_user_vectors(cfg, [0])[0]
        t = int(json.loads((home / "data" / "synth" / "metadata.json").read_text())["max_timestamp"]) + 60
        events = {"events": [{"user_id": 0, "item_id": 3, "timestamp": t, "played_ratio": 1.0, "liked": True},
                             {"user_id": 0, "item_id": "x", "timestamp": t}]}
        r = httpx.post(f"{url}/events", json=events, timeout=120)
        assert r.status_code == 207, r.text
        assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["reason"].startswith("item_id")
        assert r.json()["vectors"][0]["event_timestamp"] == t
        assert not np.allclose(store.read_user_vectors(cfg, [0])[0], before)
        assert httpx.post(f"{url}/events", json={"events": [{"user_id": -1}]}, timeout=30).status_code == 422
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopping Serve" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_feast_cli_reads_and_materializes_the_generated_feature_repo(demo_run):
    """Feast's own CLI on `<home>/feature_repo` as the demo left it: `apply` (its definitions.py declares the
    same objects, so nothing is removed), lists the views, `materialize-incremental` (nothing new: exit 0)."""
    home, out = demo_run
    assert out.returncode == 0, out.stderr[-4000:]
    feast = [os.path.join(os.path.dirname(sys.executable), "feast"), "-c", str(home / "feature_repo")]
    applied = subprocess.run([*feast, "apply"], env=_env(), capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr[-2000:]  # the repo's own definitions: nothing removed
    from feast import FeatureStore  # the registry the CLI wrote, read as a ranking service's Feast client would

    listed = {v.name for v in FeatureStore(repo_path=str(home / "feature_repo")).list_feature_views()}
    assert {"user_vectors", "item_vectors", "user_nip_vectors", "item_nip_vectors", "user_fp_vectors", "item_fp_vectors",
            "user_stats"} <= listed, listed
    inc = subprocess.run([*feast, "materialize-incremental", "2030-01-01T00:00:00"], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert inc.returncode == 0, inc.stderr[-2000:]
