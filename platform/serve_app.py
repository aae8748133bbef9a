"""The Ray Serve application: ``Ingress(CandidateGenerator, FeatureService, Ranker)``.

The request path, in the few lines of :func:`build_app`::

    POST /recommend {user_id, k, exclude?}
      -> CandidateGenerator  ANN top-N over item vectors of the served version (RAM); user vector from Feast
      -> FeatureService      baseline + vector features of (user, candidates): one batched Feast read
      -> Ranker              XGBoost (registry alias) scores all candidates in one inplace_predict
      -> top-k with scores and the model versions used

    POST /rank {user_id, item_ids}   same, for given items;  GET /healthz;  GET /version

The logic lives in ``platform/serve_core.py`` (plain Python, also run in-process
by the benchmark). Replicas, resources and autoscaling live in
``platform/serve.yaml`` (``serve run platform/serve.yaml`` / ``serve deploy``,
and the Helm chart's RayService), never here.

Hot swap: each CandidateGenerator replica checks the registry alias every
``serve.reload_interval_s``; on a move it builds the new item index off the
request path and swaps one reference. A request is pinned to the bundle
(ARGUS + ranker versions) its candidates came from; the FeatureService refuses
vectors of another version and the Ranker loads the pinned ranker version, so
versions are never mixed and no request is dropped.

Request validation: pydantic models, strict types; bad JSON -> 400, oversized
body -> 413, invalid fields -> 422, each with a message naming the field.

Ingress: through Serve's HTTP proxy on ``serve.port``; with ``serve.ingress=direct``
each Ingress replica also serves HTTP itself (Serve's direct ingress, flags set by
:func:`serve_config`; addresses from :func:`direct_urls`), skipping the proxy hop.
"""
import asyncio
import inspect
import json
import logging
import threading
import time
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from argusrank.platform.config import ArgusrankConfig, load_config

logger = logging.getLogger("ray.serve")
SERVE_YAML = Path(__file__).with_name("serve.yaml")
DEPLOYMENTS = ("CandidateGenerator", "FeatureService", "Ranker", "Ingress")


def _cfg(cfg: dict) -> ArgusrankConfig:
    return ArgusrankConfig.model_validate(cfg)


def _replica_init(init):
    """Set-up shared by every replica constructor: one BLAS/faiss thread per process
    (:func:`~argusrank.platform.serve_core.one_thread_per_request`), and the cyclic GC off while it
    loads — Feast, MLflow, XGBoost and the index make many long-lived objects, and the full
    collections they trigger took ~1.8 s of a ~7.5 s start. Serve collects and freezes the GC once the
    replica is up (RAY_SERVE_FREEZE_GC_ON_STARTUP)."""
    import functools
    import gc

    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        from argusrank.platform.serve_core import one_thread_per_request

        one_thread_per_request()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return init(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


# ------------------------------------------------------------------------------ deployments
@serve.deployment
class CandidateGenerator:
    """ANN candidates over the served version's item vectors (RAM) for users read from Feast."""

    @_replica_init
    def __init__(self, cfg: dict):
        from argusrank.platform.serve_core import load_candidate_state

        self.cfg = _cfg(cfg)
        self.state = load_candidate_state(self.cfg)
        self.reloads, self.last_error, self.fallbacks = 0, None, {"unknown_user": 0, "version_mismatch": 0}
        self._wake = threading.Event()
        self.generate.set_max_batch_size(self.cfg.serve.batch_max_size)
        self.generate.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_timeout_s)
        threading.Thread(target=self._watch_registry, name="argusrank-hot-swap", daemon=True).start()

    def _watch_registry(self) -> None:
        """Background: when the alias moves, build the new state fully, then swap one reference."""
        from argusrank.platform.serve_core import load_candidate_state, resolve_bundle

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
        """A batch of ``{user_id, n, exclude?}`` / ``{user_id, items}``: one Feast read, one ANN search."""
        from argusrank.platform.serve_core import generate_candidates

        out = generate_candidates(self.cfg, self.state, requests)
        for o in out:
            if o["fallback"] in self.fallbacks:
                self.fallbacks[o["fallback"]] += 1
            if o["fallback"] == "version_mismatch":
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

    @_replica_init
    def __init__(self, cfg: dict):
        from argusrank.features.store import get_store
        from argusrank.platform.serve_core import ItemFeatureCache

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
        from argusrank.platform.serve_core import ItemFeatureCache

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
        from argusrank.platform.serve_core import VersionMismatch, features_for

        try:
            return {"raw": features_for(self.cfg, user_id, cand, self.items)}
        except VersionMismatch as exc:
            return {"mismatch": str(exc)}


@serve.deployment
class Ranker:
    """XGBoost final ranker: the registry alias's version preloaded, pinned versions loaded on demand."""

    @_replica_init
    def __init__(self, cfg: dict):
        from argusrank.platform.serve_core import RankerCache, resolve_bundle

        self.cfg = _cfg(cfg)
        self.cache = RankerCache(self.cfg)
        self.cache.get(resolve_bundle(self.cfg).ranker_version)
        self.score.set_max_batch_size(self.cfg.serve.batch_max_size)
        self.score.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def score(self, requests: list[dict]) -> list[np.ndarray]:
        """A batch of ``{raw, request_ts, ranker_version}``: one ``inplace_predict`` per ranker version."""
        from argusrank.features.baseline import ranker_features

        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(requests)
        for version in {int(r["ranker_version"]) for r in requests}:
            idx = [i for i, r in enumerate(requests) if int(r["ranker_version"]) == version]
            st = self.cache.get(version)
            mats = [ranker_features(requests[i]["raw"], requests[i]["request_ts"], st.feature_names) for i in idx]
            sizes = np.cumsum([m.shape[0] for m in mats])[:-1]
            x = np.concatenate(mats, axis=0)  # (sum N, F)
            scores = np.asarray(st.booster.inplace_predict(x), np.float32).reshape(-1) if len(x) else np.zeros(0, np.float32)
            for i, s in zip(idx, np.split(scores, sizes)):
                out[i] = s
        return out

    def loaded_versions(self) -> list[int]:
        return self.cache.versions()


# ------------------------------------------------------------------------------ HTTP API
class RecommendBody(BaseModel):
    """``POST /recommend``: ``as_of`` (epoch seconds) optionally fixes the request time (replays)."""

    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt = Field(ge=0)
    k: StrictInt = Field(10, ge=1)
    exclude: Optional[list[StrictInt]] = None
    as_of: Optional[StrictFloat | StrictInt] = None


class RankBody(BaseModel):
    """``POST /rank``: rank the given (distinct) items for the user."""

    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt = Field(ge=0)
    item_ids: list[StrictInt] = Field(min_length=1)
    as_of: Optional[StrictFloat | StrictInt] = None


api = FastAPI(title="argusrank", description="ARGUS candidates + Feast features + XGBoost ranking")


def _errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]


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

    @_replica_init
    def __init__(self, candidates: DeploymentHandle | None, features: DeploymentHandle | None,
                 ranker: DeploymentHandle | None, cfg: dict):
        self.cfg = _cfg(cfg)
        if self.cfg.serve.topology == "fused":
            candidates, features, ranker = (LocalHandle(d, cfg) for d in (CandidateGenerator, FeatureService, Ranker))
        self.candidates, self.features, self.ranker = candidates, features, ranker

    # --- helpers ---------------------------------------------------------------------------
    async def _parse(self, request: Request, model: type[BaseModel]) -> BaseModel:
        limit = self.cfg.serve.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
        body = await request.body()
        if len(body) > limit:
            raise HTTPException(413, f"request body of {len(body)} bytes exceeds the {limit}-byte limit")
        try:
            obj = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}")
        if not isinstance(obj, dict):
            raise HTTPException(422, "request body must be a JSON object")
        try:
            return model.model_validate(obj)
        except ValidationError as exc:
            raise HTTPException(422, _errors(exc))

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

    async def _serve(self, cand_req: dict, user_id: int, k: int, as_of: float | None) -> dict:
        from argusrank.platform.serve_core import recommend_response, request_time

        cand = await self._call(self.candidates.generate, cand_req)
        if cand["fallback"] is None and len(cand["item_ids"]):
            mv = cand["model_versions"]
            feats = await self._call(self.features.features, user_id, cand)
            if "raw" in feats:
                req = {"raw": feats["raw"], "request_ts": request_time(self.cfg, as_of), "ranker_version": mv["ranker"]}
                scores = await self._call(self.ranker.score, req)
                return recommend_response(user_id, k, cand, scores)
            cand = await self._call(self.candidates.generate, {**cand_req, "force_fallback": "version_mismatch"})
        return recommend_response(user_id, k, cand, None)

    # --- endpoints -------------------------------------------------------------------------
    @api.post("/recommend")
    async def recommend(self, request: Request) -> JSONResponse:
        body = await self._parse(request, RecommendBody)
        s = self.cfg.serve
        if body.k > s.max_k:
            raise HTTPException(422, [f"k: must be <= {s.max_k}, got {body.k}"])
        if body.exclude is not None and len(body.exclude) > s.max_exclude:
            raise HTTPException(422, [f"exclude: at most {s.max_exclude} item ids, got {len(body.exclude)}"])
        req = {"user_id": body.user_id, "n": max(s.num_candidates, body.k), "exclude": body.exclude}
        return JSONResponse(await self._serve(req, body.user_id, body.k, body.as_of))

    @api.post("/rank")
    async def rank(self, request: Request) -> JSONResponse:
        body = await self._parse(request, RankBody)
        s = self.cfg.serve
        if len(body.item_ids) > s.max_rank_items:
            raise HTTPException(422, [f"item_ids: at most {s.max_rank_items} items, got {len(body.item_ids)}"])
        if len(set(body.item_ids)) != len(body.item_ids):
            raise HTTPException(422, ["item_ids: must be distinct"])
        req = {"user_id": body.user_id, "items": body.item_ids}
        return JSONResponse(await self._serve(req, body.user_id, len(body.item_ids), body.as_of))

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
    return load_config(args.get("config"), list(args.get("overrides") or []))


def build_app(args: dict[str, Any] | None = None):
    """Application builder for ``serve run`` / ``serve deploy`` (``import_path: argusrank.platform.serve_app:build_app``)."""
    from argusrank.platform.serve_core import resolve_bundle

    cfg = config_from_args(args)
    resolve_bundle(cfg)  # fail the deploy early, with what to run, when nothing is registered
    c = cfg.model_dump(mode="json")
    if cfg.serve.topology == "fused":
        return Ingress.bind(None, None, None, c)
    return Ingress.bind(CandidateGenerator.bind(c), FeatureService.bind(c), Ranker.bind(c), c)


# ------------------------------------------------------------------------------ start / stop
_STARTED_RAY = False


def serve_config(cfg: ArgusrankConfig, deployment_options: dict[str, dict] | None = None,
                 serve_yaml: str | Path = SERVE_YAML) -> dict[str, Any]:
    """``platform/serve.yaml`` with this config's host/port and config as the app's args, plus per-deployment
    option overrides (``{"Ranker": {"num_replicas": 2}}``)."""
    conf = yaml.safe_load(Path(serve_yaml).read_text())
    conf["http_options"] = {**conf.get("http_options", {}), "host": cfg.serve.host, "port": cfg.serve.port}
    (app,) = [a for a in conf["applications"] if a["import_path"].endswith(":build_app")]
    app["name"] = cfg.serve.app_name
    app["args"] = {"config_dict": cfg.model_dump(mode="json")}
    deps = {d["name"]: d for d in app.get("deployments", [])}
    for name, opts in (deployment_options or {}).items():
        if name not in DEPLOYMENTS:
            raise ValueError(f"unknown deployment {name!r}; known: {DEPLOYMENTS}")
        d = deps.setdefault(name, {"name": name})
        if "num_replicas" in opts:
            d.pop("autoscaling_config", None)
        if "autoscaling_config" in opts:
            d.pop("num_replicas", None)
        d.update(opts)
    if cfg.serve.topology == "fused":  # only the Ingress exists
        deps = {n: d for n, d in deps.items() if n == "Ingress"}
    if cfg.serve.ingress == "direct":  # Serve reads these flags at import: the controller and the Ingress replicas
        env = direct_ingress_env(cfg)
        conf["controller_options"] = {"runtime_env": {"env_vars": env}}
        ingress = deps.setdefault("Ingress", {"name": "Ingress"})
        actor = ingress.setdefault("ray_actor_options", {})
        runtime_env = actor.setdefault("runtime_env", {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    app["deployments"] = list(deps.values())
    return conf


def direct_ingress_env(cfg: ArgusrankConfig) -> dict[str, str]:
    """Ray Serve flags of ``serve.ingress=direct``: each Ingress replica runs its own HTTP server on
    ``direct_port``, ``direct_port+1``, ... (the proxy stays on ``port``); a freed port is reused at once and a
    stopping replica drains for 2 s (Serve's defaults, 150 s and 30 s, suit a load balancer in front)."""
    p = cfg.serve.direct_port
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(p),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(p + 63), "RAY_SERVE_PORT_QUARANTINE_S": "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


def start_serving(cfg: ArgusrankConfig, blocking: bool = False, *, deployment_options: dict[str, dict] | None = None,
                  timeout_s: float = 180.0) -> str:
    """Start the Serve app of ``platform/serve.yaml`` for this config; returns the base URL.

    Uses the running Ray (tests start their own) or starts a local one. Raises
    :class:`~argusrank.platform.serve_core.NothingToServe` (saying what to run) when no
    ranker/vectors are registered. ``blocking``: serve in the foreground until Ctrl-C,
    then stop. Otherwise returns once the app is RUNNING; :func:`stop_serving` ends it.
    """
    global _STARTED_RAY
    import ray
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    from argusrank.platform.serve_core import resolve_bundle

    resolve_bundle(cfg)
    conf = ServeDeploySchema.model_validate(serve_config(cfg, deployment_options))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, namespace="serve", log_to_driver=False)
        _STARTED_RAY = True
    client = serve_api.serve_start(http_options=conf.http_options.model_dump(), proxy_location=conf.proxy_location,
                                   global_logging_config=conf.logging_config,
                                   controller_options=conf.controller_options)
    client.deploy_apps(conf, _blocking=False)
    _wait_running(cfg.serve.app_name, timeout_s)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    direct = ""
    if cfg.serve.ingress == "direct":
        direct = f"; Ingress replicas directly (no proxy hop): {' '.join(_wait_direct(cfg, timeout_s=60.0))}"
    if blocking:
        print(f"argusrank serving on {url}{direct} (Ctrl-C stops)", flush=True)
        serve_until_stopped()
    return url


def direct_urls(cfg: ArgusrankConfig) -> list[str]:
    """Base URLs of the Ingress replicas' own HTTP servers under ``serve.ingress=direct``, as the Serve
    controller routes them (a replica takes the next free port from ``serve.direct_port`` on: a restarted one may
    not get its old port back while that is in TIME_WAIT). Empty when none runs or direct ingress is off."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    groups = ray.get(controller.get_target_groups.remote(cfg.serve.app_name))
    ports = {t.port for g in groups if g.protocol == RequestProtocol.HTTP for t in g.targets}
    return [f"http://{cfg.serve.host}:{p}" for p in sorted(ports - {cfg.serve.port})]


def _wait_direct(cfg: ArgusrankConfig, timeout_s: float) -> list[str]:
    import urllib.error
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout_s:
        urls = direct_urls(cfg)
        try:
            for url in urls:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    pass
            if urls:
                return urls
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"serve.ingress=direct: no Ingress replica serves HTTP itself after {timeout_s:.0f}s. Direct "
                       "ingress is set when Serve starts: stop the running Serve instance (`serve shutdown`) first")


def serve_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM (also when started in the background, where SIGINT is ignored),
    then stop Serve (and the Ray this process started). Further signals during the stop are ignored: a
    second SIGTERM (``timeout`` and a supervisor both signalling) would otherwise cut the drain short."""
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("argusrank: stopping Serve...", flush=True)
        stop_serving()


def _wait_running(app_name: str, timeout_s: float) -> None:
    from ray.serve.schema import ApplicationStatus

    t0 = time.time()
    while time.time() - t0 < timeout_s:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return
        if app is not None and app.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            details = {n: d.message for n, d in app.deployments.items() if d.message}
            raise RuntimeError(f"Serve app {app_name!r} {app.status.value}: {app.message or ''} {details}")
        time.sleep(0.5)
    raise TimeoutError(f"Serve app {app_name!r} not RUNNING after {timeout_s:.0f}s (see Ray logs)")


def stop_serving() -> None:
    """Shut Serve down, and Ray too when :func:`start_serving` started it."""
    global _STARTED_RAY
    import ray

    if ray.is_initialized():
        serve.shutdown()
        if _STARTED_RAY:
            ray.shutdown()
            _STARTED_RAY = False
