"""The main job: synth -> pretrain -> finetune -> export -> materialize -> ranker -> serve.

Each stage is a plain function of the config that lives in its own module; this
module only sequences them and prints what a user needs to see. ``argusrank
demo`` and the ``mlflow run`` entry points are thin wrappers around it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from argusrank.platform import logs
from argusrank.platform.config import ArgusrankConfig

console = logs.console

STAGES = ("data", "pretrain", "finetune", "popularity", "export", "candidates", "materialize", "ranker")


def dataset_dir(cfg: ArgusrankConfig) -> Path:
    """Where the demo's dataset lives (``<home>/data/<format>``)."""
    return cfg.dataset_dir


def stage_data(cfg: ArgusrankConfig) -> dict[str, Any]:
    """Generate (synth) or import the dataset; returns its summary."""
    from argusrank.features.sources import build_dataset

    return build_dataset(cfg.data.format, cfg.data.source, dataset_dir(cfg), cfg.data.synth, cfg.seed,
                         user_buckets=cfg.data.user_buckets)


def stage_pretrain(cfg: ArgusrankConfig) -> dict[str, Any]:
    from argusrank.platform.training.jobs import run_pretrain

    return run_pretrain(cfg, dataset_dir(cfg))


def stage_finetune(cfg: ArgusrankConfig) -> dict[str, Any]:
    from argusrank.platform.training.jobs import run_finetune

    return run_finetune(cfg, dataset_dir(cfg), init="candidate")


def stage_popularity(cfg: ArgusrankConfig) -> dict[str, Any]:
    """The popularity baseline on the same split (an ``evaluate`` run the report shows beside ARGUS)."""
    from argusrank.platform.training.evaluate import evaluate

    return evaluate(cfg, dataset_dir(cfg), "popularity", protocol="temporal", negatives=cfg.eval.negatives)


def stage_export(cfg: ArgusrankConfig) -> dict[str, Any]:
    from argusrank.platform.export import export_vectors

    return export_vectors(cfg, dataset_dir(cfg), model_ref="candidate")


def stage_candidates(cfg: ArgusrankConfig) -> dict[str, Any]:
    """Candidate recall per source of the exported vectors (logged to MLflow, run ``candidates``)."""
    from argusrank.platform.tracking import log_metrics, start_run
    from argusrank.platform.training.candidate_recall import recall_of_registered, recall_table

    recall = recall_of_registered(cfg, dataset_dir(cfg), "candidate")
    with start_run(cfg, "candidates"):
        import mlflow

        for source, row in recall.items():
            if isinstance(row, dict):
                log_metrics(row, prefix=f"{source}.")
        mlflow.log_dict(recall, "candidate_recall.json")
    console.print(recall_table(recall))
    return recall


def stage_materialize(cfg: ArgusrankConfig) -> dict[str, Any]:
    from argusrank.features.store import materialize

    return materialize(cfg)


def stage_ranker(cfg: ArgusrankConfig) -> dict[str, Any]:
    from argusrank.platform.ranker_job import train_rankers

    return train_rankers(cfg, dataset_dir(cfg))


STAGE_FUNCS: dict[str, Callable[[ArgusrankConfig], dict[str, Any]]] = {
    "data": stage_data,
    "pretrain": stage_pretrain,
    "finetune": stage_finetune,
    "popularity": stage_popularity,
    "export": stage_export,
    "candidates": stage_candidates,
    "materialize": stage_materialize,
    "ranker": stage_ranker,
}


def run_pipeline(cfg: ArgusrankConfig, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Run the stages in order; returns ``{stage: result}`` plus ``seconds``."""
    results: dict[str, Any] = {}
    for name in stages:
        console.rule(f"[bold]argusrank: {name}")
        t0 = time.perf_counter()
        with logs.captured():  # libraries' prints to stdout (Feast's apply, ...) go to the log in quiet mode
            results[name] = STAGE_FUNCS[name](cfg)
        console.print(f"[green]{name} done in {time.perf_counter() - t0:.1f}s")
    return results


def uplift_table(ranker: dict[str, Any]) -> Table:
    """The deployment metric: final-ranker PairAccuracy with vs without the ARGUS features, and the ablation."""
    t = Table(title="XGBoost final ranker on the held-out requests")
    for col in ("ranker", "PairAccuracy", "uplift", "NDCG"):
        t.add_column(col)
    nan = float("nan")
    t.add_row("baseline features", f"{ranker['pair_accuracy_base']:.4f}", "", f"{ranker.get('ndcg_base', nan):.4f}")
    labels = {"dot": "+ argus_dot", "all": "+ every ARGUS feature"}
    for name, row in (ranker.get("ablation") or {}).items():
        if name not in ("base", "argus"):
            label = labels.get(name, f"+ argus_dot {name}")
            t.add_row(label, f"{row['pair_accuracy']:.4f}", f"{row['uplift_rel'] * 100:+.2f}%", f"{row['ndcg']:.4f}")
    t.add_row(f"[bold]ARGUS ranker[/] (+ {', '.join(ranker.get('argus_features', ['argus_dot']))})",
              f"{ranker['pair_accuracy_argus']:.4f}", f"{ranker['uplift_rel'] * 100:+.2f}%",
              f"{ranker.get('ndcg_argus', nan):.4f}")
    if ranker.get("oracle_pair_accuracy") is not None:
        t.add_row("oracle (true affinity)", f"{ranker['oracle_pair_accuracy']:.4f}", "", "")
    t.caption = f"relative PairAccuracy uplift: {ranker['uplift_rel'] * 100:+.2f}%" + (
        f"; the ARGUS ranker closes {ranker['gap_closed'] * 100:.0f}% of the gap from baseline to oracle"
        if ranker.get("gap_closed") is not None else "")
    return t


def demo_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable line of ``argusrank demo --json``."""
    r = results["ranker"]
    out = {k: r[k] for k in ("pair_accuracy_base", "pair_accuracy_argus", "uplift_rel", "oracle_pair_accuracy")}
    out.update({k: r[k] for k in ("ndcg_base", "ndcg_argus", "pair_accuracy_dot", "uplift_rel_dot", "gap_closed",
                                  "argus_features", "train_on", "final_ndcg@10", "final_ndcg@10_seen_filtered",
                                  "final_ndcg@10_source_order")
                if k in r})
    if r.get("ablation"):
        out["ablation"] = {name: row["pair_accuracy"] for name, row in r["ablation"].items()}
    for stage in ("pretrain", "finetune"):
        if isinstance(results.get(stage), dict) and "model_version" in results[stage]:
            out[f"{stage}_model_version"] = results[stage]["model_version"]
    if results.get("candidates"):
        out["candidate_recall"] = {k: v for k, v in results["candidates"].items() if isinstance(v, dict)}
    return json.loads(json.dumps(out, default=str))


def data_table(summary: dict[str, Any]) -> Table:
    """Print the dataset summary (whatever scalar stats the data stage reports)."""
    t = Table(title="dataset")
    t.add_column("stat")
    t.add_column("value")
    for k, v in summary.items():
        if isinstance(v, (int, float, str, bool)):
            t.add_row(str(k), f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    return t


def mlflow_ui_hint(cfg: ArgusrankConfig, port: int = 5000) -> str:
    """How to open the MLflow UI on this home's store, and what to look at."""
    store = cfg.tracking_uri
    if not store.startswith("sqlite:"):
        return f"MLflow UI: open the tracking server {store} (experiment {cfg.mlflow.experiment!r})"
    return (f"MLflow UI: mlflow ui --backend-store-uri {store} --default-artifact-root "
            f"{(cfg.paths.home / 'mlartifacts').as_uri()} --port {port}  -> http://127.0.0.1:{port}\n"
            f"  experiment {cfg.mlflow.experiment!r}: runs pretrain/finetune (curves under Model metrics, "
            "System metrics, plots/ artifacts), ranker (uplift);\n"
            f"  Models: {cfg.mlflow.argus_model_name!r} (aliases candidate/champion) and "
            f"{cfg.mlflow.ranker_model_name!r} with their source runs")


def probe_fresh_vectors(url: str, body: dict, before: dict, t: int) -> None:
    """Post a few events for the sample user (three of the items just recommended, skipped, and a like of the
    last one), then ask again: the answer moves with the fresh vector, and says when it was computed."""
    import httpx

    items = [it["item_id"] for it in before.get("items", [])][:4]
    if len(items) < 4:
        return
    events = [{"user_id": body["user_id"], "item_id": i, "timestamp": t + 60 * (k + 1), "is_organic": False,
               "surface": "feed", "played_ratio": 0.05} for k, i in enumerate(items[:3])]
    events.append({"user_id": body["user_id"], "item_id": items[3], "timestamp": t + 240, "is_organic": False,
                   "surface": "feed", "played_ratio": 1.0, "liked": True})
    posted = httpx.post(f"{url}/events", json={"events": events}, timeout=120)
    console.print(f"[bold]POST {url}/events[/bold] (3 skips of the top items, 1 like) -> {posted.status_code}")
    if posted.status_code != 200:
        console.print(posted.text)
        return
    vec = posted.json()["vectors"][0]
    after = httpx.post(f"{url}/recommend", json=body, timeout=30).json()
    console.print(f"fresh user vector: model version {vec['model_version']}, as of event time {vec['event_timestamp']}")
    console.print(f"top-10 before: {[it['item_id'] for it in before['items']]}")
    console.print(f"top-10 after:  {[it['item_id'] for it in after['items']]}")


def serve_and_probe(cfg: ArgusrankConfig) -> str:
    """Start the Serve app (non-blocking) and print one sample ``/recommend`` call."""
    import httpx

    from argusrank.features.io import read_events, read_metadata
    from argusrank.platform.serving.run import start_serving

    if cfg.serve.as_of is None and cfg.data.format == "synth":
        # synthetic events are dated in the past: replay requests at the end of the data so
        # recency/window features mean what they meant offline (documented in the README)
        cfg.serve.as_of = float(read_metadata(dataset_dir(cfg))["max_timestamp"])
    url = start_serving(cfg, blocking=False)

    user = int(read_events(dataset_dir(cfg), columns=["user_id"]).column("user_id")[0].as_py())
    body = {"user_id": user, "k": 10}
    resp = httpx.post(f"{url}/recommend", json=body, timeout=30)
    console.print(f"[bold]POST {url}/recommend {json.dumps(body)}[/bold] -> {resp.status_code}")
    console.print_json(resp.text)
    probe_fresh_vectors(url, body, resp.json(), int(read_metadata(dataset_dir(cfg))["max_timestamp"]))
    console.print(
        f"\n[bold green]Serving on {url}[/]  try:\n"
        f"  curl -s -X POST {url}/recommend -H 'content-type: application/json' -d '{json.dumps(body)}'\n"
        f"  curl -s {url}/version\n(Ctrl-C stops it)"
    )
    if cfg.serve.ingress == "direct":
        from argusrank.platform.serving.run import direct_urls

        console.print(f"Ingress replicas answer directly too (serve.ingress=direct, no proxy hop): "
                      f"{' '.join(direct_urls(cfg))}")
    return url

