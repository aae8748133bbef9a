"""Feast's ``FeatureService(precompute_online=True)`` for the one-row user read (issue 17), measured.

The serving path reads one user's row (every user-entity view: the ARGUS vectors of each space and the
user statistics) in one Feast call. Feast 0.67 can keep that row pre-computed per entity as one blob
(``precompute_online=True``). This bench builds a throwaway store (``bench/feast_online.py``'s random
vectors and baseline views), registers the same user views as two FeatureServices (pre-computed and not),
and measures, batch 1:

- the per-view read the platform does today (``get_online_features(features=[refs])``);
- the plain FeatureService read, and the pre-computed one (same values checked);
- the cost Feast adds to every write: with a pre-computed service registered, each materialization and each
  ``push`` re-computes the service for **every** entity (``FeatureStore._precompute_for_push``), so a fresh
  user vector (issue 16) costs a full pass over the users;
- whether the online store supports it at all (Feast pre-computes only on stores it can scan: Redis; on
  SQLite it logs a warning and writes nothing).

    python bench/feast_precompute.py [--users 5000 --repeats 300] [--redis-url host:port] [--json out.json]

Without ``--redis-url`` a ``redis-server`` on PATH is started on a free port and stopped at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from argusrank.features import store, vectors
from argusrank.platform.config import load_config
from feast_online import T0, fill, pct, timed  # bench/feast_online.py
from json_out import emit_json
from machine_info import machine


@contextlib.contextmanager
def redis_server(url: str | None, workdir: Path):
    """Yield host:port of ``url``, or of a redis-server started here (no persistence) for the bench."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not on PATH: pass --redis-url host:port (`make redis-server` installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def user_services(cfg):
    """The user-entity feature views and two FeatureServices over them: (views, plain, precomputed)."""
    from feast import FeatureService, FeatureView

    views = [v for v in store.definitions(cfg).values()
             if isinstance(v, FeatureView) and list(v.entities) == ["user"]]
    plain = FeatureService(name="user_row", features=views)
    pre = FeatureService(name="user_row_precomputed", features=views, precompute_online=True)
    return views, plain, pre


def measure(cfg, users: int, repeats: int) -> dict:
    """Every figure of one store (already filled and materialized)."""
    fs = store.get_store(cfg)
    views, plain, pre = user_services(cfg)
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    t = time.perf_counter()
    fs.apply([plain, pre])
    written = fs.precompute_feature_service(pre.name)
    res: dict = {"views": [v.name for v in views], "features": len(refs), "precomputed_rows": int(written),
                 "precompute_all_s": round(time.perf_counter() - t, 3)}
    rng = np.random.default_rng(1)
    row = lambda: {"user_id": [int(rng.integers(users))]}
    # full feature names: Feast 0.67 stores the pre-computed blob under `view__feature` names and refuses a
    # short-name read of it ("schema mismatch"); every read below asks for full names so they compare
    get = lambda features, rows: fs.get_online_features(features=features, entity_rows=rows,
                                                        full_feature_names=True).to_dict()
    read = {"per_view_refs": lambda: get(refs, row()), "feature_service": lambda: get(plain, row())}
    if written:
        read["feature_service_precomputed"] = lambda: get(pre, row())
        a, b = get(refs, {"user_id": [7]}), get(pre, {"user_id": [7]})
        res["precomputed_equals_per_view"] = all(np.allclose(np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float))
                                                 for k in a if k != "user_id")
    for name, fn in read.items():
        res[f"read_{name}"] = pct(timed(fn, repeats))
    # one fresh user vector pushed through Feast's push API, with and without the pre-computed service
    dim = len(fs.get_online_features(features=[f"{store.VIEW_OF['user']}:user_vector"],
                                     entity_rows={"user_id": [0]}).to_dict()["user_vector"][0])
    one = lambda: store.push_user_vectors(cfg, vectors.vector_table(
        "user", np.array([int(rng.integers(users))]), rng.normal(size=(1, dim)).astype(np.float32), 1,
        T0 + 6 * 86400, time.time()), via_push=True)
    pushes = max(5, repeats // 20)
    res["push_with_precomputed_service"] = pct(timed(one, pushes, warmup=1))
    fs.apply([], objects_to_delete=[pre], partial=False)
    res["push_without"] = pct(timed(one, pushes, warmup=1))
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--redis-url", default=None, help="host:port of a running Redis (default: start one)")
    p.add_argument("--json", default=None, help="write the results here (- prints them as the last line)")
    a = p.parse_args(argv)
    out: dict = {"machine": machine(), "users": a.users, "dim": a.dim, "repeats": a.repeats, "stores": {}}
    with tempfile.TemporaryDirectory() as tmp, redis_server(a.redis_url, Path(tmp)) as url:
        for name, over in (("redis", {"features.online_store": "redis", "features.redis_url": url}),
                           ("sqlite", {})):
            cfg = load_config(env={}, overrides={"paths.home": f"{tmp}/{name}", **over})
            fill(cfg, a.users, a.items, a.dim, seed=0)
            store.materialize(cfg, full=True)
            out["stores"][name] = measure(cfg, a.users, a.repeats)
    print(f"\nFeast 0.67 FeatureService(precompute_online=True), one-row user read  ({out['machine']};"
          f" {a.users} users, dim {a.dim})")
    print(f"{'store':8s} {'measure':36s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for name, r in out["stores"].items():
        for k in ("read_per_view_refs", "read_feature_service", "read_feature_service_precomputed",
                  "push_with_precomputed_service", "push_without"):
            if k in r:
                print(f"{name:8s} {k:36s} {r[k]['p50_ms']:9.2f} {r[k]['p99_ms']:9.2f}")
        print(f"{name:8s} {'rows pre-computed / seconds':36s} {r['precomputed_rows']:9d} {r['precompute_all_s']:9.2f}")
    emit_json(out, a.json)
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
