"""Pre-training events/s of sasrec-classic, the SASRec ablation and ARGUS at equal size.

In-process training steps (forward, backward, optimizer) on the leave-one-out training
chunks of a dataset (default: MovieLens-100K through the quality importer), batches as
the Ray worker builds them: ``padded`` (every row max_len wide), ``trimmed`` (cut to the
batch's longest row) and ``bucketed`` (trimmed, rows of similar length per batch).
Events/s counts valid input events; each cell is the median of ``--repeats`` timings.

    .venv/bin/python bench/train_speed.py [--steps 20] [--repeats 3] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from json_out import emit_json  # noqa: E402
from machine_info import machine_info  # bench/machine_info.py


def model_cfgs(d: int, heads: int, layers: int, max_len: int, n_items: int, n_uniform: int,
               argus_negatives: list[str] = ()) -> dict[str, dict]:
    """Configs at one size: sasrec-classic, the sasrec ablation, argus (``n_uniform`` uniform + up to 1,024
    in-batch negatives) and one ``argus u<U> ib<I>`` per ``"U:I"`` of ``argus_negatives``."""
    from argusrank.models.config import preset, sasrec_config
    from argusrank.models.sasrec_classic import SASRecClassicConfig

    def argus_cfg(uniform: int, inbatch: int):
        return preset("tiny", d_model=d, item_dim=d, nip_dim=d, tower_dim=d, n_layers=layers, n_heads=heads,
                      max_len=max_len, item_table="catalog", n_items=n_items, n_uniform_negatives=uniform,
                      n_inbatch_negatives=inbatch, dropout=0.2, mlp_ratio=1)

    argus = argus_cfg(n_uniform, 1024)
    cfgs = {"sasrec-classic": SASRecClassicConfig(d_model=d, n_layers=layers, n_heads=heads, max_len=max_len,
                                                  n_items=n_items).to_dict(),
            "sasrec": sasrec_config(argus).to_dict(), "argus": argus.to_dict()}
    for spec in argus_negatives:
        u, i = (int(x) for x in spec.split(":"))
        cfgs[f"argus u{u} ib{i}"] = argus_cfg(u, i).to_dict()
    return cfgs


def measure(model_cfg: dict, arrays: dict, items, batch_size: int, mode: str, steps: int, repeats: int,
            lr: float = 1e-3) -> dict:
    import torch

    from argusrank.features.sequences import iterate_batches
    from argusrank.models.batch import SequenceBatch
    from argusrank.models.factory import model_from_config

    torch.manual_seed(0)
    model = model_from_config(model_cfg)
    model.set_vocab(torch.as_tensor(items))
    model.set_catalog(torch.as_tensor(items))
    opt = model.configure_optimizer(lr, 0.0)
    model.train()
    trim, bucket = mode != "padded", 8 if mode == "bucketed" else 0

    def batches(seed: int):
        while True:
            yield from iterate_batches(arrays, batch_size, shuffle=True, seed=seed, trim=trim, bucket=bucket)
            seed += 1

    it = batches(0)
    rates = []
    for r in range(repeats + 1):  # the first round warms up
        events, t0 = 0, time.perf_counter()
        for _ in range(steps):
            b = SequenceBatch.from_numpy(next(it))
            loss = model.pretrain_losses(b)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            events += int(b.valid.sum())
        if r:
            rates.append(events / (time.perf_counter() - t0))
    return {"events_per_s": statistics.median(rates), "rates": rates,
            "n_parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset dir (default: ML-100K via the quality importer)")
    ap.add_argument("--home", default="/tmp/argusrank-bench-speed")
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--uniform-negatives", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["sasrec-classic", "sasrec", "argus"],
                    help="among sasrec-classic, sasrec, argus ('argus' also runs the --argus-negatives variants)")
    ap.add_argument("--argus-negatives", nargs="*", default=[], metavar="U:I",
                    help="extra argus rows with U uniform and at most I in-batch negatives per position (e.g. 64:256)")
    ap.add_argument("--modes", nargs="+", default=["padded", "trimmed", "bucketed"])
    ap.add_argument("--json", default=None, help="write the results to this file (- prints them)")
    a = ap.parse_args()
    m = machine_info()  # before the work: the load others put on the machine

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch
    from rich.console import Console
    from rich.table import Table

    from argusrank.features.histories import build_histories, restrict
    from argusrank.features.io import read_events, read_metadata
    from argusrank.features.sequences import pretrain_arrays
    from argusrank.features.splits import Split, train_histories
    from argusrank.platform.config import load_config
    from argusrank.platform.training.quality import prepare_dataset

    torch.set_num_threads(a.threads)
    data = a.data or prepare_dataset(load_config(None, {"paths.home": a.home}, env={}), "movielens-100k", None)
    hist = build_histories(read_events(data))
    n_items = int(read_metadata(data)["n_items"])
    rows = []
    for name, mc in model_cfgs(a.d, a.heads, a.layers, a.max_len, n_items, a.uniform_negatives,
                               a.argus_negatives).items():
        if name.split(" ")[0] not in a.models:
            continue
        train = train_histories(hist, Split("loo"))
        train = train if name.startswith("argus") else restrict(train, positives_only=True)
        arrays = pretrain_arrays(train, a.max_len)
        for mode in a.modes:
            r = measure(mc, arrays, hist.item_id, a.batch_size, mode, a.steps, a.repeats)
            rows.append({"model": name, "mode": mode, "n_rows": int(len(arrays["valid"])),
                         "events_per_row": float(arrays["valid"].sum(1).mean()), **r})
            print(json.dumps({k: rows[-1][k] for k in ("model", "mode", "events_per_s")}), flush=True)
    t = Table(title=f"pre-training events/s, d={a.d}, {a.layers} blocks, {a.heads} head(s), batch {a.batch_size}, "
                    f"max_len {a.max_len}; {m['cores']} CPUs, torch {a.threads} threads; median of {a.repeats}")
    for col in ("model", "mode", "events/s", "params", "rows", "events/row"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["model"], r["mode"], f"{r['events_per_s']:,.0f}", f"{r['n_parameters']:,}", str(r["n_rows"]),
                  f"{r['events_per_row']:.1f}")
    Console().print(t)
    out = {"rows": rows, "machine": m, "args": vars(a)}
    emit_json(out, a.json)


if __name__ == "__main__":
    main()
