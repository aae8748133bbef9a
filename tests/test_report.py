"""`argusrank report` on a small home built in seconds (MLflow runs + registry, no Ray), the ARGUS
pyfunc as models-from-code, and the page as headless Chromium renders it offline.
(test_demo.py checks the report of a real demo run.)"""
from __future__ import annotations

import json

import pytest
from browser import assert_offline, rendered_figures


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import mlflow

    from argusrank.features.io import read_metadata
    from argusrank.features.synth import synthesize
    from argusrank.models.argus import ArgusModel
    from argusrank.platform import registry
    from argusrank.platform.config import load_config
    from argusrank.platform.tracking import log_metrics, start_run
    from argusrank.platform.training.checks import model_config

    home = tmp_path_factory.mktemp("report_home")
    cfg = load_config(overrides={"paths.home": str(home), "model.preset": "tiny", "data.synth.n_users": 40,
                                 "data.synth.n_items": 30, "data.synth.days": 8}, env={})
    synthesize(cfg.data.synth, home / "data" / "synth", seed=0)
    model = ArgusModel(model_config(cfg, read_metadata(home / "data" / "synth")))
    for stage, init in (("pretrain", None), ("finetune", "1")):
        with start_run(cfg, stage, tags={"init": str(init)}, system_metrics=False):
            for epoch in (1, 2, 3):
                log_metrics({"loss": 3.0 / epoch, "ndcg@10": 0.05 * epoch}, step=epoch, prefix=f"{stage}/")
            log_metrics({"ndcg@10": 0.21, "recall@10": 0.3, "pair_accuracy": 0.61})
            registry.log_argus_model(cfg, model, tags={"stage": stage, **({"init_version": init} if init else {})})
    with start_run(cfg, "evaluate", tags={"model_ref": "popularity"}, system_metrics=False):
        log_metrics({"ndcg@10": 0.12, "recall@10": 0.2})
    sas = load_config(overrides={"paths.home": str(home), "model.kind": "sasrec"}, env={})
    with start_run(sas, "pretrain", system_metrics=False):
        log_metrics({"ndcg@10": 0.17})
    with start_run(cfg, "candidates", system_metrics=False):
        mlflow.log_dict({"merged": {"recall@100": 0.81, "recall@100_seen_filtered": 0.77}, "n_targets": 90},
                        "candidate_recall.json")
    with start_run(cfg, "ranker", system_metrics=False):
        mlflow.log_metrics({"pair_accuracy_base": 0.60, "pair_accuracy_argus": 0.63, "oracle_pair_accuracy": 0.71,
                            "uplift_rel": 0.05, "ndcg_base": 0.7, "ndcg_argus": 0.72})
    bench = home / "bench"
    bench.mkdir()
    (bench / "ann.json").write_text(json.dumps({"rows": [
        {"n_items": 1000, "index": "HNSW", "ef_search": 256, "build_s": 0.1, "recall": 0.96, "ms_per_query": 0.2,
         "p99_ms": 0.4}]}))
    (bench / "load_serve.json").write_text(json.dumps({"rows": [
        {"endpoint": "/recommend fused direct", "rate_rps": 100, "requests": 2000, "errors": 0, "throughput_rps": 100.0,
         "p50_ms": 6.9, "p95_ms": 8.2, "p99_ms": 9.7}]}))
    return cfg


def test_argus_pyfunc_is_models_from_code_with_signature_and_example(home):
    """The version loads by running the logged code (no pickled project object), answers its input example."""
    import mlflow
    from mlflow.models import Model

    from argusrank.platform import registry

    uri = f"models:/{home.mlflow.argus_model_name}/1"
    local = mlflow.artifacts.download_artifacts(uri)
    names = {p.name for p in __import__("pathlib").Path(local).rglob("*")}
    assert "python_model.pkl" not in names and "argus_pyfunc.py" in names, names
    info = Model.load(local)
    assert info.signature is not None and info.saved_input_example_info is not None
    pyfunc = mlflow.pyfunc.load_model(uri)
    out = pyfunc.predict(info.load_input_example(local))
    assert out.shape[0] == 3 and out.dtype.name == "float32"
    model, version = registry.load_argus(home, "1")
    assert version == 1 and hasattr(model, "item_vectors")


def test_report_has_every_section_and_renders_offline(home, tmp_path):
    from mlflow.tracking import MlflowClient

    from argusrank.platform.report import write_report

    path = write_report(home)
    assert path == home.paths.home / "report.html"
    page = path.read_text()
    assert_offline(page)
    for text in ("Dataset", "n_events", "pretrain", "finetune", "ARGUS fine-tuned", "popularity", "SASRec (ablation)",
                 "oracle (true affinity)", "5.0000 %", "HNSW", "recall@100_seen_filtered", "0.7700", "/recommend fused direct", "fine-tuned from argus v1",
                 "candidate"):
        assert text in page, text
    assert "not run: `argusrank scaling`" in page  # no scaling run: a note, not an error
    figures, failed = rendered_figures(path, tmp_path)
    assert failed == 0 and figures >= 5, (figures, failed)
    client = MlflowClient(tracking_uri=home.tracking_uri)
    exp = client.get_experiment_by_name(home.mlflow.experiment)
    (run,) = client.search_runs([exp.experiment_id], "tags.`argusrank.stage` = 'report'")
    assert "report.html" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_report_of_an_empty_home_says_what_to_run(tmp_path):
    from argusrank.platform.config import load_config
    from argusrank.platform.report import write_report

    cfg = load_config(overrides={"paths.home": str(tmp_path / "empty")}, env={})
    page = write_report(cfg, tmp_path / "r.html", log_to_mlflow=False).read_text()
    assert "no dataset yet" in page and "no training run yet" in page and "no registered model yet" in page
    assert "<img" not in page
