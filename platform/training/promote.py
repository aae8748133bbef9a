"""``argusrank promote``: move the ``champion`` alias to a version only when it beats the champion."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.registry import CANDIDATE, CHAMPION
from argusrank.platform.tracking import setup
from argusrank.platform.training.evaluate import evaluate


def _pick_metric(cfg: ArgusrankConfig, a: dict[str, str], b: dict[str, str]) -> str:
    if cfg.mlflow.promote_metric != "auto":
        return cfg.mlflow.promote_metric
    for key in ("pair_accuracy", "ndcg@10", "hr@10"):
        if key in a and key in b:
            return key
    raise ValueError("no common evaluation metric on the two versions: run `argusrank evaluate` on both first")


def promote(
    cfg: ArgusrankConfig,
    version: int | None = None,
    force: bool = False,
    dataset_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Set alias ``champion`` on ``version`` (default: the ``candidate``) if it beats the champion.

    Both versions are compared on the same evaluation: with ``dataset_dir`` they are
    (re-)evaluated now with ``cfg.eval``; otherwise their stored ``eval.*`` tags are
    compared and must come from the same dataset and protocol. The metric is
    ``cfg.mlflow.promote_metric`` (auto: pair_accuracy, else ndcg@10; higher wins).
    Returns ``{"promoted", "version", "champion_before", "metric", "candidate_value", "champion_value", "reason"}``.
    """
    name = cfg.mlflow.argus_model_name
    version = registry.resolve_version(cfg, CANDIDATE if version is None else version)
    try:
        current = registry.resolve_version(cfg, CHAMPION)
    except LookupError:
        current = None
    out: dict[str, Any] = {"version": version, "champion_before": current, "metric": None,
                           "candidate_value": None, "champion_value": None}
    if dataset_dir is not None:
        for v in {version, current} - {None}:
            evaluate(cfg, dataset_dir, v, protocol=cfg.eval.protocol, negatives=cfg.eval.negatives)
    if current == version:
        return {**out, "promoted": False, "reason": f"version {version} is already the champion"}
    if current is None:
        promoted, reason = True, "no champion yet"
    elif force:
        promoted, reason = True, "forced"
    else:
        cand, champ = registry.version_metrics(cfg, version), registry.version_metrics(cfg, current)
        if not cand:
            raise ValueError(f"version {version} has no evaluation: run `argusrank evaluate --model {version}` first")
        for key in ("dataset", "protocol", "negatives"):
            if champ.get(key) != cand.get(key):
                raise ValueError(
                    f"versions {version} and {current} were evaluated differently ({key}: "
                    f"{cand.get(key)!r} vs {champ.get(key)!r}); pass a dataset to re-evaluate both"
                )
        metric = _pick_metric(cfg, cand, champ)
        cv, hv = float(cand[metric]), float(champ[metric])
        out.update(metric=metric, candidate_value=cv, champion_value=hv)
        promoted = cv > hv
        reason = f"{metric} {cv:.5f} {'>' if promoted else '<='} champion's {hv:.5f}"
    if promoted:
        setup(cfg).set_registered_model_alias(name, CHAMPION, str(version))
    return {**out, "promoted": promoted, "reason": reason}
