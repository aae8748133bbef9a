"""The candidate generator: ANN top-N over the served version's item vectors, popularity as the fallback.

Cold start / fallback (documented in the README): a user with no vector in the online store, or
whose vector is from another model version than the served bundle (while an alias move is in
flight), gets the **most popular items**: items of the served catalog ordered by 7-day
popularity (``item_pop_7d``, ties by ``item_pop_30d``) at the latest baseline snapshot, minus
``exclude``; the response says ``"fallback": "unknown_user"`` / ``"version_mismatch"``.
Hot swap builds a complete new :class:`CandidateState` off the request path and swaps one reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features import vectors
from argusrank.features.argus_features import DOT, FP_HEAD, argus_features, kinds_for, needs_fp_head
from argusrank.features.baseline import lookup_sorted
from argusrank.features.vectors import kind_of
from argusrank.models.ann import AnnIndex, build_index
from argusrank.models.candidate_merge import merge_candidates
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import Bundle, NothingToServe, resolve_bundle


def item_vectors(cfg: ArgusrankConfig, version: int, kind: str = "item") -> tuple[np.ndarray, np.ndarray]:
    """Item vectors of exactly one model version (``features.vectors.read_version``); NothingToServe if none."""
    try:
        return vectors.read_version(cfg, kind, version)
    except LookupError as exc:
        raise NothingToServe(str(exc)) from exc


def popular_items(cfg: ArgusrankConfig, catalog: np.ndarray) -> np.ndarray:
    """Popularity (M, 2) float64 of the sorted ``catalog`` (M,): ``item_pop_7d``, ``item_pop_30d``.

    Read from the latest ``item_stats`` baseline snapshot (offline parquet); items not
    in the snapshot (or no snapshot at all) get 0.
    """
    pop = np.zeros((len(catalog), 2))
    path = cfg.paths.baseline_dir / "item_stats"
    if len(catalog) and path.is_dir() and any(path.glob("*.parquet")):
        t = ds.dataset(path, format="parquet").to_table(columns=["item_id", "event_timestamp", "item_pop_7d", "item_pop_30d"])
        t = t.filter(pc.equal(t["event_timestamp"], pc.max(t["event_timestamp"])))
        pos, ok = lookup_sorted(catalog, t["item_id"].to_numpy())
        for j, col in enumerate(("item_pop_7d", "item_pop_30d")):
            pop[pos[ok], j] = np.nan_to_num(t[col].to_numpy(zero_copy_only=False).astype(np.float64))[ok]
    return pop


@dataclass
class CandidateState:
    """Everything the CandidateGenerator needs for one bundle; replaced whole on hot swap.

    ``index`` holds the tower item vectors (ANN source ``tower`` and the exact ``argus_dot`` of every
    candidate), ``nip_index`` the NIP item embeddings of the same version when a source uses them."""

    bundle: Bundle
    index: AnnIndex  # item ids sorted ascending
    popularity: np.ndarray  # (N, 2) float64 aligned with index.item_ids: item_pop_7d, item_pop_30d
    sources: list[dict] = field(default_factory=lambda: [{"source": "tower", "k": 500}])
    nip_index: AnnIndex | None = None
    loaded_at: float = field(default_factory=time.time)
    #: item vectors of every kind the ranker's ARGUS features read, rows aligned with index.item_ids
    item_vecs: dict[str, np.ndarray] = field(default_factory=dict)
    fp_head: dict[str, np.ndarray] | None = None  # the FP output layer when the ranker reads fp_* features

    @property
    def user_spaces(self) -> list[str]:
        """The user-vector spaces one Feast read fetches: tower, and those the sources or features need."""
        kinds = set(kinds_for(self.bundle.argus_features))
        nip = self.nip_index is not None or "user_nip" in kinds
        return ["tower", *(["nip"] if nip else []), *(["fp"] if "user_fp" in kinds else [])]

    def features_of(self, user: dict[str, np.ndarray], pos: np.ndarray) -> dict[str, np.ndarray]:
        """The ranker's ARGUS features (N,) of the items at catalog positions ``pos`` (N,) (-1: outside the catalog,
        NaN features) for one user's vectors ``{kind: (d,)}`` (a kind left out: its features are NaN)."""
        inside = pos >= 0
        vecs = {k: v.reshape(1, -1) for k, v in user.items()}
        for k, table in self.item_vecs.items():
            rows = table[np.maximum(pos, 0)]
            vecs[k] = rows if inside.all() else np.where(inside[:, None], rows, np.nan)
        return argus_features(self.bundle.argus_features, vecs, self.fp_head, n=len(pos))

    def __post_init__(self) -> None:
        ids, pop = self.index.item_ids, self.popularity
        self.popular_order = np.lexsort((ids, -pop[:, 1], -pop[:, 0]))  # (N,) fallback order; last key primary

    def info(self) -> dict[str, Any]:
        def about(ix: AnnIndex) -> dict:
            return {"kind": ix.kind, "items": ix.size, "dim": ix.dim}

        spaces = {"tower": self.index, "nip": self.nip_index}
        cands = [{**src, "model_version": None if src["source"] == "popular" else self.bundle.argus_version,
                  **({"index": about(spaces[src["source"]])} if src["source"] in spaces else {})}
                 for src in self.sources]
        return {"model_versions": self.bundle.as_dict(), "index": about(self.index), "candidates": cands,
                "loaded_at": self.loaded_at}

    def popular_positions(self, k: int, exclude: Sequence[int] | None) -> np.ndarray:
        """Catalog positions of the top-k of the fallback order minus ``exclude`` (k,)."""
        top = self.popular_order[: k + (len(exclude) if exclude is not None else 0)]
        if exclude:
            top = top[~np.isin(self.index.item_ids[top], np.asarray(exclude, np.int64))]
        return top[:k]

    def popular(self, k: int, exclude: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the fallback order minus ``exclude``: ids (k,), scores (= item_pop_7d) (k,)."""
        top = self.popular_positions(k, exclude)
        return self.index.item_ids[top], self.popularity[top, 0].astype(np.float32)

    def popularity_of(self, item_ids: np.ndarray) -> np.ndarray:
        """item_pop_7d of arbitrary items (N,), 0 for items outside the catalog."""
        pos = self.index.positions(item_ids)
        return np.where(pos >= 0, self.popularity[np.maximum(pos, 0), 0], 0.0).astype(np.float32)

    def source_lists(self, vecs: dict[str, np.ndarray], usable: dict[str, np.ndarray], n: int,
                     excludes: list) -> np.ndarray:
        """(b, n) catalog positions, best first (-1 padded): the configured sources merged (per-source quotas,
        de-duplicated; a source without a usable user vector contributes nothing), topped up from the tower
        source when ``n`` exceeds the quotas."""
        sources = list(self.sources)
        if n > sum(s["k"] for s in sources):
            sources.append({"source": "tower", "k": n - sum(s["k"] for s in sources)})
        b, lists, before = len(excludes), [], 0
        for src in sources:
            want = int(src["k"]) + before  # enough to fill the quota whatever earlier sources took
            if src["source"] == "popular":
                pos = np.full((b, want), -1, np.int64)
                for row, ex in enumerate(excludes):  # positions straight from the fallback order
                    top = self.popular_positions(want, ex)
                    pos[row, : len(top)] = top
            else:
                index = self.index if src["source"] == "tower" else self.nip_index
                pos = np.full((b, want), -1, np.int64)
                rows = np.flatnonzero(usable[src["source"]])
                if len(rows):
                    ids, _ = index.search(vecs[src["source"]][rows], want, [excludes[r] for r in rows])
                    pos[rows] = np.where(ids >= 0, self.index.positions(ids), -1)
            lists.append(pos)
            before += int(src["k"])
        return merge_candidates(lists, [int(s["k"]) for s in sources], self.index.size)[:, :n]


def load_candidate_state(cfg: ArgusrankConfig, bundle: Bundle | None = None) -> CandidateState:
    """Resolve the bundle (unless given), load its item vectors and build the ANN indexes and fallback order."""
    bundle = bundle or resolve_bundle(cfg)
    s = cfg.serve
    ann = dict(exact_max_items=s.exact_max_items, hnsw_m=s.hnsw_m, ef_construction=s.hnsw_ef_construction,
               ef_search=s.hnsw_ef_search, model_version=str(bundle.argus_version))
    ids, vecs = item_vectors(cfg, bundle.argus_version)  # ids sorted ascending
    sources = [src.model_dump() for src in s.candidate_sources()]
    kinds = [k for k in kinds_for(bundle.argus_features) if k.startswith("item")]
    if any(src["source"] == "nip" for src in sources):
        kinds.append("item_nip")
    item_vecs = {"item": vecs}
    for kind in dict.fromkeys(kinds):
        if kind not in item_vecs:
            other_ids, item_vecs[kind] = item_vectors(cfg, bundle.argus_version, kind=kind)
            if not np.array_equal(other_ids, ids):
                raise NothingToServe(f"{kind} and tower item vectors of version {bundle.argus_version} cover "
                                     "different items: export both from that version")
    nip_index = (build_index(ids, item_vecs["item_nip"], s.ann, **ann)
                 if any(src["source"] == "nip" for src in sources) else None)
    fp_head = None
    if needs_fp_head(bundle.argus_features):
        try:
            fp_head = vectors.read_head(cfg, FP_HEAD, bundle.argus_version)
        except LookupError as exc:
            raise NothingToServe(str(exc)) from exc
    index = build_index(ids, vecs, s.ann, **ann)
    item_vecs["item"] = index.vectors  # the same rows, kept once
    state = CandidateState(bundle, index, popular_items(cfg, ids), sources, nip_index, fp_head=fp_head,
                           item_vecs={k: v for k, v in item_vecs.items() if k in kinds_for(bundle.argus_features)})
    # one feature computation now, off the request path (the FP features import torch on first use)
    state.features_of({k.replace("item", "user"): np.zeros(v.shape[1], np.float32) for k, v in state.item_vecs.items()},
                      np.zeros(1, np.int64))
    return state


def generate_candidates(
    cfg: ArgusrankConfig, state: CandidateState, requests: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Candidates for a batch of requests: one Feast read of the user vectors, one ANN search per source.

    A request is ``{user_id, n, exclude?}`` (the configured sources merged, n items) or ``{user_id, items}``
    (score exactly these items); ``force_fallback`` (a reason) asks for the fallback answer. Each answer:
    ``{item_ids, scores, model_versions, fallback, ranked}`` where ``scores`` are the exact tower dot products
    (the ranker's ``argus_dot``) and, when not a fallback, ``argus``: the ARGUS features of the served ranker
    (``features/argus_features.py``) from the same user read and the items' vectors in RAM; ``fallback`` is
    None, ``"unknown_user"`` or ``"version_mismatch"``, and then
    the items are the popular ones best first (``ranked``), or the given items scored by popularity: never
    scored with another version's vectors.
    """
    from argusrank.features.store import read_user_spaces

    users = [int(r["user_id"]) for r in requests]
    spaces = state.user_spaces
    read = read_user_spaces(cfg, users, spaces)  # {space: ((B, d) NaN rows when missing, (B,) -1 when missing)}
    vecs = {space: read[space][0] for space in spaces}
    usable = {space: (read[space][1] == state.bundle.argus_version) & np.isfinite(vecs[space]).all(axis=1)
              if vecs[space].size else np.zeros(len(users), bool) for space in spaces}

    def user_of(i: int) -> dict[str, np.ndarray]:  # request i's vectors by kind; missing or another version's: left out
        return {kind_of("user", sp): vecs[sp][i] for sp in spaces if usable[sp][i]}
    versions = read["tower"][1]
    known = (versions >= 0) & (np.isfinite(vecs["tower"]).all(axis=1) if vecs["tower"].size else False)
    forced = np.array([bool(r.get("force_fallback")) for r in requests])
    ok = known & (versions == state.bundle.argus_version) & ~forced
    out: list[dict[str, Any]] = [{} for _ in requests]
    search = [i for i in np.flatnonzero(ok) if requests[i].get("items") is None]
    if search:
        n = max(int(requests[i]["n"]) for i in search)
        pos = state.source_lists({sp: v[search] for sp, v in vecs.items()},
                                 {sp: u[search] for sp, u in usable.items()}, n,
                                 [requests[i].get("exclude") for i in search])  # (b, n)
        for row, i in enumerate(search):
            p = pos[row, : int(requests[i]["n"])]
            p = p[p >= 0]
            feats = state.features_of(user_of(i), p)
            out[i] = {"item_ids": state.index.item_ids[p], "scores": feats[DOT].astype(np.float32), "argus": feats}
    for i, r in enumerate(requests):
        items = r.get("items")
        if items is not None:  # /rank: items outside the served catalog are answered, and named
            ids = np.asarray(items, np.int64)
            pos = state.index.positions(ids)
            if ok[i]:  # exact features from RAM, NaN (missing for the ranker) outside the catalog
                feats = state.features_of(user_of(i), pos)
                out[i] = {"item_ids": ids, "scores": feats[DOT].astype(np.float32), "argus": feats}
            else:
                out[i] = {"item_ids": ids, "scores": state.popularity_of(ids)}
            out[i]["unknown_items"] = [int(x) for x in ids[pos < 0]]
        elif not ok[i]:
            ids, sc = state.popular(int(r["n"]), r.get("exclude"))
            out[i] = {"item_ids": ids, "scores": sc, "ranked": True}
        reason = r.get("force_fallback") or ("version_mismatch" if known[i] else "unknown_user")
        out[i]["fallback"] = None if ok[i] else reason
        out[i]["model_versions"] = state.bundle.as_dict()
        if known[i] and not ok[i]:
            out[i]["user_vector_version"] = int(versions[i])
    return out
