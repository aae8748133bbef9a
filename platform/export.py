"""``argusrank export``: the daily batch job that fills the offline feature store.

From a registered ARGUS model (alias or version) it computes, with Ray Data
(``map_batches`` with the model in a callable class, on GPU when present), for each
space of ``features.export_spaces`` (``tower``; ``nip``: the NIP head; ``fp``: the FP head's user and item
parts, its output layer as a head file; ``platform/inference.py``):

- user vectors: from the user's last events at or before ``as_of - lag_s``, one row
  per (user, as_of) snapshot, ``event_timestamp = as_of``; each call of the Ray Data actors reads one user
  bucket's events (:class:`UserVectors`), so no process holds every user's history;
- item vectors for the whole catalog (``items.parquet``), ``event_timestamp`` =
  the first snapshot;

and writes them as parquet under ``cfg.paths.vectors_dir`` with
``event_timestamp``, ``created`` and the model version on every row. It also
writes the baseline ranker features (``features/baseline.py`` ``export_baseline``: per-user views one user
bucket at a time) for the same snapshots. Default snapshots: daily from the temporal split time T through the
end of the data (the ranker's training window plus the serving state).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from argusrank.features import baseline, vectors
from argusrank.features.argus_features import FP_HEAD
from argusrank.features.io import atomic_file, atomic_write_text
from argusrank.features.splits import dataset_split
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.inference import item_vectors, snapshot_user_vectors
from argusrank.platform.ray_runtime import ray_session
from argusrank.platform.tracking import start_run


class UserVectors:
    """Ray Data callable: user buckets -> the user vectors of every exported space (one column ``vector_<space>``
    each) for every (user, snapshot) of those buckets, so one job and one pass over the windows serve all spaces.
    Each call reads its buckets' events itself: the driver and the other actors never hold them."""

    def __init__(self, models: dict[str, Any], dataset_dir: str, snaps: list[int], lag_s: int, batch_size: int,
                 device: str):
        self.models = {space: m.to(device).eval() for space, m in models.items()}
        self.dataset_dir, self.snaps, self.lag_s = dataset_dir, np.asarray(snaps, np.int64), lag_s
        self.batch_size, self.device = batch_size, device
        self.max_len = int(next(iter(self.models.values())).cfg.max_len)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from argusrank.features.histories import build_histories
        from argusrank.features.io import read_events

        hist = build_histories(read_events(self.dataset_dir, user_buckets=[int(b) for b in batch["bucket"]]))
        w = user_windows(hist, self.snaps, self.lag_s, self.max_len)  # none: typed empty columns
        vecs = snapshot_user_vectors(self.models, hist, *(w[c].to_numpy() for c in ("start", "length", "as_of")),
                                     self.batch_size, self.device)  # one pass per window start, all spaces
        return {"user_id": w["user_id"].to_numpy(), "as_of": w["as_of"].to_numpy(),
                **{f"vector_{space}": v for space, v in vecs.items()}}


class ItemVectors:
    """Ray Data callable: item IDs -> the item vectors of every exported space (``vector_<space>``)."""

    def __init__(self, models: dict[str, Any], device: str):
        self.models = {space: m.to(device).eval() for space, m in models.items()}
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"item_id": batch["item_id"], **{f"vector_{space}": item_vectors(m, batch["item_id"], space, self.device)
                                               for space, m in self.models.items()}}


def user_windows(hist, snaps: np.ndarray, lag_s: int, max_len: int) -> pa.Table:
    """One row per (user, snapshot) with >= 1 event at or before ``as_of - lag_s``: the window
    ``start, length`` (last ``max_len`` such events) into the Histories arrays. Vectorized."""
    uidx = hist.user_index()
    parts = []
    for s in snaps:
        n_before = np.bincount(uidx[hist.timestamp <= s - lag_s], minlength=hist.n_users)  # (U,)
        users = np.flatnonzero(n_before > 0)
        end = hist.offsets[users] + n_before[users]
        start = np.maximum(hist.offsets[users], end - max_len)
        parts.append(pa.table({"user_id": hist.user_ids[users], "as_of": np.full(len(users), s, np.int64),
                               "start": start.astype(np.int64), "length": (end - start).astype(np.int64)}))
    return pa.concat_tables(parts)


def _map(ds, cls, kwargs: dict, cfg: ArgusrankConfig, use_gpu: bool, batch_size: int):
    import ray.data

    # one CPU stays free for Ray Data's own tasks (a pool holding every CPU can stall the pipeline)
    n = cfg.features.export_actors or (1 if use_gpu else max(1, (os.cpu_count() or 2) - 1))
    return ds.map_batches(
        cls, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n), num_gpus=1 if use_gpu else 0, num_cpus=1,
    )


def _stream(ds, outs: dict[str, tuple[str, Path]], total: int | None, version: int, created: float,
            event_ts: int | None) -> int:
    """Write the vector columns of a dataset batch by batch, column ``c`` of ``outs`` (``c -> (kind, path)``) to its
    own parquet file (one progress bar); every file is renamed into place only when all are complete. Returns rows."""
    rows, writers = 0, {}
    desc = " + ".join(kind for kind, _ in outs.values())
    id_col = f"{vectors.entity(next(iter(outs.values()))[0])}_id"  # every column of one job: the same entity
    with ExitStack() as stack, tqdm(total=total, desc=f"{desc} vectors", unit="row") as bar:
        tmps = {col: stack.enter_context(atomic_file(path)) for col, (_, path) in outs.items()}
        try:
            for b in ds.iter_batches(batch_size=4096, batch_format="numpy"):
                ts = b["as_of"] if event_ts is None else event_ts
                for col, (kind, _) in outs.items():
                    vecs = np.stack(b[col]) if b[col].dtype == object else b[col]
                    t = vectors.vector_table(kind, b[id_col], vecs, version, ts, created)
                    writers[col] = writers.get(col) or pq.ParquetWriter(tmps[col], t.schema)
                    writers[col].write_table(t)
                rows += len(b[id_col])
                bar.update(len(b[id_col]))
        finally:
            for w in writers.values():
                w.close()
    return rows


def _blocks(t: pa.Table, rows: int) -> list[pa.Table]:
    """Split a table into blocks of ``rows`` (Ray Data parallelism without a repartition step)."""
    return [t.slice(i, rows) for i in range(0, max(t.num_rows, 1), rows)]


def default_snapshots(cfg: ArgusrankConfig, t_split: int, t_end: int) -> np.ndarray:
    """Daily (``cfg.features.snapshot_every_s``) snapshots from the split time T through the data end."""
    return baseline.snapshot_times(t_split, t_end - 1, cfg.features.snapshot_every_s)


def _fp_model(cfg: ArgusrankConfig, model, version: int):
    """``(network, its version)`` whose FP head the ``fp`` space exports, or ``(None, None)`` when the space is
    not exported: not in ``features.export_spaces``, or an FP head that does not split into user and
    item parts (``ArgusModel.fp_separable``). ``features.fp_from="parent"``: the pre-trained version a fine-tuned
    one started from (fine-tuning trains the towers only and moves the embeddings the FP head reads)."""
    if "fp" not in cfg.features.export_spaces:
        return None, None
    fp_model, fp_version = model, version
    parent = registry.parent_version(cfg, version) if cfg.features.fp_from == "parent" else None
    if parent is not None:
        fp_model, fp_version = registry.load_argus(cfg, parent)
    if not getattr(fp_model, "fp_separable", lambda: False)():
        return None, None
    return fp_model, fp_version


def export_vectors(
    cfg: ArgusrankConfig, dataset_dir: str | Path, model_ref: str | int = "candidate",
    as_of: int | Sequence[int] | None = None, lag_s: int = 0,
) -> dict[str, Any]:
    """Export user + item vectors of a registered model (and baseline features) as offline parquet.

    ``as_of``: snapshot time(s) in seconds (default: daily from T through the end
    of the data). Returns paths, model_version, rows, seconds and rows/s, also
    logged to MLflow (run ``export``).
    """
    import ray
    import torch

    from argusrank.features.io import user_buckets_of

    model, version = registry.load_argus(cfg, model_ref)
    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    t_split, t_end = split.T, split.T_end
    snaps = default_snapshots(cfg, t_split, t_end) if as_of is None else np.atleast_1d(np.asarray(as_of, np.int64))
    use_gpu = torch.cuda.is_available()
    device = "cuda" if use_gpu else "cpu"
    created = time.time()
    tag = f"v{version}_{int(snaps[0])}_{int(snaps[-1])}_{int(created)}"
    report: dict[str, Any] = {"model_version": version, "as_of": [int(s) for s in snaps], "lag_s": lag_s,
                              "device": device}

    t0 = time.perf_counter()  # the baseline views, one user bucket at a time
    report["baseline_rows"] = baseline.export_baseline(dataset_dir, snaps, cfg.paths.baseline_dir,
                                                       snap_tag=f"snap_{int(snaps[0])}_{int(snaps[-1])}")
    report["baseline_seconds"] = round(time.perf_counter() - t0, 3)

    fp_model, fp_version = _fp_model(cfg, model, version)
    spaces = [sp for sp in cfg.features.export_spaces if sp != "fp" or fp_model is not None]
    report["spaces"] = spaces
    if fp_model is not None:  # the FP output layer: the last step of the fp_* features (features/argus_features.py)
        weight, bias = fp_model.fp.output_layer()
        vectors.write_head(cfg, FP_HEAD, version, {"weight": weight.numpy(), "bias": bias.numpy()})
        report["fp_model_version"] = fp_version
    buckets = pa.table({"bucket": np.arange(user_buckets_of(dataset_dir), dtype=np.int64)})
    items = pq.read_table(Path(dataset_dir) / "items.parquet", columns=["item_id"])
    # tower first in the report: argus_dot and tower ANN; then the NIP head, the FP head's parts. One Ray Data job
    # per entity computes every space (the job start, not the encoder, dominates small exports)
    models = {space: (fp_model if space == "fp" else model).cpu() for space in spaces}
    with ray_session(address=cfg.ray.address):
        user_kwargs = {"dataset_dir": str(Path(dataset_dir).resolve()), "snaps": [int(x) for x in snaps], "lag_s": lag_s,
                       "batch_size": cfg.features.export_batch_size}
        for ent, table, block, batch, cls, kwargs, event_ts in (  # users: one bucket per call (UserVectors)
            ("user", buckets, 1, 1, UserVectors, user_kwargs, None),
            ("item", items, 4096, cfg.features.export_batch_size, ItemVectors, {}, int(snaps[0])),
        ):
            t0 = time.perf_counter()
            ds = _map(ray.data.from_arrow(_blocks(table, block)), cls,
                      {"models": models, "device": device, **kwargs}, cfg, use_gpu, batch)
            outs = {f"vector_{space}": (vectors.kind_of(ent, space), vectors.vector_path(cfg, vectors.kind_of(ent, space), tag))
                    for space in spaces}
            n = _stream(ds, outs, table.num_rows if ent == "item" else None, version, created, event_ts)
            dt = time.perf_counter() - t0
            for space in spaces:  # one job for all spaces: each reports its seconds
                prefix = "" if space == "tower" else f"{space}_"
                report.update({f"{prefix}{ent}_vectors": str(outs[f"vector_{space}"][1]), f"{prefix}{ent}_rows": n,
                               f"{prefix}{ent}_seconds": round(dt, 3),
                               f"{prefix}{ent}_rows_per_s": round(n / max(dt, 1e-9), 1)})
    vectors.archive_other_versions(cfg, version)  # only now: the new version's files are complete
    tower = ("user", "item")
    report.update(rows=sum(report[f"{e}_rows"] for e in tower),
                  rows_per_s=round(sum(report[f"{e}_rows"] for e in tower)
                                   / max(sum(report[f"{e}_seconds"] for e in tower), 1e-9), 1))
    atomic_write_text(json.dumps({**report, "dataset_dir": str(dataset_dir), "created": created}, indent=1),
                      cfg.paths.vectors_dir / "latest.json")
    with start_run(cfg, "export"):
        import mlflow

        mlflow.log_params({"export.model_ref": str(model_ref), "export.model_version": version,
                           "export.n_snapshots": len(snaps), "export.lag_s": lag_s, "export.device": device})
        mlflow.log_metrics({k: float(v) for k, v in report.items()
                            if k.endswith(("rows", "rows_per_s", "seconds")) and isinstance(v, (int, float))})
        mlflow.log_dict(report, "export_report.json")
    return report
