"""Data-layer throughput: events/s for synth, import (read + validate + write), history building,
chunking and pair extraction at 1M and 10M synthetic events.

    python bench/data_layer.py [--sizes 1000000,10000000] [--repeats 3] [--json out.json|-]

Prints a table (median over repeats; fewer repeats above 5M events) with the machine beside it.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from argusrank.features.histories import build_histories, extract_pairs, restrict
from argusrank.features.splits import temporal_window
from argusrank.features.importers import import_dataset
from argusrank.features.io import read_events
from argusrank.features.schema import EVENT_TYPES
from argusrank.features.sequences import finetune_arrays, pretrain_arrays
from argusrank.features.synth import generate
from argusrank.platform.config import SynthConfig
from machine_info import machine_info  # bench/machine_info.py

EVENTS_PER_USER = 40 + 12 * 8  # default SynthConfig: organic + requests * slate


def to_yambda(events: pa.Table) -> pa.Table:
    """Synthetic events as a Yambda multi_event flat file (what `data import --format yambda` reads)."""
    names = pa.array(EVENT_TYPES)
    et = pc.take(names, events["event_type"])
    et = pc.if_else(events["liked"], "like", pc.if_else(events["disliked"], "dislike", et))
    return pa.table({
        "uid": events["user_id"], "item_id": events["item_id"], "timestamp": events["timestamp"],
        "is_organic": pc.cast(events["is_organic"], pa.uint8()),
        "played_ratio_pct": pc.multiply(pc.cast(events["played_ratio"], pa.float64()), 100.0),
        "track_length_seconds": pa.array(np.full(events.num_rows, 180, np.int64)),
        "event_type": et,
    })


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_size(n_events: int, repeats: int, tmp: Path) -> list[dict]:
    cfg = SynthConfig(n_users=max(1, round(n_events / EVENTS_PER_USER)), n_items=max(1000, n_events // 200))
    rows = []

    def row(stage, seconds, n):
        rows.append({"target_events": n_events, "stage": stage, "events": n, "seconds": round(seconds, 3),
                     "events_per_s": round(n / seconds), "repeats": repeats})
        print(f"  {stage:<28} {n:>11,} events {seconds:8.2f} s {n / seconds:>13,.0f} ev/s", flush=True)

    s, data = timed(lambda: generate(cfg, seed=0), repeats)
    events = data.events
    n = events.num_rows
    del data
    row("synth generate", s, n)
    src = tmp / "multi_event.parquet"
    pq.write_table(to_yambda(events), src)
    out = tmp / "ds"
    s, rep = timed(lambda: import_dataset("yambda", src, out), repeats)
    assert rep["accepted"] + rep["rejected"] == n
    row("import yambda (validate+write)", s, n)
    del events
    s, events = timed(lambda: read_events(out), repeats)
    row("read_events (sorted)", s, events.num_rows)
    s, hist = timed(lambda: build_histories(events), repeats)
    row("build_histories", s, n)
    del events
    T, _ = temporal_window(hist.timestamp.max(), 7)
    train = restrict(hist, before_ts=T)
    s, arr = timed(lambda: pretrain_arrays(train, 200), repeats)
    row("pretrain chunks (L=200)", s, train.n_events)
    del arr
    s, pairs = timed(lambda: extract_pairs(hist, 3600), repeats)
    row(f"extract_pairs ({pairs.num_rows:,} pairs)", s, hist.n_events)
    del pairs
    s, ft = timed(lambda: finetune_arrays(hist, 86400, 512, 1, 64, t_to=T), repeats)
    row("finetune_arrays (K=64)", s, hist.n_events)
    del ft, hist, train
    shutil.rmtree(out, ignore_errors=True)
    src.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated target event counts")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per stage (1 above 5M events)")
    ap.add_argument("--json", nargs="?", const="-", default=None, help="write JSON to a path, or '-' to print it")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    info = {**machine_info(), "python": platform.python_version(), "pyarrow": pa.__version__}
    print(f"machine: {info['cores']} cores, {info['cpu']}, python {info['python']}, pyarrow {info['pyarrow']}")
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            reps = args.repeats if size <= 5_000_000 else 1
            print(f"== {size:,} events, median of {reps}")
            results += bench_size(size, reps, Path(tmp))
    print(f"\n{'events':>11} {'stage':<34} {'seconds':>8} {'events/s':>13}   ({info['cores']} cores, {info['cpu']})")
    for r in results:
        print(f"{r['events']:>11,} {r['stage']:<34} {r['seconds']:>8.2f} {r['events_per_s']:>13,}")
    payload = {"machine": info, "results": results}
    if args.json == "-":
        print(json.dumps(payload, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
