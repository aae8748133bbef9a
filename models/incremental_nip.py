"""Fresh NIP queries from incremental user states: the user's query for the NEXT event in a serving context.

The export reads a user's NIP query (``platform/inference.py``, space ``nip``) by appending the serving context
as one placeholder event (item 0, feedback unknown, feed surface, recommendation traffic, time ``as_of``) to the
history window and taking the NIP head's query at that slot. Here the slot is encoded against the cached keys
and values of :class:`~argusrank.models.incremental.IncrementalUserState` — one token (the slot's context token
with three tokens per event; none with one token per event, whose NIP input is ``[state t-1; context t]``) — so a
new event moves the user's candidate query as cheaply as it moves the tower vector. Nothing of the slot is kept:
the states are not modified.

A window of ``max_len`` events gives up its oldest event for the slot (as in the export): those users get one full
pass over their last ``max_len - 1`` events plus the slot. Equal to the export's query over the same window
(float tolerance; tests/test_model_incremental.py).
"""
from __future__ import annotations

import numpy as np
import torch

from .batch import SequenceBatch
from .incremental import (EVENT_FIELDS, IncrementalUserState, _check, _context_tokens, _device, _encode, _tensors,
                          _tpe, batched_cache)


def _slot_rows(as_of: np.ndarray, surface: int, is_organic: bool) -> dict[str, np.ndarray]:
    """(B, 1) arrays of the placeholder event: item 0, feedback unknown, the serving context at ``as_of``."""
    B = len(as_of)
    return {"item_id": np.zeros((B, 1), np.int64), "timestamp": np.asarray(as_of, np.int64)[:, None],
            "is_organic": np.full((B, 1), is_organic), "surface": np.full((B, 1), surface, np.int64),
            "played_ratio": np.full((B, 1), np.nan, np.float32), "liked": np.full((B, 1), np.nan, np.float32),
            "disliked": np.full((B, 1), np.nan, np.float32)}


def _full_pass(model, states: list[IncrementalUserState], slot: dict[str, np.ndarray]) -> torch.Tensor:
    """(B, nip_dim) the slot's query by one causal pass over each window's last ``max_len - 1`` events + the slot."""
    keep = model.cfg.max_len - 1
    rows = [{k: np.concatenate([s.events[k][:s.n_events][-keep:] if keep else s.events[k][:0], slot[k][b]])
             for k in EVENT_FIELDS} for b, s in enumerate(states)]
    n = np.array([len(r["timestamp"]) for r in rows])
    L = int(n.max())
    pad = {"item_id": 0, "timestamp": 0, "is_organic": False, "surface": 0, "played_ratio": np.nan,
           "liked": np.nan, "disliked": np.nan}
    arrays = {k: np.stack([np.concatenate([r[k], np.full(L - len(r[k]), pad[k], r[k].dtype)]) for r in rows])
              for k in EVENT_FIELDS}
    arrays["valid"] = np.arange(L)[None, :] < n[:, None]
    arrays["target_mask"] = np.zeros_like(arrays["valid"])
    q = model.nip_queries(SequenceBatch.from_numpy(arrays, str(_device(model))))
    return q[torch.arange(len(n)), torch.as_tensor(n - 1)]


def nip_queries(model, states: list[IncrementalUserState], as_of: np.ndarray, surface: int,
                is_organic: bool = False) -> np.ndarray:
    """(B, nip_dim) float32: each state's NIP query for a request in context (``surface``, ``is_organic``) at
    ``as_of`` (B,) epoch seconds (not before the window's last event), as the export computes it."""
    _check(model)
    as_of = np.asarray(as_of, np.int64).reshape(-1)
    if len(as_of) != len(states):
        raise ValueError(f"nip_queries: {len(states)} states but {len(as_of)} as_of times")
    late = [b for b, s in enumerate(states) if s.n_events and int(as_of[b]) < s.last_timestamp]
    if late:
        raise ValueError(f"nip_queries: as_of {int(as_of[late[0]])} is before the window's last event "
                         f"{states[late[0]].last_timestamp} (row {late[0]})")
    ml, tpe, dev = model.cfg.max_len, _tpe(model), _device(model)
    slot = _slot_rows(as_of, surface, is_organic)
    full = [b for b, s in enumerate(states) if s.n_events >= ml]
    inc = [b for b, s in enumerate(states) if s.n_events < ml]
    with torch.no_grad():
        parts: dict[int, torch.Tensor] = {}
        if full:
            q = _full_pass(model, [states[b] for b in full], {k: v[full] for k, v in slot.items()})
            parts.update(zip(full, q))
        if inc:
            st = [states[b] for b in inc]
            t = _tensors({k: v[inc] for k, v in slot.items()}, dev)
            prev = torch.tensor([s.last_timestamp if s.n_events else -1 for s in st], dtype=torch.long, device=dev)
            ctx = _context_tokens(model, t, prev)[:, 0]  # (B, D): the slot's context, its gap to the last event
            if model.token_type is None:  # NIP input [state t-1; context t]: no encoder step
                q = model.nip.query(torch.cat([torch.stack([s.state for s in st]).to(ctx.dtype), ctx], -1))
            else:  # the slot's context token against the cached keys / values (copies: the states stay as they are)
                past = torch.tensor([s.n_events * tpe for s in st], dtype=torch.long, device=dev)
                kv, tok_ts = batched_cache(model, st, 1)
                pos = torch.tensor([s.n_events for s in st], dtype=torch.long, device=dev)[:, None]
                x = (ctx + model.token_type.weight[0])[:, None]  # the context token of the slot's three
                h = _encode(model, x, pos, t["timestamp"], kv, tok_ts, past)  # (B, 1, D)
                q = model.nip.query(h[:, 0])
            parts.update(zip(inc, q))
        out = torch.stack([parts[b] for b in range(len(states))])
    return out.float().cpu().numpy()
