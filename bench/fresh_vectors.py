"""Fresh user vectors: latency from an accepted event to its vector in the online store, and what it is worth.

For each session knob (``data.synth.session_scale``: a per-user daily interest only recent events reveal;
0 turns it off) the script builds a synthetic home with the whole pipeline (synth -> pretrain -> finetune
-> export -> materialize -> ranker, plus a ranker trained on fresh vectors), then replays the ranker's test
requests with daily-lagged vectors (the daily-trained ranker) vs fresh ones (the fresh-trained ranker; and the
daily-trained one, off its training distribution) (``platform/training/fresh_eval.py``). On the ``--session-knob`` home it then sends events at
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

# 2000 users (the demo's count; at 800 the fresh-vs-lagged difference is below one seed's noise: bench/README
# "Fresh vectors"), 600 items and 30 days to keep a home ~15 min on 2 cores; fine-tuning at the platform defaults
SIZE = ["data.synth.n_users=2000", "data.synth.n_items=600", "data.synth.days=30", "train.epochs=2"]


def build_home(home: Path, knob: float, seed: int, sets: list[str]):
    """The whole pipeline (its ranker trained on daily vectors, alias ``champion``), then a second ranker trained
    on fresh vectors (``ranker.user_vectors=fresh``, alias ``fresh``): each is scored on the vectors it is trained for."""
    from argusrank.platform import pipeline
    from argusrank.platform.config import load_config
    from argusrank.platform.ranker_job import train_rankers

    base = [f"paths.home={home}", f"seed={seed}", f"data.synth.session_scale={knob}", *SIZE, *sets]
    cfg = load_config(None, base)
    results = pipeline.run_pipeline(cfg, ("data", "pretrain", "finetune", "export", "materialize", "ranker"))
    fresh_cfg = load_config(None, [*base, "ranker.user_vectors=fresh", "ranker.alias=fresh", "ranker.ablation=false"])
    return cfg, results["ranker"], train_rankers(fresh_cfg, fresh_cfg.dataset_dir)


def latency(cfg, n_events: int, rate: float, cache_users: int, max_batch: int = 64) -> dict:
    """Open-loop arrivals at ``rate``; one consumer, which (as a stream consumer polls) takes every event already
    due, up to ``max_batch``, per ``ingest`` call. ms from each event's due time to its vector in the online store."""
    import pyarrow.dataset as ds

    from argusrank.platform.serving.fresh import FreshVectors

    fresh = FreshVectors(cfg, cache_users=cache_users)
    users = np.unique(ds.dataset(cfg.paths.vectors_dir / "user_vectors").to_table(columns=["user_id"])["user_id"])
    items = np.unique(ds.dataset(cfg.paths.vectors_dir / "item_vectors").to_table(columns=["item_id"])["item_id"])
    end = int(json.loads((cfg.dataset_dir / "metadata.json").read_text())["max_timestamp"])
    # after every event an earlier run logged: an event older than a user's logged ones re-reads the whole history
    end = max(end, fresh.log.last_timestamp() or end)
    rng = np.random.default_rng(0)
    hot = rng.choice(users, 50, replace=False)  # recently active users: the cache serves them after their first event
    for u in hot.tolist():  # each hot user's first event: one full read of the history fills the cache (timed apart)
        fresh.ingest([{"user_id": u, "item_id": int(rng.choice(items)), "timestamp": end + 1, "played_ratio": 1.0}])
    first = [fresh.ingest([{"user_id": int(u), "item_id": int(rng.choice(items)), "timestamp": end + 2,
                            "played_ratio": 1.0}])["seconds"] * 1e3 for u in rng.choice(users, 5, replace=False)]
    events = [{"user_id": int(hot[i % len(hot)]), "item_id": int(rng.choice(items)), "timestamp": end + 10 + i,
               "played_ratio": float(rng.random())} for i in range(n_events)]
    due = time.perf_counter() + 0.1 + np.arange(n_events) / rate
    lat, sizes, i = np.zeros(n_events), [], 0
    while i < n_events:
        time.sleep(max(0.0, due[i] - time.perf_counter()))
        j = min(n_events, i + max_batch, max(i + 1, int(np.searchsorted(due, time.perf_counter(), "right"))))
        out = fresh.ingest(events[i:j])
        assert out["accepted"] == j - i and out["vectors"]
        lat[i:j] = (time.perf_counter() - due[i:j]) * 1e3
        sizes.append(j - i)
        i = j
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "first_event_p50_ms": float(np.median(first)), "events": n_events,
            "mean_batch": float(np.mean(sizes)), "calls": len(sizes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--knobs", type=float, nargs="+", default=[0.0, 0.5], help="session knobs to build and compare")
    ap.add_argument("--session-knob", type=float, default=0.5, help="the knob the JSON's headline figures use")
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=None,
                    help="latency only, on this existing home (its registered models and Feast store); no value replay")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for the homes")
    ap.add_argument("--json", default=None, help="write here ('-': one JSON object on the last stdout line)")
    args = ap.parse_args()
    mach = machine()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from argusrank.platform.training.fresh_eval import fresh_vs_lagged

    knobs = [] if args.home else sorted(set(args.knobs) | {args.session_knob})
    value, homes = {}, {}
    if args.home:
        from argusrank.platform.config import load_config

        homes[args.session_knob] = load_config(None, [f"paths.home={args.home}", *args.set])
    for knob in knobs:
        home = Path(tempfile.mkdtemp(prefix=f"argusrank-fresh-{knob}-"))
        cfg, ranker, fresh_ranker = build_home(home, knob, args.seed, args.set)
        homes[knob] = cfg
        value[knob] = {**fresh_vs_lagged(cfg, cfg.dataset_dir, fresh_ranker_ref="fresh"),
                       "uplift_rel_lagged": ranker["uplift_rel"], "uplift_rel_fresh": fresh_ranker["uplift_rel"]}
        print(f"knob {knob}: {value[knob]}", file=sys.stderr, flush=True)
    cfg = homes[args.session_knob]
    cached = latency(cfg, args.events, args.rate, cache_users=10_000)
    full = latency(cfg, min(args.events, 300), args.rate, cache_users=0)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Fresh user vectors — {mach}")
    for col in ("session knob", "test requests", "PairAcc lagged", "PairAcc fresh", "fresh - lagged ± SE",
                "fresh, lagged-trained ranker", "dot alone lagged", "dot alone fresh"):
        t.add_column(col, justify="right")
    for knob, v in value.items():
        t.add_row(f"{knob:g}", str(v["n_test_requests"]), f"{v['pair_accuracy_lagged']:.4f}",
                  f"{v['pair_accuracy_fresh']:.4f}", f"{(v['pair_accuracy_fresh'] - v['pair_accuracy_lagged']) * 100:+.2f} ± {v['fresh_minus_lagged_se'] * 100:.2f} pt",
                  f"{v['pair_accuracy_fresh_same_ranker']:.4f}",
                  f"{v['argus_dot_pair_accuracy_lagged']:.4f}", f"{v['argus_dot_pair_accuracy_fresh']:.4f}")
    lt = Table(title=f"event -> vector in the online store, {args.rate:g} events/s, knob {args.session_knob:g}")
    for col in ("path", "events", "ingest calls", "events per call", "p50 ms", "p99 ms", "user's first event ms"):
        lt.add_column(col, justify="right")
    for name, r in (("cached recent window (served)", cached), ("full re-read + re-encode per event", full)):
        lt.add_row(name, str(r["events"]), str(r["calls"]), f"{r['mean_batch']:.1f}", f"{r['p50_ms']:.1f}",
                   f"{r['p99_ms']:.1f}", f"{r['first_event_p50_ms']:.1f}")
    Console(width=160, stderr=True).print(t, lt)
    head = value.get(args.session_knob, {})
    doc = {"latency_p50_ms": cached["p50_ms"], "latency_p99_ms": cached["p99_ms"], "full_pass_p99_ms": full["p99_ms"],
           "full_pass_p50_ms": full["p50_ms"], "pair_accuracy_lagged": head.get("pair_accuracy_lagged"),
           "pair_accuracy_fresh": head.get("pair_accuracy_fresh"), "session_knob": args.session_knob,
           "by_knob": {str(k): v for k, v in value.items()}, "rate": args.rate, "machine": mach}
    emit_json(doc, args.json)


if __name__ == "__main__":
    main()
