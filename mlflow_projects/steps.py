"""Entry points of the MLproject: parse typed parameters, call the stage function, log.

Thin on purpose: every step is a plain function elsewhere (features.datasets,
platform.training.jobs / evaluate / promote).
MLflow hands each step its run (MLFLOW_RUN_ID); ``registry.start_run`` uses it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from argusrank.platform.config import load_config, parse_sets


def step_parser(prog: str, steps: list[str]) -> argparse.ArgumentParser:
    """The parameters every entry point shares: step, home, config, sets, data, model."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("step", choices=steps)
    for name in ("home", "config", "sets", "data"):
        ap.add_argument(f"--{name}", default="")
    ap.add_argument("--model", default="candidate")
    return ap

def config_from_args(a: argparse.Namespace):
    """The config of a step: ``--config`` file, then ``--sets``/``--set`` overrides, ``--home``, ``--seed``.

    MLflow passes an empty string parameter as the literal ``''``: treated as empty.
    """
    for k in ("home", "config", "sets", "data"):
        if getattr(a, k, None) in ("''", '""'):
            setattr(a, k, "")
    try:
        overrides = parse_sets(shlex.split(a.sets) + list(getattr(a, "set_", [])))
    except ValueError as exc:
        raise SystemExit(f"invalid configuration: {exc}")
    if a.home:
        overrides["paths.home"] = str(Path(a.home).resolve())
    if getattr(a, "seed", None) is not None:
        overrides.update(parse_sets([f"seed={a.seed}"]))
    return load_config(a.config or None, overrides)


def main(argv: list[str] | None = None) -> dict:
    ap = step_parser("steps.py", ["synth", "import", "pretrain", "finetune", "evaluate", "promote"])
    ap.add_argument("--set", action="append", default=[], dest="set_")
    ap.add_argument("--seed", default=None)
    ap.add_argument("--format", default="movielens-100k")
    ap.add_argument("--src", default="")
    ap.add_argument("--init", default="candidate")
    ap.add_argument("--version", default="")
    ap.add_argument("--force", default="false")
    a = ap.parse_args(argv)

    cfg = config_from_args(a)

    from argusrank.platform.pipeline import dataset_dir
    from argusrank.platform.tracking import log_metrics, start_run

    data = Path(a.data).resolve() if a.data else dataset_dir(cfg)
    if a.step in ("synth", "import"):
        with start_run(cfg, a.step, tags={"dataset": str(data)}):
            import mlflow

            from argusrank.features.sources import build_dataset

            fmt = "synth" if a.step == "synth" else a.format
            meta = build_dataset(fmt, a.src or None, data, cfg.data.synth, cfg.seed)
            mlflow.log_dict(meta, "metadata.json")
            log_metrics({k: v for k, v in meta.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            out = {"dataset": str(data), "n_events": meta.get("n_events")}
    elif a.step == "pretrain":
        from argusrank.platform.training.jobs import run_pretrain

        res = run_pretrain(cfg, data)
        out = {"model_version": res["model_version"], "run_id": res["run_id"], **res["metrics"]}
    elif a.step == "finetune":
        from argusrank.platform.training.jobs import run_finetune

        res = run_finetune(cfg, data, init=None if a.init.lower() == "none" else a.init)
        out = {"model_version": res["model_version"], "run_id": res["run_id"], **res["metrics"]}
    elif a.step == "evaluate":
        from argusrank.platform.training.evaluate import evaluate

        out = evaluate(cfg, data, a.model, protocol=cfg.eval.protocol, negatives=cfg.eval.negatives)
    else:
        from argusrank.platform.training.promote import promote

        with start_run(cfg, "promote"):
            import mlflow

            out = promote(cfg, version=int(a.version) if a.version else None,
                                   force=a.force.lower() in ("1", "true", "yes"),
                                   dataset_dir=data if a.data else None)
            mlflow.log_dict(out, "promote.json")
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
