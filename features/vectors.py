"""ARGUS vectors on disk: the one table layout, its files, model versions and archive.

Layout under ``cfg.paths.vectors_dir``, one view per *kind* (``user``, ``item``: the two towers;
``user_nip``, ``item_nip``: the NIP head's user query and item embeddings; ``user_fp``, ``item_fp``: the FP
head's user and item parts, ``platform/inference.py``)::

    <kind>_vectors/<tag>.parquet  <entity>_id, <kind>_vector list<float32>, <kind>_model_version, event_timestamp, created
    archive/<view>/<tag>.parquet  files of other model versions (moved by :func:`archive_other_versions`)
    heads/<name>_v<version>.npz   small per-version arrays the features need besides vectors (the FP output layer)

A file is written under a hidden temporary name and renamed into place when complete
(readers skip hidden files), so a crash never leaves a truncated file behind. Vectors
of two model versions are never used together: :func:`check_versions` refuses them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from argusrank.features.config import StoreConfig
from argusrank.features.io import atomic_file, atomic_write_table

KINDS = ("user", "item", "user_nip", "item_nip", "user_fp", "item_fp")
VIEW_OF = {kind: f"{kind}_vectors" for kind in KINDS}
USER_VECTORS, ITEM_VECTORS = VIEW_OF["user"], VIEW_OF["item"]
DOT_VIEW = "argus_dot_view"  # the on-demand Feast view computing argus_dot from the two vector views
USER_VECTORS_PUSH = "user_vectors_push"  # Feast push source of the user vectors (fresh vectors, online)


class VectorVersionMismatch(ValueError):
    """User and item vectors come from different model versions."""


def _view(kind: str) -> str:
    if kind not in VIEW_OF:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return VIEW_OF[kind]


def entity(kind: str) -> str:
    """``user`` or ``item``: whose vectors a kind holds."""
    return kind.split("_")[0]


def kind_of(entity_name: str, space: str) -> str:
    """The kind of ``entity_name``'s vectors in ``space`` (``tower`` or ``nip``)."""
    return entity_name if space == "tower" else f"{entity_name}_{space}"


def vector_table(kind: str, ids: np.ndarray, vectors: np.ndarray, model_version: int,
                 event_ts_s: np.ndarray | int, created_s: float) -> pa.Table:
    """The offline schema of a vector view: ``<entity>_id, <kind>_vector, <kind>_model_version, event_timestamp, created``.

    ``ids`` (N,) int64, ``vectors`` (N, d) float32, ``event_ts_s`` scalar or (N,) seconds, ``created_s`` seconds.
    """
    _view(kind)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{kind} vectors: {len(ids)} ids but {n} vectors")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise ValueError(f"{kind} vector of {entity(kind)}_id={int(ids[row])} (row {row}) is not finite")
    ev = np.broadcast_to(np.asarray(event_ts_s, dtype=np.float64), (n,))
    us = pa.timestamp("us", tz="UTC")
    return pa.table({
        f"{entity(kind)}_id": pa.array(np.asarray(ids, dtype=np.int64)),
        f"{kind}_vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d).cast(pa.list_(pa.float32())),
        f"{kind}_model_version": pa.array(np.full(n, int(model_version), dtype=np.int64)),
        "event_timestamp": pa.array((ev * 1e6).astype(np.int64)).cast(us),
        "created": pa.array(np.full(n, int(created_s * 1e6), dtype=np.int64)).cast(us),
    })


def vector_path(cfg: StoreConfig, kind: str, tag: str) -> Path:
    """``<vectors_dir>/<kind>_vectors/<tag>.parquet`` (one file per export)."""
    return cfg.paths.vectors_dir / _view(kind) / f"{tag}.parquet"


def write_vectors(cfg: StoreConfig, kind: str, table: pa.Table, tag: str) -> Path:
    """Write a vector table (:func:`vector_table`) as one export file, atomically; returns its path."""
    return atomic_write_table(table, vector_path(cfg, kind, tag))


def _files(cfg: StoreConfig, kind: str, with_archive: bool) -> list[str]:
    dirs = [cfg.paths.vectors_dir / _view(kind)]
    if with_archive:
        dirs.append(cfg.paths.vectors_dir / "archive" / _view(kind))
    return [str(f) for d in dirs if d.is_dir() for f in sorted(d.glob("[!._]*.parquet"))]


def newest_version(cfg: StoreConfig, kind: str = "item") -> int:
    """Model version of the newest export (max ``created``) of ``kind``; FileNotFoundError when none."""
    files = _files(cfg, kind, with_archive=False)
    if not files:
        raise FileNotFoundError(f"no exported {kind} vectors under {cfg.paths.vectors_dir / _view(kind)}: "
                                "run `argusrank export` first")
    t = ds.dataset(files, format="parquet").to_table(columns=[f"{kind}_model_version", "created"])
    return int(t[f"{kind}_model_version"][pc.index(t["created"], pc.max(t["created"])).as_py()].as_py())


def read_version(cfg: StoreConfig, kind: str, version: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of exactly one model version (current or archived files): ids (N,) int64 ascending,
    vectors (N, d) float32; per entity its newest row (``created``, then ``event_timestamp``).
    LookupError when that version was never exported."""
    files = _files(cfg, kind, with_archive=True)
    t = (ds.dataset(files, format="parquet").to_table(filter=ds.field(f"{kind}_model_version") == int(version))
         if files else None)
    if t is None or t.num_rows == 0:
        raise LookupError(f"no {kind} vectors of model version {version} under {cfg.paths.vectors_dir}: "
                          "export that version first")
    key = f"{entity(kind)}_id"
    t = t.sort_by([(key, "ascending"), ("created", "descending"), ("event_timestamp", "descending")])
    ids = t[key].to_numpy()
    t = t.filter(pa.array(np.r_[True, ids[1:] != ids[:-1]]))
    vecs = np.asarray(t[f"{kind}_vector"].combine_chunks().flatten().to_numpy(), np.float32).reshape(t.num_rows, -1)
    return t[key].to_numpy().astype(np.int64), vecs


def head_path(cfg: StoreConfig, name: str, version: int) -> Path:
    return cfg.paths.vectors_dir / "heads" / f"{name}_v{int(version)}.npz"


def write_head(cfg: StoreConfig, name: str, version: int, arrays: dict[str, np.ndarray]) -> Path:
    """Write the per-version arrays ``name`` (e.g. the FP output layer) atomically; returns the path."""
    path = head_path(cfg, name, version)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
    return path


def read_head(cfg: StoreConfig, name: str, version: int) -> dict[str, np.ndarray]:
    """The arrays of :func:`write_head`; LookupError when that version has none."""
    path = head_path(cfg, name, version)
    if not path.is_file():
        raise LookupError(f"no {name!r} head of model version {version} at {path}: export that version first")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def archive_other_versions(cfg: StoreConfig, version: int) -> list[Path]:
    """Move vector files of other model versions to ``<vectors_dir>/archive/<view>/``.

    The offline store's point-in-time join must see one model version only; nothing is
    deleted, and serving still finds an archived version by number (:func:`read_version`).
    Called after the new version's files are complete, so some version is always readable.
    """
    moved = []
    for view in VIEW_OF.values():
        src = cfg.paths.vectors_dir / view
        for f in sorted(src.glob("[!._]*.parquet")) if src.is_dir() else []:
            if not f.name.startswith(f"v{version}_"):
                dst = cfg.paths.vectors_dir / "archive" / view / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                moved.append(f.rename(dst))
    return moved


# --- vectors as Feast returns them -----------------------------------------------------------

def to_matrix(values: Sequence[Any] | pa.Array | pa.ChunkedArray, width: int | None = None) -> np.ndarray:
    """Feast list values (lists / arrays, None or NaN where missing) or an arrow list column -> (N, d) float32,
    NaN rows where missing; ``width``: d when known (a column whose rows all miss gives (N, width))."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        arr = arr.cast(pa.list_(pa.float32()))
    else:
        values = list(values)
        if values and all(isinstance(v, (list, np.ndarray)) for v in values):  # every row present: one numpy call
            try:
                out = np.asarray(values, dtype=np.float32)
            except ValueError:  # rows of different lengths: the checked path below names the row
                out = None
            if out is not None and out.ndim == 2 and out.shape[1] > 0 and width in (None, out.shape[1]):
                return out
        arr = pa.array(pd.Series(values, dtype=object), type=pa.list_(pa.float32()), from_pandas=True)
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    d = int(lens.max()) if len(lens) else 0
    d = width if width is not None and d == 0 else d
    ok = lens == d
    if (width is not None and d != width) or (d and not ok[lens > 0].all()):
        row = int(np.flatnonzero((lens > 0) & (lens != (width if width is not None else d)))[0])
        raise ValueError(f"vector at row {row} has {lens[row]} dims, others {width if width is not None else d}")
    if d and ok.all() and arr.null_count == 0:  # every row present: a view of the flat values
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    out = np.full((len(arr), d), np.nan, dtype=np.float32)
    if d:
        out[ok] = arr.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    return out
    arr = pa.array(pd.Series(list(values), dtype=object), type=pa.list_(pa.float32()), from_pandas=True)
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    d = int(lens.max()) if len(lens) else 0
    ok = lens == d
    if d and not ok[lens > 0].all():
        row = int(np.flatnonzero((lens > 0) & ~ok)[0])
        raise ValueError(f"vector at row {row} has {lens[row]} dims, others {d}")
    out = np.full((len(arr), d), np.nan, dtype=np.float32)
    if d:
        out[ok] = arr.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    return out


def to_versions(values: Sequence[Any]) -> np.ndarray:
    """Feast model-version values -> (N,) int64, -1 where missing."""
    return np.asarray([-1 if v is None else int(v) for v in values], dtype=np.int64)


def check_versions(user_versions: np.ndarray, item_versions: np.ndarray, per_row: bool = False) -> int | None:
    """Refuse user/item vectors of different model versions (VectorVersionMismatch); -1 = missing vector.

    ``per_row=False``: all present vectors must share one version, which is returned.
    ``per_row=True`` (point-in-time training sets spanning a model upgrade): each row's
    user and item vector must match; returns None if rows differ between them.
    """
    uv, iv = np.asarray(user_versions), np.asarray(item_versions)
    present = np.unique(np.concatenate([uv[uv >= 0], iv[iv >= 0]]))
    bad = np.flatnonzero((uv >= 0) & (iv >= 0) & (uv != iv)) if uv.shape == iv.shape else np.array([], int)
    if len(bad) or (len(present) > 1 and not per_row):
        where = f" (first mismatching row {int(bad[0])}: user v{uv[bad[0]]} vs item v{iv[bad[0]]})" if len(bad) else ""
        raise _mismatch(present.tolist(), where)
    return int(present[0]) if len(present) == 1 else None


def one_version(versions: Iterable[int]) -> int | None:
    """The one model version among ``versions`` (e.g. of several parts' rows; None when there is none);
    VectorVersionMismatch when there are several."""
    present = sorted(set(int(v) for v in versions))
    if len(present) > 1:
        raise _mismatch(present, "")
    return present[0] if present else None


def _mismatch(versions: list[int], where: str) -> VectorVersionMismatch:
    return VectorVersionMismatch(f"user and item vectors come from different model versions {versions}{where}: "
                                 "export and materialize both from one model version before using them together")


def dot_products(user_vecs: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """Row-wise dot products, (N, d) x (N, d) or (1, d) x (N, d) -> (N,) float64; NaN where a vector is missing."""
    if user_vecs.shape[-1] == 0 or item_vecs.shape[-1] == 0:  # no vectors at all
        return np.full(max(len(user_vecs), len(item_vecs)), np.nan)
    return np.einsum("nd,nd->n", np.broadcast_to(user_vecs, item_vecs.shape).astype(np.float64),
                     item_vecs.astype(np.float64))
