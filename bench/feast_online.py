"""Feature platform bench: Feast materialization rows/s, online reads p50/p99, dot-product modes.

Builds a throwaway store (SQLite online store, or Redis with --redis-url) with
random 64-dim vectors for U users and I items plus baseline features, then measures:

- materialization rows/s (``materialize(full=True)``: vectors + baseline views), median over repeats;
- ``read_user_vectors`` for batches of 1 and 500 entities: p50 / p99 latency;
- the ranker's online features for 1 user x 500 candidates with the dot product
  computed (a) in the caller, vectorized (``caller``), or (b) by Feast's python-mode
  on-demand feature view (``on_demand``): p50 / p99, plus the dot-product-only reads.

    python bench/feast_online.py [--users 20000 --items 5000 --repeats 200 --json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from argusrank.features import baseline, store, vectors
from argusrank.platform.config import load_config
from machine_info import machine  # bench/machine_info.py

T0 = 1_700_000_000


def pct(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def timed(fn, repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def fill(cfg, users: int, items: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    now = time.time()
    for kind, n in (("user", users), ("item", items)):
        v = rng.normal(size=(n, dim)).astype(np.float32)
        vectors.write_vectors(cfg, kind, vectors.vector_table(kind, np.arange(n), v, 1, T0, now), f"bench_{seed}")
    n_ev = 20 * users
    ev = pa.table({"user_id": rng.integers(0, users, n_ev), "timestamp": np.sort(rng.integers(0, 5 * 86400, n_ev)) + T0,
                   "item_id": rng.integers(0, items, n_ev), "played_ratio": rng.random(n_ev).astype(np.float32),
                   "liked": rng.random(n_ev) < 0.2, "disliked": rng.random(n_ev) < 0.05})
    baseline.write_baseline(baseline.compute_baseline(ev, np.array([T0 + 5 * 86400])), cfg.paths.baseline_dir,
                            tag=f"bench_{seed}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--mat-repeats", type=int, default=3)
    p.add_argument("--redis-url", default=None, help="host:port of a running Redis (default: SQLite)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)

    res: dict = {"machine": machine(), "users": a.users, "items": a.items, "dim": a.dim, "repeats": a.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        over = {"paths.home": tmp}
        if a.redis_url:
            over.update({"features.online_store": "redis", "features.redis_url": a.redis_url})
        cfg = load_config(env={}, overrides=over)
        res["online_store"] = cfg.features.online_store
        fill(cfg, a.users, a.items, a.dim, seed=0)
        rates = []
        for _ in range(a.mat_repeats):  # every offline row into the online store (full=True ignores watermarks)
            rep = store.materialize(cfg, full=True)
            rates.append(rep["rows_per_s"])
        res["materialize"] = {"rows": rep["rows"], "rows_per_s_median": float(np.median(rates)),
                              "per_view_rows_per_s": {k: v.get("rows_per_s") for k, v in rep["views"].items()}}
        rng = np.random.default_rng(1)
        one = lambda: store.read_user_vectors(cfg, rng.integers(0, a.users, 1))
        many = lambda: store.read_user_vectors(cfg, rng.integers(0, a.users, 500))
        res["user_vectors_batch1"] = pct(timed(one, a.repeats))
        res["user_vectors_batch500"] = pct(timed(many, max(20, a.repeats // 4)))
        cands = lambda: rng.choice(a.items, 500, replace=False)
        for mode in ("caller", "on_demand"):
            res[f"ranker_features_500_{mode}"] = pct(timed(
                lambda: store.online_features(cfg, int(rng.integers(a.users)), cands(), mode=mode), max(20, a.repeats // 4)))

        def dot_caller():
            u, uv = store.read_user_vectors(cfg, [int(rng.integers(a.users))])
            i, iv = store.read_item_vectors(cfg, cands())
            vectors.check_versions(np.repeat(uv, len(iv)), iv)
            return vectors.dot_products(u, i)

        def dot_odfv():
            items = cands()
            return store.get_store(cfg).get_online_features(
                features=store.VERSION_REFS + [store.DOT_REF],
                entity_rows={"user_id": [int(rng.integers(a.users))] * len(items), "item_id": items.tolist()}).to_dict()

        res["dot_500_caller"] = pct(timed(dot_caller, max(20, a.repeats // 4)))
        res["dot_500_on_demand"] = pct(timed(dot_odfv, max(20, a.repeats // 4)))
    faster = "caller" if res["ranker_features_500_caller"]["p50_ms"] <= res["ranker_features_500_on_demand"]["p50_ms"] \
        else "on_demand"
    res["faster_dot_product_mode"] = faster

    print(f"\nFeast 0.67 feature platform bench  ({res['machine']}; online store {res['online_store']};"
          f" {a.users} users, {a.items} items, dim {a.dim})")
    print(f"{'measure':48s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for k in ("user_vectors_batch1", "user_vectors_batch500", "dot_500_caller", "dot_500_on_demand",
              "ranker_features_500_caller", "ranker_features_500_on_demand"):
        print(f"{k:48s} {res[k]['p50_ms']:9.2f} {res[k]['p99_ms']:9.2f}")
    print(f"{'materialize rows/s (median of ' + str(a.mat_repeats) + ')':48s} {res['materialize']['rows_per_s_median']:9.0f}")
    print(f"faster dot-product mode: {faster}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
