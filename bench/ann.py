"""ANN benchmark: recall@k of faiss HNSW vs exact search, and latency per query (batch 1).

Clustered vectors stand in for trained item vectors (HNSW recall collapses on
structureless random vectors, which no trained model produces). For each size
the script builds the exact and the HNSW index (``models/ann.py``, the same code
the CandidateGenerator uses), times single-query searches (as served: one user
per request) for several efSearch values, and reports recall@k against exact
search. Latencies are medians over ``--repeats`` passes over the queries.

    .venv/bin/python bench/ann.py --sizes 100000 1000000 --json out.json

The 1M build takes minutes on 2 cores; ``--sizes 100000`` for a quick run.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from machine_info import machine  # bench/machine_info.py


def clustered_vectors(n: int, n_queries: int, dim: int, n_clusters: int, seed: int,
                      spread: float = 1.0, norm_spread: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Items (n, dim) and queries (n_queries, dim), float32, drawn around the SAME cluster centres.

    Cluster sizes are Zipf-like; ``spread`` is the per-point noise scale relative to the
    centres' (unit-variance) coordinates; items get a lognormal norm factor (``norm_spread``),
    as popularity does to trained item vectors. Queries (user vectors) have no norm factor.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    p = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    p /= p.sum()

    def draw(m: int, norm: float) -> np.ndarray:
        x = centres[rng.choice(n_clusters, size=m, p=p)] + spread * rng.normal(size=(m, dim)).astype(np.float32)
        if norm:
            x *= rng.lognormal(0.0, norm, size=(m, 1)).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    return draw(n, norm_spread), draw(n_queries, 0.0)


def time_single_queries(index, queries: np.ndarray, k: int, repeats: int) -> tuple[float, float]:
    """(median over repeats of the mean ms/query, p99 ms/query over all single-query calls)."""
    means, every = [], []
    for _ in range(repeats):
        per = np.empty(len(queries))
        for i in range(len(queries)):
            t = time.perf_counter()
            index.search_positions(queries[i : i + 1], k)
            per[i] = time.perf_counter() - t
        means.append(per.mean() * 1e3)
        every.append(per * 1e3)
    return float(np.median(means)), float(np.percentile(np.concatenate(every), 99))


def bench_size(n: int, args) -> list[dict]:
    import faiss

    from argusrank.models.ann import build_index, exact_topk, recall_at_k

    faiss.omp_set_num_threads(args.threads)
    x, q = clustered_vectors(n, args.queries, args.dim, args.clusters, args.seed, args.spread, args.norm_spread)
    ids = np.arange(n, dtype=np.int64)
    truth = np.concatenate([exact_topk(q[i : i + 64], x, args.k)[0] for i in range(0, len(q), 64)])
    exact = build_index(ids, x, "exact")
    rows = []
    ms, p99 = time_single_queries(exact, q[: min(len(q), 200)], args.k, args.repeats)
    rows.append({"n_items": n, "index": "exact (numpy matmul)", "ef_search": None, "build_s": 0.0,
                 "recall": 1.0, "ms_per_query": ms, "p99_ms": p99})
    t = time.perf_counter()
    hnsw = build_index(ids, x, "hnsw", hnsw_m=args.m, ef_construction=args.ef_construction)
    build_s = time.perf_counter() - t
    for ef in args.ef:
        hnsw.ef_search = ef
        found = np.concatenate([hnsw.search_positions(q[i : i + 256], args.k)[0] for i in range(0, len(q), 256)])
        ms, p99 = time_single_queries(hnsw, q, args.k, args.repeats)
        rows.append({"n_items": n, "index": f"HNSW M={args.m} efC={args.ef_construction}", "ef_search": ef,
                     "build_s": build_s, "recall": recall_at_k(found, truth), "ms_per_query": ms, "p99_ms": p99})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="within-cluster noise scale")
    ap.add_argument("--norm-spread", type=float, default=0.1, help="lognormal sigma of item norms")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="faiss OpenMP threads (build)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    mach = machine()
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
    table = Table(title=f"ANN top-{args.k}, dim {args.dim}, {args.queries} queries, batch 1, {args.clusters} clusters "
                        f"(spread {args.spread}, norm spread {args.norm_spread}) — {mach}")
    for col in ("items", "index", "efSearch", "build s", f"recall@{args.k}", "ms/query (median)", "p99 ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['n_items']:,}", r["index"], str(r["ef_search"] or "-"), f"{r['build_s']:.1f}",
                      f"{r['recall']:.4f}", f"{r['ms_per_query']:.3f}", f"{r['p99_ms']:.3f}")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": mach, "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
