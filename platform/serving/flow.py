"""The request flow, written once: candidates -> features -> ranker -> top-k.

:func:`answer` runs it over any three *stages* (async callables): the Ray Serve Ingress
passes its deployment handles (``serving/deployments.py``), :class:`InProcessPipeline`
the same steps in this process (the benchmark baseline and the tests' reference). A
request is pinned to the bundle its candidates came from; when the feature store holds
another version, the answer falls back to popularity (``"fallback": "version_mismatch"``).
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Protocol, Sequence

import numpy as np

from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import request_time


class StageFailed(RuntimeError):
    """A stage failed on this request only (the other requests of its batch were answered)."""


class Stages(Protocol):
    generate: Callable[[dict], Awaitable[dict]]
    features: Callable[[int, dict], Awaitable[dict]]
    score: Callable[[dict], Awaitable[Any]]


def isolate_failures(batch_fn: Callable[[list], list], requests: list) -> list:
    """``batch_fn(requests)``; if the batch fails, each request alone, so one bad request fails only
    itself: its slot holds ``{"error": reason}`` instead of a result."""
    try:
        return batch_fn(requests)
    except Exception:  # noqa: BLE001 - find the culprit below
        if len(requests) == 1:
            raise
    out = []
    for r in requests:
        try:
            out.append(batch_fn([r])[0])
        except Exception as exc:  # noqa: BLE001 - reported to this request only
            out.append({"error": f"{type(exc).__name__}: {exc}"})
    return out


def _checked(result: Any) -> Any:
    if isinstance(result, dict) and "error" in result:
        raise StageFailed(result["error"])
    return result


def top_k(item_ids: np.ndarray, scores: np.ndarray, k: int, keep_order: bool = False) -> list[dict[str, Any]]:
    """Best-first ``[{item_id, score}]`` of the top k (ties by item id); ``keep_order``: already ranked."""
    order = np.arange(len(item_ids))[:k] if keep_order else np.lexsort((item_ids, -np.nan_to_num(scores, nan=-np.inf)))[:k]
    return [{"item_id": int(i), "score": float(s)} for i, s in zip(item_ids[order], scores[order])]


def response(user_id: int, k: int, cand: dict[str, Any], scores: np.ndarray | None) -> dict[str, Any]:
    """The /recommend (and /rank) JSON: ranked items, model versions, fallback reason."""
    if scores is None:  # fallback: the popularity order (or given items by popularity)
        items = top_k(cand["item_ids"], cand["scores"], k, keep_order=cand.get("ranked", False))
        n_scored = 0
    else:
        items, n_scored = top_k(cand["item_ids"], scores, k), int(len(scores))
    out = {"user_id": int(user_id), "items": items, "model_versions": cand["model_versions"],
           "fallback": cand["fallback"], "ranked_candidates": n_scored}
    if cand.get("unknown_items") is not None:
        out["unknown_items"] = cand["unknown_items"]
    return out


async def answer(stages: Stages, cfg: ArgusrankConfig, cand_req: dict, user_id: int, k: int,
                 as_of: float | None) -> dict[str, Any]:
    """One /recommend or /rank answer: ``cand_req`` is ``{user_id, n, exclude?}`` or ``{user_id, items}``."""
    cand = _checked(await stages.generate(cand_req))
    if cand["fallback"] is None and len(cand["item_ids"]):
        feats = _checked(await stages.features(user_id, cand))
        if "raw" in feats:
            req = {"raw": feats["raw"], "request_ts": request_time(cfg, as_of),
                   "ranker_version": cand["model_versions"]["ranker"]}
            return response(user_id, k, cand, _checked(await stages.score(req)))
        cand = _checked(await stages.generate({**cand_req, "force_fallback": "version_mismatch"}))
    return response(user_id, k, cand, None)


class InProcessPipeline:
    """The whole /recommend and /rank path in one process, through :func:`answer` (reference and benchmark)."""

    def __init__(self, cfg: ArgusrankConfig):
        from argusrank.platform.serving.candidates import load_candidate_state
        from argusrank.platform.serving.ranking import RankerCache
        from argusrank.platform.serving.ranking_features import ItemFeatureCache
        from argusrank.platform.serving.replica import one_thread_per_request

        one_thread_per_request()
        self.cfg = cfg
        self.state = load_candidate_state(cfg)
        self.rankers = RankerCache(cfg)
        self.items = ItemFeatureCache(cfg) if cfg.serve.features_path == "cached_items" else None
        self._loop = asyncio.new_event_loop()

    async def generate(self, req: dict) -> dict:
        from argusrank.platform.serving.candidates import generate_candidates

        return generate_candidates(self.cfg, self.state, [req])[0]

    async def features(self, user_id: int, cand: dict) -> dict:
        from argusrank.platform.serving.ranking_features import features_or_mismatch

        return features_or_mismatch(self.cfg, user_id, cand, self.items)

    async def score(self, req: dict) -> np.ndarray:
        return self.rankers.get(req["ranker_version"]).score(req["raw"], req["request_ts"])

    def recommend(self, user_id: int, k: int, exclude: Sequence[int] | None = None,
                  as_of: float | None = None) -> dict[str, Any]:
        req = {"user_id": user_id, "n": max(self.cfg.serve.candidate_total(), k), "exclude": exclude}
        return self._loop.run_until_complete(answer(self, self.cfg, req, user_id, k, as_of))

    def rank(self, user_id: int, item_ids: Sequence[int], as_of: float | None = None) -> dict[str, Any]:
        req = {"user_id": user_id, "items": list(item_ids)}
        return self._loop.run_until_complete(answer(self, self.cfg, req, user_id, len(item_ids), as_of))
