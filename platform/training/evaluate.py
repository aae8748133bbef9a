"""Offline evaluation of a registered ARGUS model (or the popularity baseline).

Protocols (ARGUS.md section 4):

The split and its target rule are ``features/splits.py``'s; here:

- ``temporal``: test users' full histories are fed in; only targets inside the
  window count. Reports NIP and FP losses on the window, Recall@K / NDCG@K of
  the true next (positive) items over the FULL catalog, and weighted
  PairAccuracy on the window's impression pairs.
- ``loo``: HR@K / NDCG@K of each user's last event against 100 sampled unseen
  negatives or the full catalog.

Ranking rule: a target's rank is the number of candidates scoring strictly
higher PLUS those tied with it (pessimistic), so a constant scorer cannot look
good. With ``filter_seen`` the user's earlier items (other than the target) are
removed from the candidates. All scoring is batched torch (no per-user loops).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from argusrank.features.splits import Split, dataset_split, eval_arrays, train_item_ids
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.training.feed import finetune_rows
from argusrank.platform.tracking import log_metrics, start_run

#: which metrics name the ranking hit-rate per protocol
HIT_NAME = {"temporal": "recall", "loo": "hr"}


# ------------------------------------------------------------------------------ ranking core
#: the most (target, catalog item) scores held at once (128 MB of float32): 2048 targets up to a 16K catalog,
#: 135 at 248K items, 3 at 9.4M
SCORE_ELEMENTS = 1 << 25


def target_ranks(
    scores: torch.Tensor,  # (n, C) candidate scores
    target: torch.Tensor,  # (n,) int64 column of the true item
    exclude: torch.Tensor | None = None,  # (n, C) bool, candidates removed (never the target)
) -> torch.Tensor:  # (n,) int64, 0 = best
    """Pessimistic 0-based rank of each target among its row's candidates."""
    s_t = scores.gather(1, target[:, None])  # (n, 1)
    beats = scores >= s_t
    if exclude is not None:
        beats &= ~exclude
    beats.scatter_(1, target[:, None], False)  # the target does not beat itself
    return beats.sum(dim=1)


def rank_metric_sums(ranks: torch.Tensor, ks: list[int], hit_name: str) -> dict[str, float]:
    """Sums (not means) of hit@K and NDCG@K over targets with 0-based ``ranks``."""
    out: dict[str, float] = {}
    r = ranks.double()
    for k in ks:
        inside = ranks < k
        out[f"{hit_name}@{k}"] = float(inside.sum())
        out[f"ndcg@{k}"] = float((inside.double() / torch.log2(r + 2.0)).sum())
    out["mrr"] = float((1.0 / (r + 1.0)).sum())
    return out


class _Sums:
    """Accumulates metric sums with their counts; ``means()`` divides."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, values: dict[str, float], count: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0.0) + count

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k] > 0}


# ------------------------------------------------------------------------------ scorers
class Catalog:
    """The candidate set: every item of the dataset, sorted raw IDs <-> column index."""

    def __init__(self, item_ids: np.ndarray) -> None:
        self.ids = torch.as_tensor(np.unique(np.asarray(item_ids, dtype=np.int64)))  # (C,)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, raw: torch.Tensor) -> torch.Tensor:
        """Column index of raw IDs (-1 where not in the catalog)."""
        idx = torch.searchsorted(self.ids, raw.clamp(min=0)).clamp(max=len(self.ids) - 1)
        return torch.where(self.ids[idx] == raw, idx, torch.full_like(idx, -1))


#: a scorer maps (SequenceBatch, positions (n,2) [row, col]) -> scores (n, C) over the catalog
Scorer = Callable[[Any, torch.Tensor], torch.Tensor]


def model_scorer(model, catalog: Catalog, chunk: int = 8192) -> Scorer:
    """NIP retrieval scores: query at position t (state before t + context t) . item embeddings."""
    with torch.no_grad():
        items = torch.cat([model.nip_item_embeddings(catalog.ids[i : i + chunk]).float()
                           for i in range(0, len(catalog), chunk)])  # (C, d)

    last: dict = {}  # the queries of the batch last scored: its targets come in several chunks

    def score(batch, pos: torch.Tensor) -> torch.Tensor:
        if last.get("batch") is not batch:
            q = model.nip_queries(batch).float()  # (B, L, d), in the model's prepared order
            if getattr(model.cfg, "positives_only", False):  # SASRec: back to the batch's positions
                from argusrank.models.batch import positives_only

                order = positives_only(batch)[1]  # new j holds old order[:, j]
                q = torch.empty_like(q).scatter_(1, order[..., None].expand_as(q), q)
            last.update(batch=batch, q=q)
        return last["q"][pos[:, 0], pos[:, 1]] @ items.T  # (n, C)

    return score


def item_counts(item_ids: np.ndarray, catalog: Catalog) -> torch.Tensor:
    """(C,) count of every catalog item in ``item_ids`` (summable over user buckets)."""
    idx = catalog.index(torch.as_tensor(np.asarray(item_ids, dtype=np.int64)))
    return torch.bincount(idx[idx >= 0], minlength=len(catalog))


def popularity_scorer(counts: torch.Tensor) -> Scorer:
    """Baseline: every query ranks items by their ``counts`` in the training events (:func:`item_counts`)."""
    pop = torch.log1p(counts.float())  # (C,)

    def score(batch, pos: torch.Tensor) -> torch.Tensor:
        return pop.expand(len(pos), -1)

    return score


# ------------------------------------------------------------------------------ ranking eval
def ranking_eval(scorer: Scorer, arrays: dict[str, np.ndarray], catalog: Catalog, *, ks: list[int], hit_name: str,
                 negatives: str = "all", filter_seen: bool = False, batch_size: int = 256,
                 seed: int = 0) -> dict[str, float]:
    """HR/Recall@K, NDCG@K, MRR over every ``target_mask`` position of ``arrays`` (means, and ``n_targets``).

    ``negatives="100"``: the target against 100 items drawn uniformly without
    replacement from those the user has not had before the target;
    ``"all"``: against the full catalog (``filter_seen`` removes earlier items).
    """
    sums = _Sums()
    n_targets = ranking_sums(scorer, arrays, catalog, sums, torch.Generator().manual_seed(seed), ks=ks,
                             hit_name=hit_name, negatives=negatives, filter_seen=filter_seen, batch_size=batch_size)
    return {**sums.means(), "n_targets": n_targets}


def ranking_sums(
    scorer: Scorer,
    arrays: dict[str, np.ndarray],
    catalog: Catalog,
    sums: _Sums,
    gen: torch.Generator,
    *,
    ks: list[int],
    hit_name: str,
    negatives: str = "all",
    filter_seen: bool = False,
    batch_size: int = 256,
    max_targets_per_chunk: int | None = None,
) -> int:
    """:func:`ranking_eval`'s work, added into ``sums`` (sampled negatives drawn from ``gen``); returns the
    number of targets. Summable over parts of the users (evaluation streams user bucket by user bucket).
    Targets are scored against the catalog in chunks of ``max_targets_per_chunk`` (default: as many as keep a
    chunk's (targets, catalog) scores within :data:`SCORE_ELEMENTS`, at most 2048), so memory does not grow with
    the catalog."""
    from argusrank.features.sequences import iterate_batches
    from argusrank.models.batch import SequenceBatch

    max_targets_per_chunk = max_targets_per_chunk or max(1, min(2048, SCORE_ELEMENTS // max(len(catalog), 1)))
    n_targets = 0
    for arr in iterate_batches(arrays, batch_size, shuffle=False, seed=0, trim=True):
        batch = SequenceBatch.from_numpy(arr)
        pos = batch.target_mask.nonzero()  # (n, 2)
        if len(pos) == 0:
            continue
        with torch.no_grad():
            for lo in range(0, len(pos), max_targets_per_chunk):
                p = pos[lo : lo + max_targets_per_chunk]
                target = catalog.index(batch.item_id[p[:, 0], p[:, 1]])  # (n,)
                keep = target >= 0
                p, target = p[keep], target[keep]
                if len(p) == 0:
                    continue
                scores = scorer(batch, p)  # (n, C)
                seen = None
                if filter_seen or negatives != "all":
                    hist = batch.item_id[p[:, 0]]  # (n, L)
                    before = torch.arange(hist.shape[1])[None, :] < p[:, 1:2]
                    hidx = catalog.index(hist)
                    ok = before & batch.valid[p[:, 0]] & (hidx >= 0)
                    hits = torch.zeros(scores.shape, dtype=torch.int32)  # scatter_add: duplicates safe
                    hits.scatter_add_(1, torch.where(ok, hidx, torch.zeros_like(hidx)), ok.int())
                    seen = hits > 0
                    seen.scatter_(1, target[:, None], False)
                if negatives == "all":
                    ranks = target_ranks(scores, target, seen if filter_seen else None)
                else:
                    n_neg = int(negatives)
                    keys = torch.rand(scores.shape, generator=gen)
                    keys[seen] = 2.0
                    keys.scatter_(1, target[:, None], 3.0)
                    neg = keys.topk(n_neg, dim=1, largest=False).indices  # (n, n_neg) unseen, not target
                    cand = torch.cat([target[:, None], neg], dim=1)  # target at column 0
                    ranks = target_ranks(scores.gather(1, cand), torch.zeros_like(target))
                sums.add(rank_metric_sums(ranks, ks, hit_name), len(ranks))
                n_targets += len(ranks)
    return n_targets


def validation_sums(model, arrays: dict[str, np.ndarray], catalog_ids: np.ndarray, k: int = 10,
                    batch_size: int = 256) -> tuple[float, float]:
    """(sum of NDCG@k, number of targets) over ``arrays``' targets, full catalog (early stopping)."""
    if not arrays or not len(arrays["valid"]):
        return 0.0, 0.0
    catalog = Catalog(catalog_ids)
    res = ranking_eval(model_scorer(model, catalog), arrays, catalog, ks=[k], hit_name="hr", batch_size=batch_size)
    return res.get(f"ndcg@{k}", 0.0) * res["n_targets"], float(res["n_targets"])


# ------------------------------------------------------------------------------ losses / pairs
def loss_names(sums: _Sums) -> dict[str, float]:
    """:func:`loss_sums`' means, named ``<loss>_loss``."""
    return {f"{k}_loss" if not k.endswith("loss") else k: v for k, v in sums.means().items()}


def loss_sums(model, arrays: dict[str, np.ndarray], batch_size: int, sums: _Sums) -> None:
    """NIP and FP losses over ``target_mask`` positions, target-weighted, added into ``sums`` (:func:`loss_names`
    gives the means; sampled-softmax negatives from torch's global RNG)."""
    from argusrank.features.sequences import iterate_batches
    from argusrank.models.batch import SequenceBatch

    with torch.no_grad():
        for arr in iterate_batches(arrays, batch_size, shuffle=False, seed=0):
            batch = SequenceBatch.from_numpy(arr)
            n = int(batch.target_mask.sum())
            if n == 0:
                continue
            losses = model.pretrain_losses(batch)
            vals = {k: float(v) * n for k, v in losses.items() if k != "loss" and torch.is_tensor(v) and v.numel() == 1}
            sums.add(vals, n)


def pair_accuracy_sums(model, arrays: dict[str, np.ndarray], lag_s: int, batch_size: int = 64,
                       device=None) -> tuple[float, float, int]:
    """(weighted correct, total weight, pairs) of the dot scores over ``arrays``' pairs (fine-tuning rows),
    with the loss's pair weights (pairs touching an invalid impression weigh 0)."""
    from argusrank.features.sequences import iterate_batches
    from argusrank.models.argus import pair_weights
    from argusrank.models.batch import FinetuneBatch
    from argusrank.models.metrics import pair_accuracy_terms

    correct = total = 0.0
    n_pairs = 0
    if not arrays or not len(arrays["valid"]):
        return correct, total, n_pairs
    with torch.no_grad():
        for arr in iterate_batches(arrays, batch_size, shuffle=False, seed=0):
            fb = FinetuneBatch.from_numpy(arr, device)
            scores = model.finetune_loss(fb, lag_s)["scores"].float()  # (B, K)
            w = pair_weights(fb).float()  # (B, P)
            c, t = pair_accuracy_terms(scores.gather(1, fb.pair_a), scores.gather(1, fb.pair_b), w)
            correct, total = correct + float(c), total + float(t)
            n_pairs += int((w > 0).sum())
    return correct, total, n_pairs


def pair_accuracy_eval(model, arrays: dict[str, np.ndarray], lag_s: int, batch_size: int) -> dict[str, float]:
    """Weighted PairAccuracy (``models.metrics``) over all pairs, with the loss's pair weights
    (pairs touching an invalid impression weigh 0)."""
    correct, total, n_pairs = pair_accuracy_sums(model, arrays, lag_s, batch_size)
    return {"pair_accuracy": correct / total if total > 0 else math.nan, "n_pairs": n_pairs}


# ------------------------------------------------------------------------------ orchestration
def dataset_catalog(dataset_dir: str | Path) -> Catalog:
    """Every item of the dataset (``items.parquet``: the items of its events)."""
    import pyarrow.parquet as pq

    return Catalog(pq.read_table(Path(dataset_dir) / "items.parquet", columns=["item_id"])["item_id"].to_numpy())


def evaluate_model(
    cfg: ArgusrankConfig,
    dataset_dir: str | Path,
    model,
    protocol: str = "temporal",
    negatives: str = "all",
    split: Split | None = None,
    stages: tuple[str, ...] = ("ranking", "losses", "pairs"),
    hist=None,
) -> dict[str, Any]:
    """Evaluate an in-memory model (``"popularity"`` for the baseline) on ``dataset_dir``.

    ``stages``: ``ranking`` (Recall/HR@K, NDCG@K, MRR), ``losses`` (NIP/FP, temporal
    only), ``pairs`` (weighted PairAccuracy, temporal only). Returns flat metrics.
    ``cfg.eval.max_users``: only the first user buckets, until that many users. Users are read and scored one
    user bucket at a time (features/histories.py ``histories_by_bucket``; all of
    ``hist`` when given):
    metrics are sums over buckets, so memory stays one bucket's. Sampled negatives (``negatives="100"``, the NIP
    loss) come from one seeded stream over the buckets in order.
    """
    from argusrank.features.histories import histories_by_bucket

    if protocol not in HIT_NAME:
        raise ValueError(f"protocol must be one of {sorted(HIT_NAME)}, got {protocol!r}")
    negatives = str(negatives)
    if negatives not in ("100", "all"):
        raise ValueError(f"negatives must be '100' or 'all', got {negatives!r}")
    ev = cfg.eval
    split = split if split is not None and split.protocol == protocol else \
        dataset_split(dataset_dir, protocol, cfg.data.test_days)
    catalog = dataset_catalog(dataset_dir) if hist is None else Catalog(hist.item_id)
    out: dict[str, Any] = {"protocol": protocol, "negatives": negatives, "n_items": len(catalog)}
    if protocol == "temporal":
        out.update(T=int(split.T), T_end=int(split.T_end))
    is_pop = isinstance(model, str) and model == "popularity"
    max_len = cfg.data.max_len
    if not is_pop:
        model.eval()
        max_len = min(max_len, model.cfg.max_len)  # a registered model may have a shorter positions table
    stages = tuple(s for s in stages if s == "ranking" or (not is_pop and protocol == "temporal"))
    if "ranking" in stages:
        if is_pop:  # counted over every bucket's training events before any is scored
            counts = sum(item_counts(train_item_ids(h, split), catalog)
                         for h in histories_by_bucket(dataset_dir, hist, "popularity"))
            scorer = popularity_scorer(counts)
        else:
            scorer = model_scorer(model, catalog)
    rank_sums, losses, gen = _Sums(), _Sums(), torch.Generator().manual_seed(cfg.seed)
    loss_rng = torch.Generator().manual_seed(cfg.seed).get_state()  # the NIP loss's negatives: their own stream
    n_users = n_targets = n_pairs = n_rows = 0
    pair_c = pair_w = 0.0
    for h in histories_by_bucket(dataset_dir, hist):
        n_users += h.n_users
        if "ranking" in stages:
            n_targets += ranking_sums(scorer, eval_arrays(h, split, max_len), catalog, rank_sums, gen, ks=ev.ks,
                                      hit_name=HIT_NAME[protocol], negatives=negatives,
                                      filter_seen=ev.filter_seen, batch_size=ev.batch_size)
        if "losses" in stages:
            with torch.random.fork_rng():  # the loss draws from torch's global RNG: give it the losses' stream
                torch.set_rng_state(loss_rng)
                loss_sums(model, eval_arrays(h, split, max_len, positives_only_targets=False), ev.batch_size, losses)
                loss_rng = torch.get_rng_state()
        if "pairs" in stages:
            rows = finetune_rows(cfg, h, model.cfg.max_len, split.T, split.T_end)
            c, w, n = pair_accuracy_sums(model, rows, cfg.finetune.lag_s, ev.batch_size)
            pair_c, pair_w, n_pairs, n_rows = pair_c + c, pair_w + w, n_pairs + n, n_rows + len(rows["valid"])
        if ev.max_users is not None and n_users >= ev.max_users:
            break  # a sample of whole buckets: the next is not read
    out["n_users"] = n_users
    if "ranking" in stages:
        res = {**rank_sums.means(), "n_targets": n_targets}
        out.update(res)
        if protocol == "loo":  # Recall@K == HR@K with one target per user: name both
            out.update({f"recall@{k}": res[f"hr@{k}"] for k in ev.ks if f"hr@{k}" in res})
        else:
            out.update({f"hr@{k}": res[f"recall@{k}"] for k in ev.ks if f"recall@{k}" in res})
    if "losses" in stages:
        out.update(loss_names(losses))
    if "pairs" in stages and n_rows:
        out.update(pair_accuracy=pair_c / pair_w if pair_w > 0 else math.nan, n_pairs=n_pairs)
    return out


def evaluate(
    cfg: ArgusrankConfig,
    dataset_dir: str | Path,
    model_ref: str | int = "candidate",
    protocol: str = "temporal",
    negatives: str = "all",
    log: bool = True,
) -> dict[str, Any]:
    """Evaluate a registered model (alias or version; ``"popularity"`` for the baseline).

    Logs the metrics to an MLflow run and stores them on the model version
    (``eval.*`` tags, used by ``promote``). Returns the metrics plus
    ``model_version`` and ``run_id``.
    """
    negatives = str(negatives)
    model, version = ("popularity", None) if str(model_ref) == "popularity" else registry.load_argus(cfg, model_ref)
    metrics = evaluate_model(cfg, dataset_dir, model, protocol=protocol, negatives=negatives)
    metrics["model_version"] = version
    if log:
        with start_run(cfg, "evaluate", tags={"model_ref": str(model_ref), "protocol": protocol,
                                                      "dataset": str(Path(dataset_dir).resolve())}) as run:
            log_metrics(metrics)
            metrics["run_id"] = run.info.run_id
        if version is not None:
            registry.set_version_metrics(cfg, version, {**{k: v for k, v in metrics.items() if k != "run_id"},
                                                        "dataset": str(Path(dataset_dir).resolve())})
    return metrics


def metrics_table(metrics: dict[str, Any], title: str = "evaluation"):
    """A rich table of the scalar metrics (ranking first, then losses, then the rest)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    order = lambda k: (0 if "@" in k or k == "mrr" else 1 if "loss" in k or k.startswith("nip") else 2, k)
    for k in sorted(metrics, key=order):
        v = metrics[k]
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}")
        elif isinstance(v, (int, str)) and v is not None:
            t.add_row(k, str(v))
    return t
