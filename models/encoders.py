"""Causal sequence encoders behind one interface: ``forward(x, pos, ts) -> h``.

x (B, T, D) token embeddings, pos (T,) event index of each token, ts (B, T)
seconds of each token's event; h (B, T, D) where h[:, t] sees tokens <= t only.

- ``TransformerEncoder``: pre-norm blocks with ``F.scaled_dot_product_attention(
  is_causal=True)`` (flash / efficient kernels on GPU), learned or rotary positions.
- ``HSTUEncoder``: HSTU blocks (Meta 2024): SiLU-gated pointwise attention with a
  learned relative position and time bias; the ablation encoder.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ArgusConfig


def rotary(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding. x (B, H, T, dh), pos (T,) -> (B, H, T, dh)."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    ang = pos.float()[:, None] * inv_freq  # (T, half)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.n_heads, self.dropout, self.rotary = cfg.n_heads, cfg.dropout, cfg.positions == "rotary"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, dh) each
        if self.rotary:
            q, k = rotary(q, pos), rotary(k, pos)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), CausalSelfAttention(cfg)
        self.ln2, self.mlp = nn.LayerNorm(cfg.d_model), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), pos))
        return x + self.drop(self.mlp(self.ln2(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        if self.wpe is not None:
            x = x + self.wpe(pos)  # (B, T, D) + (T, D)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, pos)
        return self.ln_f(x)


class HSTULayer(nn.Module):
    """One HSTU layer: U,V,Q,K = SiLU(W x); A = SiLU(QK^T/sqrt(dh) + rab) / n (causal); y = W_o(LN(A V) * U)."""

    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.n_heads, self.norm_len = cfg.n_heads, float(cfg.max_len * cfg.tokens_per_event)
        self.ln = nn.LayerNorm(cfg.d_model)
        self.uvqk = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.ln_av = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.pos_bias = nn.Embedding(cfg.max_len, cfg.n_heads)  # by event distance i - j
        self.time_bias = nn.Embedding(cfg.time_buckets, cfg.n_heads)  # by log2(1 + |ts_i - ts_j|)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, dist: torch.Tensor, tbucket: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), dist (T, T), tbucket (B, T, T) int64, causal (T, T) bool."""
        B, T, D = x.shape
        H, dh = self.n_heads, D // self.n_heads
        u, v, q, k = F.silu(self.uvqk(self.ln(x))).split(D, dim=-1)  # (B, T, D) each
        q, k, v = (t.view(B, T, H, dh).transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
        rab = self.pos_bias(dist).permute(2, 0, 1) + self.time_bias(tbucket).permute(0, 3, 1, 2)  # (B, H, T, T)
        a = F.silu(q @ k.transpose(-1, -2) / math.sqrt(dh) + rab.to(q.dtype)) / self.norm_len
        a = a.masked_fill(~causal, 0.0)  # pointwise (no softmax): zeroing the future is the causal mask
        av = (a @ v).transpose(1, 2).reshape(B, T, D)
        return x + self.drop(self.proj(self.ln_av(av) * u))


class HSTUEncoder(nn.Module):
    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.max_len, self.time_buckets = cfg.max_len, cfg.time_buckets
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        dist = (pos[:, None] - pos[None, :]).clamp(0, self.max_len - 1)  # (T, T)
        gap = (ts[:, :, None] - ts[:, None, :]).abs().float()  # (B, T, T)
        tbucket = torch.log2(1.0 + gap).floor().long().clamp(max=self.time_buckets - 1)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        for layer in self.layers:
            x = layer(x, dist, tbucket, causal)
        return self.ln_f(x)


def build_encoder(cfg: ArgusConfig) -> nn.Module:
    """The encoder chosen by ``cfg.encoder`` ("simplified" and "full" share the transformer)."""
    return HSTUEncoder(cfg) if cfg.encoder == "hstu" else TransformerEncoder(cfg)
