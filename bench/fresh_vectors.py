"""Fresh user vectors: latency from an accepted event to its vector in the online store, and what it is worth.

For each session knob (``data.synth.session_scale``: a per-user daily interest only recent events reveal;
0 turns it off) the script builds a synthetic home with the whole pipeline (synth -> pretrain -> finetune
-> export -> materialize -> ranker), then replays the ranker's test requests with daily-lagged vs fresh
user vectors (``platform/training/fresh_eval.py``). On the ``--session-knob`` home it then sends events at
``--rate`` per second (open loop, one consumer, latency from each event's due time) through
``FreshVectors.ingest`` — validation, the durable log, the vector update, the Feast push — with the
recent-window cache (the served path) and with a full re-read + re-encode per event.

    .venv/bin/python bench/fresh_vectors.py --json -        # last stdout line: one JSON object
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from json_out import emit_json  # noqa: E402
from machine_info import machine  # noqa: E402

SIZE = ["data.synth.n_users=800", "data.synth.n_items=600", "data.synth.days=30", "train.epochs=2",
        "finetune.epochs=2"]


def build_home(home: Path, knob: float, seed: int, sets: list[str]):
    from argusrank.platform import pipeline
    from argusrank.platform.config import load_config

    cfg = load_config(None, [f"paths.home={home}", f"seed={seed}", f"data.synth.session_scale={knob}", *SIZE, *sets])
    results = pipeline.run_pipeline(cfg, ("data", "pretrain", "finetune", "export", "materialize", "ranker"))
    return cfg, results["ranker"]


def latency(cfg, n_events: int, rate: float, cache_users: int) -> dict:
    """Open-loop ingest of single events; ms from each event's due time to its vector pushed."""
    import pyarrow.dataset as ds

    from argusrank.platform.serving.fresh import FreshVectors

    fresh = FreshVectors(cfg, cache_users=cache_users)
    users = np.unique(ds.dataset(cfg.paths.vectors_dir / "user_vectors").to_table(columns=["user_id"])["user_id"])
    items = np.unique(ds.dataset(cfg.paths.vectors_dir / "item_vectors").to_table(columns=["item_id"])["item_id"])
    end = int(json.loads((cfg.dataset_dir / "metadata.json").read_text())["max_timestamp"])
    rng = np.random.default_rng(0)
    hot = rng.choice(users, 50, replace=False)  # recently active users: the cache serves them after their first event
    lat, t0 = [], time.perf_counter() + 0.1
    for i in range(n_events):
        due = t0 + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        event = {"user_id": int(hot[i % len(hot)]), "item_id": int(rng.choice(items)), "timestamp": end + 1 + i,
                 "played_ratio": float(rng.random())}
        out = fresh.ingest([event])
        assert out["accepted"] == 1 and out["vectors"]
        lat.append((time.perf_counter() - due) * 1e3)
    warm = np.asarray(lat[len(hot):])  # after every hot user's first (cache-filling) event
    return {"p50_ms": float(np.percentile(warm, 50)), "p99_ms": float(np.percentile(warm, 99)),
            "first_event_p50_ms": float(np.percentile(lat[: len(hot)], 50)), "events": n_events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--knobs", type=float, nargs="+", default=[0.0, 0.5], help="session knobs to build and compare")
    ap.add_argument("--session-knob", type=float, default=0.5, help="the knob the JSON's headline figures use")
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for the homes")
    ap.add_argument("--json", default=None, help="write here ('-': one JSON object on the last stdout line)")
    args = ap.parse_args()
    mach = machine()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from argusrank.platform.training.fresh_eval import fresh_vs_lagged

    knobs = sorted(set(args.knobs) | {args.session_knob})
    value, homes = {}, {}
    for knob in knobs:
        home = Path(tempfile.mkdtemp(prefix=f"argusrank-fresh-{knob}-"))
        cfg, ranker = build_home(home, knob, args.seed, args.set)
        homes[knob] = cfg
        value[knob] = {**fresh_vs_lagged(cfg, cfg.dataset_dir), "uplift_rel_lagged": ranker["uplift_rel"]}
        print(f"knob {knob}: {value[knob]}", file=sys.stderr, flush=True)
    cfg = homes[args.session_knob]
    cached = latency(cfg, args.events, args.rate, cache_users=10_000)
    full = latency(cfg, min(args.events, 300), args.rate, cache_users=0)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Fresh user vectors — {mach}")
    for col in ("session knob", "test requests", "PairAcc lagged", "PairAcc fresh", "fresh vs lagged",
                "dot alone lagged", "dot alone fresh"):
        t.add_column(col, justify="right")
    for knob, v in value.items():
        t.add_row(f"{knob:g}", str(v["n_test_requests"]), f"{v['pair_accuracy_lagged']:.4f}",
                  f"{v['pair_accuracy_fresh']:.4f}", f"{(v['pair_accuracy_fresh'] / v['pair_accuracy_lagged'] - 1) * 100:+.2f}%",
                  f"{v['argus_dot_pair_accuracy_lagged']:.4f}", f"{v['argus_dot_pair_accuracy_fresh']:.4f}")
    lt = Table(title=f"event -> vector in the online store, {args.rate:g} events/s, knob {args.session_knob:g}")
    for col in ("path", "events", "p50 ms", "p99 ms", "first event of a user p50 ms"):
        lt.add_column(col, justify="right")
    lt.add_row("cached recent window (served)", str(cached["events"]), f"{cached['p50_ms']:.1f}", f"{cached['p99_ms']:.1f}",
               f"{cached['first_event_p50_ms']:.1f}")
    lt.add_row("full re-read + re-encode per event", str(full["events"]), f"{full['p50_ms']:.1f}", f"{full['p99_ms']:.1f}",
               f"{full['first_event_p50_ms']:.1f}")
    Console(width=160, stderr=True).print(t, lt)
    head = value[args.session_knob]
    doc = {"latency_p50_ms": cached["p50_ms"], "latency_p99_ms": cached["p99_ms"], "full_pass_p99_ms": full["p99_ms"],
           "full_pass_p50_ms": full["p50_ms"], "pair_accuracy_lagged": head["pair_accuracy_lagged"],
           "pair_accuracy_fresh": head["pair_accuracy_fresh"], "session_knob": args.session_knob,
           "by_knob": {str(k): v for k, v in value.items()}, "rate": args.rate, "machine": mach}
    emit_json(doc, args.json)


if __name__ == "__main__":
    main()
