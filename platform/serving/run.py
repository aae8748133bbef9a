"""Starting and stopping the Serve app: the config sent to Serve, direct ingress, signals.

``platform/serve.yaml`` holds replicas and autoscaling; :func:`serve_config` adds this
config's host, port and the app's args (the whole config), and, for
``serve.ingress=direct``, the Serve flags on the controller and the Ingress replicas
(Serve's direct ingress: each Ingress replica answers HTTP itself; :func:`direct_urls`).
"""
import time
from pathlib import Path
from typing import Any

import yaml
from ray import serve

from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.ray_runtime import start_local_ray
from argusrank.platform.serving.bundle import resolve_bundle
from argusrank.platform.serving.deployments import DEPLOYMENTS

SERVE_YAML = Path(__file__).resolve().parent.parent / "serve.yaml"
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

    Uses the running Ray (tests start their own), joins ``ray.address``, or starts a local one. Raises
    :class:`~argusrank.platform.serving.bundle.NothingToServe` (saying what to run) when no
    ranker/vectors are registered. ``blocking``: serve in the foreground until Ctrl-C,
    then stop. Otherwise returns once the app is RUNNING; :func:`stop_serving` ends it.
    """
    global _STARTED_RAY
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    resolve_bundle(cfg)
    conf = ServeDeploySchema.model_validate(serve_config(cfg, deployment_options))
    _STARTED_RAY = start_local_ray(namespace="serve", address=cfg.ray.address) or _STARTED_RAY
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
