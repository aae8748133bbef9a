"""The ``argusrank`` command line: thin wrappers around plain stage functions.

Heavy imports (torch, ray, feast, mlflow) happen inside the commands so that
``argusrank --help`` stays fast. Every command takes ``--config`` (YAML) and
repeatable ``--set key.sub=value`` overrides; see ``platform/config.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from argusrank.platform import cli_train
from argusrank.platform.cli_common import (COMMAND, ConfigOpt, DataOpt, JsonOpt, SetOpt, VerboseOpt, dataset, emit, fail,
                                           load_cli_config)
from argusrank.platform.cli_data import data_app
from argusrank.platform.logs import ENV_VERBOSE, captured

app = typer.Typer(add_completion=False, no_args_is_help=True, help="argusrank: ARGUS features for your XGBoost ranker.")


@app.callback()
def main(ctx: typer.Context, verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Every command: show Ray's, MLflow's, Feast's and Serve's logs here "
        "(default: in <home>/logs/<command>.log).")) -> None:
    """argusrank: ARGUS features for your XGBoost ranker."""
    COMMAND[0] = ctx.invoked_subcommand or ""
    if verbose:
        import os

        os.environ[ENV_VERBOSE] = "1"

app.add_typer(data_app, name="data")
for _name in ("pretrain", "finetune", "evaluate", "promote", "quality", "scaling"):
    app.command(_name)(getattr(cli_train, f"{_name}_cmd"))

@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the effective configuration as YAML."""
    typer.echo(load_cli_config(config, set_).to_yaml())


ranker_app = typer.Typer(no_args_is_help=True, help="The XGBoost final ranker with / without the ARGUS feature.")
app.add_typer(ranker_app, name="ranker")


@app.command("export")
def export_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    model: str = typer.Option("candidate", "--model", "-m", help="Registry alias or version of the ARGUS model."),
    as_of: Optional[list[int]] = typer.Option(None, "--as-of", help="Snapshot time(s), seconds (repeatable); "
                                               "default daily from the split time T through the data end."),
    lag_s: int = typer.Option(0, "--lag-s", help="User state as of as_of - lag_s."),
    as_json: bool = JsonOpt,
) -> None:
    """Batch-export user + item vectors (Ray Data) and baseline features as offline parquet."""
    from argusrank.platform.export import export_vectors

    cfg = load_cli_config(config, set_)
    with captured():
        res = export_vectors(cfg, dataset(cfg, data), model_ref=model, as_of=as_of or None, lag_s=lag_s)
    emit(res, as_json, "export")


@app.command("materialize")
def materialize_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    full: bool = typer.Option(False, "--full", help="Reload every offline row, not only new ones."),
    as_json: bool = JsonOpt,
) -> None:
    """Feast apply + incremental materialization into the online store (SQLite, or Redis)."""
    from argusrank.features.store import materialize

    cfg = load_cli_config(config, set_)
    with captured():
        res = materialize(cfg, full=full)
    res.update({f"{v}_rows_per_s": r.get("rows_per_s", 0) for v, r in res.pop("views").items()})
    emit(res, as_json, "materialize")


@ranker_app.command("train")
def ranker_train_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the ranker with and without the ARGUS features (ranker.argus_features; ranker.ablation: each alone);
    print PairAccuracy, NDCG and uplift."""
    from argusrank.features.vectors import VectorVersionMismatch
    from argusrank.platform.ranker_job import train_rankers

    cfg = load_cli_config(config, set_)
    try:
        with captured():
            res = train_rankers(cfg, dataset(cfg, data))
    except (VectorVersionMismatch, ValueError) as exc:
        raise fail(f"ranker train: {exc}", 1)
    from argusrank.platform.logs import console
    from argusrank.platform.pipeline import uplift_table

    console.print(uplift_table(res))
    res.update({f"ablation.{k}": v["pair_accuracy"] for k, v in res.pop("ablation", {}).items()})
    res["argus_features"] = ",".join(res.get("argus_features", []))
    emit(res, as_json, "final ranker (held-out requests)")

# --- serving commands ---------------------------------------------------------------------
@app.command("serve")
def serve_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    host: Optional[str] = typer.Option(None, help="Bind address (default serve.host: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="HTTP port (default serve.port: 8000)."),
    verbose: bool = VerboseOpt,
) -> None:
    """Serve /recommend, /rank, /healthz, /version with Ray Serve (foreground; Ctrl-C stops).

    Serves the ranker behind the registry alias (serve.ranker_alias) and the vectors of the
    ARGUS version it was trained with: what the last `argusrank demo` / pipeline registered.
    Replicas and autoscaling come from platform/serve.yaml. Default (one node, lowest latency):
    serve.topology=fused + serve.ingress=direct (the proxy keeps --port; replicas also answer on
    8001+). The cluster layout: --set serve.topology=composed --set serve.ingress=proxy.
    """
    cfg = load_cli_config(config, set_, verbose=verbose, **{"serve.host": host, "serve.port": port})
    from argusrank.platform.serving.bundle import NothingToServe, resolve_bundle

    try:
        bundle = resolve_bundle(cfg)
    except NothingToServe as exc:
        raise fail(f"nothing to serve yet: {exc}", 1)
    typer.echo(f"serving ranker v{bundle.ranker_version} + ARGUS v{bundle.argus_version} "
               f"on http://{cfg.serve.host}:{cfg.serve.port} (starting Ray Serve...)")
    from argusrank.platform.serving.run import start_serving

    start_serving(cfg, blocking=True)


@app.command("report")
def report_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write it (default <home>/report.html)."),
    bench: Optional[Path] = typer.Option(None, "--bench", help="Folder of bench JSON files (default <home>/bench)."),
    verbose: bool = VerboseOpt,
) -> None:
    """One self-contained HTML page (opens offline): dataset, curves, evaluation, uplift, recall,
    scaling, latency, model versions and lineage; also logged to MLflow."""
    from argusrank.platform.logs import console
    from argusrank.platform.report import write_report

    cfg = load_cli_config(config, set_, verbose=verbose)
    with captured():
        path = write_report(cfg, out, bench)
    console.print(f"report: {path}")
    typer.echo(str(path))


# --- demo: the main job --------------------------------------------------------------------
@app.command("demo")
def demo(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    seed: Optional[int] = typer.Option(None, help="Seed for data, training and ranker."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start Ray Serve at the end and keep it answering."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on the last stdout line."),
    verbose: bool = VerboseOpt,
) -> None:
    """The main job end to end on embedded defaults: synthetic data -> ARGUS pre-training and
    fine-tuning (Ray Train) -> vector export -> Feast materialization -> XGBoost ranker uplift
    -> report (<home>/report.html) -> Ray Serve endpoint."""
    import json as _json

    from argusrank.platform import pipeline
    from argusrank.platform.report import write_report

    cfg = load_cli_config(config, set_, verbose=verbose, seed=seed)
    results = pipeline.run_pipeline(cfg)
    pipeline.console.print(pipeline.data_table(results["data"]))
    pipeline.console.print(pipeline.uplift_table(results["ranker"]))
    summary = pipeline.demo_summary(results)
    with captured():
        summary["report"] = str(write_report(cfg))
    if serve:
        summary["serve_url"] = pipeline.serve_and_probe(cfg)
    pipeline.console.print(f"\n[bold]Report:[/bold] {summary['report']} (open it in a browser; works offline)")
    pipeline.console.print(pipeline.mlflow_ui_hint(cfg), highlight=False)
    if as_json:
        typer.echo(_json.dumps(summary))
    if serve:
        from argusrank.platform.serving.run import serve_until_stopped

        serve_until_stopped()  # the driver keeps the local Ray and Serve alive until Ctrl-C / SIGTERM


if __name__ == "__main__":  # pragma: no cover
    app()
