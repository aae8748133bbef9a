"""Per ARGUS preset: encoder / total parameters and pre-training throughput (events/s).

    python bench/model_presets.py [--presets tiny,xs,s,m,l,xl] [--batch 8 --length 128] [--json]

Parameters are counted on the meta device (no memory), so every preset is listed.
Throughput = events (valid positions) per second of full training steps
(pretrain_losses + backward + AdamW), median over repeats. On CPU only presets up
to ``--cpu-max-params`` encoder parameters are timed (the rest are noted as
skipped); on CUDA every preset is timed with bf16 autocast.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from argusrank.models.argus import ArgusModel, autocast
from argusrank.models.batch import random_sequence_batch
from argusrank.models.config import PRESETS, preset
from machine_info import machine  # bench/machine_info.py


def count(name: str) -> tuple[int, int]:
    with torch.device("meta"):
        m = ArgusModel(preset(name))
    return m.num_parameters(encoder_only=True), m.num_parameters(encoder_only=False)


def throughput(name: str, batch: int, length: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    m = ArgusModel(preset(name, max_len=max(length, PRESETS[name].max_len))).to(device).train()
    opt = m.configure_optimizer(lr=1e-4, weight_decay=0.01)
    data = random_sequence_batch(batch, length, seed=0, n_items=100_000, min_len=length).to(device)
    events = int(data.valid.sum())

    def step():
        with autocast(device):
            loss = m.pretrain_losses(data)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return events / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cpu-max-params", type=float, default=25e6)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    mach = machine()  # before the work: its load average says how idle the box was
    device = "cuda" if torch.cuda.is_available() else "cpu"

    rows = []
    print(f"ARGUS presets — {mach}; throughput: batch {args.batch} x {args.length} events, "
          f"median of {args.steps} training steps")
    print(f"{'preset':<7}{'d_model':>8}{'layers':>7}{'encoder params':>16}{'total params':>15}{'train events/s':>16}")
    for name in args.presets.split(","):
        cfg = preset(name)
        enc, total = count(name)
        if device == "cpu" and enc > args.cpu_max_params:
            eps, note = None, f"skipped on CPU (> {args.cpu_max_params:.0e} encoder params)"
        else:
            eps, note = throughput(name, args.batch, args.length, args.steps, device), ""
        rows.append({"preset": name, "d_model": cfg.d_model, "n_layers": cfg.n_layers, "encoder_params": enc,
                     "total_params": total, "train_events_per_s": eps, "note": note})
        shown = f"{eps:>16,.0f}" if eps is not None else f"{'-':>16}  {note}"
        print(f"{name:<7}{cfg.d_model:>8}{cfg.n_layers:>7}{enc:>16,}{total:>15,}{shown}", flush=True)
    if args.json:
        print(json.dumps({"machine": mach, "device": device, "batch": args.batch, "length": args.length,
                          "presets": rows}))


if __name__ == "__main__":
    main()
