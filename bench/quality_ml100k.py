"""ARGUS vs the SASRec ablation vs sasrec-classic on MovieLens-100K, temporal split and leave-one-out.

Same run, same seeds, same data (the `argusrank quality` defaults unless --epochs /
--time-budget / --preset / --set are given); prints NDCG@10 and HR@10 of every model as
mean ± standard error over the seeds, plus popularity, and the machine.

    .venv/bin/python bench/quality_ml100k.py [--seeds 0 1 2] [--models argus sasrec sasrec-classic] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from json_out import emit_json  # noqa: E402
from machine_info import machine_info  # bench/machine_info.py


MODELS = ("argus", "sasrec", "sasrec-classic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--protocols", nargs="+", default=["temporal", "loo"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--negatives", default="all", help="100 | all")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds of training per run")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", dest="sets", nargs="*", default=[], help="key=value overrides (YAML values)")
    ap.add_argument("--home", default=None, help="argusrank home (default: $ARGUSRANK_HOME or ./.argusrank)")
    ap.add_argument("--json", default=None, help="write the results to this file (- prints them)")
    a = ap.parse_args()
    m = machine_info()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rich.console import Console
    from rich.table import Table

    from argusrank.platform.config import load_config, parse_sets
    from argusrank.platform.training.quality import QUALITY_DEFAULTS, run_quality_seeds

    cfg = load_config(None, {"paths.home": a.home} if a.home else None)
    summary = []
    for protocol in a.protocols:
        for model in a.models:
            t0 = time.perf_counter()
            r = run_quality_seeds(cfg, "movielens-100k", None, a.seeds, model=model, protocol=protocol,
                                  negatives=a.negatives, preset=a.preset, epochs=a.epochs,
                                  time_budget_s=a.time_budget, user_overrides=parse_sets(a.sets))
            r["wall_seconds"] = round(time.perf_counter() - t0, 1)
            summary.append(r)
            print(json.dumps({k: r.get(k) for k in ("model", "protocol", "seeds", "ndcg@10", "ndcg@10_se", "hr@10",
                                                    "train_seconds", "epochs_done")}), flush=True)
    t = Table(title=f"ML-100K, negatives={a.negatives}, mean ± SE over seeds {a.seeds}; {m['cores']} CPUs, "
                    f"GPU {m['gpu']}, load {m['load_avg_1m']}")
    for col in ("protocol", "model", "NDCG@10", "HR@10", "popularity NDCG@10", "epochs", "train s"):
        t.add_column(col, justify="right")
    pm = lambda r, k: f"{r[k]:.4f}" + (f" ± {r[k + '_se']:.4f}" if r.get(k + "_se") is not None else "")
    for r in summary:
        t.add_row(r["protocol"], r["model"], pm(r, "ndcg@10"), pm(r, "hr@10"), f"{r['popularity_ndcg@10']:.4f}",
                  f"{r['epochs_done']:.0f}", f"{r['train_seconds']:.0f}")
    Console().print(t)
    out = {"summary": summary, "machine": m, "quality_defaults": QUALITY_DEFAULTS, "args": vars(a)}
    emit_json(out, a.json)


if __name__ == "__main__":
    main()
