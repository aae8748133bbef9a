"""The slow, obviously-correct impression-level fine-tuning path.

For every impression, cut the history to the events at or before
``imp_time - lag`` and re-run the encoder on that prefix alone (batch of one),
take the state after its last event (or the learned empty state), and score
with the towers. It exists to check ``ArgusModel.impression_scores`` (one causal
pass + searchsorted) and to measure the speedup of the one-pass path.
"""
from __future__ import annotations

import torch

from .argus import ArgusModel, pair_loss_from_scores
from .batch import FinetuneBatch, SequenceBatch


def _prefix(h: SequenceBatch, row: int, n: int) -> SequenceBatch:
    """Row ``row`` of ``h`` cut to its first n events, as a batch of one."""
    return SequenceBatch(**{k: getattr(h, k)[row : row + 1, :n] for k in h.__dataclass_fields__})


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
            cutoff = int(batch.imp_time[b, k]) - lag_s
            n = int((h.valid[b] & (h.timestamp[b] <= cutoff)).sum())  # events visible at the cutoff
            state = model.empty_state
            if n > 0:
                prefix = model.prepare_batch(_prefix(h, b, n))
                m = int(prefix.valid.sum())  # SASRec keeps only the positives of the prefix
                if m > 0:
                    state = model.encode(prefix)[0, m - 1]
            u = model.towers.user(state).float()  # (tower_dim,)
            v = model.item_vectors(batch.imp_item[b, k])  # (tower_dim,)
            row.append((u * v).sum())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def reference_finetune_loss(model: ArgusModel, batch: FinetuneBatch, lag_s: int) -> dict[str, torch.Tensor]:
    """Same keys as ``ArgusModel.finetune_loss``: "loss", "pair_accuracy", "scores"."""
    return pair_loss_from_scores(reference_impression_scores(model, batch, lag_s), batch)
