"""``argusrank quality`` (import -> train -> evaluate, one JSON line) and ``argusrank scaling``.

The quality defaults (:data:`QUALITY_DEFAULTS`) are the settings that gave the
best NDCG@10 in a few minutes on 2 CPU cores on ML-100K (see bench/README.md,
"Quality"); the command line (``--preset``, ``--epochs``, ``--time-budget``,
``--set``) overrides them.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from argusrank.features.sources import FORMATS, build_dataset
from argusrank.features.splits import PROTOCOLS
from argusrank.platform.config import ArgusrankConfig, with_overrides
from argusrank.platform.training.checks import available_cpus
from argusrank.platform.training.evaluate import evaluate_model
from argusrank.platform.training.jobs import run_pretrain

MODELS = ("argus", "sasrec", "sasrec-classic")

#: config overrides `quality` starts from (tuned on ML-100K, 2 CPU cores; bench/README.md "Quality")
QUALITY_DEFAULTS: dict[str, Any] = {
    "model.preset": "tiny",
    "model.overrides": {"d_model": 64, "item_dim": 64, "nip_dim": 64, "tower_dim": 32, "n_layers": 2, "n_heads": 2,
                        "hash_buckets": 1 << 15, "n_uniform_negatives": 256, "dropout": 0.2, "item_table": "auto"},
    "train.epochs": 200,  # at most: early stopping on the validation split ends training
    "train.valid_every": 1,
    "train.patience": 5,
    "train.patience_steps": 160,  # ML-100K: 8-15 steps per epoch; 5 epochs alone stop on the first plateau
    "train.time_budget_s": 1500.0,
    "train.lr_schedule": "constant",
    "train.length_buckets": 8,
    "train.batch_size": 64,
    "train.lr": 1e-3,
    "train.warmup_steps": 20,
    "train.num_workers": 1,
    "train.cpus_per_worker": 2,
    "data.max_len": 200,
    "data.test_days": 7.0,
}

#: what sasrec-classic starts from instead: the paper's recipe (models/sasrec_classic.py sizes,
#: Adam lr 1e-3, batch 128, no warmup, no weight decay); early stopping as for the others
CLASSIC_DEFAULTS: dict[str, Any] = {"model.overrides": {}, "train.batch_size": 128, "train.lr": 1e-3,
                                    "train.warmup_steps": 0, "train.weight_decay": 0.0}


def quality_config(
    cfg: ArgusrankConfig,
    model: str,
    protocol: str,
    negatives: str,
    seed: int,
    preset: str | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    user_overrides: dict[str, Any] | None = None,
) -> ArgusrankConfig:
    """``cfg`` with the quality defaults, then the explicit choices, then ``user_overrides``."""
    if model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {model!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    sets = dict(QUALITY_DEFAULTS)
    if model == "sasrec-classic":
        sets.update(CLASSIC_DEFAULTS)
    sets["train.cpus_per_worker"] = max(1, min(int(sets["train.cpus_per_worker"]), available_cpus()))
    sets.update({"seed": seed, "model.kind": model, "eval.protocol": protocol, "eval.negatives": str(negatives)})
    if preset is not None:
        sets["model.preset"] = preset
    if epochs is not None:
        sets["train.epochs"] = epochs
    if time_budget_s is not None:
        sets["train.time_budget_s"] = time_budget_s
        if epochs is None:  # the LR schedule spans `epochs`; the budget cuts it short
            sets["train.epochs"] = max(int(sets["train.epochs"]), 1)
    sets.update(user_overrides or {})
    return with_overrides(cfg, sets)


def prepare_dataset(cfg: ArgusrankConfig, fmt: str, src: str | Path | None) -> Path:
    """Import (or synthesize) once into ``<home>/data/quality-<fmt>-<hash of source>``."""
    from argusrank.features.io import read_metadata

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if src is None and fmt not in ("synth", "movielens-100k"):
        raise ValueError(f"--format {fmt} needs a SRC path (only movielens-100k downloads itself)")
    key = json.dumps({"fmt": fmt, "src": str(Path(src).resolve()) if src else None,
                      "synth": cfg.data.synth.model_dump() if fmt == "synth" else None,
                      "seed": cfg.seed if fmt == "synth" else None}, sort_keys=True)
    out = cfg.paths.data_dir / f"quality-{fmt}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    try:
        if read_metadata(out).get("n_events"):
            return out
    except FileNotFoundError:
        pass
    build_dataset(fmt, src, out, cfg.data.synth, cfg.seed, user_buckets=cfg.data.user_buckets)
    return out


def run_quality(
    cfg: ArgusrankConfig,
    fmt: str,
    src: str | Path | None,
    model: str = "argus",
    protocol: str = "temporal",
    negatives: str = "all",
    seed: int = 0,
    preset: str | None = None,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    user_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import ``fmt``/``src``, pre-train ``model`` on the protocol's training part, evaluate.

    Returns the flat metrics plus ``model``, ``protocol``, ``negatives``, ``seed``,
    ``preset``, ``epochs``, ``n_users``, ``n_items``, ``n_parameters``, ``train_seconds``,
    ``popularity_ndcg@10``.
    """
    qcfg = quality_config(cfg, model, protocol, negatives, seed, preset, epochs, time_budget_s, user_overrides)
    data = prepare_dataset(qcfg, fmt, src)
    res = run_pretrain(qcfg, data, register=False, protocol=protocol)
    pop = evaluate_model(qcfg, data, "popularity", protocol=protocol, negatives=str(negatives), stages=("ranking",))
    m = res["metrics"]
    out = {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and v is not None}
    out.update({"model": model, "protocol": protocol, "negatives": str(negatives), "seed": seed, "format": fmt,
                "preset": qcfg.model.preset, "epochs": qcfg.train.epochs,
                "epochs_done": len(res["history"]), "train_seconds": round(res["train_seconds"], 2),
                "n_parameters": res.get("n_parameters"), "run_id": res["run_id"],
                "popularity_ndcg@10": pop.get("ndcg@10"), "popularity_hr@10": pop.get("hr@10")})
    out.setdefault("ndcg@10", math.nan)
    out.setdefault("hr@10", math.nan)
    if protocol == "temporal" and res.get("model") is not None:  # candidate sources on the same split
        from argusrank.platform.training.candidate_recall import candidate_recall, has_candidate_spaces

        if has_candidate_spaces(res["model"]):  # sasrec-classic has no tower / NIP space to generate from
            out["candidate_recall"] = candidate_recall(qcfg, data, model=res["model"])
    return out


def run_scaling(
    cfg: ArgusrankConfig,
    dataset_dir: str | Path,
    presets: list[str],
    out_file: str | Path,
    protocol: str = "temporal",
    metric: str = "ndcg@10",
) -> list[dict[str, Any]]:
    """Pre-train each preset on the same data and seed; plot ``metric`` vs log10(encoder
    parameters) to ``out_file`` and to MLflow. Returns one row per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from argusrank.platform.tracking import safe_key, start_run

    rows = []
    with start_run(cfg, "scaling", tags={"dataset": str(Path(dataset_dir).resolve())}):
        for name in presets:
            pcfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"preset": name})})
            res = run_pretrain(ArgusrankConfig.model_validate(pcfg.model_dump()), dataset_dir, register=False,
                               protocol=protocol)
            row = {"preset": name, "n_parameters": res["n_parameters"], "train_seconds": res["train_seconds"],
                   **{k: v for k, v in res["metrics"].items() if isinstance(v, (int, float))}}
            rows.append(row)
            mlflow.log_metric(safe_key(metric), float(row.get(metric, math.nan)),
                              step=int(row["n_parameters"]))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [math.log10(r["n_parameters"]) for r in rows]
        ys = [r.get(metric, math.nan) for r in rows]
        ax.plot(xs, ys, marker="o")
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(r["preset"], (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("log10(encoder parameters)")
        ax.set_ylabel(metric)
        ax.set_title(f"ARGUS scaling ({protocol} split)")
        fig.tight_layout()
        out_file = Path(out_file)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_file, dpi=120)
        mlflow.log_figure(fig, "plots/scaling.png")
        plt.close(fig)
        mlflow.log_text(json.dumps(rows, indent=1, default=str), "scaling.json")
    return rows


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def run_quality_seeds(cfg: ArgusrankConfig, fmt: str, src: str | Path | None, seeds: list[int],
                      **kw: Any) -> dict[str, Any]:
    """:func:`run_quality` for each seed; numeric metrics are the means over seeds, with
    ``<metric>_se`` (standard error, None for one seed), ``seeds`` and ``per_seed`` (the runs)."""
    runs = [run_quality(cfg, fmt, src, seed=s, **kw) for s in seeds]
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed":
            vals = [r.get(k) for r in runs]
            if all(isinstance(x, (int, float)) and math.isfinite(x) for x in vals):
                out[k], out[f"{k}_se"] = _mean_se([float(x) for x in vals])
    if all("candidate_recall" in r for r in runs):  # mean over seeds, source by source
        first = runs[0]["candidate_recall"]
        out["candidate_recall"] = {src: {k: float(np.mean([r["candidate_recall"][src][k] for r in runs])) for k in row}
                                   if isinstance(row, dict) else row for src, row in first.items()}
    out.update(seed=seeds[0], seeds=list(seeds), per_seed=runs, run_id=[r["run_id"] for r in runs])
    return out
