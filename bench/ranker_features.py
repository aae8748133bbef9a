"""What the ranker's ARGUS features cost per request: the in-process pipeline with a ranker on argus_dot only
vs one on ``ranker.argus_features`` (nip_dot, the FP head's predictions, ...), same trees, same candidates.

On a demo home (``argusrank demo --no-serve``): both rankers are trained on the home's point-in-time
training set (as ``argusrank ranker train`` does) and registered under their own model name
(``argus-ranker-bench``: the home's served ranker is untouched), then ``serving.flow.InProcessPipeline``
answers the same /recommend requests (``serve.candidates``, 500 candidates by default) with each.
Reports per-stage p50/p99 (candidates incl. the ARGUS features, features, ranker) and the end-to-end
per-request difference, plus the bare feature computation (``CandidateState.features_of``) for 500 items.

    .venv/bin/python bench/ranker_features.py --home .argusrank --requests 400 --json out.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from json_out import emit_json  # noqa: E402
from machine_info import machine, machine_info  # noqa: E402

MODEL = "argus-ranker-bench"


def register_rankers(cfg) -> dict[str, tuple[str, ...]]:
    """Train the dot-only and the configured ARGUS ranker on the home's training set; alias each."""
    import pandas as pd

    from argusrank.features.baseline import BASE_FEATURES, ranker_features
    from argusrank.models.ranker import train_ranker
    from argusrank.platform.ranker_job import ranker_rows
    from argusrank.platform.registry import log_ranker, publish_ranker
    from argusrank.platform.tracking import start_run

    feats, is_train, version = ranker_rows(cfg, cfg.dataset_dir)
    raw = {c: feats[c].to_numpy() for c in feats.columns}
    r = cfg.ranker
    sets = {"dot": (*BASE_FEATURES, "argus_dot"), "argus": (*BASE_FEATURES, *r.argus_features)}
    with start_run(cfg, "bench-ranker-features"):
        for alias, names in sets.items():
            X = pd.DataFrame(ranker_features(raw, feats["ts"].to_numpy(), names), columns=list(names))
            m = train_ranker(X[is_train], feats["grade"].to_numpy()[is_train], feats["request_id"].to_numpy()[is_train],
                             n_estimators=r.n_estimators, max_depth=r.max_depth, learning_rate=r.learning_rate,
                             seed=cfg.seed)
            info = log_ranker(m, f"ranker_{alias}", registered_model_name=MODEL)
            publish_ranker(cfg, int(info.registered_model_version), version, f"bench-{alias}", features=names)
    return sets


def pct(a: list[float]) -> dict:
    x = np.asarray(a) * 1e3
    return {"p50_ms": round(float(np.percentile(x, 50)), 3), "p99_ms": round(float(np.percentile(x, 99)), 3)}


class Timed:
    """An in-process pipeline behind one ranker alias, its three stages timed per request."""

    def __init__(self, cfg, alias: str):
        from argusrank.platform.config import with_overrides
        from argusrank.platform.serving.flow import InProcessPipeline

        self.alias, self.cfg = alias, with_overrides(cfg, {"serve.ranker_alias": alias})
        self.pipe = InProcessPipeline(self.cfg)
        self.lat: dict[str, list[float]] = {"candidates": [], "features": [], "ranker": [], "total": []}
        p = self.pipe
        p.generate, p.features, p.score = (self._timed("candidates", p.generate), self._timed("features", p.features),
                                           self._timed("ranker", p.score))

    def _timed(self, name, fn):
        async def call(*args):
            t0 = time.perf_counter()
            out = await fn(*args)
            self.lat[name].append(time.perf_counter() - t0)
            return out
        return call

    def recommend(self, user: int) -> None:
        t0 = time.perf_counter()
        ans = self.pipe.recommend(user, 10)
        self.lat["total"].append(time.perf_counter() - t0)
        assert ans["fallback"] is None, ans["fallback"]

    def result(self, users: list[int]) -> dict:
        """Latency per stage, and the bare ARGUS feature computation for 500 catalog items (200 repeats)."""
        from argusrank.features.store import read_user_spaces

        state = self.pipe.state
        pos = np.arange(min(500, state.index.size))
        read = read_user_spaces(self.cfg, [users[0]], state.user_spaces)
        user = {("user" if sp == "tower" else f"user_{sp}"): v[0][0] for sp, v in read.items()}
        t = []
        for _ in range(200):
            t0 = time.perf_counter()
            state.features_of(user, pos)
            t.append(time.perf_counter() - t0)
        return {"alias": self.alias, "argus_features": list(state.bundle.argus_features), "n_items": len(pos),
                "latency": {**{k: pct(v) for k, v in self.lat.items()}, "features_of_500": pct(t)}}


def run(cfg, aliases: list[str], users: list[int], n: int) -> list[dict]:
    """``n`` /recommend answers per ranker alias, in process, the aliases interleaved request by request (a
    shared box's drift hits both alike)."""
    pipes = [Timed(cfg, a) for a in aliases]
    for u in users[:20]:  # warm-up: Feast, XGBoost, numpy paths
        for p in pipes:
            p.recommend(u)
    for p in pipes:
        for v in p.lat.values():
            v.clear()
    for i in range(n):
        for p in (pipes if i % 2 else pipes[::-1]):
            p.recommend(users[i % len(users)])
    return [p.result(users) for p in pipes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=".argusrank")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--json", default=None, help="write the result here (- for stdout)")
    args = ap.parse_args()

    from argusrank.features.io import read_events, read_metadata
    from argusrank.platform.config import load_config, parse_sets

    info = machine_info()
    cfg = load_config(overrides={"paths.home": args.home, "mlflow.ranker_model_name": MODEL, **parse_sets(args.set)})
    meta = read_metadata(cfg.dataset_dir)
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"as_of": float(meta["max_timestamp"])})})
    sets = register_rankers(cfg)
    users = np.unique(read_events(cfg.dataset_dir, columns=["user_id"])["user_id"].to_numpy())
    users = np.random.default_rng(0).permutation(users)[:200].tolist()
    rows = run(cfg, [f"bench-{alias}" for alias in sets], users, args.requests)
    extra = {k: round(rows[1]["latency"][k]["p50_ms"] - rows[0]["latency"][k]["p50_ms"], 3)
             for k in ("candidates", "features", "ranker", "total")}
    print(f"machine: {machine()}")
    for r in rows:
        print(f"{r['alias']:12s} {len(r['argus_features'])} ARGUS features: " + ", ".join(
            f"{k} p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f} ms" for k, v in r["latency"].items()))
    print(f"extra per request (p50): {extra}")
    emit_json({"machine": info, "rows": rows, "extra_p50_ms": extra}, args.json)


if __name__ == "__main__":
    main()
