"""Training commands: ``argusrank pretrain | finetune | evaluate | promote | quality | scaling``.

Thin wrappers around ``platform/training/``; ``platform/cli.py`` registers them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from argusrank.platform.cli_common import (
    ConfigOpt, DataOpt, JsonOpt, SetOpt, cli_sets, dataset, emit, fail, load_cli_config, train_stage,
)


def pretrain_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    protocol: Optional[str] = typer.Option(None, help="Training split: temporal (default) or loo."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the model (alias candidate)."),
    as_json: bool = JsonOpt,
) -> None:
    """Pre-train ARGUS (NIP + FP) with Ray Train; evaluate, log and register it in MLflow."""
    from argusrank.platform.training.jobs import run_pretrain

    cfg = load_cli_config(config, set_, **{"eval.protocol": protocol})
    res = train_stage(run_pretrain, cfg, dataset(cfg, data), register=register)
    emit(res, as_json, "pre-training")


def finetune_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    init: str = typer.Option("candidate", help="Registry alias or version to start from; 'none' = from scratch."),
    register: bool = typer.Option(True, "--register/--no-register"),
    as_json: bool = JsonOpt,
) -> None:
    """Pairwise fine-tuning (one pass, lagged user states) with Ray Train; registers the result."""
    from argusrank.platform.training.jobs import run_finetune

    cfg = load_cli_config(config, set_)
    res = train_stage(run_finetune, cfg, dataset(cfg, data), init=None if init.lower() == "none" else init,
                       register=register)
    emit(res, as_json, "fine-tuning")


def evaluate_cmd(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    data: Optional[Path] = DataOpt,
    model: str = typer.Option("candidate", "--model", "-m", help="Alias, version, or 'popularity' (baseline)."),
    protocol: Optional[str] = typer.Option(None, help="temporal | loo (default eval.protocol)."),
    negatives: Optional[str] = typer.Option(None, help="100 | all (default eval.negatives)."),
    filter_seen: Optional[bool] = typer.Option(None, "--filter-seen/--keep-seen", help="Full-catalog ranking: drop the user's earlier items."),
    candidates: bool = typer.Option(False, "--candidates", help="Also candidate recall@100/@500 per source (popular, "
                                    "tower, nip, merged = serve.candidates) on the temporal split, JSON key candidate_recall."),
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate a registered model: temporal split (NIP/FP losses, Recall/NDCG@K, PairAccuracy)
    or leave-one-out (HR/NDCG@K, 100 sampled negatives or the full catalog)."""
    from argusrank.platform.training.evaluate import evaluate

    cfg = load_cli_config(config, set_, **{"eval.protocol": protocol, "eval.negatives": negatives,
                                  "eval.filter_seen": filter_seen})
    try:
        res = evaluate(cfg, dataset(cfg, data), model, protocol=cfg.eval.protocol, negatives=cfg.eval.negatives)
        if candidates:
            from argusrank.platform.training.candidate_recall import recall_of_registered

            res["candidate_recall"] = recall_of_registered(cfg, dataset(cfg, data), model)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        raise fail(f"evaluate: {exc}")
    emit(res, as_json, f"evaluation of {model} ({cfg.eval.protocol})")


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

    from argusrank.platform.training.promote import promote

    cfg = load_cli_config(config, set_)
    try:
        res = promote(cfg, version=version, force=force, dataset_dir=data)
    except (LookupError, ValueError) as exc:
        raise fail(f"promote: {exc}")
    color = "green" if res["promoted"] else "yellow"
    typer.secho(f"{'promoted' if res['promoted'] else 'not promoted'}: version {res['version']} ({res['reason']})",
                fg=color, err=True)
    if as_json:
        typer.echo(_json.dumps(res, default=str))


def quality_cmd(
    src_args: Optional[list[str]] = typer.Argument(None, metavar="[SRC]",
                                                  help="Source file/dir (movielens-100k downloads itself; synth needs none)."),
    fmt: str = typer.Option(..., "--format", help="movielens-100k | movielens | sasrec | yambda | synth"),
    model: str = typer.Option("argus", "--model", help="argus | sasrec (same-code ablation) | sasrec-classic (the 2018 recipe)"),
    protocol: str = typer.Option("temporal", "--protocol", help="temporal | loo"),
    negatives: str = typer.Option("all", "--negatives", help="100 | all"),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[list[int]] = typer.Option(None, "--seeds", help="Several seeds: --seeds 0 1 2; metrics are means, "
                                              "with <metric>_se, seeds and per_seed in the JSON."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model size preset (default: the quality default, tiny widened to d_model=64; see bench/README.md)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Most training epochs (default: until validation stops improving, see bench/README.md)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop training after this many seconds."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a dataset, train ARGUS or SASRec on it and evaluate: the benchmark command."""
    import json as _json

    import yaml

    from argusrank.platform.training.quality import run_quality, run_quality_seeds

    src_args = list(src_args or [])
    if seeds:  # `--seeds 0 1 2`: the seeds after the first arrive as arguments
        seeds = list(seeds) + [int(a) for a in src_args if a.lstrip("-").isdigit()]
        src_args = [a for a in src_args if not a.lstrip("-").isdigit()]
    if len(src_args) > 1:
        typer.secho(f"quality: one SRC expected, got {src_args}", fg="red", err=True)
        raise typer.Exit(2)
    src = Path(src_args[0]) if src_args else None

    if epochs is not None and time_budget is not None:
        typer.secho("quality: give --epochs or --time-budget, not both", fg="red", err=True)
        raise typer.Exit(2)
    if negatives not in ("100", "all"):
        typer.secho(f"quality: --negatives must be 100 or all, got {negatives!r}", fg="red", err=True)
        raise typer.Exit(2)
    cfg = load_cli_config(config, None)
    user = {}
    for item in set_ or []:
        if "=" not in item:
            typer.secho(f"invalid configuration: --set {item!r} must look like key=value", fg="red", err=True)
            raise typer.Exit(2)
        k, v = item.split("=", 1)
        user[k] = yaml.safe_load(v)
    try:
        kw = dict(model=model, protocol=protocol, negatives=negatives, preset=preset, epochs=epochs,
                  time_budget_s=time_budget, user_overrides=user)
        res = train_stage(run_quality_seeds, cfg, fmt, src, seeds, **kw) if seeds else \
            train_stage(run_quality, cfg, fmt, src, seed=seed, **kw)
    except ValueError as exc:
        raise fail(f"quality: {exc}")
    emit(res, False, f"quality: {model} on {fmt} ({protocol}, negatives={negatives})")
    if as_json:
        typer.echo(_json.dumps(res, default=str))


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

    from argusrank.platform.training.quality import run_scaling

    cfg = load_cli_config(config, set_, **{"eval.protocol": protocol})
    out = out or cfg.paths.home / "scaling.png"
    rows = train_stage(run_scaling, cfg, dataset(cfg, data), [p.strip() for p in presets.split(",") if p.strip()],
                        out, protocol=cfg.eval.protocol)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"scaling ({cfg.eval.protocol}); plot: {out}")
    for col in ("preset", "n_parameters", "ndcg@10", "recall@10", "train_seconds"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["preset"], f"{r['n_parameters']:,}", f"{r.get('ndcg@10', float('nan')):.4f}",
                  f"{r.get('recall@10', r.get('hr@10', float('nan'))):.4f}", f"{r['train_seconds']:.1f}")
    from argusrank.platform.logs import console

    console.print(t)
    if as_json:
        typer.echo(_json.dumps(rows, default=str))
