"""The Ray Serve application: ``Ingress(CandidateGenerator, FeatureService, Ranker)``.

The request path (``serving/flow.py`` runs it, :func:`build_app` wires it)::

    POST /recommend {user_id, k, exclude?}
      -> CandidateGenerator  ANN top-N over item vectors of the served version (RAM); user vector from Feast
      -> FeatureService      baseline + vector features of (user, candidates) from Feast
      -> Ranker              XGBoost (registry alias) scores all candidates in one inplace_predict
      -> top-k with scores and the model versions used

    POST /rank {user_id, item_ids}   same, for given items;  GET /healthz;  GET /version

Replicas, resources and autoscaling live in ``platform/serve.yaml``, never here.
Hot swap: each CandidateGenerator replica checks the registry alias every
``serve.reload_interval_s``; on a move it builds the new item index off the request
path and swaps one reference. Topology: ``composed`` binds the three as deployments
(scaled apart); ``fused`` runs the same three classes inside each Ingress replica
(:class:`LocalHandle`, no handle hops).
"""
import asyncio
import inspect
import logging
import threading
import time
import types
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from argusrank.platform.config import ArgusrankConfig, load_config, parse_sets
from argusrank.platform.serving.bundle import resolve_bundle
from argusrank.platform.serving.candidates import generate_candidates, load_candidate_state
from argusrank.platform.serving.flow import StageFailed, answer, isolate_failures
from argusrank.platform.serving.http import RankBody, RecommendBody, api, parse_body, parse_events, parse_json
from argusrank.platform.serving.ranking import RankerCache
from argusrank.platform.serving.ranking_features import ItemFeatureCache, features_or_mismatch
from argusrank.platform.serving.replica import replica_init

logger = logging.getLogger("ray.serve")
DEPLOYMENTS = ("CandidateGenerator", "FeatureService", "Ranker", "EventIngest", "Ingress")


def _cfg(cfg: dict) -> ArgusrankConfig:
    return ArgusrankConfig.model_validate(cfg)


@serve.deployment
class CandidateGenerator:
    """ANN candidates over the served version's item vectors (RAM) for users read from Feast."""

    @replica_init
    def __init__(self, cfg: dict):
        self.cfg = _cfg(cfg)
        self.state = load_candidate_state(self.cfg)
        self.reloads, self.last_error, self.fallbacks = 0, None, {"unknown_user": 0, "version_mismatch": 0}
        self._wake = threading.Event()
        self.generate.set_max_batch_size(self.cfg.serve.batch_max_size)
        self.generate.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_timeout_s)
        threading.Thread(target=self._watch_registry, name="argusrank-hot-swap", daemon=True).start()

    def _watch_registry(self) -> None:
        """Background: when the alias moves, build the new state fully, then swap one reference."""
        while True:
            self._wake.wait(self.cfg.serve.reload_interval_s)
            self._wake.clear()
            try:
                bundle = resolve_bundle(self.cfg)
                if bundle != self.state.bundle:
                    logger.info("argusrank: registry moved %s -> %s, reloading", self.state.bundle, bundle)
                    self.state = load_candidate_state(self.cfg, bundle)  # atomic swap of a complete state
                    self.reloads += 1
                self.last_error = None
            except Exception as exc:  # keep serving the current state; report on /version
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("argusrank: registry check failed: %s", self.last_error)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def generate(self, requests: list[dict]) -> list[dict]:
        """A batch of ``{user_id, n, exclude?}`` / ``{user_id, items}``: one Feast read, one ANN search;
        a request that fails the batch fails alone (``{"error": ...}`` in its slot)."""
        state = self.state
        out = isolate_failures(lambda reqs: generate_candidates(self.cfg, state, reqs), requests)
        for o in out:
            if o.get("fallback") in self.fallbacks:
                self.fallbacks[o["fallback"]] += 1
            if o.get("fallback") == "version_mismatch":
                self._wake.set()  # the store moved ahead of us: check the registry now
        return out

    def info(self) -> dict:
        return {**self.state.info(), "reloads": self.reloads, "last_registry_error": self.last_error,
                "fallbacks": dict(self.fallbacks)}


@serve.deployment
class FeatureService:
    """Raw ranker features (baseline + ARGUS dot product) from the Feast online store.

    ``serve.features_path``: ``feast_batched`` reads everything (vectors too) in one Feast
    call per request; ``cached_items`` keeps item stats in RAM (rebuilt when a
    materialization lands) and reads only the user and (user, item) rows.
    """

    @replica_init
    def __init__(self, cfg: dict):
        from argusrank.features.store import get_store

        self.cfg = _cfg(cfg)
        get_store(self.cfg)  # import Feast and open the store now, not on the first request
        self.items = None
        if self.cfg.serve.features_path == "cached_items":
            self._stamp = self._materialized_at()
            self.items = ItemFeatureCache(self.cfg)
            threading.Thread(target=self._watch_materialize, name="argusrank-item-cache", daemon=True).start()

    def _materialized_at(self) -> float:
        f = self.cfg.paths.feature_repo / "materialize_state.json"
        return f.stat().st_mtime if f.is_file() else 0.0

    def _watch_materialize(self) -> None:
        while True:
            time.sleep(self.cfg.serve.reload_interval_s)
            try:
                stamp = self._materialized_at()
                if stamp != self._stamp:
                    self.items, self._stamp = ItemFeatureCache(self.cfg), stamp  # swap a complete cache
            except Exception as exc:  # keep the current cache
                logger.warning("argusrank: item feature refresh failed: %s", exc)

    async def features(self, user_id: int, cand: dict) -> dict:
        """``{"raw": {feature: (N,)}}``, or ``{"mismatch": reason}`` when the store holds another version."""
        return features_or_mismatch(self.cfg, user_id, cand, self.items)


@serve.deployment
class Ranker:
    """XGBoost final ranker: the registry alias's version preloaded, pinned versions loaded on demand."""

    @replica_init
    def __init__(self, cfg: dict):
        self.cfg = _cfg(cfg)
        self.cache = RankerCache(self.cfg)
        self.cache.get(resolve_bundle(self.cfg).ranker_version)
        self.score.set_max_batch_size(self.cfg.serve.batch_max_size)
        self.score.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def score(self, requests: list[dict]) -> list[np.ndarray]:
        """A batch of ``{raw, request_ts, ranker_version}``: one ``inplace_predict`` per ranker version;
        a request that fails the batch fails alone."""
        out: list = [None] * len(requests)
        for version in {int(r["ranker_version"]) for r in requests}:
            idx = [i for i, r in enumerate(requests) if int(r["ranker_version"]) == version]
            st = self.cache.get(version)
            scored = isolate_failures(lambda reqs: st.score_many([(r["raw"], r["request_ts"]) for r in reqs]),
                                      [requests[i] for i in idx])
            for i, s in zip(idx, scored):
                out[i] = s
        return out

    def loaded_versions(self) -> list[int]:
        return self.cache.versions()


@serve.deployment
class EventIngest:
    """``POST /events``: the durable online event log and fresh user vectors (``serving/fresh.py``), loaded on
    the first event; follows the served bundle (states dropped when the alias moves)."""

    @replica_init
    def __init__(self, cfg: dict):
        self.cfg, self.fresh, self._lock, self._checked = _cfg(cfg), None, threading.Lock(), 0.0

    async def ingest(self, events) -> dict:
        """Validated events (a pyarrow table in EVENT_SCHEMA): logged, vectors updated and pushed."""
        from argusrank.platform.serving.fresh import FreshVectors

        with self._lock:
            if self.fresh is None or time.time() - self._checked > self.cfg.serve.reload_interval_s:
                bundle, self._checked = resolve_bundle(self.cfg), time.time()  # the alias, as often as hot swap
                if self.fresh is None:
                    self.fresh = FreshVectors(self.cfg, bundle)
                elif bundle != self.fresh.bundle:
                    self.fresh.load(bundle)
            return self.fresh.ingest_valid(events)


class LocalHandle:
    """A deployment's class instantiated inside the calling replica, called like a DeploymentHandle
    (``handle.method.remote(*args)`` is awaitable): ``serve.topology=fused``."""

    def __init__(self, deployment, cfg: dict):
        self._obj = deployment.func_or_class(cfg)

    def __getattr__(self, name: str):  # first use of a method only: the result is cached as an attribute
        fn = getattr(self._obj, name)
        batched = hasattr(fn, "set_max_batch_size")  # a @serve.batch method: call its own body, no queue hand-off

        async def call(*args):
            if batched:
                out = fn.__wrapped__(self._obj, [args[0]])
                return (await out if inspect.isawaitable(out) else out)[0]
            out = fn(*args)
            return await out if inspect.isawaitable(out) else out

        handle = types.SimpleNamespace(remote=call)
        setattr(self, name, handle)
        return handle


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: validates, then calls candidates -> features -> ranker through their handles.

    ``serve.topology=composed``: the three are separate deployments (scaled apart, one hop each);
    ``fused``: the Ingress runs the same three classes in-process (no hops; scale the Ingress).
    """

    @replica_init
    def __init__(self, candidates: DeploymentHandle | None, features: DeploymentHandle | None,
                 ranker: DeploymentHandle | None, events: DeploymentHandle | None, cfg: dict):
        self.cfg = _cfg(cfg)
        if self.cfg.serve.topology == "fused":
            candidates, features, ranker, events = (LocalHandle(d, cfg) for d in (CandidateGenerator, FeatureService,
                                                                                  Ranker, EventIngest))
        self.candidates, self.features_stage, self.ranker, self.events = candidates, features, ranker, events

    # --- the three stages, for flow.answer ------------------------------------------------
    async def generate(self, req: dict) -> dict:
        return await self._call(self.candidates.generate, req)

    async def features(self, user_id: int, cand: dict) -> dict:
        return await self._call(self.features_stage.features, user_id, cand)

    async def score(self, req: dict):
        return await self._call(self.ranker.score, req)

    async def _call(self, method, *args):
        """Call a deployment; retry when a replica died mid-request (the router picks a live one)."""
        import ray

        for attempt in range(3):
            try:
                return await method.remote(*args)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                if attempt == 2:
                    raise HTTPException(503, "a serving replica is unavailable, retry shortly")
                await asyncio.sleep(0.05 * (attempt + 1))

    async def _answer(self, cand_req: dict, user_id: int, k: int, as_of: float | None) -> JSONResponse:
        try:
            return JSONResponse(await answer(self, self.cfg, cand_req, user_id, k, as_of))
        except HTTPException:
            raise
        except StageFailed as exc:  # one request of a batch failed (the others were answered)
            logger.error("argusrank: request failed: %s", exc)
            raise HTTPException(500, f"internal error while answering this request: {exc}")
        except Exception as exc:  # noqa: BLE001 - one traceback in the log, a 500 with a message to the client
            logger.exception("argusrank: request failed")
            raise HTTPException(500, f"internal error while answering this request: {type(exc).__name__}")

    # --- endpoints -------------------------------------------------------------------------
    @api.post("/recommend")
    async def recommend(self, request: Request) -> JSONResponse:
        body = await parse_body(request, RecommendBody, self.cfg.serve.max_body_bytes)
        s = self.cfg.serve
        if body.k > s.max_k:
            raise HTTPException(422, [f"k: must be <= {s.max_k}, got {body.k}"])
        if body.exclude is not None and len(body.exclude) > s.max_exclude:
            raise HTTPException(422, [f"exclude: at most {s.max_exclude} item ids, got {len(body.exclude)}"])
        req = {"user_id": body.user_id, "n": max(s.candidate_total(), body.k), "exclude": body.exclude}
        return await self._answer(req, body.user_id, body.k, body.as_of)

    @api.post("/rank")
    async def rank(self, request: Request) -> JSONResponse:
        body = await parse_body(request, RankBody, self.cfg.serve.max_body_bytes)
        s = self.cfg.serve
        if len(body.item_ids) > s.max_rank_items:
            raise HTTPException(422, [f"item_ids: at most {s.max_rank_items} items, got {len(body.item_ids)}"])
        if len(set(body.item_ids)) != len(body.item_ids):
            raise HTTPException(422, ["item_ids: must be distinct"])
        req = {"user_id": body.user_id, "items": body.item_ids}
        return await self._answer(req, body.user_id, len(body.item_ids), body.as_of)

    @api.post("/events")
    async def post_events(self, request: Request) -> JSONResponse:
        """One event or ``{"events": [...]}``: 200 all accepted, 207 some rejected (each named), 422 none."""
        from argusrank.features.online_events import validate_events

        records = parse_events(await parse_json(request, self.cfg.serve.max_body_bytes), self.cfg.serve.max_events)
        accepted, rejected = validate_events(records)  # settled here: only valid events reach the log
        if not accepted.num_rows:
            raise HTTPException(422, [f"events[{r['row']}].{r['reason']}" for r in rejected])
        try:
            out = await self._call(self.events.ingest, accepted)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - one line in the log, a 500 naming it to the client
            logger.error("argusrank: /events failed: %s: %s", type(exc).__name__, exc)
            raise HTTPException(500, f"internal error while ingesting events: {type(exc).__name__}: {exc}")
        out["rejected"] = rejected
        return JSONResponse(out, status_code=207 if rejected else 200)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/version")
    async def version(self) -> dict:
        info = await self._call(self.candidates.info)
        return {**info, "ranker_versions_loaded": await self._call(self.ranker.loaded_versions),
                "ranker_alias": self.cfg.serve.ranker_alias, "topology": self.cfg.serve.topology,
                "ranker_model": self.cfg.mlflow.ranker_model_name, "argus_model": self.cfg.mlflow.argus_model_name}


# ------------------------------------------------------------------------------ app builder
def config_from_args(args: dict[str, Any] | None) -> ArgusrankConfig:
    """The config of a Serve app's ``args``: ``config_dict`` (a full dump), else ``config`` (YAML path or null)
    plus ``overrides`` (``["serve.num_candidates=200"]``)."""
    args = dict(args or {})
    if args.get("config_dict"):
        return ArgusrankConfig.model_validate(args["config_dict"])
    return load_config(args.get("config"), parse_sets(list(args.get("overrides") or [])))


def build_app(args: dict[str, Any] | None = None):
    """Application builder for ``serve run`` / ``serve deploy`` (``import_path: argusrank.platform.serving.deployments:build_app``)."""
    cfg = config_from_args(args)
    resolve_bundle(cfg)  # fail the deploy early, with what to run, when nothing is registered
    c = cfg.model_dump(mode="json")
    if cfg.serve.topology == "fused":
        return Ingress.bind(None, None, None, None, c)
    return Ingress.bind(CandidateGenerator.bind(c), FeatureService.bind(c), Ranker.bind(c), EventIngest.bind(c), c)


