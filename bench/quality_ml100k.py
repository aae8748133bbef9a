"""ARGUS vs the SASRec ablation on MovieLens-100K, temporal split and leave-one-out.

Same run, same seeds, same data, same training budget (the `argusrank quality`
defaults unless --epochs/--preset are given); prints NDCG@10 and HR@10 of both
models with the relative difference, plus popularity, and the machine.

    .venv/bin/python bench/quality_ml100k.py [--seeds 0 1] [--epochs 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from machine_info import machine_info  # bench/machine_info.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--protocols", nargs="+", default=["temporal", "loo"])
    ap.add_argument("--negatives", default=None, help="100 | all (default: all for temporal, 100 for loo)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--home", default=None, help="argusrank home (default: $ARGUSRANK_HOME or ./.argusrank)")
    ap.add_argument("--json", default=None, help="write the results to this file (- prints them)")
    a = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rich.console import Console
    from rich.table import Table

    from argusrank.platform.config import load_config
    from argusrank.platform.quality import QUALITY_DEFAULTS, run_quality

    cfg = load_config(None, {"paths.home": a.home} if a.home else None)
    rows = []
    for protocol in a.protocols:
        negatives = a.negatives or ("all" if protocol == "temporal" else "100")
        for seed in a.seeds:
            for model in ("argus", "sasrec"):
                t0 = time.perf_counter()
                r = run_quality(cfg, "movielens-100k", None, model=model, protocol=protocol, negatives=negatives,
                                seed=seed, preset=a.preset, epochs=a.epochs)
                r["wall_seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(r)
                print(json.dumps({k: r[k] for k in ("model", "protocol", "seed", "ndcg@10", "hr@10",
                                                    "train_seconds")}), flush=True)
    summary = []
    for protocol in a.protocols:
        by = {m: [r for r in rows if r["protocol"] == protocol and r["model"] == m] for m in ("argus", "sasrec")}
        med = {m: {k: statistics.median(r[k] for r in by[m]) for k in ("ndcg@10", "hr@10", "train_seconds")}
               for m in by}
        pop = statistics.median(r["popularity_ndcg@10"] for r in by["argus"])
        summary.append({"protocol": protocol, "negatives": by["argus"][0]["negatives"],
                        "n_targets": by["argus"][0]["n_targets"], "seeds": a.seeds,
                        "argus_ndcg@10": med["argus"]["ndcg@10"], "sasrec_ndcg@10": med["sasrec"]["ndcg@10"],
                        "rel_diff": med["argus"]["ndcg@10"] / med["sasrec"]["ndcg@10"] - 1,
                        "argus_hr@10": med["argus"]["hr@10"], "sasrec_hr@10": med["sasrec"]["hr@10"],
                        "popularity_ndcg@10": pop,
                        "argus_train_s": med["argus"]["train_seconds"], "sasrec_train_s": med["sasrec"]["train_seconds"]})
    m = machine_info()
    t = Table(title=f"ML-100K: ARGUS vs SASRec (median over seeds {a.seeds}); {m['cores']} CPUs, GPU {m['gpu']}")
    for col in ("protocol", "negatives", "targets", "ARGUS NDCG@10", "SASRec NDCG@10", "rel. diff",
                "ARGUS HR@10", "SASRec HR@10", "popularity NDCG@10", "train s (A/S)"):
        t.add_column(col, justify="right")
    for s in summary:
        t.add_row(s["protocol"], s["negatives"], str(s["n_targets"]), f"{s['argus_ndcg@10']:.4f}",
                  f"{s['sasrec_ndcg@10']:.4f}", f"{s['rel_diff'] * 100:+.1f}%", f"{s['argus_hr@10']:.4f}",
                  f"{s['sasrec_hr@10']:.4f}", f"{s['popularity_ndcg@10']:.4f}",
                  f"{s['argus_train_s']:.0f}/{s['sasrec_train_s']:.0f}")
    Console().print(t)
    out = {"summary": summary, "runs": rows, "machine": m, "quality_defaults": QUALITY_DEFAULTS,
           "epochs": a.epochs, "preset": a.preset}
    if a.json == "-":
        print(json.dumps(out, default=str))
    elif a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
