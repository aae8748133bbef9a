"""What the user tower reads: pooled event tokens, the transformer state, or both (issue 13's ablation).

Fine-tunes a home's pre-trained ARGUS version in-process three times with the same recipe, data and seed
(the ``finetune`` config: epochs, lr, batch, lag; no validation hold-out, so every variant trains on all
impressions before T for the full epoch count) and reports the fine-tuned dot's weighted PairAccuracy on
the test window's pairs after every epoch:

- ``both``: the default tower input, ``LayerNorm(running mean of the event tokens) + state_mix * state``;
- ``pooled``: ``state_mix`` frozen at 0 (the transformer state never reaches the tower);
- ``state``: the encoder state alone (what the tower read before ``tower_pool``).

    .venv/bin/python bench/tower_ablation.py --home <home with a pre-trained version> [--init 1]
        [--variants both pooled state] [--threads 1] [--json out.json|-]
"""
from __future__ import annotations

import argparse
import math
import time

from json_out import emit_json  # noqa: E402
from machine_info import machine_info  # bench/machine_info.py


def rows(cfg, model_max_len: int):
    """(train, test) fine-tuning rows of the home's dataset, cut as the job cuts them: impressions before T,
    and in [T, T_end)."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training.feed import finetune_rows

    hist = build_histories(read_events(cfg.dataset_dir))
    split = dataset_split(cfg.dataset_dir, "temporal", cfg.data.test_days)
    return (finetune_rows(cfg, hist, model_max_len, None, split.T),
            finetune_rows(cfg, hist, model_max_len, split.T, split.T_end))


def restrict_tower(model, variant: str) -> None:
    """Make ``model``'s user tower read only the pooled tokens or only the encoder state."""
    import types

    import torch

    if variant == "pooled":
        with torch.no_grad():
            model.state_mix.zero_()
        model.state_mix.requires_grad_(False)
    elif variant == "state":
        model._user_state = types.MethodType(lambda self, p: p.state, model)
    elif variant != "both":
        raise ValueError(f"unknown variant {variant!r}")


def finetune(cfg, init: int, variant: str, train: dict, test: dict, seed: int) -> dict:
    import torch

    from argusrank.features.sequences import iterate_batches
    from argusrank.models.batch import FinetuneBatch
    from argusrank.platform import registry
    from argusrank.platform.training.evaluate import pair_accuracy_sums
    from argusrank.platform.training.worker import lr_lambda

    f = cfg.finetune
    model, _ = registry.load_argus(cfg, init)
    restrict_tower(model, variant)
    torch.manual_seed(seed)
    opt = model.configure_optimizer(f.lr, cfg.train.weight_decay)
    total = f.epochs * math.ceil(len(train["item_id"]) / f.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(cfg.train.warmup_steps, total // 2), total))

    def test_pair_accuracy() -> float:
        model.eval()
        c, w, _ = pair_accuracy_sums(model, test, f.lag_s)
        model.train()
        return round(c / w, 4)

    out = {"variant": variant, "pair_accuracy_by_epoch": [test_pair_accuracy()], "state_mix": []}
    t0 = time.perf_counter()
    model.train()
    for epoch in range(f.epochs):
        for arr in iterate_batches(train, f.batch_size, shuffle=True, seed=seed * 1000 + epoch, trim=True):
            loss = model.finetune_loss(FinetuneBatch.from_numpy(arr), f.lag_s)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
        out["pair_accuracy_by_epoch"].append(test_pair_accuracy())
        out["state_mix"].append(round(float(model.state_mix.detach()), 4) if variant != "state" else None)
        print(f"{variant}: epoch {epoch + 1}/{f.epochs} test PairAccuracy {out['pair_accuracy_by_epoch'][-1]}",
              flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["final"], out["best"] = out["pair_accuracy_by_epoch"][-1], max(out["pair_accuracy_by_epoch"][1:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="argusrank home with a dataset and a pre-trained ARGUS version")
    ap.add_argument("--init", type=int, default=1, help="the pre-trained version to fine-tune (default 1)")
    ap.add_argument("--variants", nargs="+", default=["both", "pooled", "state"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. finetune.epochs=8")
    ap.add_argument("--json", default=None, help="write the results here (- = stdout, last line)")
    args = ap.parse_args()
    import torch

    from argusrank.platform.config import load_config

    torch.set_num_threads(args.threads)
    machine = machine_info()
    cfg = load_config(overrides={"paths.home": args.home, **dict(s.split("=", 1) for s in args.set)}, env={})
    from argusrank.platform import registry

    train, test = rows(cfg, registry.load_argus(cfg, args.init)[0].cfg.max_len)
    results = [finetune(cfg, args.init, v, train, test, cfg.seed) for v in args.variants]
    print(f"{'variant':<8} {'final':>7} {'best':>7} {'seconds':>8}")
    for r in results:
        print(f"{r['variant']:<8} {r['final']:>7} {r['best']:>7} {r['seconds']:>8}")
    f = cfg.finetune
    emit_json({"machine": machine, "home": args.home, "init_version": args.init,
               "recipe": {"epochs": f.epochs, "lr": f.lr, "batch_size": f.batch_size, "lag_s": f.lag_s},
               "results": results}, args.json)


if __name__ == "__main__":
    main()
