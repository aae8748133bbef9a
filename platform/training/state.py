"""What a training checkpoint holds beyond the model: RNG states, cross-worker reductions, the file.

Checkpoints are loaded with ``torch.load(weights_only=True)``: they hold only tensors,
numbers, strings, lists and dicts (the numpy RNG state is stored as a tensor), so loading
one never runs pickled code.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_FILE = "state.pt"


def rng_state() -> dict:
    """This process's torch / numpy / python (and CUDA) RNG states, in weights-only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached": float(cached)},
          "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = st["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum or max of ``values`` over the workers (identity outside a process group)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()


def all_gather(obj: Any, world: int) -> list[Any]:
    """``obj`` of every worker, in rank order."""
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def save_checkpoint(directory: str | Path, payload: dict) -> None:
    torch.save(payload, Path(directory) / CKPT_FILE)


def load_checkpoint(directory: str | Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, loaded weights-only (no code runs)."""
    return torch.load(Path(directory) / CKPT_FILE, map_location="cpu", weights_only=True)
