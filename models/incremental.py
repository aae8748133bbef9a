"""Incremental ARGUS user vectors: per-user encoder state, one encoder step per new event (issue 16).

``init_state`` runs the causal pass once over a user's history window and keeps what later steps
need: every encoder layer's keys / values (keys after rotary), the tokens' timestamps (HSTU time
bias), the last encoder state, the running sum of the event tokens (``cfg.tower_pool``) and the
window's raw events. ``append`` encodes only the new event's token(s) against that cache, so its
cost is one token step (attention over the cached keys), not a pass over the history.
``user_vector`` is then exactly ``model.user_vectors`` of a full pass over the same window (float
tolerance; tests/test_model_incremental.py).

Fallback: a window holds at most ``cfg.max_len`` events (the export's window). When an append would
exceed it, the state is rebuilt by one full pass over the last ``max_len`` events (positions and the
first event's time gap shift, so no cached key stays valid): that append costs a full pass, and so
does every later one of a user whose history exceeds ``max_len``. ``keep < max_len`` amortizes it
(one full pass per ``max_len - keep + 1`` appends) but then the vector reads the last ``keep`` to
``max_len`` events, no longer exactly the export's window.

Supported: encoders "simplified", "full" (3 tokens per event) and "hstu"; positions learned /
rotary / none; ``tower_pool``, ``feedback_gate``, both towers. Not supported (NotImplementedError):
``positives_only`` (the SASRec ablation). Events must come in non-decreasing time (ValueError
otherwise: re-init from the sorted history). Model in eval mode; CPU or the model's device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from argusrank.features.schema import SURFACE_CODE

from .encoders import HSTUEncoder, TransformerEncoder

#: the raw event fields a window keeps (features.sequences.gather_windows keys, less valid/target_mask)
EVENT_FIELDS = ("item_id", "timestamp", "is_organic", "surface", "played_ratio", "liked", "disliked")
_DTYPES = {"item_id": np.int64, "timestamp": np.int64, "is_organic": np.bool_, "surface": np.int64,
           "played_ratio": np.float32, "liked": np.float32, "disliked": np.float32}


@dataclass
class IncrementalUserState:
    """One user's encoder state after ``n_events`` events of the window (buffers grow by doubling)."""

    kv: torch.Tensor  # (n_layers, 2, H, capacity_tokens, dh) keys / values of the cached tokens
    tok_ts: torch.Tensor  # (capacity_tokens,) int64 timestamp of each cached token
    state: torch.Tensor  # (D,) encoder state after the last event (empty_state when n_events == 0)
    tok_sum: torch.Tensor  # (D,) sum of the event tokens ctx + item + fb (tower_pool's running mean * n)
    events: dict[str, np.ndarray]  # field -> (capacity_events,) raw events of the window
    n_events: int

    @property
    def last_timestamp(self) -> int | None:
        return int(self.events["timestamp"][self.n_events - 1]) if self.n_events else None

    @property
    def nbytes(self) -> int:
        """Bytes held (for sizing a cache of recently seen users)."""
        t = sum(x.numel() * x.element_size() for x in (self.kv, self.tok_ts, self.state, self.tok_sum))
        return t + sum(a.nbytes for a in self.events.values())


# ---------------------------------------------------------------- checks and conversions
def _check(model) -> None:
    cfg = model.cfg
    if cfg.positives_only:
        raise NotImplementedError("incremental user state: positives_only (SASRec ablation) is not supported")
    if not isinstance(model.encoder, (TransformerEncoder, HSTUEncoder)):
        raise NotImplementedError(f"incremental user state: encoder {cfg.encoder!r} is not supported")
    if model.training:
        raise ValueError("incremental user state needs model.eval() (no dropout)")


def _tpe(model) -> int:
    return model.cfg.tokens_per_event


def _event_row(event: dict) -> dict[str, np.ndarray]:
    """An event dict (schema fields; feedback None/absent = unknown, surface code or name) -> (1,) arrays."""
    missing = [k for k in ("item_id", "timestamp") if event.get(k) is None]
    if missing:
        raise ValueError(f"event: missing field(s) {missing}")
    surface = event.get("surface", 0)
    if isinstance(surface, str):
        if surface not in SURFACE_CODE:
            raise ValueError(f"event: unknown surface {surface!r}; known {sorted(SURFACE_CODE)}")
        surface = SURFACE_CODE[surface]
    row = {"item_id": int(event["item_id"]), "timestamp": int(event["timestamp"]),
           "is_organic": bool(event.get("is_organic", False)), "surface": int(surface)}
    for k in ("played_ratio", "liked", "disliked"):
        v = event.get(k)
        row[k] = np.nan if v is None else float(v)
    return {k: np.asarray([row[k]], dtype=_DTYPES[k]) for k in EVENT_FIELDS}


def _tensors(arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(arrays[k], dtype=_DTYPES[k]), device=device) for k in EVENT_FIELDS}


def _device(model) -> torch.device:
    return model.empty_state.device


# ---------------------------------------------------------------- the encoder step
def _context_tokens(model, t: dict[str, torch.Tensor], prev_ts: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, D) context tokens of (B, L) event tensors; ``prev_ts`` (B,) timestamp of the event before column 0
    (-1: none) for the time-gap context, exactly as the full pass sees it."""
    ts = t["timestamp"]
    first = prev_ts is None or bool((prev_ts < 0).any())
    ctx = model.context_emb(t["surface"], t["is_organic"], ts) if first else None  # column 0: gap bucket 0
    if prev_ts is not None:  # the gap to the previous (cached) event
        two = lambda x, fill: torch.cat([torch.full_like(x[:, :1], fill), x], 1)  # noqa: E731
        ctx2 = model.context_emb(two(t["surface"], 0), two(t["is_organic"], False),
                                 torch.cat([prev_ts.clamp(min=0)[:, None], ts], 1))[:, 1:]
        ctx = ctx2 if ctx is None else torch.where((prev_ts >= 0)[:, None, None], ctx2, ctx)
    return ctx


def _event_tokens(model, t: dict[str, torch.Tensor], prev_ts: torch.Tensor | None = None):
    """(B, L) event tensors -> (encoder tokens (B, L * tpe, D), event tokens ctx + item + fb (B, L, D)).
    ``prev_ts`` as in :func:`_context_tokens`."""
    ctx = _context_tokens(model, t, prev_ts)
    item = model.item_emb(t["item_id"])
    fb = model.feedback_emb(t["played_ratio"], t["liked"], t["disliked"], item)
    tok = ctx + item + fb
    if model.token_type is None:
        return tok, tok
    x = torch.stack([ctx, item, fb], dim=2) + model.token_type.weight  # (B, L, 3, D)
    return x.flatten(1, 2), tok


def _rotary(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """encoders.rotary with per-row positions: x (B, H, m, dh), pos (B, m)."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    ang = pos.float()[:, None, :, None] * inv_freq  # (B, 1, m, half)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _encode(model, x: torch.Tensor, pos: torch.Tensor, ts: torch.Tensor, kv: torch.Tensor,
            tok_ts: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
    """Encode m new tokens per row after ``past`` (B,) cached tokens; returns h (B, m, D) after ln_f.

    x (B, m, D), pos (B, m) event index, ts (B, m) seconds; kv (n_layers, 2, B, H, C, dh) and tok_ts (B, C)
    hold the cached tokens and get the new ones written at ``past + j`` (C >= max(past) + m)."""
    enc, (B, m, D) = model.encoder, x.shape
    n = int(past.max()) + m  # keys to attend over
    rows, cols = torch.arange(B, device=x.device)[:, None], past[:, None] + torch.arange(m, device=x.device)
    tok_ts[rows, cols] = ts
    key = torch.arange(n, device=x.device)
    mask = (key[None, None, :] <= cols[:, :, None])[:, None]  # (B, 1, m, n): cached + causal among the new
    fresh = n == m  # nothing cached (init): the plain causal kernel, as in the full pass
    if isinstance(enc, HSTUEncoder):
        kpos = key // _tpe(model)
        dist = (pos[:, :, None] - kpos[None, None, :]).clamp(0, enc.max_len - 1)  # (B, m, n)
        gap = (ts[:, :, None] - tok_ts[:, None, :n]).abs().float()
        tbucket = torch.log2(1.0 + gap).floor().long().clamp(max=enc.time_buckets - 1)
        for li, layer in enumerate(enc.layers):
            H = layer.n_heads
            u, v, q, k = F.silu(layer.uvqk(layer.ln(x))).split(D, dim=-1)
            q, k, v = (z.view(B, m, H, D // H).transpose(1, 2) for z in (q, k, v))  # (B, H, m, dh)
            kv[li, 0][rows, :, cols], kv[li, 1][rows, :, cols] = k.transpose(1, 2), v.transpose(1, 2)
            keys, vals = kv[li, 0, :, :, :n], kv[li, 1, :, :, :n]
            rab = (layer.pos_bias(dist) + layer.time_bias(tbucket)).permute(0, 3, 1, 2)  # (B, H, m, n)
            a = F.silu(q @ keys.transpose(-1, -2) / math.sqrt(D // H) + rab.to(q.dtype)) / layer.norm_len
            av = (a.masked_fill(~mask, 0.0) @ vals).transpose(1, 2).reshape(B, m, D)
            x = x + layer.proj(layer.ln_av(av) * u)
        return enc.ln_f(x)
    if enc.wpe is not None:
        x = x + enc.wpe(pos)
    for li, block in enumerate(enc.blocks):
        attn = block.attn
        H = attn.n_heads
        q, k, v = attn.qkv(block.ln1(x)).view(B, m, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, m, dh)
        if attn.rotary:
            q, k = _rotary(q, pos), _rotary(k, pos)
        kv[li, 0][rows, :, cols], kv[li, 1][rows, :, cols] = k.transpose(1, 2), v.transpose(1, 2)
        keys, vals = kv[li, 0, :, :, :n], kv[li, 1, :, :, :n]
        y = F.scaled_dot_product_attention(q, keys, vals, is_causal=True) if fresh else \
            F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        x = x + attn.proj(y.transpose(1, 2).reshape(B, m, D))
        x = x + block.mlp(block.ln2(x))
    return enc.ln_f(x)


def _kv_shape(model, B: int, C: int) -> tuple[int, ...]:
    cfg = model.cfg
    return (cfg.n_layers, 2, B, cfg.n_heads, C, cfg.d_model // cfg.n_heads)


def _reserve(model, s: IncrementalUserState, n_events: int) -> None:
    """Grow ``s``'s buffers (doubling, capped at max_len) to hold ``n_events`` events."""
    cap_ev = len(s.events["timestamp"])
    if cap_ev >= n_events:
        return
    new_ev = min(max(n_events, 2 * cap_ev, 8), max(model.cfg.max_len, n_events))
    C = new_ev * _tpe(model)
    kv = torch.zeros(_kv_shape(model, 1, C), dtype=s.kv.dtype, device=s.kv.device)[:, :, 0]
    used = s.n_events * _tpe(model)
    kv[..., :used, :] = s.kv[..., :used, :]
    tok_ts = torch.zeros(C, dtype=torch.long, device=s.tok_ts.device)
    tok_ts[:used] = s.tok_ts[:used]
    events = {}
    for k, a in s.events.items():
        events[k] = np.zeros(new_ev, a.dtype)
        events[k][:s.n_events] = a[:s.n_events]
    s.kv, s.tok_ts, s.events = kv, tok_ts, events


def batched_cache(model, states: list[IncrementalUserState], extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the states' cached keys / values and token times, stacked for one batched step with room for
    ``extra`` new tokens per row: ((n_layers, 2, B, H, C, dh), (B, C))."""
    tpe, dev = _tpe(model), _device(model)
    C = max(s.n_events for s in states) * tpe + extra
    kv = torch.zeros(_kv_shape(model, len(states), C), dtype=states[0].kv.dtype, device=dev)
    tok_ts = torch.zeros(len(states), C, dtype=torch.long, device=dev)
    for b, s in enumerate(states):
        n = s.n_events * tpe
        kv[:, :, b, :, :n], tok_ts[b, :n] = s.kv[..., :n, :], s.tok_ts[:n]
    return kv, tok_ts


# ---------------------------------------------------------------- public API
def _rows(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """gather_windows arrays (B, L) or one row (L,) -> ((B, L) arrays, (B,) valid lengths)."""
    a = {k: np.atleast_2d(np.asarray(arrays[k])) for k in EVENT_FIELDS}
    valid = np.atleast_2d(np.asarray(arrays["valid"], bool)) if "valid" in arrays else \
        np.ones(a["timestamp"].shape, bool)
    lengths = valid.sum(1)
    if (valid != (np.arange(valid.shape[1])[None, :] < lengths[:, None])).any():
        raise ValueError("init_state: histories must be right-padded (valid is a prefix of each row)")
    return a, lengths


def init_states(model, arrays: dict[str, np.ndarray]) -> list[IncrementalUserState]:
    """One state per row of right-padded window arrays (``features.sequences.gather_windows``), by one
    batched causal pass. A row longer than ``max_len`` valid events keeps its last ``max_len``."""
    _check(model)
    a, lengths = _rows(arrays)
    ml, tpe, dev = model.cfg.max_len, _tpe(model), _device(model)
    start = np.maximum(lengths - ml, 0)
    lengths = lengths - start
    B, L = len(lengths), max(int(lengths.max()) if len(lengths) else 0, 1)
    cols = np.arange(L)[None, :]
    idx = np.minimum(start[:, None] + cols, a["timestamp"].shape[1] - 1)
    win = {k: np.take_along_axis(v, idx, 1) for k, v in a.items()}  # (B, L), left-aligned windows
    valid = cols < lengths[:, None]
    with torch.no_grad():
        t = _tensors(win, dev)
        x, tok = _event_tokens(model, t)
        pos = torch.arange(L, device=dev).repeat_interleave(tpe).expand(B, -1)
        ts = t["timestamp"].repeat_interleave(tpe, dim=1)
        kv = torch.zeros(_kv_shape(model, B, L * tpe), dtype=x.dtype, device=dev)
        tok_ts = torch.zeros(B, L * tpe, dtype=torch.long, device=dev)
        h = _encode(model, x, pos, ts, kv, tok_ts, torch.zeros(B, dtype=torch.long, device=dev))
        tok_sum = (tok * torch.as_tensor(valid, device=dev).unsqueeze(-1)).sum(1)
    out = []
    for b, n in enumerate(lengths.tolist()):
        s = IncrementalUserState(kv=kv[:, :, b, :, :n * tpe].clone(), tok_ts=tok_ts[b, :n * tpe].clone(),
                                 state=h[b, n * tpe - 1].clone() if n else model.empty_state.detach().clone(),
                                 tok_sum=tok_sum[b].clone(),
                                 events={k: win[k][b, :n].astype(_DTYPES[k]) for k in EVENT_FIELDS}, n_events=n)
        out.append(s)
    return out


def init_state(model, arrays_row: dict[str, np.ndarray]) -> IncrementalUserState:
    """The state after one user's history window (arrays of one ``gather_windows`` row, (L,) or (1, L))."""
    return init_states(model, {k: np.atleast_2d(np.asarray(v))[:1] for k, v in arrays_row.items()})[0]


def _fallback(model, states: list[IncrementalUserState], rows: list[dict], keep: int) -> list[IncrementalUserState]:
    """Full pass over the last ``keep`` events (the window's events + the new one) of each user."""
    win = {k: np.stack([np.concatenate([s.events[k][:s.n_events], r[k]])[-keep:]
                        for s, r in zip(states, rows)]) for k in EVENT_FIELDS}
    return init_states(model, win)


def append_batch(model, states: list[IncrementalUserState], events: list[dict],
                 keep: int | None = None) -> list[IncrementalUserState]:
    """One new event per user (distinct users), one batched step; a user whose window is full
    (``max_len`` events) gets the full-pass fallback over its last ``keep`` (default ``max_len``) events.
    Updates the states in place and returns the current states (new objects for the fallback users)."""
    _check(model)
    keep = model.cfg.max_len if keep is None else int(keep)
    if not 1 <= keep <= model.cfg.max_len:
        raise ValueError(f"append: keep={keep} must be in [1, max_len={model.cfg.max_len}]")
    if len(states) != len(events):
        raise ValueError(f"append_batch: {len(states)} states but {len(events)} events")
    if len({id(s) for s in states}) != len(states):
        raise ValueError("append_batch: one event per user (the same state appears twice)")
    rows = [_event_row(e) for e in events]
    for s, r in zip(states, rows):
        last = s.last_timestamp
        if last is not None and int(r["timestamp"][0]) < last:
            raise ValueError(f"event timestamp {int(r['timestamp'][0])} < the window's last {last}: "
                             "re-init the state from the time-sorted history")
    ml, tpe, dev = model.cfg.max_len, _tpe(model), _device(model)
    out = list(states)
    full = [i for i, s in enumerate(states) if s.n_events >= ml]
    if full:
        for i, s in zip(full, _fallback(model, [states[i] for i in full], [rows[i] for i in full], keep)):
            out[i] = s
    inc = [i for i, s in enumerate(states) if s.n_events < ml]
    if not inc:
        return out
    st, rw = [states[i] for i in inc], [rows[i] for i in inc]
    for s in st:
        _reserve(model, s, s.n_events + 1)
    B = len(st)
    past = torch.tensor([s.n_events * tpe for s in st], dtype=torch.long, device=dev)
    with torch.no_grad():
        if B == 1:  # attend over the user's own buffers (no copy)
            kv, tok_ts = st[0].kv.unsqueeze(2), st[0].tok_ts.unsqueeze(0)
        else:
            kv, tok_ts = batched_cache(model, st, tpe)
        t = _tensors({k: np.concatenate([r[k] for r in rw])[:, None] for k in EVENT_FIELDS}, dev)
        prev = torch.tensor([s.last_timestamp if s.n_events else -1 for s in st], dtype=torch.long, device=dev)
        x, tok = _event_tokens(model, t, prev)
        pos = torch.tensor([s.n_events for s in st], dtype=torch.long, device=dev)[:, None].expand(B, tpe)
        h = _encode(model, x, pos, t["timestamp"].expand(B, tpe), kv, tok_ts, past)
        for b, (s, r) in enumerate(zip(st, rw)):
            n = s.n_events * tpe
            if B > 1:
                s.kv[..., n:n + tpe, :], s.tok_ts[n:n + tpe] = kv[:, :, b, :, n:n + tpe], tok_ts[b, n:n + tpe]
            for k in EVENT_FIELDS:
                s.events[k][s.n_events] = r[k][0]
            s.state, s.tok_sum = h[b, -1].clone(), s.tok_sum + tok[b, 0]
            s.n_events += 1
    return out


def append(model, state: IncrementalUserState, event: dict, keep: int | None = None) -> IncrementalUserState:
    """The state after one more event (item_id, timestamp, is_organic, surface, played_ratio, liked,
    disliked); updated in place, or a new state from a full pass when the window is full (see keep)."""
    return append_batch(model, [state], [event], keep)[0]


def _tower_input(model, states: list[IncrementalUserState]) -> torch.Tensor:
    """(B, D) what the user tower reads (``ArgusModel._user_state`` of the last event; empty_state if none)."""
    state = torch.stack([s.state for s in states])
    if model.pool_norm is not None:
        n = torch.tensor([max(s.n_events, 1) for s in states], dtype=state.dtype, device=state.device)
        pooled = model.pool_norm(torch.stack([s.tok_sum for s in states]) / n[:, None])
        state = model.state_mix.to(state.dtype) * state + pooled.to(state.dtype)
    empty = torch.tensor([s.n_events == 0 for s in states], device=state.device)
    return torch.where(empty[:, None], model.empty_state.to(state.dtype), state)


def user_vectors(model, states: list[IncrementalUserState]) -> np.ndarray:
    """(B, tower_dim) float32 tower vectors of the states (``model.user_vectors`` of their windows)."""
    with torch.no_grad():
        return model.towers.user(_tower_input(model, states)).float().cpu().numpy()


def user_vector(model, state: IncrementalUserState) -> np.ndarray:
    """(tower_dim,) float32 tower vector after the state's last event."""
    return user_vectors(model, [state])[0]
