"""One-pass vs impression-level pairwise fine-tuning: speed and equality on the same data.

    python bench/finetune_onepass.py [--preset tiny --history 512 --impressions 32 --batch 4] [--json]

Both paths score the same FinetuneBatch with the same model: the one-pass path
runs the encoder once per history and maps impressions to states with
searchsorted; the reference (models/reference.py) re-runs the encoder for every
impression on its lagged history. Reports medians over repeats of (a) scoring
(forward, no grad) and (b) a training step (loss + backward), their speedups, and
the largest score difference. ``--per-pair`` also times the older per-pair way
(ARGUS.md section 3: every pair its own example, the encoder re-run for both sides).
The last stdout line is a JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from argusrank.models.argus import ArgusModel
from argusrank.models.batch import random_finetune_batch
from argusrank.models.config import preset
from argusrank.models.reference import (reference_finetune_loss, reference_impression_scores, reference_pair_loss,
                                        reference_pair_scores)
from machine_info import machine  # bench/machine_info.py


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_step(model: ArgusModel, loss_fn, batch, lag_s: int) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn(model, batch, lag_s)["loss"].backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--encoder", default="simplified", choices=["simplified", "full", "hstu"])
    ap.add_argument("--history", type=int, default=512)
    ap.add_argument("--impressions", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lag", type=int, default=86_400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared box)")
    ap.add_argument("--per-pair", action="store_true",
                    help="also time the older per-PAIR way (each pair re-runs the encoder for both sides)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    mach = machine()  # before the work: its load average says how idle the box was

    torch.manual_seed(args.seed)
    cfg = preset(args.preset, encoder=args.encoder, max_len=max(args.history, 1))
    model = ArgusModel(cfg).eval()  # eval: no dropout, so both paths are comparable
    with torch.no_grad():  # weights larger than init so scores are O(1) and max_abs_diff means something
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    batch = random_finetune_batch(args.batch, args.history, args.impressions, args.pairs, seed=args.seed,
                                  lag_s=args.lag, min_len=args.history, min_impressions=args.impressions)
    one_pass = lambda m, b, lag: m.finetune_loss(b, lag)  # noqa: E731

    with torch.no_grad():
        fast_scores = model.impression_scores(batch, args.lag)
        slow_scores = reference_impression_scores(model, batch, args.lag)
        t_fast = median_time(lambda: model.impression_scores(batch, args.lag), args.repeats)
        t_slow = median_time(lambda: reference_impression_scores(model, batch, args.lag), args.ref_repeats)
    max_abs_diff = float((fast_scores - slow_scores).abs().max())
    loss_diff = abs(float(one_pass(model, batch, args.lag)["loss"].detach())
                    - float(reference_finetune_loss(model, batch, args.lag)["loss"].detach()))
    s_fast = median_time(lambda: train_step(model, one_pass, batch, args.lag), args.repeats)
    s_slow = median_time(lambda: train_step(model, reference_finetune_loss, batch, args.lag), args.ref_repeats)

    pair = {}
    if args.per_pair:
        with torch.no_grad():
            ps = reference_pair_scores(model, batch, args.lag)  # (B, P, 2)
            t_pair = median_time(lambda: reference_pair_scores(model, batch, args.lag), args.ref_repeats)
        live = (batch.pair_w > 0) & batch.imp_valid.gather(1, batch.pair_a) & batch.imp_valid.gather(1, batch.pair_b)
        want = torch.stack([fast_scores.gather(1, batch.pair_a), fast_scores.gather(1, batch.pair_b)], -1)
        s_pair = median_time(lambda: train_step(model, reference_pair_loss, batch, args.lag), args.ref_repeats)
        pair = {"pairs": int(live.sum()), "per_pair_score_s": t_pair, "per_pair_step_s": s_pair,
                "per_pair_score_speedup": t_pair / t_fast, "per_pair_speedup": s_pair / s_fast,
                "per_pair_max_abs_diff": float((ps - want)[live].abs().max())}
    n_imp = int(batch.imp_valid.sum())
    res = {
        "preset": args.preset, "encoder": args.encoder, "encoder_params": model.num_parameters(),
        "history": args.history, "impressions_per_sample": args.impressions, "batch": args.batch,
        "valid_impressions": n_imp, "onepass_score_s": t_fast, "reference_score_s": t_slow,
        "score_speedup": t_slow / t_fast, "onepass_step_s": s_fast, "reference_step_s": s_slow,
        "speedup": s_slow / s_fast, "max_abs_diff": max_abs_diff,
        "max_abs_score": float(fast_scores.abs().max()), "loss_abs_diff": loss_diff,
        "repeats": args.repeats, "machine": mach, **pair,
    }
    print(f"one-pass vs impression-level fine-tuning — {mach}")
    print(f"preset={args.preset} encoder={args.encoder} ({res['encoder_params']:,} encoder params) "
          f"history={args.history} impressions/sample={args.impressions} batch={args.batch} ({n_imp} impressions)")
    print(f"{'path':<18}{'score (s)':>12}{'train step (s)':>16}")
    print(f"{'one-pass':<18}{t_fast:>12.4f}{s_fast:>16.4f}")
    print(f"{'impression-level':<18}{t_slow:>12.4f}{s_slow:>16.4f}")
    if pair:
        print(f"{'per-pair':<18}{pair['per_pair_score_s']:>12.4f}{pair['per_pair_step_s']:>16.4f}"
              f"   ({pair['pairs']} pairs; speedup scoring {pair['per_pair_score_speedup']:.1f}x, "
              f"training step {pair['per_pair_speedup']:.1f}x; max |score diff| {pair['per_pair_max_abs_diff']:.2e})")
    print(f"speedup: scoring {res['score_speedup']:.1f}x, training step {res['speedup']:.1f}x; "
          f"max |score diff| {max_abs_diff:.2e} (max |score| {res['max_abs_score']:.2f}), |loss diff| {loss_diff:.2e}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
