"""The ``argusrank`` command line: thin wrappers around plain stage functions.

Heavy imports (torch, ray, feast, mlflow) happen inside the commands so that
``argusrank --help`` stays fast. Every command takes ``--config`` (YAML) and
repeatable ``--set key.sub=value`` overrides; see ``platform/config.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from argusrank.platform.config import ArgusrankConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="argusrank: ARGUS features for your XGBoost ranker.")
data_app = typer.Typer(no_args_is_help=True, help="Import, synthesize and inspect event data.")
app.add_typer(data_app, name="data")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (default: $ARGUSRANK_CONFIG or built-in defaults).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config field, e.g. --set train.epochs=3 (repeatable).")


def _config(config: Optional[Path], sets: Optional[list[str]], **extra) -> ArgusrankConfig:
    """Load the config and apply explicit CLI flags (``extra``: dotted key -> value, None ignored)."""
    overrides = {k: v for k, v in extra.items() if v is not None}
    try:
        cfg = load_config(config, list(sets or []))
        if overrides:
            tree = cfg.model_dump()
            for key, value in overrides.items():
                node = tree
                *parents, leaf = key.split(".")
                for p in parents:
                    node = node[p]
                node[leaf] = value
            cfg = ArgusrankConfig.model_validate(tree)
    except Exception as exc:  # pydantic ValidationError names the field
        typer.secho(f"invalid configuration: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    return cfg


@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the effective configuration as YAML."""
    typer.echo(_config(config, set_).to_yaml())


# --- data commands: see features/ (importers, synth) --------------------------------------
def _print_summary(title: str, meta: dict, extra_keys: tuple[str, ...] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = ("format", "input_rows", "accepted", "rejected", "n_events", "n_users", "n_items", "n_requests",
            "min_timestamp", "max_timestamp", "n_out_of_order", "event_types") + extra_keys
    table = Table(title=title, show_header=False)
    for k in keys:
        if k in meta:
            table.add_row(k, str(meta[k]))
    for reason, count in (meta.get("rejected_by_reason") or {}).items():
        table.add_row("rejected: " + reason, str(count))
    Console().print(table)


@data_app.command("import")
def data_import(
    src: Optional[Path] = typer.Argument(None, help="Source file or folder (movielens-100k: optional wheel/.inter)."),
    fmt: str = typer.Option(..., "--format", "-f", help="yambda | movielens | sasrec | movielens-100k"),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Download cache (default ~/.cache/argusrank)."),
) -> None:
    """Import a public log; prints accepted/rejected counts (exit 1: nothing valid, 2: unusable input)."""
    from rich.console import Console

    from argusrank.features.importers import FORMATS, import_dataset
    from argusrank.features.validate import NoValidEvents, SchemaError

    if fmt not in FORMATS:
        typer.secho(f"--format: unknown format {fmt!r}; one of {', '.join(FORMATS)}", fg="red", err=True)
        raise typer.Exit(2)
    if src is None and fmt != "movielens-100k":
        typer.secho(f"SRC is required for --format {fmt}", fg="red", err=True)
        raise typer.Exit(2)
    try:
        with Console(stderr=True).status(f"importing {fmt} from {src or 'recbole wheel'} ..."):
            meta = import_dataset(fmt, src, out, cache_dir=cache_dir)
    except NoValidEvents as exc:
        typer.secho(f"error: {exc} (rejected rows in {out / 'rejected'})", fg="red", err=True)
        raise typer.Exit(1)
    except (SchemaError, FileNotFoundError, RuntimeError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"accepted {meta['accepted']} rejected {meta['rejected']} -> {out}")
    _print_summary(f"{fmt} -> {out}", meta)


@data_app.command("synth")
def data_synth(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Dataset directory (default <home>/data/synth)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: config seed)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Generate a synthetic dataset with planted truth (size: --set data.synth.n_users=...)."""
    from rich.console import Console

    from argusrank.features.synth import synthesize

    cfg = _config(config, set_, seed=seed)
    out = out or cfg.paths.data_dir / "synth"
    with Console(stderr=True).status(f"generating {cfg.data.synth.n_users} users ..."):
        meta = synthesize(cfg.data.synth, out, seed=cfg.seed)
    typer.echo(f"synth: {meta['n_events']} events, {meta['truth']['n_impressions']} impressions -> {out}")
    _print_summary(f"synth -> {out}", meta)


@data_app.command("info")
def data_info(dataset_dir: Path = typer.Argument(..., help="A dataset directory.")) -> None:
    """Summarize a dataset directory (metadata, history lengths, feedback grades)."""
    import numpy as np

    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events, read_metadata

    try:
        meta = read_metadata(dataset_dir)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    if meta.get("n_events", 0):
        hist = build_histories(read_events(dataset_dir))
        lens = hist.lengths
        meta["history_length (min/median/max)"] = f"{lens.min()}/{int(np.median(lens))}/{lens.max()}"
        grades = np.bincount(hist.grade.astype(np.int64) + 1, minlength=4)
        meta["grades (dislike/skip/listen/like)"] = "/".join(str(g) for g in grades)
    _print_summary(str(dataset_dir), meta, ("history_length (min/median/max)", "grades (dislike/skip/listen/like)"))

# --- training commands: see platform/train_*.py ------------------------------------------
# pretrain, finetune, evaluate, promote, quality, scaling (training platform, issue 4):
# thin wrappers around platform/train.py, evaluate.py, registry.py, quality.py.
DataOpt = typer.Option(None, "--data", "-d", help="Dataset directory (default: <home>/data/<data.format>).")
JsonOpt = typer.Option(False, "--json", help="Print the result as one JSON object on the last stdout line.")


def _dataset(cfg: ArgusrankConfig, data: Optional[Path]) -> Path:
    from argusrank.platform.pipeline import dataset_dir

    return Path(data) if data else dataset_dir(cfg)


def _emit(result: dict, as_json: bool, title: str) -> None:
    """Metrics as a rich table on stderr; with --json also one JSON line on stdout."""
    import json as _json

    from rich.console import Console

    from argusrank.platform.evaluate import metrics_table

    flat = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
    flat.update({k: v for k, v in result.get("metrics", {}).items() if isinstance(v, (int, float, str))})
    Console(stderr=True).print(metrics_table(flat, title))
    if as_json:
        typer.echo(_json.dumps(flat, default=str))


def _train_stage(fn, *args, **kwargs) -> dict:
    from argusrank.platform.train import ConfigError

    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        typer.secho(f"invalid configuration: {exc}", fg="red", err=True)
        raise typer.Exit(2)


@app.command("pretrain")
def pretrain_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    protocol: Optional[str] = typer.Option(None, help="Training split: temporal (default) or loo."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the model (alias candidate)."),
    as_json: bool = JsonOpt,
) -> None:
    """Pre-train ARGUS (NIP + FP) with Ray Train; evaluate, log and register it in MLflow."""
    from argusrank.platform.train import run_pretrain

    cfg = _config(config, set_, **{"eval.protocol": protocol})
    res = _train_stage(run_pretrain, cfg, _dataset(cfg, data), register=register)
    _emit(res, as_json, "pre-training")


@app.command("finetune")
def finetune_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    init: str = typer.Option("candidate", help="Registry alias or version to start from; 'none' = from scratch."),
    register: bool = typer.Option(True, "--register/--no-register"),
    as_json: bool = JsonOpt,
) -> None:
    """Pairwise fine-tuning (one pass, lagged user states) with Ray Train; registers the result."""
    from argusrank.platform.train import run_finetune

    cfg = _config(config, set_)
    res = _train_stage(run_finetune, cfg, _dataset(cfg, data), init=None if init.lower() == "none" else init,
                       register=register)
    _emit(res, as_json, "fine-tuning")


@app.command("evaluate")
def evaluate_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    model: str = typer.Option("candidate", "--model", "-m", help="Alias, version, or 'popularity' (baseline)."),
    protocol: Optional[str] = typer.Option(None, help="temporal | loo (default eval.protocol)."),
    negatives: Optional[str] = typer.Option(None, help="100 | all (default eval.negatives)."),
    filter_seen: Optional[bool] = typer.Option(None, "--filter-seen/--keep-seen", help="Full-catalog ranking: drop the user's earlier items."),
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate a registered model: temporal split (NIP/FP losses, Recall/NDCG@K, PairAccuracy)
    or leave-one-out (HR/NDCG@K, 100 sampled negatives or the full catalog)."""
    from argusrank.platform.evaluate import evaluate

    cfg = _config(config, set_, **{"eval.protocol": protocol, "eval.negatives": negatives,
                                  "eval.filter_seen": filter_seen})
    try:
        res = evaluate(cfg, _dataset(cfg, data), model, protocol=cfg.eval.protocol, negatives=cfg.eval.negatives)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        typer.secho(f"evaluate: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    _emit(res, as_json, f"evaluation of {model} ({cfg.eval.protocol})")


@app.command("promote")
def promote_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    version: Optional[int] = typer.Option(None, help="Version to promote (default: the candidate)."),
    force: bool = typer.Option(False, "--force", help="Promote even if it does not beat the champion."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Re-evaluate both versions on this dataset first."),
    as_json: bool = JsonOpt,
) -> None:
    """Alias ``champion`` the candidate (or --version) if its evaluation beats the current champion."""
    import json as _json

    from argusrank.platform.registry import promote

    cfg = _config(config, set_)
    try:
        res = promote(cfg, version=version, force=force, dataset_dir=data)
    except (LookupError, ValueError) as exc:
        typer.secho(f"promote: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    color = "green" if res["promoted"] else "yellow"
    typer.secho(f"{'promoted' if res['promoted'] else 'not promoted'}: version {res['version']} ({res['reason']})",
                fg=color, err=True)
    if as_json:
        typer.echo(_json.dumps(res, default=str))


@app.command("quality")
def quality_cmd(
    src: Optional[Path] = typer.Argument(None, help="Source file/dir (movielens-100k downloads itself; synth needs none)."),
    fmt: str = typer.Option(..., "--format", help="movielens-100k | movielens | sasrec | yambda | synth"),
    model: str = typer.Option("argus", "--model", help="argus | sasrec"),
    protocol: str = typer.Option("temporal", "--protocol", help="temporal | loo"),
    negatives: str = typer.Option("all", "--negatives", help="100 | all"),
    seed: int = typer.Option(0, "--seed"),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model size preset (default: the quality default, tiny widened to d_model=64; see bench/README.md)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: 20)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop training after this many seconds."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a dataset, train ARGUS or SASRec on it and evaluate: the benchmark command."""
    import json as _json

    import yaml

    from argusrank.platform.quality import run_quality

    if epochs is not None and time_budget is not None:
        typer.secho("quality: give --epochs or --time-budget, not both", fg="red", err=True)
        raise typer.Exit(2)
    if negatives not in ("100", "all"):
        typer.secho(f"quality: --negatives must be 100 or all, got {negatives!r}", fg="red", err=True)
        raise typer.Exit(2)
    cfg = _config(config, None)
    user = {}
    for item in set_ or []:
        if "=" not in item:
            typer.secho(f"invalid configuration: --set {item!r} must look like key=value", fg="red", err=True)
            raise typer.Exit(2)
        k, v = item.split("=", 1)
        user[k] = yaml.safe_load(v)
    try:
        res = _train_stage(run_quality, cfg, fmt, src, model=model, protocol=protocol, negatives=negatives, seed=seed,
                           preset=preset, epochs=epochs, time_budget_s=time_budget, user_overrides=user)
    except ValueError as exc:
        typer.secho(f"quality: {exc}", fg="red", err=True)
        raise typer.Exit(2)
    _emit(res, False, f"quality: {model} on {fmt} ({protocol}, negatives={negatives})")
    if as_json:
        typer.echo(_json.dumps(res, default=str))


@app.command("scaling")
def scaling_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    presets: str = typer.Option("tiny,xs,s", help="Comma-separated model presets, smallest first."),
    out: Optional[Path] = typer.Option(None, "--out", help="Plot file (default <home>/scaling.png)."),
    protocol: Optional[str] = typer.Option(None, help="temporal | loo (default eval.protocol)."),
    as_json: bool = JsonOpt,
) -> None:
    """Train several presets on the same data; plot quality vs log(parameters) (file + MLflow)."""
    import json as _json

    from argusrank.platform.quality import run_scaling

    cfg = _config(config, set_, **{"eval.protocol": protocol})
    out = out or cfg.paths.home / "scaling.png"
    rows = _train_stage(run_scaling, cfg, _dataset(cfg, data), [p.strip() for p in presets.split(",") if p.strip()],
                        out, protocol=cfg.eval.protocol)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"scaling ({cfg.eval.protocol}); plot: {out}")
    for col in ("preset", "n_parameters", "ndcg@10", "recall@10", "train_seconds"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["preset"], f"{r['n_parameters']:,}", f"{r.get('ndcg@10', float('nan')):.4f}",
                  f"{r.get('recall@10', r.get('hr@10', float('nan'))):.4f}", f"{r['train_seconds']:.1f}")
    Console(stderr=True).print(t)
    if as_json:
        typer.echo(_json.dumps(rows, default=str))

# --- feature platform commands: export, materialize, ranker ------------------------------
# thin wrappers around platform/export.py, features/store.py, platform/ranker_job.py (issue 5)
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

    cfg = _config(config, set_)
    res = export_vectors(cfg, _dataset(cfg, data), model_ref=model, as_of=as_of or None, lag_s=lag_s)
    _emit(res, as_json, "export")


@app.command("materialize")
def materialize_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    full: bool = typer.Option(False, "--full", help="Reload every offline row, not only new ones."),
    as_json: bool = JsonOpt,
) -> None:
    """Feast apply + incremental materialization into the online store (SQLite, or Redis)."""
    from argusrank.features.store import materialize

    cfg = _config(config, set_)
    res = materialize(cfg, full=full)
    res.update({f"{v}_rows_per_s": r.get("rows_per_s", 0) for v, r in res.pop("views").items()})
    _emit(res, as_json, "materialize")


@ranker_app.command("train")
def ranker_train_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the ranker with and without the ARGUS dot product; print PairAccuracy, NDCG and uplift."""
    from argusrank.features.store import VectorVersionMismatch
    from argusrank.platform.ranker_job import train_rankers

    cfg = _config(config, set_)
    try:
        res = train_rankers(cfg, _dataset(cfg, data))
    except (VectorVersionMismatch, ValueError) as exc:
        typer.secho(f"ranker train: {exc}", fg="red", err=True)
        raise typer.Exit(1)
    _emit(res, as_json, "final ranker (held-out requests)")

# --- serving commands ---------------------------------------------------------------------
@app.command("serve")
def serve_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    host: Optional[str] = typer.Option(None, help="Bind address (default serve.host: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="HTTP port (default serve.port: 8000)."),
) -> None:
    """Serve /recommend, /rank, /healthz, /version with Ray Serve (foreground; Ctrl-C stops).

    Serves the ranker behind the registry alias (serve.ranker_alias) and the vectors of the
    ARGUS version it was trained with: what the last `argusrank demo` / pipeline registered.
    Replicas and autoscaling come from platform/serve.yaml. Lowest latency on one node:
    --set serve.topology=fused --set serve.ingress=direct (replicas also answer on 8001+).
    """
    cfg = _config(config, set_, **{"serve.host": host, "serve.port": port})
    from argusrank.platform.serve_core import NothingToServe, resolve_bundle

    try:
        bundle = resolve_bundle(cfg)
    except NothingToServe as exc:
        typer.secho(f"nothing to serve yet: {exc}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"serving ranker v{bundle.ranker_version} + ARGUS v{bundle.argus_version} "
               f"on http://{cfg.serve.host}:{cfg.serve.port} (starting Ray Serve...)")
    from argusrank.platform.serve_app import start_serving

    start_serving(cfg, blocking=True)


# --- demo: the main job --------------------------------------------------------------------
@app.command("demo")
def demo(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    seed: Optional[int] = typer.Option(None, help="Seed for data, training and ranker."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start Ray Serve at the end and keep it answering."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object on the last stdout line."),
) -> None:
    """The main job end to end on embedded defaults: synthetic data -> ARGUS pre-training and
    fine-tuning (Ray Train) -> vector export -> Feast materialization -> XGBoost ranker uplift
    -> Ray Serve endpoint."""
    import json as _json

    from argusrank.platform import pipeline

    cfg = _config(config, set_, seed=seed)
    results = pipeline.run_pipeline(cfg)
    pipeline.console.print(pipeline.data_table(results["data"]))
    pipeline.console.print(pipeline.uplift_table(results["ranker"]))
    summary = pipeline.demo_summary(results)
    if serve:
        summary["serve_url"] = pipeline.serve_and_probe(cfg)
    if as_json:
        typer.echo(_json.dumps(summary))
    if serve:
        from argusrank.platform.serve_app import serve_until_stopped

        serve_until_stopped()  # the driver keeps the local Ray and Serve alive until Ctrl-C / SIGTERM


if __name__ == "__main__":  # pragma: no cover
    app()
