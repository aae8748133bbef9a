"""Candidate recall: how well each candidate source covers what users play next (temporal split).

For every positive event of the test window ``[T, T_end)`` the user's state is the one serving would
have at that time: the daily snapshot vectors (``export``'s snapshots, the latest at or before the
event). Each source proposes its top-K for that (user, snapshot):

- ``popular``: the serving fallback order (7-day popularity, then 30-day, then item id) at the snapshot;
- ``tower``: exact top-K of the user tower vector against the item tower vectors;
- ``nip``: exact top-K of the NIP query for a feed request against the items' NIP embeddings;
- ``merged``: the configured merge (``serve.candidates``: per-source quotas, de-duplicated).

Recall@K is the share of target events whose item is in the top K; ``*_seen_filtered`` removes the
items the user had before the snapshot first. A user with no event before the snapshot gets the
popular list from every source (the serving fallback). Exact search here; ANN recall vs exact is
``bench/ann.py``'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from argusrank.features import baseline
from argusrank.features.histories import events_until
from argusrank.features.splits import POSITIVE_GRADE, dataset_split
from argusrank.models.candidate_merge import merge_candidates
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.inference import item_vectors, user_vectors, window_arrays

KS = (100, 500)
SOURCES = ("popular", "tower", "nip")


def _queries(t_user: np.ndarray, t_ts: np.ndarray, snaps: np.ndarray):
    """Unique (user index, snapshot index) of the targets and the target -> query map."""
    snap = np.searchsorted(snaps, t_ts, side="right") - 1
    uq, inv = np.unique(t_user * len(snaps) + snap, return_inverse=True)
    return uq // len(snaps), uq % len(snaps), inv


def _popular_orders(stats: pa.Table, snaps: np.ndarray, catalog: np.ndarray) -> np.ndarray:
    """(S, C) catalog positions in the serving fallback order at each snapshot, from ``item_stats`` rows."""
    stats = stats.to_pandas()
    orders = []
    for s in snaps:
        row = stats[stats["event_timestamp"].astype("int64") // 10**9 == s] if len(stats) else stats
        pos, ok = baseline.lookup_sorted(catalog, row["item_id"].to_numpy()) if len(row) else (np.zeros(0, int), np.zeros(0, bool))
        pop = np.zeros((len(catalog), 2))
        for j, col in enumerate(("item_pop_7d", "item_pop_30d")):
            pop[pos[ok], j] = np.nan_to_num(row[col].to_numpy(np.float64))[ok]
        orders.append(np.lexsort((catalog, -pop[:, 1], -pop[:, 0])))
    return np.stack(orders)


def _top(scores: torch.Tensor, seen: torch.Tensor | None, k: int) -> np.ndarray:
    if seen is not None:
        scores = scores.masked_fill(seen, -torch.inf)
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return torch.where(torch.isfinite(top.values), top.indices, -1).numpy()


class ModelVectors:
    """User vectors computed from the model at each snapshot (as the export would write them)."""

    def __init__(self, model, hist, catalog: np.ndarray):
        self.model, self.hist = model.eval(), hist
        self.items = {space: item_vectors(self.model, catalog, space) for space in ("tower", "nip")}

    def users(self, space: str, u: np.ndarray, end: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        max_len = int(self.model.cfg.max_len)
        start = np.maximum(self.hist.offsets[u], end - max_len)
        return user_vectors(self.model, window_arrays(self.hist, start, end - start, as_of, space, max_len), space)


class ExportedVectors:
    """The vectors an export of ``version`` wrote: per (user, snapshot) rows, the catalog's item rows."""

    def __init__(self, cfg: ArgusrankConfig, version: int, hist, catalog: np.ndarray, only_hist_users: bool = False):
        import pyarrow.dataset as ds

        from argusrank.features import vectors

        self.hist, self.items, self.rows = hist, {}, {}
        for space in ("tower", "nip"):
            ids, vecs = vectors.read_version(cfg, vectors.kind_of("item", space), version)
            pos, ok = baseline.lookup_sorted(ids, catalog)
            self.items[space] = np.where(ok[:, None], vecs[np.maximum(pos, 0)], 0.0).astype(np.float32)
            kind = vectors.kind_of("user", space)
            flt = ds.field(f"{kind}_model_version") == int(version)
            if only_hist_users:  # a context of some users: their rows only
                flt &= ds.field("user_id").isin(pa.array(hist.user_ids))
            t = ds.dataset(cfg.paths.vectors_dir / vectors.VIEW_OF[kind], format="parquet").to_table(filter=flt)
            uidx = np.searchsorted(hist.user_ids, t["user_id"].to_numpy())  # user index: keys stay < 2^63
            key = uidx * 2**33 + t["event_timestamp"].cast("int64").to_numpy() // 10**6
            order = np.argsort(key, kind="stable")
            flat = t[f"{kind}_vector"].combine_chunks().flatten().to_numpy()
            self.rows[space] = (key[order], flat.reshape(t.num_rows, -1)[order].astype(np.float32))

    def users(self, space: str, u: np.ndarray, end: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        keys, vecs = self.rows[space]
        want = u.astype(np.int64) * 2**33 + as_of
        i = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        if not np.array_equal(keys[i], want):
            raise LookupError(f"the {space} export has no vector for some (user, snapshot): export with the "
                              "default snapshots (daily from T) before measuring candidate recall")
        return vecs[i]


@dataclass
class CandidateContext:
    """What every source needs on the temporal split: the users' histories, the daily snapshots of ``[T, T_end)``,
    the catalog (sorted item ids), the fallback order per snapshot and the vectors."""

    hist: Any
    split: Any
    snaps: np.ndarray
    catalog: np.ndarray
    popular: np.ndarray  # (S, C) catalog positions in the fallback order at each snapshot
    vecs: Any  # ExportedVectors | ModelVectors

    def known(self, q_user: np.ndarray, q_snap: np.ndarray) -> np.ndarray:
        """(Q,) the number of the user's events at or before the query's snapshot (0: the fallback user)."""
        end = events_until(self.hist, q_user, self.snaps[q_snap], inclusive=True)
        return end - self.hist.offsets[q_user]


def candidate_context(cfg: ArgusrankConfig, dataset_dir: str | Path, model=None,
                      version: int | None = None, users: np.ndarray | None = None) -> CandidateContext:
    """The :class:`CandidateContext` of a dataset: exported vectors of ``version`` (what serving reads), else
    vectors computed from ``model``. ``users``: the histories and user vectors of these users only (the catalog
    and the fallback orders still of all events, summed one user bucket at a time): a context whose memory is
    the users', not the log's."""
    from argusrank.features.histories import build_histories
    from argusrank.features.io import read_events
    from argusrank.platform.export import default_snapshots

    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    snaps = default_snapshots(cfg, split.T, split.T_end)
    hist = build_histories(read_events(dataset_dir, user_ids=users))
    stats, catalog = baseline.item_view_by_bucket(dataset_dir, snaps)  # every event's, whatever ``users``
    vecs = ExportedVectors(cfg, version, hist, catalog, only_hist_users=users is not None) if version is not None \
        else ModelVectors(model, hist, catalog)
    return CandidateContext(hist, split, snaps, catalog, _popular_orders(stats, snaps, catalog), vecs)


def source_lists(ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray, kmax: int,
                 filtered: tuple[bool, ...] = (False, True), chunk: int = 256) -> dict[tuple[str, bool], np.ndarray]:
    """Per query (user index, snapshot index), each source's exact top-``kmax`` catalog positions, best first
    (-1 padded): ``{(source, seen_filtered): (Q, kmax)}``; ``seen_filtered`` drops the items the user had
    before the snapshot. A user with no event before it gets the fallback order from every source."""
    hist, C = ctx.hist, len(ctx.catalog)
    kmax = min(kmax, C)
    n_known = ctx.known(q_user, q_snap)
    items = {space: torch.as_tensor(v) for space, v in ctx.vecs.items.items()}
    lists = {(name, f): np.full((len(q_user), kmax), -1, np.int64) for name in SOURCES for f in filtered}
    for lo in range(0, len(q_user), chunk):
        sl = slice(lo, lo + chunk)
        u, s, n = q_user[sl], q_snap[sl], n_known[sl]
        end = hist.offsets[u] + n
        seen = torch.zeros((len(u), C), dtype=torch.bool)  # items the user had before the snapshot
        rows = np.repeat(np.arange(len(u)), n)
        ev = np.repeat(hist.offsets[u] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))  # each query's events
        seen[torch.as_tensor(rows), torch.as_tensor(np.searchsorted(ctx.catalog, hist.item_id[ev]))] = True
        pop = torch.as_tensor(-np.argsort(ctx.popular[s], axis=1), dtype=torch.float32)  # higher = earlier in order
        known = n > 0
        for f in filtered:
            lists[("popular", f)][sl] = _top(pop, seen if f else None, kmax)
        for space in ("tower", "nip"):
            scores = pop.clone()
            if known.any():
                users = ctx.vecs.users(space, u[known], end[known], ctx.snaps[s[known]])
                scores[torch.as_tensor(known)] = torch.as_tensor(users) @ items[space].T
            for f in filtered:
                lists[(space, f)][sl] = _top(scores, seen if f else None, kmax)
    return lists


def merged_list(lists: dict[tuple[str, bool], np.ndarray], merge: list[dict], n_items: int, filtered: bool) -> np.ndarray:
    """The merge ``[{source, k}, ...]`` of :func:`source_lists`' lists (quotas, de-duplicated), as served."""
    return merge_candidates([lists[(src["source"], filtered)] for src in merge], [int(src["k"]) for src in merge], n_items)


def has_candidate_spaces(model) -> bool:
    """Whether ``model`` has the tower and NIP spaces candidates are generated from (ARGUS and its same-code
    ablation; not ``sasrec-classic``, one item table scored by a dot product with no towers or NIP head)."""
    return all(hasattr(model, m) for m in ("item_vectors", "nip_item_embeddings", "nip_queries"))


def candidate_recall(cfg: ArgusrankConfig, dataset_dir: str | Path, model=None, version: int | None = None,
                     sources: list[dict] | None = None, ks: tuple[int, ...] = KS, chunk: int = 256,
                     more_merges: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    """``{"popular"|"tower"|"nip"|"merged": {"recall@K": x, "recall@K_seen_filtered": y, ...}, "n_targets": n}``.

    User and item vectors: the exported ones of ``version`` (what serving reads), else computed from ``model``.
    ``sources``: the merge (default ``cfg.serve.candidates``, i.e. what ``/recommend`` serves);
    ``more_merges``: other merges to compare, reported as ``merged[<name>]``."""
    sources = sources or [s.model_dump() for s in cfg.serve.candidate_sources()]
    ctx = candidate_context(cfg, dataset_dir, model, version)
    hist, split, C = ctx.hist, ctx.split, len(ctx.catalog)
    target = (hist.timestamp >= split.T) & (hist.timestamp < split.T_end) & (hist.grade >= POSITIVE_GRADE)
    t_pos = np.searchsorted(ctx.catalog, hist.item_id[target])
    q_user, q_snap, inv = _queries(hist.user_index()[target], hist.timestamp[target], ctx.snaps)
    lists = source_lists(ctx, q_user, q_snap, max(ks), chunk=chunk)
    out: dict[str, Any] = {}
    merges = {"merged": sources, **{f"merged[{name}]": m for name, m in (more_merges or {}).items()}}
    for name, merge in merges.items():
        for f in (False, True):
            lists[(name, f)] = merged_list(lists, merge, C, f)
    for name in (*SOURCES, *merges):
        res = {}
        for f in (False, True):
            hit_at = (lists[(name, f)][inv] == t_pos[:, None])  # (n_targets, K)
            first = np.where(hit_at.any(1), hit_at.argmax(1), np.iinfo(np.int64).max)
            for k in ks:
                res[f"recall@{k}" + ("_seen_filtered" if f else "")] = float((first < k).mean()) if len(first) else float("nan")
        out[name] = res
    out["n_targets"] = int(target.sum())
    return out


def recall_of_registered(cfg: ArgusrankConfig, dataset_dir: str | Path, model_ref: str | int,
                         **kw: Any) -> dict[str, Any]:
    """Candidate recall of a registered ARGUS version: its exported vectors when they exist (what serving
    reads), else vectors computed from the model."""
    from argusrank.features import vectors
    from argusrank.platform import registry

    model, version = registry.load_argus(cfg, model_ref)
    try:
        exported = all(vectors.read_version(cfg, kind, version) is not None for kind in vectors.KINDS)
    except LookupError:
        exported = False
    return candidate_recall(cfg, dataset_dir, model=model, version=version if exported else None, **kw)


def recall_table(recall: dict[str, Any]):
    """A rich table: one row per source, recall@K with seen items kept and filtered."""
    from rich.table import Table

    keys = [k for k in next(v for v in recall.values() if isinstance(v, dict))]
    t = Table(title=f"candidate recall ({recall.get('n_targets', '?')} test-window positives)")
    t.add_column("source")
    for k in keys:
        t.add_column(k.replace("_seen_filtered", " (seen filtered)"), justify="right")
    from rich.markup import escape

    for name, row in recall.items():
        if isinstance(row, dict):
            t.add_row(escape(name), *(f"{row[k]:.4f}" for k in keys))
    return t
