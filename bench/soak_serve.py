"""Soak test of the Serve app: minutes at a fixed rate, per-minute errors and latency, replica RSS, a replica kill.

Profiles (loopback only; requests bounded by rate x duration):
- ``fused-direct``: topology fused, direct ingress (the single-node fast profile), at ``--rate-fast`` (100 RPS);
- ``composed-proxy``: the cluster layout through Serve's proxy, at ``--rate-composed`` (what it holds here).

Every minute prints errors and p50/p99; the replicas' RSS (psutil, summed over the app's replicas) is read at
the start and the end. Halfway through, one replica is killed (``ray.kill``, Serve restarts it): the errors it
caused and the seconds until requests succeed again are reported (direct ingress: after a failed request the
client re-reads the replicas' URLs, at most once a second, as a client-side load balancer would).

    .venv/bin/python bench/soak_serve.py --minutes 10 --json soak.json
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import build_synthetic_home  # noqa: E402
from json_out import emit_json  # noqa: E402
from machine_info import machine  # noqa: E402

PROFILES = {"fused-direct": ("fused", "direct"), "composed-proxy": ("composed", "proxy")}


def replica_rss_mb(app_name: str) -> float:
    """Resident memory of the app's Serve replicas (MB), summed."""
    import psutil
    from ray.util.state import list_actors

    total = 0.0
    for a in list_actors(filters=[("state", "=", "ALIVE")]):
        if a.name and "SERVE_REPLICA" in a.name and app_name in a.name:
            try:
                total += psutil.Process(a.pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                pass
    return total


def kill_one_replica(deployment: str) -> float:
    """Kill one replica of ``deployment``; returns the kill time (perf_counter)."""
    import ray

    (victim,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if "SERVE_REPLICA" in a["name"] and deployment in a["name"]][:1]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=False)
    return time.perf_counter()


async def minute(urls: list[str], bodies: list[dict], rate: float, seconds: float, kill_at: float | None,
                 deployment: str, refresh=None) -> dict:
    """One window at ``rate``: (due time, ok, latency) per request; optionally a replica kill ``kill_at`` s in.
    ``refresh``: returns the current URLs (direct ingress: a restarted replica can listen on another port); called
    at most once a second after a failed request, as a client-side load balancer would re-resolve."""
    import httpx

    log: list[tuple[float, bool, float]] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    new_clients = lambda us: [httpx.AsyncClient(base_url=u, timeout=5.0, limits=limits) for u in us]  # noqa: E731
    state = {"clients": new_clients(urls), "refreshed": 0.0}
    every_client = list(state["clients"])
    killed = None

    async def one(i: int, due: float) -> None:
        clients = state["clients"]
        try:
            r = await clients[i % len(clients)].post("/recommend", json=bodies[i % len(bodies)])
            log.append((due, r.status_code == 200, (time.perf_counter() - due) * 1e3))
        except httpx.HTTPError:
            log.append((due, False, (time.perf_counter() - due) * 1e3))
            if refresh is not None and time.perf_counter() - state["refreshed"] > 1.0:
                state["refreshed"] = time.perf_counter()
                fresh = refresh() or []
                if fresh and sorted(fresh) != sorted(str(c.base_url).rstrip("/") for c in state["clients"]):
                    state["clients"] = new_clients(fresh)
                    every_client.extend(state["clients"])

    t0, tasks = time.perf_counter() + 0.05, []
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        if kill_at is not None and killed is None and due - t0 >= kill_at:
            killed = kill_one_replica(deployment)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    for c in every_client:
        await c.aclose()
    ok = np.array([x[1] for x in log])
    lat = np.array([x[2] for x in log if x[1]]) if ok.any() else np.array([np.nan])
    out = {"requests": len(log), "errors": int((~ok).sum()), "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99))}
    if killed is not None:
        bad = [due for due, good, _ in log if not good and due >= killed - 1]
        out["kill_errors"] = len(bad)
        out["recovery_s"] = round(max(bad) - killed, 2) if bad else 0.0
    return out


def warm_up(urls: list[str], bodies: list[dict], ok_in_a_row: int = 20, timeout_s: float = 180.0) -> float:
    """Sequential requests (spread over the URLs) until ``ok_in_a_row`` answer 200 in a row, each within 1 s:
    the soak measures the running app, not its start (Serve reports a deployment ready before its replicas
    have answered a request). Returns the seconds it took."""
    import httpx

    t0, streak, i = time.perf_counter(), 0, 0
    while streak < ok_in_a_row and time.perf_counter() - t0 < timeout_s:
        t = time.perf_counter()
        try:
            r = httpx.post(urls[i % len(urls)] + "/recommend", json=bodies[i % len(bodies)], timeout=10.0)
            streak = streak + 1 if r.status_code == 200 and time.perf_counter() - t < 1.0 else 0
        except httpx.HTTPError:
            streak = 0
        i += 1
    return time.perf_counter() - t0


def run_profile(cfg, name: str, rate: float, minutes: int, users: list[int], k: int) -> dict:
    from ray import serve

    from argusrank.platform.serving.run import direct_urls, start_serving

    topology, ingress = PROFILES[name]
    pcfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"topology": topology, "ingress": ingress})})
    opts = {"Ingress": {"num_replicas": 2}} if topology == "fused" else None
    urls = [start_serving(pcfg, blocking=False, deployment_options=opts)]
    if ingress == "direct":
        urls = direct_urls(pcfg)
    gc.collect()
    gc.freeze()
    bodies = [{"user_id": u, "k": k} for u in users]
    warmup_s = warm_up(urls, bodies)
    print(f"{name}: warm after {warmup_s:.1f} s", file=sys.stderr, flush=True)
    rss_start = replica_rss_mb(pcfg.serve.app_name)
    rows = []
    for m in range(minutes):
        kill_at = 20.0 if m == minutes // 2 else None
        victim = "Ingress" if topology == "fused" else "Ranker"
        refresh = (lambda: direct_urls(pcfg)) if ingress == "direct" else None
        row = asyncio.run(minute(urls, bodies, rate, 60.0, kill_at, victim, refresh))
        rows.append({"minute": m + 1, **row})
        print(f"{name} minute {m + 1}: {row}", file=sys.stderr, flush=True)
        if ingress == "direct":  # a restarted replica may listen on another port
            urls = direct_urls(pcfg) or urls
    rss_end = replica_rss_mb(pcfg.serve.app_name)
    serve.shutdown()
    kill = next(r for r in rows if "kill_errors" in r)
    steady = [r for r in rows if "kill_errors" not in r]
    return {"profile": name, "rate_rps": rate, "warmup_s": round(warmup_s, 1), "minutes": rows, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
            "rss_growth": rss_end / rss_start - 1 if rss_start else None,
            "steady_errors": sum(r["errors"] for r in steady), "kill_errors": kill["kill_errors"],
            "recovery_s": kill["recovery_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--rate-fast", type=float, default=100.0)
    ap.add_argument("--rate-composed", type=float, default=30.0)
    ap.add_argument("--synthetic-items", type=int, default=20000)
    ap.add_argument("--synthetic-users", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], help="config overrides, e.g. serve.candidates=null")
    ap.add_argument("--json", default=None, help="write the result here ('-': last stdout line)")
    args = ap.parse_args()
    mach = machine()
    import ray

    from argusrank.platform.config import load_config

    home = Path(tempfile.mkdtemp(prefix="argusrank-soak-"))
    port = 18000 + os.getpid() % 1000
    sets = build_synthetic_home(home, args.synthetic_users, args.synthetic_items, 64)
    sets += ["serve.num_candidates=500", "serve.host=127.0.0.1", f"serve.port={port}", f"serve.direct_port={port + 1}",
             *args.set]
    cfg = load_config(None, sets)
    users = list(range(0, args.synthetic_users, 7))[:200]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", object_store_memory=200_000_000,
             namespace="serve", log_to_driver=False)
    try:
        rates = {"fused-direct": args.rate_fast, "composed-proxy": args.rate_composed}
        results = [run_profile(cfg, p, rates[p], args.minutes, users, args.k) for p in args.profiles]
    finally:
        ray.shutdown()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Serve soak, {args.minutes} min per profile, /recommend k={args.k}, 500 candidates — {mach}")
    for col in ("profile", "rps", "minute", "requests", "errors", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for res in results:
        for r in res["minutes"]:
            table.add_row(res["profile"], f"{res['rate_rps']:.0f}", str(r["minute"]), str(r["requests"]),
                          str(r["errors"]) + (" (kill)" if "kill_errors" in r else ""), f"{r['p50_ms']:.1f}",
                          f"{r['p99_ms']:.1f}")
    Console(width=140).print(table)
    for res in results:
        print(f"{res['profile']}: steady errors {res['steady_errors']}, replica RSS {res['rss_start_mb']:.0f} -> "
              f"{res['rss_end_mb']:.0f} MB ({(res['rss_growth'] or 0) * 100:+.1f}%), kill: {res['kill_errors']} errors, "
              f"recovered in {res['recovery_s']} s")
    doc = {"machine": mach, "args": vars(args), "results": results}
    emit_json(doc, args.json)


if __name__ == "__main__":
    main()
