"""User vectors of the export: one encoder pass per window start vs one per (snapshot, space).

    python bench/export_passes.py [--users 3000 --snapshots 9 --preset tiny --repeats 3] [--json PATH|-]

Synthetic histories (``features/synth.py``, ~136 events per user); daily snapshots over the last days, windows of the
last ``max_len`` (200) events before each (``export.user_windows``), the three spaces from one network (``tower``,
``nip``, ``fp``). ``window by window``: each (user, snapshot) window through ``window_arrays`` + ``user_vectors``,
space by space (the export before 2026-12-03); ``one pass``: ``snapshot_user_vectors`` (one pass per distinct window
start, every space from it). Medians over repeats, their ratio, the largest difference, the passes run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from json_out import emit_json  # bench/json_out.py
from machine_info import machine, machine_info  # bench/machine_info.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--snapshots", type=int, default=9)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=256, help="windows (passes) per forward: features.export_batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the JSON to PATH, or '-': one line on stdout")
    args = ap.parse_args()

    from argusrank.features.histories import build_histories
    from argusrank.features.synth import generate
    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import preset
    from argusrank.platform.config import load_config
    from argusrank.platform.export import user_windows
    from argusrank.platform.inference import snapshot_user_vectors, window_user_vectors

    info = machine_info()
    cfg = load_config(env={}, overrides={"data.synth.n_users": args.users, "data.synth.n_items": max(1000, args.users)})
    hist = build_histories(generate(cfg.data.synth, seed=0).events)
    torch.manual_seed(0)
    model = ArgusModel(preset(args.preset)).eval()
    L = int(model.cfg.max_len)
    t_end = int(hist.timestamp.max()) + 1
    snaps = np.arange(t_end - (args.snapshots - 1) * 86400, t_end + 1, 86400, dtype=np.int64)
    w = user_windows(hist, snaps, 0, L)
    start, length, as_of = (w[c].to_numpy() for c in ("start", "length", "as_of"))
    spaces = ("tower", "nip", "fp")
    models = {s: model for s in spaces}

    def window_by_window() -> dict[str, np.ndarray]:
        return {s: window_user_vectors(model, s, hist, start, length, as_of, args.batch) for s in spaces}

    def one_pass() -> dict[str, np.ndarray]:
        return snapshot_user_vectors(models, hist, start, length, as_of, args.batch)

    rows, outs = [], {}
    for name, fn in (("window by window", window_by_window), ("one pass", one_pass)):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            outs[name] = fn()
            times.append(time.perf_counter() - t)
        rows.append({"path": name, "seconds": round(statistics.median(times), 3),
                     "vectors_per_s": round(len(start) * len(spaces) / statistics.median(times), 1)})
    full = length >= L
    passes = len(np.unique(np.concatenate([start, start + full])))
    diff = max(float(np.abs(outs["one pass"][s] - outs["window by window"][s]).max()) for s in spaces)
    result = {"machine": info, "users": hist.n_users, "events": hist.n_events, "snapshots": len(snaps),
              "windows": len(start), "full_windows": int(full.sum()), "passes_one_pass": passes,
              "passes_window_by_window": len(start) * len(spaces), "preset": args.preset, "max_len": L,
              "speedup": round(rows[0]["seconds"] / rows[1]["seconds"], 2), "max_abs_diff": diff, "rows": rows}
    print(f"machine: {machine()}")
    print(f"{hist.n_users:,} users, {hist.n_events:,} events, {len(snaps)} snapshots, {len(start):,} windows "
          f"({int(full.sum()):,} full), preset {args.preset}, max_len {L}, 3 spaces")
    print(f"{'path':<18} {'passes':>8} {'seconds':>9} {'vectors/s':>11}")
    for r, p in zip(rows, (result["passes_window_by_window"], passes)):
        print(f"{r['path']:<18} {p:>8,} {r['seconds']:>9.3f} {r['vectors_per_s']:>11,.0f}")
    print(f"speedup x{result['speedup']}, largest difference {diff:.2e}")
    emit_json(result, args.json)


if __name__ == "__main__":
    main()
