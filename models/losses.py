"""Losses: sampled softmax with logQ correction (NIP), masked per-target FP losses,
and the weighted pairwise logistic loss of fine-tuning.

Plain functions on tensors, small enough to check by hand in tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from argusrank.models.metrics import pair_accuracy_terms


def sampled_softmax_loss(
    query: torch.Tensor,  # (N, d)
    pos_emb: torch.Tensor,  # (N, d) the true next item of each query
    pos_ids: torch.Tensor,  # (N,) int64
    pos_log_q: torch.Tensor,  # (N,) log expected count of the positive among the candidates
    neg_emb: torch.Tensor,  # (M, d) shared candidates (in-batch and uniform)
    neg_ids: torch.Tensor,  # (M,) int64
    neg_log_q: torch.Tensor,  # (M,) log expected count of each candidate
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """Mean over N of  -log softmax(logits)[positive], where every logit is
    ``q . e / T - log Q(e)`` and candidates equal to the query's positive ID are masked.

    Subtracting log Q (as TF's sampled_softmax_loss does for true and sampled classes)
    removes the popularity bias of in-batch negatives. Returns a scalar (0 if N == 0).
    """
    if query.shape[0] == 0:
        return query.sum() * 0.0
    q = query.float()
    pos = (q * pos_emb.float()).sum(-1) / temperature - pos_log_q  # (N,)
    neg = q @ neg_emb.float().T / temperature - neg_log_q[None, :]  # (N, M)
    neg = neg.masked_fill(neg_ids[None, :] == pos_ids[:, None], float("-inf"))  # positive's own duplicates
    logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + M)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def corrected_sampled_softmax_loss(
    query: torch.Tensor,  # (N, d)
    pos_emb: torch.Tensor,  # (N, d)
    pos_ids: torch.Tensor,  # (N,) int64
    neg_emb: torch.Tensor,  # (M, d) shared sampled candidates
    neg_ids: torch.Tensor,  # (M,) int64
    neg_log_q: torch.Tensor,  # (M,) log expected count of each candidate among the draws
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """Sampled softmax with the refined logQ correction of "Correcting the LogQ Correction"
    (Khrylchenko et al., RecSys 2025): the positive is always in the softmax, not sampled, so
    only the negatives are importance-corrected and the positive is left out of the sampled sum:

        loss = mean_N  sg(1 - p) * (lse_j(s_j - log Q_j) - s_pos),   p = sigmoid(s_pos - lse)

    ``p`` estimates the positive's full-softmax probability; the weight ``1 - p`` (the chance of
    a miss under the current model) comes from the full-softmax gradient split into the
    positive's and the negatives' parts. Candidates equal to the positive ID are masked.
    """
    if query.shape[0] == 0:
        return query.sum() * 0.0
    q = query.float()
    pos = (q * pos_emb.float()).sum(-1) / temperature  # (N,)
    neg = q @ neg_emb.float().T / temperature - neg_log_q[None, :]  # (N, M)
    neg = neg.masked_fill(neg_ids[None, :] == pos_ids[:, None], float("-inf"))
    lse = torch.logsumexp(neg, dim=1)  # (N,)
    margin = lse - pos
    weight = torch.sigmoid(margin).detach()  # 1 - p
    return (weight * margin).mean()


def mixture_log_q(pos_ids: torch.Tensor, cand_ids: torch.Tensor, n_inbatch: int, n_uniform: int,
                  n_catalog: int) -> torch.Tensor:
    """(M,) log expected count of each candidate under the whole proposal: ``n_inbatch`` draws
    from the batch's positives (share = in-batch frequency) plus ``n_uniform`` uniform draws."""
    _, inv, _ = torch.unique(torch.cat([pos_ids, cand_ids]), return_inverse=True, return_counts=True)
    counts = torch.bincount(inv[: pos_ids.numel()], minlength=int(inv.max()) + 1).float()
    share = counts[inv[pos_ids.numel():]] / max(pos_ids.numel(), 1)
    expected = n_inbatch * share + (n_uniform / max(n_catalog, 1))
    return torch.log(expected.clamp(min=1e-12))


def inbatch_log_q(ids: torch.Tensor) -> torch.Tensor:
    """(N,) item IDs -> (N,) log of each ID's frequency share in the batch (count / N)."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return torch.log(counts[inverse].float() / ids.numel())


def uniform_log_q(n_samples: int, n_items: int, device=None) -> torch.Tensor:
    """(n_samples,) log expected count of each uniform draw: log(n_samples / n_items)."""
    return torch.full((n_samples,), math.log(n_samples / n_items), device=device)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask (0 with a gradient path if the mask is empty)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def fp_losses(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], mask: torch.Tensor,
              played_ratio_loss: str = "bce") -> dict[str, torch.Tensor]:
    """Per-target FP losses. logits/targets (B, L) per target, NaN target = missing;
    only positions where ``mask`` is True and the target is known count."""
    out = {}
    for name, logit in logits.items():
        y = targets[name].float()
        known = mask & ~y.isnan()
        y0 = y.nan_to_num(0.0)
        if name == "played_ratio" and played_ratio_loss == "mse":
            per = (torch.sigmoid(logit) - y0) ** 2
        else:
            per = F.binary_cross_entropy_with_logits(logit, y0, reduction="none")
        out[name] = masked_mean(per, known)
    return out


def pairwise_logistic_loss(scores: torch.Tensor, pair_a: torch.Tensor, pair_b: torch.Tensor,
                           pair_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, K); pairs (B, P) index K, ``a`` should outrank ``b`` with weight w (0 = padding).

    loss = sum w * log(1 + exp(-(s_a - s_b))) / sum w;
    pair_accuracy = sum w * [s_a > s_b] (ties count 1/2) / sum w.
    """
    s_a, s_b = scores.gather(1, pair_a), scores.gather(1, pair_b)  # (B, P)
    w = pair_w.float()
    total = w.sum().clamp(min=1e-12)
    loss = (w * F.softplus(s_b - s_a)).sum() / total
    correct, _ = pair_accuracy_terms(s_a, s_b, w)
    return loss, (correct / total).detach()
