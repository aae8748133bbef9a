"""The final ``/recommend`` list offline: served candidates as ranker training rows, and its NDCG@10.

A *query* is one (user, daily snapshot ``s``) of the temporal test window: what ``/recommend`` answers that
user from ``s`` until the next snapshot (``T_end`` after the last). Its candidates are the lists of
``training/candidate_recall.py`` (exact top-K per source for the user's state at ``s``, the same
``merge_candidates``): each single source with the merge's total, and the configured merge
(``serve.candidates``). Labels: the best feedback grade of the user's events with the item in
``[s, next snapshot)``; no event = 0. Features of a (query, item) row come point-in-time at ``s`` through
``features.store.historical_features``, the impressions' path.

Final-list NDCG@10: candidates -> ranker scores -> top 10 (ties by item id, as ``serving/flow.top_k``; a
user with no event before ``s`` gets the fallback order unranked, as serving does) -> gains
``2^max(grade, 0) - 1`` (like 3, listen 1, skip / dislike / no event 0), ideal = the user's best graded
items of the window, averaged over queries with a positive event. Serving excludes exactly the request's
``exclude``: ``seen kept`` is a request without it, ``seen filtered`` a client passing the user's items
before ``s``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from argusrank.features.splits import POSITIVE_GRADE
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.training.candidate_recall import SOURCES, CandidateContext, merged_list, source_lists

FINAL_K = 10


def _snap_of(ctx: CandidateContext) -> tuple[np.ndarray, np.ndarray]:
    """Per event: its snapshot index (-1 before T) and whether it is in ``[T, T_end)``."""
    snap = np.searchsorted(ctx.snaps, ctx.hist.timestamp, side="right") - 1
    return snap, (snap >= 0) & (ctx.hist.timestamp < ctx.split.T_end)


def _query_keys(users: np.ndarray, ts: np.ndarray, grades: np.ndarray, snaps: np.ndarray, t_from: int, t_to: int,
                t_end: int, positives: bool) -> np.ndarray:
    """Sorted unique ``user * S + snapshot`` of the events before ``t_end`` whose snapshot (the latest at or before
    them) is in ``[t_from, t_to)``, positive ones only with ``positives``."""
    snap = np.searchsorted(snaps, ts, side="right") - 1
    at = snaps[np.maximum(snap, 0)]
    m = (snap >= 0) & (ts < t_end) & (at >= t_from) & (at < t_to)
    if positives:
        m &= grades >= POSITIVE_GRADE
    return np.unique(np.asarray(users, np.int64)[m] * len(snaps) + snap[m])


def window_queries(ctx: CandidateContext, t_from: int, t_to: int, positives: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(user index, snapshot index) of the queries with snapshot in ``[t_from, t_to)`` whose user has an event
    (a positive one with ``positives``) before the next snapshot; sorted by (user, snapshot)."""
    h, S = ctx.hist, len(ctx.snaps)
    key = _query_keys(h.user_index(), h.timestamp, h.grade, ctx.snaps, t_from, t_to, ctx.split.T_end, positives)
    return key // S, key % S


def positive_queries(dataset_dir, snaps: np.ndarray, t_from: int, t_end: int) -> tuple[np.ndarray, np.ndarray]:
    """(user id, snapshot index) of the queries :func:`window_queries` gives with ``positives`` for
    ``[t_from, t_end)`` (``t_end``: the split's end), sorted by (user, snapshot), read one user bucket at a time
    (the window's user, time and feedback columns): no histories of every user."""
    from argusrank.features.baseline import event_grades
    from argusrank.features.io import read_events, user_buckets_of

    S, keys = len(snaps), []
    for b in range(user_buckets_of(dataset_dir)):
        ev = read_events(dataset_dir, ["user_id", "timestamp", "played_ratio", "liked", "disliked"],
                         user_buckets=[b], time_range=(t_from, t_end))  # earlier events' snapshots are < t_from
        keys.append(_query_keys(ev["user_id"].to_numpy(), ev["timestamp"].to_numpy(), event_grades(ev), snaps,
                                t_from, t_end, t_end, positives=True))
    key = np.sort(np.concatenate(keys)) if keys else np.zeros(0, np.int64)  # buckets hold disjoint users
    return key // S, key % S


def query_labels(ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys ``query * C + catalog position`` of every item the query's user had an event with in its
    window, and the best grade of those events."""
    snap, m = _snap_of(ctx)
    S, C = len(ctx.snaps), len(ctx.catalog)
    want = q_user.astype(np.int64) * S + q_snap
    order = np.argsort(want, kind="stable")
    ev_key = ctx.hist.user_index()[m].astype(np.int64) * S + snap[m]
    i = np.minimum(np.searchsorted(want[order], ev_key), len(want) - 1)
    hit = want[order][i] == ev_key if len(want) else np.zeros(len(ev_key), bool)
    key = order[i[hit]] * C + np.searchsorted(ctx.catalog, ctx.hist.item_id[m][hit])
    grade = ctx.hist.grade[m][hit].astype(np.int64)
    o = np.lexsort((grade, key))
    key, grade = key[o], grade[o]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    return key[last], grade[last]


def lookup(keys: np.ndarray, values: np.ndarray, want: np.ndarray, missing: Any = 0) -> np.ndarray:
    """``values`` at ``want`` in the sorted ``keys``; ``missing`` where absent."""
    if not len(keys):
        return np.full(want.shape, missing, dtype=np.result_type(values, type(missing)))
    i = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return np.where(keys[i] == want, values[i], missing)


def served_lists(cfg: ArgusrankConfig, ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray,
                 filtered: bool) -> dict[str, np.ndarray]:
    """``{config: (Q, K) catalog positions}``: each single source's top ``serve.candidate_total()`` and the
    configured merge ``merged`` (-1 padded)."""
    total = cfg.serve.candidate_total()
    lists = source_lists(ctx, q_user, q_snap, total, filtered=(filtered,))
    out = {src: lists[(src, filtered)][:, :total] for src in SOURCES}
    out["merged"] = merged_list(lists, [s.model_dump() for s in cfg.serve.candidate_sources()], len(ctx.catalog),
                                filtered)
    return out


def entity_rows(ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray, qi: np.ndarray,
                pos: np.ndarray) -> pd.DataFrame:
    """Rows (query ``qi``, catalog position ``pos``) as a Feast entity frame at the query's snapshot."""
    ts = ctx.snaps[q_snap[qi]]
    df = pd.DataFrame({"user_id": ctx.hist.user_ids[q_user[qi]], "item_id": ctx.catalog[pos], "ts": ts})
    df["event_timestamp"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    return df


def candidate_rows(cfg: ArgusrankConfig, ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray,
                   rng: np.random.Generator, first_id: int = 0) -> pd.DataFrame:
    """Ranker training rows of these queries: the served merge (a request without ``exclude``) of users with
    a vector (serving ranks only those), each labelled with its grade (no event: 0). Every candidate with an
    event is kept; the unlabelled ones (most of K=500) are subsampled to ``ranker.candidate_negatives`` per
    query, uniformly with ``rng`` (the config seed). ``request_id`` = ``first_id + query`` (XGBoost's qid:
    non-negative; pass one above every logged request's id)."""
    known = ctx.known(q_user, q_snap) > 0
    q_user, q_snap = q_user[known], q_snap[known]
    merged = served_lists(cfg, ctx, q_user, q_snap, filtered=False)["merged"]
    qi = np.repeat(np.arange(len(q_user)), merged.shape[1])
    pos = merged.ravel()
    qi, pos = qi[pos >= 0], pos[pos >= 0]
    keys, grades = query_labels(ctx, q_user, q_snap)
    want = qi * len(ctx.catalog) + pos
    labelled = lookup(keys, np.ones(len(keys), bool), want, False).astype(bool)
    grade = lookup(keys, grades, want, 0)
    o = np.lexsort((rng.random(len(qi)), labelled, qi))  # per query: unlabelled first, in random order
    starts = np.searchsorted(qi[o], qi[o])  # qi is sorted, so each row's query start in ``o`` order
    keep = np.zeros(len(qi), bool)
    keep[o] = labelled[o] | (np.arange(len(o)) - starts < cfg.ranker.candidate_negatives)
    df = entity_rows(ctx, q_user, q_snap, qi[keep], pos[keep])
    df["grade"], df["request_id"] = grade[keep].astype(np.int64), (first_id + qi[keep]).astype(np.int64)
    return df


def final_top(pos: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, k: int = FINAL_K) -> np.ndarray:
    """(Q, k) catalog positions of the final lists: per row the best ``scores`` (NaN last), ties by item id;
    ``pos`` -1 entries never picked (-1 padded)."""
    s = np.where(pos >= 0, np.nan_to_num(scores.astype(np.float64), nan=-np.inf), -np.inf)
    ids = np.where(pos >= 0, item_ids[np.maximum(pos, 0)], np.iinfo(np.int64).max)
    o = np.lexsort((ids, pos < 0, -s), axis=1)[:, :k]
    return np.take_along_axis(pos, o, axis=1)


def list_ndcg(top: np.ndarray, keys: np.ndarray, grades: np.ndarray, n_items: int, k: int = FINAL_K) -> float:
    """Mean NDCG@k of the final lists ``top`` (Q, k) against the queries' graded items (:func:`query_labels`),
    over queries with a positive item; gain ``2^max(grade, 0) - 1``."""
    Q = top.shape[0]
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    want = np.arange(Q)[:, None] * n_items + top
    g = np.where(top >= 0, lookup(keys, grades, want, 0), 0)
    dcg = ((np.exp2(np.maximum(g, 0)) - 1.0) * disc[: top.shape[1]]).sum(1)
    q, gain = keys // n_items, np.exp2(np.maximum(grades, 0)) - 1.0
    o = np.lexsort((-gain, q))
    q, gain = q[o], gain[o]
    rank = np.arange(len(q)) - np.searchsorted(q, q)
    ok = rank < k
    idcg = np.bincount(q[ok], weights=gain[ok] * disc[rank[ok]], minlength=Q)
    pos = idcg > 0
    return float(np.mean(dcg[pos] / idcg[pos])) if pos.any() else float("nan")


def final_ndcg(cfg: ArgusrankConfig, ctx: CandidateContext, q_user: np.ndarray, q_snap: np.ndarray,
               score_rows: Callable[[pd.DataFrame], np.ndarray], k: int = FINAL_K) -> dict[str, dict[str, float]]:
    """``{"seen_kept"|"seen_filtered": {config: NDCG@k of the final list}}`` of these queries (and ``source_order``:
    each seen-kept list's own top k, unranked, the reference); ``score_rows``
    scores entity rows (:func:`entity_rows`; the ranker on their point-in-time features), called once."""
    C = len(ctx.catalog)
    keys, grades = query_labels(ctx, q_user, q_snap)
    known = ctx.known(q_user, q_snap) > 0
    lists = {f: served_lists(cfg, ctx, q_user, q_snap, f) for f in (False, True)}
    rank_keys = np.unique(np.concatenate([(np.arange(len(q_user))[:, None] * C + L)[(L >= 0) & known[:, None]]
                                          for by in lists.values() for L in by.values()]))
    scores = score_rows(entity_rows(ctx, q_user, q_snap, rank_keys // C, rank_keys % C)) if len(rank_keys) else \
        np.zeros(0, np.float32)
    out: dict[str, dict[str, float]] = {"source_order": {  # the reference: each list's own order, no ranker
        name: list_ndcg(L[:, :k], keys, grades, C, k) for name, L in lists[False].items()}}
    for f, by in lists.items():
        res = {}
        for name, L in by.items():
            want = np.arange(len(q_user))[:, None] * C + L
            s = lookup(rank_keys, scores.astype(np.float64), want, np.nan)
            s = np.where(known[:, None], s, -np.arange(L.shape[1], dtype=np.float64))  # fallback: list order
            res[name] = list_ndcg(final_top(L, s, ctx.catalog, k), keys, grades, C, k)
        out["seen_filtered" if f else "seen_kept"] = res
    return out
