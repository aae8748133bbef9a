"""``argusrank data``: import, synthesize and inspect event data (features/)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from argusrank.platform.cli_common import ConfigOpt, SetOpt, fail, load_cli_config

data_app = typer.Typer(no_args_is_help=True, help="Import, synthesize and inspect event data.")


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
    user_buckets: Optional[int] = typer.Option(None, "--user-buckets", help=(
        "Partitions of the events by user (a power of two up to 1024; what a training worker reads: more workers "
        "than buckets share a bucket's users). "
        "Default: sized to the data (8 up to 4M events).")),
    workers: int = typer.Option(1, "--workers", min=1, help=(
        "yambda: validate row groups and sort user buckets as this many Ray tasks at once (1: in this process).")),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=(
        "With --workers > 1: the Ray cluster to run on (e.g. 'auto' or host:6379; default: a local Ray).")),
) -> None:
    """Import a public log; prints accepted/rejected counts (exit 1: nothing valid, 2: unusable input)."""
    from rich.console import Console

    from argusrank.features.importers import FORMATS, import_dataset
    from argusrank.features.validate import NoValidEvents, SchemaError

    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if src is None and fmt != "movielens-100k":
        raise fail(f"SRC is required for --format {fmt}")
    if user_buckets is not None:
        from argusrank.features.schema import check_user_buckets

        try:
            check_user_buckets(user_buckets)
        except ValueError as exc:
            raise fail(f"--{exc}")
    try:
        with Console(stderr=True).status(f"importing {fmt} from {src or 'recbole wheel'} ..."):
            meta = import_dataset(fmt, src, out, cache_dir=cache_dir, user_buckets=user_buckets, workers=workers,
                                  ray_address=ray_address)
    except NoValidEvents as exc:
        raise fail(f"error: {exc} (rejected rows in {getattr(exc, 'rejected_dir', None) or out / 'rejected'})", 1)
    except (SchemaError, OSError, RuntimeError) as exc:
        raise fail(f"error: {exc}")
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

    cfg = load_cli_config(config, set_, seed=seed)
    out = out or cfg.paths.data_dir / "synth"
    with Console(stderr=True).status(f"generating {cfg.data.synth.n_users} users ..."):
        meta = synthesize(cfg.data.synth, out, seed=cfg.seed, user_buckets=cfg.data.user_buckets)
    typer.echo(f"synth: {meta['n_events']} events, {meta['truth']['n_impressions']} impressions -> {out}")
    _print_summary(f"synth -> {out}", meta)


@data_app.command("info")
def data_info(dataset_dir: Path = typer.Argument(..., help="A dataset directory.")) -> None:
    """Summarize a dataset directory (metadata, history lengths, feedback grades)."""
    import numpy as np

    from argusrank.features.histories import histories_by_bucket
    from argusrank.features.io import read_metadata

    try:
        meta = read_metadata(dataset_dir)
    except FileNotFoundError as exc:
        raise fail(f"error: {exc}")
    if meta.get("n_events", 0):  # one user bucket at a time: the lengths of all users, the grades' counts
        lengths, grades = [], np.zeros(4, np.int64)
        for part in histories_by_bucket(dataset_dir, desc="data info"):
            lengths.append(part.lengths)
            grades += np.bincount(part.grade.astype(np.int64) + 1, minlength=4)
        lens = np.concatenate(lengths)
        meta["history_length (min/median/max)"] = f"{lens.min()}/{int(np.median(lens))}/{lens.max()}"
        meta["grades (dislike/skip/listen/like)"] = "/".join(str(g) for g in grades)
    _print_summary(str(dataset_dir), meta, ("history_length (min/median/max)", "grades (dislike/skip/listen/like)"))
