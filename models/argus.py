"""ArgusModel: event embeddings -> causal encoder -> NIP / FP heads and two towers.

Pre-training (ARGUS.md section 2): one causal pass over right-padded histories,
NIP and FP losses at every position. Fine-tuning (section 3): the same pass
gives the user state after every event; each impression takes the state of the
last event at or before ``imp_time - lag`` (searchsorted), and the ranking score
is dot(user tower, item tower). Encoders: "simplified" (one token per event),
"full" (context, item, feedback tokens), "hstu".
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .batch import FinetuneBatch, SequenceBatch, positives_only
from .config import FEEDBACK_TARGETS, ArgusConfig
from .embeddings import ContextEmbedding, FeedbackEmbedding, HashedItemEmbedding, skip_target
from .encoders import build_encoder
from .heads import FPHead, NIPHead, Towers
from .losses import (
    corrected_sampled_softmax_loss, fp_losses, inbatch_log_q, mixture_log_q, pairwise_logistic_loss,
    sampled_softmax_loss, uniform_log_q,
)

_INT64_MAX = torch.iinfo(torch.int64).max


@dataclass
class Pass:
    """What one encoder pass yields, per event t (all (B, L, ...))."""

    state: torch.Tensor  # (B, L, D) user state after event t
    nip_in: torch.Tensor  # (B, L, nip_in) sees events < t and context t
    fp_in: torch.Tensor  # (B, L, fp_in) sees events < t, context t and item t
    item: torch.Tensor  # (B, L, D) item embedding of event t
    pooled: torch.Tensor | None = None  # (B, L, D) mean of the event tokens <= t (cfg.tower_pool)


def last_event_index(timestamp: torch.Tensor, valid: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """(B, L), (B, L), (B, K) -> (B, K): index of the last valid event with ts <= cutoff, -1 if none.

    Histories are right-padded with non-decreasing timestamps over the valid prefix.
    """
    ts = timestamp.masked_fill(~valid, _INT64_MAX)  # padding sorts last
    bad = (ts[:, 1:] < ts[:, :-1]).any(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"history row {row}: timestamps must be non-decreasing over a right-padded valid prefix")
    return torch.searchsorted(ts.contiguous(), cutoff.contiguous(), right=True) - 1


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ArgusModel(nn.Module):
    def __init__(self, cfg: ArgusConfig):
        super().__init__()
        self.cfg = cfg
        D, full = cfg.d_model, cfg.encoder == "full"
        self.item_emb = HashedItemEmbedding(cfg)
        self.context_emb = ContextEmbedding(cfg)
        self.feedback_emb = FeedbackEmbedding(cfg)
        self.token_type = nn.Embedding(3, D) if full else None  # context / item / feedback token
        self.encoder = build_encoder(cfg)
        self.empty_state = nn.Parameter(torch.zeros(D))  # the user state before any event
        self.nip = NIPHead(cfg, D if full else 2 * D)
        self.fp = FPHead(cfg, D if full else 3 * D) if cfg.use_feedback else None
        self.towers = Towers(cfg)
        self.pool_norm = nn.LayerNorm(D) if cfg.tower_pool else None
        # tower_pool: weight of the encoder state next to the pooled tokens; starts at 0 so fine-tuning
        # begins from the pooled history (which orders pairs far better) and mixes the state in as it helps
        self.state_mix = nn.Parameter(torch.zeros(())) if cfg.tower_pool else None
        self.register_buffer("catalog", torch.zeros(0, dtype=torch.long), persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.startswith("encoder.") and name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        nn.init.normal_(self.empty_state, std=0.02)
        self.towers.zero_init_residual()
        if cfg.compile:
            self.encoder.compile()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- encoder pass
    def prepare_batch(self, batch: SequenceBatch) -> SequenceBatch:
        """Identity for ARGUS; positives moved to the front for SASRec. Outputs of
        ``encode`` / ``nip_queries`` / ``fp_predictions`` align with this batch."""
        return positives_only(batch)[0] if self.cfg.positives_only else batch

    def _run(self, b: SequenceBatch) -> Pass:
        B, L = b.item_id.shape
        if L > self.cfg.max_len:
            raise ValueError(f"history length {L} > ArgusConfig.max_len={self.cfg.max_len}")
        ctx = self.context_emb(b.surface, b.is_organic, b.timestamp)  # (B, L, D)
        item = self.item_emb(b.item_id)  # (B, L, D)
        fb = self.feedback_emb(b.played_ratio, b.liked, b.disliked, item)  # (B, L, D)
        pos = torch.arange(L, device=ctx.device)
        pooled = None
        if self.pool_norm is not None:  # causal running mean of the event tokens (padding excluded)
            tok = (ctx + item + fb) * b.valid.unsqueeze(-1)
            pooled = self.pool_norm(tok.cumsum(1) / b.valid.cumsum(1).clamp(min=1).unsqueeze(-1).to(tok.dtype))
        if self.token_type is not None:  # full: [c_0, i_0, f_0, c_1, ...]
            x = torch.stack([ctx, item, fb], dim=2) + self.token_type.weight  # (B, L, 3, D)
            h = self.encoder(x.flatten(1, 2), pos.repeat_interleave(3), b.timestamp.repeat_interleave(3, dim=1))
            h = h.view(B, L, 3, -1)
            return Pass(state=h[:, :, 2], nip_in=h[:, :, 0], fp_in=h[:, :, 1], item=item, pooled=pooled)
        h = self.encoder(ctx + item + fb, pos, b.timestamp)  # (B, L, D)
        prev = torch.cat([self.empty_state.to(h.dtype).expand(B, 1, -1), h[:, :-1]], dim=1)  # state t-1
        return Pass(state=h, nip_in=torch.cat([prev, ctx.to(h.dtype)], -1),
                    fp_in=torch.cat([prev, ctx.to(h.dtype), item.to(h.dtype)], -1), item=item, pooled=pooled)

    def _user_state(self, p: Pass) -> torch.Tensor:
        """(B, L, D) what the user tower reads: the encoder state, or with ``cfg.tower_pool`` the
        pooled event tokens + ``state_mix`` * state."""
        if p.pooled is None:
            return p.state
        return self.state_mix.to(p.state.dtype) * p.state + p.pooled.to(p.state.dtype)

    def encode(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, L, D) user state after each event (causal: position t sees events <= t); the
        user tower's input."""
        return self._user_state(self._run(self.prepare_batch(batch)))

    # ---------------------------------------------------------------- pre-training
    def set_vocab(self, item_ids: torch.Tensor) -> None:
        """The catalog of the item table (``item_table="catalog"``); a no-op for hashed tables."""
        self.item_emb.set_vocab(item_ids)

    def set_catalog(self, item_ids: torch.Tensor) -> None:
        """Draw uniform negatives from these IDs (else from [1, cfg.item_id_max])."""
        self.catalog = torch.unique(item_ids.long()).to(self.empty_state.device)

    def temperature(self) -> torch.Tensor:
        return self.nip.temperature()

    def _uniform_negatives(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        M = self.cfg.n_uniform_negatives
        if self.catalog.numel():
            ids = self.catalog[torch.randint(self.catalog.numel(), (M,), device=device)]
            return ids, uniform_log_q(M, self.catalog.numel(), device)
        ids = torch.randint(1, self.cfg.item_id_max + 1, (M,), device=device)
        return ids, uniform_log_q(M, self.cfg.item_id_max, device)

    def pretrain_losses(self, batch: SequenceBatch, item_log_q: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """NIP + FP losses at positions where ``target_mask`` is True.

        item_log_q (B, L): log popularity share of each event's item (None: in-batch frequency).
        Returns scalars: "loss" (weighted total), "nip", "fp_<target>" (when use_feedback).
        """
        cfg = self.cfg
        if cfg.positives_only:
            batch, order = positives_only(batch)
            item_log_q = None if item_log_q is None else item_log_q.gather(1, order)
        t = self._run(batch)
        mask = batch.target_mask & batch.valid  # (B, L)
        # NIP: positives at target positions; shared negatives = in-batch subsample + uniform draws
        q = self.nip.query(t.nip_in[mask])  # (N, nip_dim)
        pos_ids = batch.item_id[mask]  # (N,)
        pos_e = self.nip.item(t.item[mask])  # (N, nip_dim)
        N = pos_ids.numel()
        share = item_log_q[mask].float() if item_log_q is not None else inbatch_log_q(pos_ids)  # (N,) log p
        S = min(N, cfg.n_inbatch_negatives)
        sel = torch.randperm(N, device=q.device)[:S] if S < N else torch.arange(N, device=q.device)
        pos_log_q = math.log(max(S, 1)) + share  # log expected count among the S in-batch draws
        neg_e, neg_ids, neg_log_q = pos_e[sel], pos_ids[sel], pos_log_q[sel]
        if cfg.n_uniform_negatives:
            u_ids, u_log_q = self._uniform_negatives(q.device)
            neg_e = torch.cat([neg_e, self.nip.item(self.item_emb(u_ids))])
            neg_ids, neg_log_q = torch.cat([neg_ids, u_ids]), torch.cat([neg_log_q, u_log_q])
        if cfg.logq == "corrected":
            n_cat = self.catalog.numel() or cfg.item_id_max
            neg_log_q = mixture_log_q(pos_ids, neg_ids, S, cfg.n_uniform_negatives, n_cat)
            nip = corrected_sampled_softmax_loss(q, pos_e, pos_ids, neg_e, neg_ids, neg_log_q, self.temperature())
        else:
            if cfg.logq == "none":
                pos_log_q, neg_log_q = torch.zeros_like(pos_log_q), torch.zeros_like(neg_log_q)
            nip = sampled_softmax_loss(q, pos_e, pos_ids, pos_log_q, neg_e, neg_ids, neg_log_q, self.temperature())
        out = {"nip": nip}
        total = cfg.nip_weight * out["nip"]
        if self.fp is not None:
            targets = {"played_ratio": batch.played_ratio, "liked": batch.liked, "disliked": batch.disliked,
                       "skip": skip_target(batch.played_ratio)}
            for name, v in fp_losses(self.fp(t.fp_in), targets, mask, cfg.played_ratio_loss).items():
                out[f"fp_{name}"] = v
                total = total + cfg.fp_weights[name] * v
        out["loss"] = total
        return out

    def nip_queries(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, L, nip_dim) unit queries: position t predicts item t from state t-1 and context t."""
        return self.nip.query(self._run(self.prepare_batch(batch)).nip_in)

    def nip_item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(N,) raw IDs -> (N, nip_dim) unit vectors; NIP scores = queries @ items.T / temperature()."""
        return self.nip.item(self.item_emb(item_ids))

    def fp_predictions(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """target -> (B, L) predicted probability (played_ratio: expected fraction); {} without FP."""
        if self.fp is None:
            return {}
        logits = self.fp(self._run(self.prepare_batch(batch)).fp_in)
        return {name: torch.sigmoid(logits[name]) for name in FEEDBACK_TARGETS}

    def fp_separable(self) -> bool:
        """Whether the FP head splits into a user part and an item part (one token per event: the FP input is
        ``[state t-1; context t; item t]``); the full encoder's FP input is the item token's hidden state."""
        return self.fp is not None and self.token_type is None

    def fp_user_parts(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, L, hidden) the FP head's user part at every position (state t-1 and context t): with
        :meth:`fp_item_parts` of item t, ``fp.output_layer`` of GELU(user + item) = the FP logits of event t."""
        if not self.fp_separable():
            raise ValueError("the FP head splits into user and item parts only with one token per event "
                             f"(encoder 'simplified' or 'hstu', use_feedback): encoder={self.cfg.encoder!r}")
        return self.fp.user_part(self._run(self.prepare_batch(batch)).nip_in)

    def fp_item_parts(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(N,) raw IDs -> (N, hidden) the FP head's item part."""
        if not self.fp_separable():
            raise ValueError(f"the FP head of encoder {self.cfg.encoder!r} does not split into user and item parts")
        return self.fp.item_part(self.item_emb(item_ids))

    # ---------------------------------------------------------------- every prefix of a window, one pass
    def one_pass_prefixes(self) -> bool:
        """Whether one encoder pass over a window gives the user vectors and serving queries of all its prefixes
        (:meth:`prefix_states`, :meth:`serving_input`): one token per event, events kept in time order."""
        return self.token_type is None and not self.cfg.positives_only

    def prefix_states(self, batch: SequenceBatch, rows: torch.Tensor, pos: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """One causal pass over ``batch``; at (``rows[r]``, ``pos[r]``): (R, D) the user tower's input and (R, D)
        the encoder state, both equal to those after the last event of the window's prefix ending there."""
        p = self._run(batch)
        return self._user_state(p)[rows, pos], p.state[rows, pos]

    def serving_input(self, state: torch.Tensor, last_ts: torch.Tensor, as_of: torch.Tensor, surface: int,
                      organic: bool) -> torch.Tensor:
        """(R, nip_in) the NIP / FP user-side input of a request slot at ``as_of`` (context ``surface``,
        ``organic``) right after an event at ``last_ts`` whose encoder state is ``state``: [state; context]."""
        if not self.one_pass_prefixes():
            raise ValueError(f"serving_input needs one token per event in time order: encoder={self.cfg.encoder!r}, "
                             f"positives_only={self.cfg.positives_only}")
        ts = torch.stack([last_ts.long(), as_of.long()], 1)  # (R, 2): the gap bucket reads the event before
        ctx = self.context_emb(torch.full_like(ts, surface), torch.full_like(ts, int(organic)), ts)[:, 1]
        return torch.cat([state, ctx.to(state.dtype)], -1)

    # ---------------------------------------------------------------- two towers, one pass
    def _states_at(self, history: SequenceBatch, cutoff: torch.Tensor | None) -> torch.Tensor:
        """(B, K, D) state after the last event with ts <= cutoff (B, K); the learned empty
        state if none. cutoff None: after the last valid event (K = 1)."""
        b = self.prepare_batch(history)
        states = self._user_state(self._run(b))  # (B, L, D)
        if cutoff is None:
            idx = (b.valid.sum(1, keepdim=True) - 1)  # (B, 1)
        else:
            idx = last_event_index(b.timestamp, b.valid, cutoff)  # (B, K) in [-1, L-1]
        B, _, D = states.shape
        padded = torch.cat([self.empty_state.to(states.dtype).expand(B, 1, D), states], dim=1)  # (B, 1 + L, D)
        return padded.gather(1, (idx + 1).unsqueeze(-1).expand(-1, -1, D))

    def item_vectors(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(...,) raw IDs -> (..., tower_dim) item tower output."""
        return self.towers.item(self.item_emb(item_ids)).float()

    def user_vectors(self, batch: SequenceBatch, as_of: torch.Tensor | None = None, lag_s: int = 0) -> torch.Tensor:
        """(B, tower_dim) user tower of the state after the last event at or before
        ``as_of - lag_s`` (as_of (B,) seconds); ``as_of`` None: after the last valid event."""
        cutoff = None if as_of is None else (as_of.long() - lag_s).view(-1, 1)
        return self.towers.user(self._states_at(batch, cutoff)[:, 0]).float()

    def impression_scores(self, batch: FinetuneBatch, lag_s: int) -> torch.Tensor:
        """(B, K) dot(user tower at imp_time - lag, item tower); 0 at invalid impressions."""
        u = self.towers.user(self._states_at(batch.history, batch.imp_time - lag_s)).float()  # (B, K, T)
        v = self.item_vectors(batch.imp_item)  # (B, K, T)
        return (u * v).sum(-1).masked_fill(~batch.imp_valid, 0.0)

    def finetune_loss(self, batch: FinetuneBatch, lag_s: int) -> dict[str, torch.Tensor]:
        """Weighted pairwise logistic loss over all pairs of the batch, from one pass.

        Returns "loss", "pair_accuracy" (weighted, detached), "scores" (B, K)."""
        scores = self.impression_scores(batch, lag_s)
        return pair_loss_from_scores(scores, batch)

    # ---------------------------------------------------------------- utilities
    def num_parameters(self, encoder_only: bool = True) -> int:
        mod = self.encoder if encoder_only else self
        return sum(p.numel() for p in mod.parameters())

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.98)) -> torch.optim.AdamW:
        """AdamW; weight decay on >= 2-D matmul weights only (not embeddings, norms, biases, temperature)."""
        emb = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2 and id(p) not in emb]
        ids = {id(p) for p in decay}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
        fused = all(p.is_cuda for p in self.parameters())
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def pair_weights(batch: FinetuneBatch) -> torch.Tensor:
    """(B, P) pair weights; 0 for pairs touching an invalid impression."""
    return batch.pair_w * batch.imp_valid.gather(1, batch.pair_a) * batch.imp_valid.gather(1, batch.pair_b)


def pair_loss_from_scores(scores: torch.Tensor, batch: FinetuneBatch) -> dict[str, torch.Tensor]:
    """Pairwise loss of (B, K) scores; pairs touching an invalid impression get weight 0."""
    loss, acc = pairwise_logistic_loss(scores, batch.pair_a, batch.pair_b, pair_weights(batch))
    return {"loss": loss, "pair_accuracy": acc, "scores": scores}
