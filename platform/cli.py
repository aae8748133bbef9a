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
# (added by the data layer)

# --- training commands: see platform/train_*.py ------------------------------------------
# (added by the training platform)

# --- feature platform commands: export, materialize, ranker ------------------------------
# (added by the feature platform)

# --- serving commands ---------------------------------------------------------------------
# (added by the serving layer)

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
        pipeline.wait_forever(cfg)


if __name__ == "__main__":  # pragma: no cover
    app()
