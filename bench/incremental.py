"""Incremental user vector (models/incremental.py) vs a full causal pass: per-event cost at long histories.

    .venv/bin/python bench/incremental.py [--preset xxs --encoder simplified --histories 512 2048
                                           --repeats 20 --batch 8 --threads 1] [--json]

For each history length H, on random weights and a synthetic history (max_len = the longest H, so
every H fits one window): ``full`` is ``model.user_vectors`` of one causal pass over H events (what
a re-encode per event costs); ``append`` is one ``incremental.append`` on a state holding about H
events (cache attention + one token step), ``vector`` the user tower on that state; ``batch`` is
``append_batch`` of ``--batch`` users, one event each, per event. ``fallback`` is an append to a full
window (H == max_len): one full pass over the last max_len events. Medians over ``--repeats``;
``max_abs_diff`` checks the incremental vector against the full pass. With ``--json`` the last
stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from argusrank.models import incremental as inc
from argusrank.models.argus import ArgusModel
from argusrank.models.batch import SequenceBatch, random_sequence_arrays
from argusrank.models.config import preset
from machine_info import machine  # bench/machine_info.py


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def events(a: dict, row: int, i: int) -> dict:
    return {k: a[k][row, i].item() for k in inc.EVENT_FIELDS}


def window(a: dict, rows, lo: int, hi: int) -> dict:
    return {k: v[rows, lo:hi] for k, v in a.items()}


def bench_history(model: ArgusModel, H: int, args) -> dict:
    R, B = args.repeats, args.batch
    a = random_sequence_arrays(max(B, 1), H + R, seed=args.seed, min_len=H + R, n_items=5000)
    one = window(a, slice(0, 1), 0, H)
    batch = SequenceBatch.from_numpy(one)
    with torch.no_grad():
        model.user_vectors(batch)  # warm-up
        full = statistics.median(timed(lambda: model.user_vectors(batch))[0] for _ in range(args.full_repeats))
    s = inc.init_state(model, window(a, slice(0, 1), 0, H - R))
    inc.append(model, s, events(a, 0, H - R))  # warm-up (and the first buffer growth)
    t_app, t_vec = [], []
    for i in range(H - R + 1, H):
        t_app.append(timed(lambda: inc.append(model, s, events(a, 0, i)))[0])
        t_vec.append(timed(lambda: inc.user_vector(model, s))[0])
    with torch.no_grad():
        want = model.user_vectors(batch).numpy()[0]
    diff = float(np.abs(inc.user_vector(model, s) - want).max())
    row = {"history": H, "full_pass_ms": 1e3 * full, "append_ms": 1e3 * statistics.median(t_app),
           "vector_ms": 1e3 * statistics.median(t_vec), "max_abs_diff": diff}
    row["update_ms"] = row["append_ms"] + row["vector_ms"]
    row["speedup"] = row["full_pass_ms"] / row["update_ms"]
    if B > 1:
        states = inc.init_states(model, window(a, slice(0, B), 0, H - R))
        t_b = []
        for i in range(H - R, H - R + min(R, 5)):
            evs = [events(a, b, i) for b in range(B)]
            t_b.append(timed(lambda: inc.user_vectors(model, inc.append_batch(model, states, evs)))[0])
        row["batch_ms_per_event"] = 1e3 * statistics.median(t_b) / B
    if H == model.cfg.max_len:  # the window is full: every append is the full-pass fallback
        s = inc.init_state(model, window(a, slice(0, 1), 0, H))
        t_f = [timed(lambda: inc.append(model, s, events(a, 0, H + j)))[0] for j in range(min(R, 3))]
        row["fallback_ms"] = 1e3 * statistics.median(t_f)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="xxs")
    ap.add_argument("--encoder", default=None, choices=["simplified", "full", "hstu"])
    ap.add_argument("--histories", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=20, help="timed appends per history")
    ap.add_argument("--full-repeats", type=int, default=5, help="timed full passes per history")
    ap.add_argument("--batch", type=int, default=8, help="users per append_batch (0/1: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared box)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    mach = machine()  # before the work: its load average says how idle the box was
    over = {"max_len": max(args.histories)}
    if args.encoder:
        over["encoder"] = args.encoder
    torch.manual_seed(args.seed)
    model = ArgusModel(preset(args.preset, **over)).eval()
    with torch.no_grad():  # weights larger than init so max_abs_diff means something
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    rows = [bench_history(model, H, args) for H in args.histories]
    cfg = model.cfg
    print(f"incremental user vector vs full pass — {mach}")
    print(f"preset={args.preset} encoder={cfg.encoder} d_model={cfg.d_model} layers={cfg.n_layers} "
          f"tower_pool={cfg.tower_pool} max_len={cfg.max_len}; medians of {args.repeats} appends, "
          f"{args.full_repeats} full passes")
    print(f"{'history':>8}{'full (ms)':>11}{'append (ms)':>13}{'vector (ms)':>13}{'update (ms)':>13}"
          f"{'speedup':>9}{f'batch{args.batch} ms/ev':>15}{'fallback (ms)':>15}{'max|diff|':>11}")
    for r in rows:
        b = f"{r['batch_ms_per_event']:.2f}" if "batch_ms_per_event" in r else "-"
        f = f"{r['fallback_ms']:.1f}" if "fallback_ms" in r else "-"
        print(f"{r['history']:>8}{r['full_pass_ms']:>11.1f}{r['append_ms']:>13.2f}{r['vector_ms']:>13.2f}"
              f"{r['update_ms']:>13.2f}{r['speedup']:>8.1f}x{b:>15}{f:>15}{r['max_abs_diff']:>11.1e}")
    if args.json:
        res = {"preset": args.preset, "encoder": cfg.encoder, "max_len": cfg.max_len, "tower_pool": cfg.tower_pool,
               "repeats": args.repeats, "batch": args.batch, "machine": mach, "rows": rows}
        for r in rows:
            res[f"update_ms_{r['history']}"] = r["update_ms"]
            res[f"full_pass_ms_{r['history']}"] = r["full_pass_ms"]
        print(json.dumps(res))


if __name__ == "__main__":
    main()
