"""``argusrank report``: what the runs in a home produced, gathered from where they left it.

Reads only: the dataset's ``metadata.json``, the MLflow experiment's runs (the newest finished
run of each stage, by the ``argusrank.stage`` tag; ``candidates``: its ``candidate_recall.json``), the model registry (versions, aliases, tags,
source runs) and bench JSON files (``<home>/bench/*.json``: rows of ``bench/ann.py``,
``bench/load_serve.py``, or ``{preset, n_parameters, ...}`` scaling rows). A missing source
leaves its section with a note. :func:`write_report` renders ``platform/report_html.py``'s
page and logs it to MLflow as an artifact of a ``report`` run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from argusrank.platform.config import ArgusrankConfig

STAGE_TAG = "argusrank.stage"
#: evaluation columns shown (MLflow keys use ``_at_`` for ``@``)
EVAL_KEYS = ("ndcg@10", "recall@10", "ndcg@100", "recall@100", "mrr", "pair_accuracy")
UPLIFT_KEYS = ("pair_accuracy_base", "pair_accuracy_argus", "oracle_pair_accuracy", "argus_dot_pair_accuracy",
               "ndcg_base", "ndcg_argus", "uplift_rel", "n_train_requests", "n_test_requests", "dot_coverage",
               "pair_accuracy_dot", "ndcg_dot", "gap_closed")


def _unsafe(key: str) -> str:
    return key.replace("_at_", "@")


def _runs(cfg: ArgusrankConfig) -> list:
    from argusrank.platform.tracking import setup

    client = setup(cfg)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=1000))


def _latest(runs: list, stage: str, **params: str):
    for r in runs:
        if r.data.tags.get(STAGE_TAG) == stage and all(r.data.params.get(k) == v for k, v in params.items()):
            return r
    return None


def _metrics(run) -> dict[str, float]:
    return {_unsafe(k): v for k, v in run.data.metrics.items()}


def dataset_summary(cfg: ArgusrankConfig) -> dict[str, Any] | None:
    from argusrank.features.io import read_metadata

    path = cfg.paths.data_dir / cfg.data.format  # the demo's dataset (pipeline.dataset_dir)
    try:
        meta = read_metadata(path)
    except (FileNotFoundError, OSError, ValueError):
        return None
    out = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))}
    out["dataset"] = str(path)
    return out


def curves(cfg: ArgusrankConfig, run, stage: str) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of a training run's ``<stage>/...`` metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    out = {}
    for key in sorted(k for k in run.data.metrics if k.startswith(f"{stage}/")):
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        if hist:
            out[_unsafe(key.split("/", 1)[1])] = hist
    return out


def evaluation_rows(runs: list) -> list[dict[str, Any]]:
    """ARGUS after pre-training and fine-tuning, popularity and the SASRec ablation, where run."""
    picks = [("ARGUS pre-trained", _latest(runs, "pretrain", **{"model.kind": "argus"})),
             ("ARGUS fine-tuned", _latest(runs, "finetune")),
             ("popularity", next((r for r in runs if r.data.tags.get(STAGE_TAG) == "evaluate"
                                  and r.data.tags.get("model_ref") == "popularity"), None)),
             ("SASRec (ablation)", _latest(runs, "pretrain", **{"model.kind": "sasrec"}))]
    rows = []
    for name, run in picks:
        if run is None:
            continue
        m = _metrics(run)
        rows.append({"model": name, **{k: m.get(k) for k in EVAL_KEYS}, "run": run.info.run_id[:8]})
    return rows


def _artifact_json(cfg: ArgusrankConfig, run, path: str) -> Any:
    import mlflow

    try:
        return json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{path}"))
    except Exception:  # an artifact store without the file
        return None


def bench_rows(bench_dir: Path) -> dict[str, list[dict]]:
    """Rows of the bench JSON files under ``bench_dir`` by kind: recall, latency, scaling."""
    out: dict[str, list[dict]] = {"recall": [], "latency": [], "scaling": []}
    for f in sorted(Path(bench_dir).glob("*.json")) if Path(bench_dir).is_dir() else []:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for row in doc.get("rows", doc if isinstance(doc, list) else []):
            if not isinstance(row, dict):
                continue
            kind = ("recall" if "recall" in row and "ms_per_query" in row else
                    "latency" if "p99_ms" in row and "endpoint" in row else
                    "scaling" if "n_parameters" in row and "preset" in row else None)
            if kind:
                out[kind].append({**row, "source": f.name})
    return out


def model_versions(cfg: ArgusrankConfig, runs: list) -> list[dict[str, Any]]:
    """Every registered version of the ARGUS and ranker models with aliases, tags and source run."""
    from argusrank.platform.tracking import setup

    client = setup(cfg)
    by_id = {r.info.run_id: r for r in runs}
    out = []
    for name in (cfg.mlflow.argus_model_name, cfg.mlflow.ranker_model_name):
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            aliases = client.get_registered_model(name).aliases or {}  # search results carry no aliases
        except Exception:  # no registry yet
            continue
        for mv in sorted(versions, key=lambda v: int(v.version)):
            mv.aliases = sorted(a for a, v in aliases.items() if str(v) == str(mv.version))
            run = by_id.get(mv.run_id)
            tags = {k: v for k, v in (mv.tags or {}).items() if not k.startswith("eval.")}
            out.append({"model": name, "version": int(mv.version), "aliases": ", ".join(mv.aliases or []),
                        "source run": f"{run.info.run_name if run else '?'} ({(mv.run_id or '')[:8]})",
                        "stage": (run.data.tags.get(STAGE_TAG) if run else "") or tags.get("stage", ""),
                        "lineage": _lineage(tags), "created": mv.creation_timestamp})
    return out


def _lineage(tags: dict[str, str]) -> str:
    parts = []
    if tags.get("init_version") not in (None, "", "None"):
        parts.append(f"fine-tuned from argus v{tags['init_version']}")
    if tags.get("argus_model_version") not in (None, "", "None"):
        parts.append(f"trained on argus v{tags['argus_model_version']} vectors")
    rest = {k: v for k, v in tags.items() if k not in ("init_version", "argus_model_version", "run_dir", "stage")}
    parts += [f"{k}={v}" for k, v in sorted(rest.items())]
    return "; ".join(parts)


def collect(cfg: ArgusrankConfig, bench_dir: Path | None = None) -> dict[str, Any]:
    """Everything the page shows; absent parts are None / empty."""
    runs = _runs(cfg)
    pre = _latest(runs, "pretrain", **{"model.kind": "argus"})
    fine = _latest(runs, "finetune")
    ranker = _latest(runs, "ranker")
    scaling_run = _latest(runs, "scaling")
    bench = bench_rows(bench_dir or cfg.paths.home / "bench")
    scaling = (_artifact_json(cfg, scaling_run, "scaling.json") if scaling_run else None) or bench["scaling"]
    cand_run = _latest(runs, "candidates")
    cand = (_artifact_json(cfg, cand_run, "candidate_recall.json") if cand_run else None) or {}
    candidates = [{"source": k, **v} for k, v in cand.items() if isinstance(v, dict)]
    return {
        "home": str(cfg.paths.home), "tracking_uri": cfg.tracking_uri, "experiment": cfg.mlflow.experiment,
        "dataset": dataset_summary(cfg),
        "curves": {s: curves(cfg, r, s) for s, r in (("pretrain", pre), ("finetune", fine)) if r is not None},
        "evaluation": evaluation_rows(runs),
        "uplift": {k: _metrics(ranker).get(k) for k in UPLIFT_KEYS} if ranker else None,
        "scaling": scaling or [], "recall": bench["recall"], "latency": bench["latency"], "candidates": candidates,
        "versions": model_versions(cfg, runs),
    }


def write_report(cfg: ArgusrankConfig, out: Path | None = None, bench_dir: Path | None = None,
                 log_to_mlflow: bool = True) -> Path:
    """Render the report to ``out`` (default ``<home>/report.html``); log it to MLflow; return the path."""
    from argusrank.platform.report_html import render

    out = Path(out) if out else cfg.paths.home / "report.html"
    html = render(collect(cfg, bench_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    if log_to_mlflow:
        import mlflow

        from argusrank.platform.tracking import start_run

        with start_run(cfg, "report", system_metrics=False):
            mlflow.log_artifact(str(out))
    return out
