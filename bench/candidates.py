"""Candidate recall of every source and of several merges, on the temporal split (one run, same users).

    # the synthetic planted-truth set: a demo home (fine-tuned ARGUS, its exported tower + NIP vectors)
    .venv/bin/python bench/candidates.py --home .argusrank --json cand_synth.json
    # ML-100K: pre-train ARGUS with the quality defaults (temporal split), vectors from the model
    .venv/bin/python bench/candidates.py --ml100k --json cand_ml100k.json

Recall@K: share of the test window's positive events whose item is in a source's top K for the user's
state at that time (daily snapshots); ``seen filtered`` drops the user's earlier items first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import machine  # noqa: E402

MERGES = {
    "nip 500": [{"source": "nip", "k": 500}],
    "nip 400 + popular 100": [{"source": "nip", "k": 400}, {"source": "popular", "k": 100}],
    "nip 300 + tower 200": [{"source": "nip", "k": 300}, {"source": "tower", "k": 200}],
    "nip 250 + tower 150 + popular 100": [{"source": "nip", "k": 250}, {"source": "tower", "k": 150},
                                          {"source": "popular", "k": 100}],
    "tower 400 + popular 100": [{"source": "tower", "k": 400}, {"source": "popular", "k": 100}],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=None, help="a demo home: its candidate ARGUS version and exported vectors")
    ap.add_argument("--ml100k", action="store_true", help="pre-train on ML-100K (temporal) and use the model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=None, help="--ml100k: stop pre-training after this many s")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    mach = machine()
    from argusrank.platform.config import load_config
    from argusrank.platform.training.candidate_recall import candidate_recall, recall_table

    if args.ml100k:
        from argusrank.platform.training.jobs import run_pretrain
        from argusrank.platform.training.quality import prepare_dataset, quality_config

        cfg = quality_config(load_config(), "argus", "temporal", "all", args.seed, time_budget_s=args.time_budget)
        data = prepare_dataset(cfg, "movielens-100k", None)
        res = run_pretrain(cfg, data, register=False, protocol="temporal")
        recall = candidate_recall(cfg, data, model=res["model"], more_merges=MERGES)
        name = "ML-100K temporal (pre-trained ARGUS)"
    else:
        from argusrank.platform.pipeline import dataset_dir
        from argusrank.platform.training.candidate_recall import recall_of_registered

        cfg = load_config(None, [f"paths.home={args.home}"] if args.home else [])
        recall = recall_of_registered(cfg, dataset_dir(cfg), "candidate", more_merges=MERGES)
        name = f"synthetic ({cfg.paths.home}, fine-tuned ARGUS, exported vectors)"
    from rich.console import Console

    table = recall_table(recall)
    table.title = f"{table.title} — {name} — {mach}"
    Console(width=160).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "dataset": name, "candidate_recall": recall}, indent=2))


if __name__ == "__main__":
    main()
