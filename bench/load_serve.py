"""Load test of the Serve app: /recommend and /rank at fixed request rates, vs the same pipeline in-process.

Open-loop async HTTP client (httpx, one keep-alive client) on loopback only: requests are
sent on a fixed schedule (``--rates``) whether or not earlier ones returned (latency counted
from each request's due time), bounded by count
(``--max-requests``) AND time (``--duration``, plus a hard timeout per request).
Reports p50/p95/p99 latency, achieved throughput and errors per endpoint and rate,
then runs the same pipeline in-process (``serving.flow.InProcessPipeline``: no Serve,
no HTTP) on the same users for the ratio. The client shares the machine's cores
with the app (as ``make bench`` on a laptop would).

    # serve what the last demo registered (needs >= 500 items for 500 candidates):
    .venv/bin/python bench/load_serve.py --rates 50 100 --duration 10
    # or build a synthetic serving home first (vectors + baseline + ranker, no ARGUS training):
    .venv/bin/python bench/load_serve.py --synthetic-items 20000 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import machine  # noqa: E402  (bench/machine_info.py)


def build_synthetic_home(home: Path, n_users: int, n_items: int, dim: int, seed: int = 0) -> list[str]:
    """A serving home without ARGUS training: synth events -> baseline -> clustered vectors -> Feast -> ranker.

    Returns the config overrides that point at it.
    """
    import pandas as pd

    from argusrank.features.baseline import ARGUS_FEATURES, compute_baseline, ranker_features, snapshot_times, write_baseline
    from argusrank.features.io import read_events
    from argusrank.features.store import materialize, online_features
    from argusrank.features.vectors import vector_table, write_vectors
    from argusrank.features.synth import synthesize
    from argusrank.models.ranker import train_ranker
    from argusrank.platform.config import load_config

    sets = [f"paths.home={home}", f"data.synth.n_users={n_users}", f"data.synth.n_items={n_items}", "data.synth.days=10"]
    cfg = load_config(overrides=sets, env={})
    synthesize(cfg.data.synth, home / "data" / "synth", seed=seed)
    events = read_events(home / "data" / "synth")
    ts = events["timestamp"].to_numpy()
    write_baseline(compute_baseline(events, snapshot_times(int(ts.min()), int(ts.max()))), cfg.paths.baseline_dir)
    end = int(ts.max()) + 1
    sets.append(f"serve.as_of={end + 3600}")
    cfg = load_config(overrides=sets, env={})
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n_items // 100, 8), dim))
    users, items = np.unique(events["user_id"].to_numpy()), np.arange(n_items)
    U = centres[rng.integers(0, len(centres), len(users))] + rng.normal(size=(len(users), dim))
    V = centres[rng.integers(0, len(centres), n_items)] + rng.normal(size=(n_items, dim))
    write_vectors(cfg, "user", vector_table("user", users, U, 1, end, time.time()), "v1")
    write_vectors(cfg, "item", vector_table("item", items, V, 1, end, time.time()), "v1")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # NIP-shaped: unit vectors, same clusters
    write_vectors(cfg, "user_nip", vector_table("user_nip", users, unit(U[:, ::-1]), 1, end, time.time()), "v1")
    write_vectors(cfg, "item_nip", vector_table("item_nip", items, unit(V[:, ::-1]), 1, end, time.time()), "v1")
    materialize(cfg)
    xs, grades, groups = [], [], []
    for g, u in enumerate(users[:200]):
        its = rng.choice(items, 20, replace=False)
        raw = online_features(cfg, int(u), its)
        xs.append(ranker_features(raw, end + 3600, ARGUS_FEATURES))
        grades.append(np.digitize(raw["argus_dot"] + rng.normal(0, 3, len(its)), [-5, 0, 5]) - 1)
        groups.append(np.full(len(its), g))
    model = train_ranker(pd.DataFrame(np.concatenate(xs), columns=list(ARGUS_FEATURES)), np.concatenate(grades),
                         np.concatenate(groups), n_estimators=200, max_depth=6, learning_rate=0.1, seed=seed)
    from argusrank.platform.registry import log_ranker
    from argusrank.platform.tracking import start_run

    with start_run(cfg, "bench-load-serve"):  # artifacts under the home, not ./mlruns
        info = log_ranker(model, registered_model_name=cfg.mlflow.ranker_model_name)
    from argusrank.platform.registry import publish_ranker

    publish_ranker(cfg, int(info.registered_model_version), 1, "champion")
    return sets


def _stats(lat_ms: list[float], errors: int, wall_s: float, name: str, rate: float | None) -> dict:
    a = np.asarray(lat_ms) if lat_ms else np.asarray([np.nan])
    return {"endpoint": name, "rate_rps": rate, "requests": len(lat_ms) + errors, "errors": errors,
            "throughput_rps": len(lat_ms) / wall_s if wall_s else float("nan"),
            "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}


async def open_loop(clients: list, path: str, bodies: list[dict], rate: float, duration_s: float,
                    max_requests: int) -> dict:
    """Send ``bodies`` (cycled) at ``rate`` per second for at most ``duration_s`` / ``max_requests``.

    A dispatcher starts each request at its due time (tasks are created as they fall due, not all
    up front); latency counts from the due time, so client-side lag is never hidden.
    """
    import httpx

    n = min(max_requests, int(rate * duration_s))
    lat, errors = [], 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        try:
            r = await clients[i % len(clients)].post(path, json=bodies[i % len(bodies)])
            if r.status_code == 200:
                lat.append((time.perf_counter() - due) * 1e3)
            else:
                errors += 1
        except httpx.HTTPError:
            errors += 1

    t0, tasks = time.perf_counter() + 0.05, []
    for i in range(n):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return _stats(lat, errors, time.perf_counter() - t0, path, rate)


async def measure(urls: list[str], rec: list[dict], rnk: list[dict], rates: list[float], duration_s: float,
                  max_requests: int, timeout_s: float) -> list[dict]:
    """Warm-up, then every (rate, endpoint) window, over ONE keep-alive client per URL (connections reused;
    several URLs: requests go round-robin)."""
    import contextlib

    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    rows = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=timeout_s, limits=limits))
                   for u in urls]
        for path, bodies in (("/recommend", rec), ("/rank", rnk)):  # warm-up: steady state is measured
            await open_loop(clients, path, bodies, 50, 3.0, 150)
        for rate in rates:
            for path, bodies in (("/recommend", rec), ("/rank", rnk)):
                rows.append(await open_loop(clients, path, bodies, rate, duration_s, max_requests))
    return rows


def in_process(cfg, users: list[int], k: int, n: int, rank_items: list[list[int]]) -> list[dict]:
    from argusrank.platform.serving.flow import InProcessPipeline

    pipe = InProcessPipeline(cfg)
    out = []
    for name, call in (("/recommend", lambda i: pipe.recommend(users[i % len(users)], k)),
                       ("/rank", lambda i: pipe.rank(users[i % len(users)], rank_items[i % len(rank_items)]))):
        for i in range(min(n, 20)):  # warm-up
            call(i)
        lat = []
        for i in range(n):
            t = time.perf_counter()
            call(i)
            lat.append((time.perf_counter() - t) * 1e3)
        out.append(_stats(lat, 0, sum(lat) / 1e3, name + " (in-process)", None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="argusrank YAML config of a trained home")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--synthetic-items", type=int, default=0, help="build a synthetic serving home with this many items")
    ap.add_argument("--synthetic-users", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rates", type=float, nargs="+", default=[50, 100])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per (endpoint, rate)")
    ap.add_argument("--max-requests", type=int, default=3000)
    ap.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (s)")
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--rank-items", type=int, default=100)
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs given to Ray")
    ap.add_argument("--topologies", nargs="+", default=["composed", "fused"], choices=["composed", "fused"],
                    help="serve.topology values to measure, one app after the other")
    ap.add_argument("--fused-replicas", type=int, default=2, help="Ingress replicas of the fused topology")
    ap.add_argument("--ingress", nargs="+", default=["proxy"], choices=["proxy", "direct"],
                    help="proxy: through Serve's HTTP proxy; direct: to the Ingress replicas' own HTTP servers "
                         "(serve.ingress=direct, no proxy hop); several: each in turn")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    mach = machine()  # before the work: its load average says how idle the box was

    import ray
    from ray import serve

    from argusrank.platform.config import load_config
    from argusrank.platform.serving.run import direct_urls, start_serving, stop_serving

    sets = list(args.set)
    if args.synthetic_items:
        home = Path(tempfile.mkdtemp(prefix="argusrank-load-"))
        t = time.perf_counter()
        sets = build_synthetic_home(home, args.synthetic_users, args.synthetic_items, args.dim) + sets
        print(f"synthetic serving home {home} built in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    port = 18000 + os.getpid() % 1000
    sets += [f"serve.num_candidates={args.candidates}", "serve.host=127.0.0.1", f"serve.port={port}",
             f"serve.direct_port={port + 1}"]
    cfg = load_config(args.config, sets)
    assert cfg.serve.host in ("127.0.0.1", "localhost"), "loopback only"

    import pyarrow.dataset as ds

    rng = np.random.default_rng(0)
    known = np.unique(ds.dataset(cfg.paths.vectors_dir / "user_vectors").to_table(columns=["user_id"])["user_id"].to_numpy())
    users = rng.choice(known, min(200, len(known)), replace=False).tolist()
    from argusrank.platform.serving.bundle import resolve_bundle
    from argusrank.platform.serving.candidates import item_vectors

    catalog, _ = item_vectors(cfg, resolve_bundle(cfg).argus_version)
    rank_items = [rng.choice(catalog, min(args.rank_items, len(catalog)), replace=False).tolist() for _ in range(50)]
    rows = in_process(cfg, users, args.k, 300, rank_items)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, object_store_memory=200_000_000, namespace="serve",
             log_to_driver=False)
    rec = [{"user_id": u, "k": args.k} for u in users]
    rnk = [{"user_id": u, "item_ids": items} for u, items in zip(users, rank_items * 4)]
    try:
        for topology, ingress in itertools.product(args.topologies, args.ingress):
            tcfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"topology": topology,
                                                                                "ingress": ingress})})
            opts = {"Ingress": {"num_replicas": args.fused_replicas}} if topology == "fused" else None
            urls = [start_serving(tcfg, blocking=False, deployment_options=opts)]
            # this client process also holds the in-process pipeline (Feast, MLflow, Ray): without a freeze, a full
            # collection over those objects (~0.2 s) stalls the client mid-window and shows up as server latency
            gc.collect()
            gc.freeze()
            if ingress == "direct":  # the client spreads requests over the Ingress replicas' own servers
                urls = direct_urls(tcfg)
            for row in asyncio.run(measure(urls, rec, rnk, args.rates, args.duration, args.max_requests,
                                           args.timeout)):
                rows.append({**row, "endpoint": f"{row['endpoint']} {topology} {ingress}"})
            serve.shutdown()  # direct ingress is set when Serve starts: a fresh instance per combination
    finally:
        stop_serving()
        ray.shutdown()

    base = {r["endpoint"].split(" ")[0]: r for r in rows if r["rate_rps"] is None}
    for r in rows:
        ref = base.get(r["endpoint"].split(" ")[0])
        r["p50_vs_in_process"] = r["p50_ms"] / ref["p50_ms"] if ref else None
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Serve load: {args.candidates} candidates, k={args.k}, /rank {args.rank_items} items, "
                        f"Ray num_cpus={args.num_cpus} — {mach}")
    for col in ("endpoint", "rate rps", "requests", "errors", "thru rps", "p50 ms", "p95 ms", "p99 ms", "p50 / in-proc"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["endpoint"], "-" if r["rate_rps"] is None else f"{r['rate_rps']:.0f}", str(r["requests"]),
                      str(r["errors"]), f"{r['throughput_rps']:.1f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{r['p50_vs_in_process']:.1f}x" if r["p50_vs_in_process"] else "-")
    Console(width=160).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
