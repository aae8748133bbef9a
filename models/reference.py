"""The slow, obviously-correct impression-level fine-tuning path.

For every impression, cut the history to the events at or before
``imp_time - lag`` and re-run the encoder on that prefix alone (batch of one),
take the state after its last event (or the learned empty state), and score
with the towers (and the older per-pair way, where every pair re-runs it for
both sides). It exists to check ``ArgusModel.impression_scores`` (one causal
pass + searchsorted) and to measure the speedup of the one-pass path.
"""
from __future__ import annotations

import torch

from .argus import ArgusModel, pair_loss_from_scores, pair_weights
from .losses import pairwise_logistic_loss
from .batch import FinetuneBatch, SequenceBatch


def _prefix(h: SequenceBatch, row: int, n: int) -> SequenceBatch:
    """Row ``row`` of ``h`` cut to its first n events, as a batch of one."""
    return SequenceBatch(**{k: getattr(h, k)[row : row + 1, :n] for k in h.__dataclass_fields__})


def _lagged_user_vector(model: ArgusModel, h: SequenceBatch, b: int, cutoff: int) -> torch.Tensor:
    """User tower vector (tower_dim,) from an encoder run on row b's events at or before ``cutoff`` alone."""
    n = int((h.valid[b] & (h.timestamp[b] <= cutoff)).sum())  # events visible at the cutoff
    state = model.empty_state
    if n > 0:
        prefix = model.prepare_batch(_prefix(h, b, n))
        m = int(prefix.valid.sum())  # SASRec keeps only the positives of the prefix
        if m > 0:
            state = model.encode(prefix)[0, m - 1]
    return model.towers.user(state).float()


def reference_impression_scores(model: ArgusModel, batch: FinetuneBatch, lag_s: int) -> torch.Tensor:
    """(B, K) scores, one encoder run per valid impression on its lagged history."""
    h = batch.history
    B, K = batch.imp_item.shape
    rows = []
    for b in range(B):
        row = []
        for k in range(K):
            if not bool(batch.imp_valid[b, k]):
                row.append(torch.zeros((), device=h.item_id.device))
                continue
            u = _lagged_user_vector(model, h, b, int(batch.imp_time[b, k]) - lag_s)
            v = model.item_vectors(batch.imp_item[b, k])  # (tower_dim,)
            row.append((u * v).sum())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def reference_finetune_loss(model: ArgusModel, batch: FinetuneBatch, lag_s: int) -> dict[str, torch.Tensor]:
    """Same keys as ``ArgusModel.finetune_loss``: "loss", "pair_accuracy", "scores"."""
    return pair_loss_from_scores(reference_impression_scores(model, batch, lag_s), batch)


def reference_pair_scores(model: ArgusModel, batch: FinetuneBatch, lag_s: int) -> torch.Tensor:
    """(B, P, 2) scores of (pair_a, pair_b) with the older per-PAIR way (ARGUS.md section 3): every
    weighted pair is its own example, each side re-running the encoder on its lagged history. 0 at padding."""
    h, w = batch.history, pair_weights(batch)
    B, P = batch.pair_a.shape
    zero = torch.zeros(2, device=h.item_id.device)
    out = []
    for b in range(B):
        row = []
        for p in range(P):
            ka, kb = int(batch.pair_a[b, p]), int(batch.pair_b[b, p])
            if not float(w[b, p]) > 0:
                row.append(zero)
                continue
            side = [(_lagged_user_vector(model, h, b, int(batch.imp_time[b, k]) - lag_s)
                     * model.item_vectors(batch.imp_item[b, k])).sum() for k in (ka, kb)]
            row.append(torch.stack(side))
        out.append(torch.stack(row))
    return torch.stack(out)


def reference_pair_loss(model: ArgusModel, batch: FinetuneBatch, lag_s: int) -> dict[str, torch.Tensor]:
    """The pairwise loss from :func:`reference_pair_scores` (same value as ``ArgusModel.finetune_loss``)."""
    s = reference_pair_scores(model, batch, lag_s)  # (B, P, 2)
    B, P = batch.pair_a.shape
    K = 2 * P  # lay the pair sides out as 2P pseudo-impressions: a -> 2p, b -> 2p + 1
    idx = torch.arange(P, device=s.device).expand(B, P)
    loss, acc = pairwise_logistic_loss(s.reshape(B, K), 2 * idx, 2 * idx + 1, pair_weights(batch))
    return {"loss": loss, "pair_accuracy": acc, "pair_scores": s}
