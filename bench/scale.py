"""How time and memory grow with the data: each pipeline stage on Yambda-shaped synthetic events, alone.

    python bench/scale.py --sizes 1000000 3000000 [--stages import ...] [--feeds arrays ray_data]
                          [--materialize-engines buckets feast] [--historical-engines buckets feast parts]
                          [--final-contexts users all]
                          [--cluster-nodes 2 --cpus-per-node 1]
                          [--set KEY=VALUE ...] [--json PATH|-] [--tmp DIR]

Per size: the synthetic generator (``features/synth.py``, setup) writes the events twice, as a Yambda
``multi_event`` flat file and as a dataset with request IDs kept (Yambda has none; the ranker set needs
requests). Then each stage runs in its own Python process, in order, on the same home:

- ``import``: ``data import --format yambda`` of the flat file (read, validate, write the dataset); with
  ``--import-workers N`` its two passes run as N Ray tasks at once on a local Ray (``features/parallel.py``);
- ``histories``: read the events and build every user's history (what the driver does for the split,
  evaluation, export and the ranker set);
- ``pretrain_data``: the arrays one Ray Train worker builds (``worker_arrays``, one worker: all buckets);
- ``pretrain``: one epoch of the ``tiny`` preset with Ray Train (1 worker), evaluation, registration
  (``train_seconds``: the Ray Train fit alone); ``--feeds arrays ray_data`` runs it once per ``train.feed``
  (``peak_train_worker_rss_mb``: the Ray Train worker's own peak RSS);
- ``export``: user/item vectors with Ray Data and the baseline tables (``argusrank export``);
- ``materialize``: offline parquet -> Feast online store (SQLite), from an empty store; ``--materialize-engines
  buckets feast`` runs it once per ``features.materialize_engine`` (by entity bucket / Feast's local engine);
- ``ranker_set``: the ranker's point-in-time training set (by user bucket, ``features/point_in_time.py``, or Feast
  ``get_historical_features``); with ``--ranker-offline-stores file ray`` once per Feast offline store
  (``features.offline_engine``), with ``--historical-engines buckets feast parts`` once per join of the file
  store (``parts``: the bucket join written to disk one user bucket at a time, ``ranker.training_set=parts``);
- ``ranker_train``: the ranker set (as above, per variant) and the ``argus`` ranker trained on it and scored on
  the test rows (``pair_accuracy``; parts: XGBoost fed part by part);
- ``ranker_final``: the job's final-list NDCG@10 (``final_list.final_ndcg``) on the whole test window's queries
  (at most ``ranker.final_queries``), each candidate scored by its point-in-time ``argus_dot`` (the ranker's
  features, no ranker: ``final_ndcg_merged`` as fingerprint); ``--final-contexts users all`` runs it once per
  candidate context: of the sampled queries' users only (what the job does) or of every user (as before).

With ``--cluster-nodes N`` a local cluster of N ``ray start`` nodes (``--cpus-per-node`` CPUs and its own object
store each; tests/ray_cluster.py) is started per size and every stage joins it through ``ray.address``: a row then
adds each node's CPU seconds during the stage (``node_cpu_seconds``) and its peak counts the cluster's processes.
Rows carry fingerprints of what a stage computed (``final_loss``, ``ndcg@10``, ``user_vector_sum``,
``argus_dot_sum``): the same seed on one node or two gives the same values.

``seconds``: the stage's work inside its process (imports and interpreter start excluded; ``process_seconds``
has them); ``peak_rss_mb``: the largest sum of RSS over the stage's process and all its descendants (Ray's
GCS, raylet, workers), sampled every 0.2 s (shared pages, e.g. Ray's object store, count once per process).
The JSON: ``{"machine": ..., "stages": [{"stage", "events", "seconds", "peak_rss_mb", ...}, ...]}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from json_out import emit_json  # noqa: E402  (bench/json_out.py)
from machine_info import machine, machine_info  # noqa: E402

STAGES = ("import", "histories", "pretrain_data", "pretrain", "export", "materialize", "ranker_set", "ranker_train",
          "ranker_final")
EVENTS_PER_USER = 40 + 12 * 8  # default SynthConfig: organic events + requests * slate size


def bench_config(home: Path, n_events: int):
    """The one config of every stage: tiny preset, one epoch, one worker; the synthetic size for ``n_events``."""
    from argusrank.platform.config import load_config

    return load_config(None, {
        "paths.home": str(home), "seed": 0, "model.preset": "tiny", "train.epochs": 1, "train.num_workers": 1,
        "train.show_progress": False, "data.synth.n_users": max(1, round(n_events / EVENTS_PER_USER)),
        "data.synth.n_items": max(1000, n_events // 200), "eval.ks": [10],
        **json.loads(os.environ.get("ARGUSRANK_BENCH_SET", "{}"))}, env={})


# --- the stages, each run in a fresh process (``--stage``) ------------------------------------------

def stage_synth(cfg, work: Path) -> dict:
    """Setup: the dataset with requests (``cfg.dataset_dir``) and the same events as a Yambda flat file."""
    import pyarrow.parquet as pq

    from argusrank.features.io import read_events
    from argusrank.features.synth import synthesize
    from data_layer import to_yambda  # bench/data_layer.py

    summary = synthesize(cfg.data.synth, cfg.dataset_dir, seed=cfg.seed)
    pq.write_table(to_yambda(read_events(cfg.dataset_dir)), work / "multi_event.parquet")
    return {"n_users": summary.get("n_users"), "n_items": summary.get("n_items")}


def stage_import(cfg, work: Path) -> dict:
    from argusrank.features.importers import import_dataset

    workers = int(os.environ.get("ARGUSRANK_BENCH_IMPORT_WORKERS", "1"))
    rep = import_dataset("yambda", work / "multi_event.parquet", work / "imported", workers=workers)
    return {"accepted": rep["accepted"], "rejected": rep["rejected"], "workers": workers}


def stage_histories(cfg, work: Path) -> dict:
    """Every user's history, one user bucket at a time (what evaluation, export and candidate recall do)."""
    from argusrank.features.histories import histories_by_bucket

    n_users = n_events = 0
    for hist in histories_by_bucket(cfg.dataset_dir):
        n_users, n_events = n_users + hist.n_users, n_events + hist.n_events
    return {"n_users": n_users, "n_events": n_events}


def stage_pretrain_data(cfg, work: Path) -> dict:
    """Every bucket's pre-training rows, one bucket at a time (what the ``ray_data`` feed's tasks build)."""
    from argusrank.features.io import user_buckets_of
    from argusrank.features.splits import dataset_split
    from argusrank.platform.training.feed import n_rows, worker_arrays

    split = dataset_split(cfg.dataset_dir, "temporal", cfg.data.test_days)
    rows, mb = 0, 0.0
    for b in range(user_buckets_of(cfg.dataset_dir)):
        arrays, _ = worker_arrays(cfg, str(cfg.dataset_dir), "pretrain", split, [b], 256)
        rows, mb = rows + n_rows(arrays), mb + sum(a.nbytes for a in arrays.values()) / 2**20
    return {"rows": rows, "array_mb": round(mb, 1)}


def stage_pretrain(cfg, work: Path) -> dict:
    from argusrank.platform.training.jobs import run_pretrain

    res = run_pretrain(cfg, cfg.dataset_dir)
    return {"train_seconds": round(res["train_seconds"], 2), "model_version": res["model_version"],
            "ndcg@10": res["metrics"].get("ndcg@10"), "epochs_run": len(res["history"]),
            "final_loss": res["history"][-1].get("loss") if res["history"] else None}


def stage_export(cfg, work: Path) -> dict:
    from argusrank.platform.export import export_vectors

    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rep = export_vectors(cfg, cfg.dataset_dir, model_ref="candidate")
    total = 0.0  # a fingerprint of the vectors (the same seed on one node or two: the same sum), batch by batch
    for batch in pq.ParquetFile(rep["user_vectors"]).iter_batches(columns=["user_vector"], batch_size=65_536):
        total += float(np.sum(pc.list_flatten(batch.column(0)).to_numpy(), dtype=np.float64))
    return {"vector_rows": rep.get("rows"), "snapshots": len(rep.get("as_of", [])), "user_vector_sum": total}


def stage_materialize(cfg, work: Path) -> dict:
    from argusrank.features.store import materialize

    for stale in (cfg.paths.feature_repo / "online_store.db", cfg.paths.feature_repo / "materialize_state.json"):
        stale.unlink(missing_ok=True)  # every engine starts from an empty online store
    rep = materialize(cfg)
    return {"offline_rows": rep["rows"], "engine": cfg.features.materialize_engine,
            "views": {v: {k: r[k] for k in ("rows", "seconds", "online_rows", "buckets") if k in r}
                      for v, r in rep["views"].items()}}


def _ranker_rows(cfg, work: Path):
    """The ranker's rows as the job builds them (``ranker.training_set``): a frame in memory, or parts written by
    user bucket to ``<work>/ranker_set``; with the row count, train rows and the sum of ``argus_dot``."""
    import numpy as np

    from argusrank.platform.ranker_job import _argus_needed, ranker_rows
    from argusrank.platform.training.ranker_set import RankerRows, write_ranker_set

    if cfg.ranker.training_set == "parts":
        rs = write_ranker_set(cfg, cfg.dataset_dir, work / "ranker_set", argus=_argus_needed(cfg))
        return RankerRows.of_parts(rs.parts), {"rows": rs.rows, "train_rows": rs.train_rows,
                                               "parts": len(rs.parts), "argus_dot_sum": rs.dot_sum}
    feats, is_train, _ = ranker_rows(cfg, cfg.dataset_dir)
    return RankerRows.of_frame(feats, is_train), {"rows": int(len(feats)), "train_rows": int(is_train.sum()),
                                                  "argus_dot_sum": float(np.nansum(feats["argus_dot"].to_numpy()))}


def stage_ranker_set(cfg, work: Path) -> dict:
    return _ranker_rows(cfg, work)[1]


def stage_ranker_train(cfg, work: Path) -> dict:
    """The ranker set (as in ``ranker_set``) and the ``argus`` ranker trained on it, scored on the test rows."""
    import numpy as np

    from argusrank.models.ranker import pair_accuracy, score, train_ranker_on_batches
    from argusrank.platform.ranker_job import feature_sets

    rows, out = _ranker_rows(cfg, work)
    t0 = time.perf_counter()
    r, names = cfg.ranker, feature_sets(cfg.ranker)["argus"]
    model = train_ranker_on_batches(lambda: rows.batches(names, train=True), n_estimators=r.n_estimators,
                                    max_depth=r.max_depth, learning_rate=r.learning_rate, seed=cfg.seed)
    test = rows.columns(["request_id", "grade"], train=False)
    s = np.concatenate([score(model, X) for X, _, _ in rows.batches(names, train=False)])
    return {**out, "train_seconds": round(time.perf_counter() - t0, 3),
            "pair_accuracy": pair_accuracy(s, test["grade"].to_numpy(), test["request_id"].to_numpy())}


def stage_ranker_final(cfg, work: Path) -> dict:
    """Final-list NDCG@10 of the test window's queries, candidates scored by their point-in-time ``argus_dot``;
    the candidate context of the queries' users (``ARGUSRANK_BENCH_FINAL_CONTEXT=users``, the job's) or of all."""
    import numpy as np

    from argusrank.features import store, vectors
    from argusrank.platform.ranker_job import final_queries, sample_queries
    from argusrank.platform.training import final_list as fl
    from argusrank.platform.training.candidate_recall import candidate_context
    from argusrank.features.splits import dataset_split

    split = dataset_split(cfg.dataset_dir, "temporal", cfg.data.test_days)
    if os.environ.get("ARGUSRANK_BENCH_FINAL_CONTEXT", "users") == "users":
        final = final_queries(cfg, cfg.dataset_dir, split.T)[0]
        ctx, queries = final["ctx"], final["queries"]
    else:
        ctx = candidate_context(cfg, cfg.dataset_dir, version=vectors.newest_version(cfg, "item"))
        queries = sample_queries(fl.window_queries(ctx, split.T, split.T_end, positives=True), cfg.ranker.final_queries,
                          np.random.default_rng(cfg.seed))
    score = lambda df: np.nan_to_num(store.historical_features(cfg, df)["argus_dot"].to_numpy(), nan=-1e9)  # noqa: E731
    ndcg = fl.final_ndcg(cfg, ctx, *queries, score)
    return {"queries": int(len(queries[0])), "context_users": int(ctx.hist.n_users),
            "final_ndcg_merged": ndcg["seen_kept"]["merged"]}


def run_stage(name: str, work: Path, n_events: int) -> None:
    """``--stage``: run one stage in this process and write ``<work>/<name>.json`` (its inner seconds)."""
    cfg = bench_config(work / "home", n_events)
    fn = globals()[f"stage_{name}"]
    t0 = time.perf_counter()
    extra = fn(cfg, work)
    seconds = time.perf_counter() - t0
    (work / f"{name}.json").write_text(json.dumps({"seconds": seconds, **extra}, default=str))


# --- the driver: one process per stage, its process tree's RSS sampled ----------------------------

def tree_rss(pid: int) -> tuple[int, int, int]:
    """(sum of RSS in bytes, number of processes, largest RSS of a Ray Train worker) over ``pid`` and all its
    descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    total = worker = 0
    for p in procs:
        try:
            rss = p.memory_info().rss
            total += rss
            if any("RayTrainWorker" in a for a in p.cmdline()):
                worker = max(worker, rss)
        except psutil.Error:
            pass
    return total, len(procs), worker


def measure(name: str, work: Path, n_events: int, log, overrides: dict | None = None, cluster=None) -> dict:
    """Run stage ``name`` in a child process (config ``overrides`` on top of ``--set``'s); its seconds, process
    seconds, peak tree RSS and the peak RSS of its Ray Train worker (pre-training). With ``cluster`` (a local
    Ray cluster the stage joins through ``ray.address``) the peak also counts the cluster's processes, and the
    row gets each node's CPU seconds during the stage."""
    from node_usage import NodeUsage  # bench/node_usage.py

    nodes = NodeUsage([p.pid for p in cluster.procs]) if cluster else None
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    overrides = dict(overrides or {})
    env.update({k: overrides.pop(k) for k in list(overrides) if k.startswith("ARGUSRANK_")})
    if overrides:
        env["ARGUSRANK_BENCH_SET"] = json.dumps({**json.loads(env.get("ARGUSRANK_BENCH_SET", "{}")), **overrides})
    env.pop("RAY_ADDRESS", None)
    load = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--stage", name, "--work", str(work), "--n", str(n_events)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak, nproc, worker = 0, 0, 0
    while proc.poll() is None:
        rss, n, w = tree_rss(proc.pid)
        rss += nodes.sample() if nodes else 0
        peak, nproc, worker = max(peak, rss), max(nproc, n), max(worker, w)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stage {name} at {n_events:,} events failed ({proc.returncode}): see {log.name}")
    inner = json.loads((work / f"{name}.json").read_text())
    return {"stage": name, "seconds": round(inner.pop("seconds"), 2), "process_seconds": round(wall, 2),
            "peak_rss_mb": round(peak / 2**20, 1), "max_processes": nproc,
            **({"peak_train_worker_rss_mb": round(worker / 2**20, 1)} if worker else {}),
            **({"cluster_nodes": len(cluster.procs), "node_cpu_seconds": nodes.cpu_seconds()} if cluster else {}),
            "load_avg_1m_start": load,
            "load_avg_1m_end": round(os.getloadavg()[0], 2), **inner}


@dataclass(frozen=True)
class Plan:
    """What to run per size: the stages, the variants of some of them, and where (a local Ray or a cluster)."""

    stages: tuple[str, ...] = STAGES
    feeds: tuple[str, ...] = ("arrays",)  # pretrain: once per train.feed
    engines: tuple[str, ...] = ("buckets",)  # materialize: once per features.materialize_engine
    offline: tuple[str, ...] = ("file",)  # ranker_set: once per features.offline_engine ...
    joins: tuple[str, ...] = ("buckets",)  # ... and with the file store once per features.historical_engine
    contexts: tuple[str, ...] = ("users",)  # ranker_final: once per candidate context (the queries' users / all)
    cluster_nodes: int = 0  # > 0: the stages join a local cluster of this many `ray start` nodes (ray.address)
    cpus_per_node: int = 1
    keep: bool = False  # keep each size's work folder (home, logs) for later stages or inspection


def _variants(name: str, plan: Plan) -> list[tuple[str, dict]]:
    """(label, config overrides) of each run of stage ``name``: one per feed (pretrain), engine (materialize) or
    Feast offline store and, with the file store, point-in-time join engine (ranker_set)."""
    if name == "pretrain":
        return [(feed, {"train.feed": feed}) for feed in plan.feeds]
    if name == "materialize":
        return [(engine, {"features.materialize_engine": engine}) for engine in plan.engines]
    if name in ("ranker_set", "ranker_train"):  # join "parts": the buckets join, written by user bucket
        return [(f"file/{j}" if o == "file" else o,
                 {"features.offline_engine": o, "features.historical_engine": "feast" if j == "feast" else "buckets",
                  "ranker.training_set": "parts" if j == "parts" else "memory"})
                for o in plan.offline for j in (plan.joins if o == "file" else ("feast",))]
    if name == "ranker_final":
        return [(c, {"ARGUSRANK_BENCH_FINAL_CONTEXT": c}) for c in plan.contexts]  # to the stage's environment
    return [("", {})]


def _start_cluster(plan: Plan):
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from ray_cluster import start_cluster  # tests/ray_cluster.py: `ray start` nodes, stopped by PID

    cluster = start_cluster(nodes=plan.cluster_nodes, cpus_per_node=plan.cpus_per_node,
                            object_store_bytes=1_000_000_000, timeout_s=180)
    print(f"   cluster: {plan.cluster_nodes} nodes x {plan.cpus_per_node} CPUs at {cluster.address}", flush=True)
    return cluster


def bench_size(n_events: int, tmp: Path, plan: Plan = Plan(), on_row=lambda row: None) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix=f"scale{n_events}-", dir=tmp))
    rows, cluster = [], None
    try:
        with open(work / "stages.log", "w") as log:
            setup = measure("synth", work, n_events, log)
            from argusrank.features.io import read_metadata

            events = int(read_metadata(bench_config(work / "home", n_events).dataset_dir)["n_events"])
            print(f"== {events:,} events ({setup.get('n_users'):,} users, {setup.get('n_items'):,} items); "
                  f"setup {setup['seconds']:.1f} s", flush=True)
            cluster = _start_cluster(plan) if plan.cluster_nodes else None
            where = {"ray.address": cluster.address} if cluster else {}
            for name in plan.stages:
                for variant, overrides in _variants(name, plan):
                    row = {"events": events, **measure(name, work, n_events, log, {**overrides, **where}, cluster)}
                    if name == "pretrain":
                        row["feed"] = variant
                    elif name in ("ranker_set", "ranker_train") and variant:
                        row["offline_engine"], _, row["historical_engine"] = variant.partition("/")
                    elif name == "ranker_final":
                        row["context"] = variant
                    rows.append(row)
                    on_row(row)
                    label = f"{name}[{variant}]" if variant else name
                    nodes = f", node CPU s {row['node_cpu_seconds']}" if cluster else ""
                    print(f"  {label:<20} {row['seconds']:>8.1f} s {row['peak_rss_mb']:>8.0f} MB  "
                          f"({row['process_seconds']:.1f} s in all, {row['max_processes']} processes, "
                          f"load {row['load_avg_1m_start']}->{row['load_avg_1m_end']}{nodes})", flush=True)
    except Exception:
        print(f"(kept {work} for inspection)", file=sys.stderr)
        raise
    finally:
        if cluster:
            cluster.stop()
    if plan.keep:
        print(f"   kept {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=lambda s: int(float(s)), default=[1_000_000],
                    help="target event counts (e.g. 1000000 3e6)")
    ap.add_argument("--json", default=None, help="write the JSON to PATH, or '-': one line on stdout")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: the system's temp dir)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="the stages to run, in pipeline order (a later stage needs the earlier ones' output)")
    ap.add_argument("--import-workers", type=int, default=1,
                    help="import: Ray tasks at once for its two passes (1: in the stage's process)")
    ap.add_argument("--feeds", nargs="+", choices=("arrays", "ray_data"), default=["arrays"],
                    help="pretrain: run it once per training feed (train.feed), on the same data")
    ap.add_argument("--materialize-engines", nargs="+", choices=("buckets", "feast"), default=["buckets"],
                    help="materialize: run it once per features.materialize_engine, each from an empty online store")
    ap.add_argument("--ranker-offline-stores", nargs="+", choices=("file", "ray"), default=["file"],
                    help="ranker_set: run it once per Feast offline store (features.offline_engine)")
    ap.add_argument("--historical-engines", nargs="+", choices=("buckets", "feast", "parts"), default=["buckets"],
                    help="ranker_set/ranker_train with the file store: once per point-in-time join "
                         "(features.historical_engine; parts: the buckets join written by user bucket, "
                         "ranker.training_set=parts)")
    ap.add_argument("--final-contexts", nargs="+", choices=("users", "all"), default=["users"],
                    help="ranker_final: once per candidate context (the sampled queries' users, or every user)")
    ap.add_argument("--cluster-nodes", type=int, default=0,
                    help="> 0: start a local Ray cluster of N `ray start` nodes per size; the stages join it "
                         "(ray.address); each row gets the nodes' CPU seconds, the peak counts their processes")
    ap.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each cluster node (--cluster-nodes)")
    ap.add_argument("--keep", action="store_true", help="keep each size's work folder (home, stage logs)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="config overrides for every stage, e.g. train.stop_after_steps=200 (values parsed as YAML)")
    ap.add_argument("--stage", choices=("synth", *STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        run_stage(args.stage, args.work, args.n)
        return
    os.environ["ARGUSRANK_BENCH_IMPORT_WORKERS"] = str(args.import_workers)  # read by the stage's process
    import yaml

    os.environ["ARGUSRANK_BENCH_SET"] = json.dumps({k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.set)})
    info = machine_info()
    print(f"machine: {machine()}", flush=True)
    rows: list[dict] = []

    def keep(row: dict) -> None:  # a JSON file is rewritten after every stage ("partial"): a long run that is
        rows.append(row)          # stopped keeps what it measured
        if args.json and args.json != "-":
            emit_json({"machine": info, "partial": True, "stages": rows}, args.json)

    plan = Plan(tuple(s for s in STAGES if s in args.stages), tuple(args.feeds), tuple(args.materialize_engines),
                tuple(args.ranker_offline_stores), tuple(args.historical_engines), tuple(args.final_contexts),
                args.cluster_nodes, args.cpus_per_node, args.keep)
    for n in args.sizes:
        bench_size(n, Path(args.tmp or tempfile.gettempdir()), plan, keep)
    emit_json({"machine": info, "load_avg_1m_end": round(os.getloadavg()[0], 2), "stages": rows}, args.json)


if __name__ == "__main__":
    main()
