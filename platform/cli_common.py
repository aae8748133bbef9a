"""What every ``argusrank`` command shares: the config options, loading the config, printing results."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from argusrank.platform.config import ArgusrankConfig, load_config, parse_sets, with_overrides

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (default: $ARGUSRANK_CONFIG or built-in defaults).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config field, e.g. --set train.epochs=3 (repeatable).")
DataOpt = typer.Option(None, "--data", "-d", help="Dataset directory (default: <home>/data/<data.format>).")
JsonOpt = typer.Option(False, "--json", help="Print the result as one JSON object on the last stdout line.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show Ray's, MLflow's, Feast's and Serve's logs here "
                          "(default: in <home>/logs/<command>.log).")
#: commands that stay verbose: they start no Ray, MLflow or Feast
_LOUD = {"config", "data"}
#: the top-level command being run (set by the CLI's callback; empty when called in-process)
COMMAND = [""]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` in red on stderr (the terminal, also in quiet mode); returns the Exit to raise."""
    from argusrank.platform.logs import err_stream

    typer.secho(message, fg="red", file=err_stream())
    return typer.Exit(code)


def cli_sets(sets: Optional[list[str]]) -> dict:
    """``--set`` flags as overrides; a malformed one exits 2 naming it."""
    try:
        return parse_sets(list(sets or []))
    except ValueError as exc:
        raise fail(f"invalid configuration: {exc}")


def load_cli_config(config: Optional[Path], sets: Optional[list[str]], *, verbose: bool = False,
                    **flags) -> ArgusrankConfig:
    """The config of a command: file, environment, ``--set`` flags, then explicit flags
    (``flags``: dotted key -> value; None means not given). Turns quiet mode on (``platform/logs.py``)
    unless ``verbose``, ``argusrank --verbose`` or a light command (``config``, ``data ...``)."""
    try:
        cfg = load_config(config, cli_sets(sets))
        given = {k: v for k, v in flags.items() if v is not None}
        cfg = with_overrides(cfg, given) if given else cfg
    except typer.Exit:
        raise
    except Exception as exc:  # pydantic ValidationError names the field
        raise fail(f"invalid configuration: {exc}")
    quiet_output(cfg, verbose)
    return cfg


def quiet_output(cfg: ArgusrankConfig, verbose: bool = False) -> None:
    """Library logs of this command to ``<home>/logs/<command>.log`` (see ``platform/logs.py``)."""
    from argusrank.platform import logs

    if COMMAND[0] and COMMAND[0] not in _LOUD:
        logs.setup(cfg.paths.logs_dir, COMMAND[0], verbose)


def dataset(cfg: ArgusrankConfig, data: Optional[Path]) -> Path:
    """``--data``, else the configured dataset directory."""
    from argusrank.platform.pipeline import dataset_dir

    return Path(data) if data else dataset_dir(cfg)


def emit(result: dict, as_json: bool, title: str) -> None:
    """Metrics as a rich table on stderr; with --json also one JSON line on stdout."""
    import json as _json

    from argusrank.platform.logs import console
    from argusrank.platform.training.evaluate import metrics_table

    flat = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
    flat.update({k: v for k, v in result.get("metrics", {}).items() if isinstance(v, (int, float, str))})
    console.print(metrics_table(flat, title))
    if result.get("candidate_recall"):
        from argusrank.platform.training.candidate_recall import recall_table

        flat["candidate_recall"] = result["candidate_recall"]
        console.print(recall_table(result["candidate_recall"]))
    # the final-list NDCG per candidate configuration (``argusrank ranker train``): {config: value} dicts
    flat.update({k: v for k, v in result.items() if k.startswith("final_ndcg@") and isinstance(v, dict)})
    if as_json:
        typer.echo(_json.dumps(flat, default=str))


def train_stage(fn, *args, **kwargs) -> dict:
    """``fn(...)``; a ConfigError exits 2 with the field named."""
    from argusrank.platform.training.checks import ConfigError

    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}")
