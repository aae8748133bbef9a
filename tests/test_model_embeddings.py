"""Unified hashed item embeddings: fixed table, any ID (seen or not) gets a stable vector."""
import torch

from argusrank.models.config import preset
from argusrank.models.embeddings import HashedItemEmbedding, hash_item_ids


def test_hashes_in_range_independent_and_stable():
    ids = torch.tensor([0, 1, 2, 10**12, 2**62, 123456789012345])
    h = hash_item_ids(ids, 3, 1000)
    assert h.shape == (6, 3) and int(h.min()) >= 0 and int(h.max()) < 1000
    assert torch.equal(h, hash_item_ids(ids.clone(), 3, 1000))
    many = hash_item_ids(torch.arange(1, 5001), 3, 1 << 16)
    assert (many[:, 0] != many[:, 1]).float().mean() > 0.99  # the k hashes differ
    full = many[:, 0] * (1 << 32) + many[:, 1] * (1 << 16) + many[:, 2]
    assert full.unique().numel() == 5000  # no two IDs share all k rows


def test_unseen_ids_get_distinct_vectors_from_fixed_table():
    cfg = preset("tiny", hash_combine="concat")
    emb = HashedItemEmbedding(cfg)
    n_params = sum(p.numel() for p in emb.parameters())
    unseen = torch.tensor([987654321987, 55555555555, 3])
    v = emb(unseen)
    assert v.shape == (3, cfg.d_model) and torch.isfinite(v).all()
    assert (v[0] - v[1]).abs().max() > 1e-4
    assert torch.equal(emb(unseen), v)
    assert sum(p.numel() for p in emb.parameters()) == n_params  # table size independent of IDs
    v.sum().backward()  # the unseen ID's rows receive gradient (it can be learned)
    assert emb.table.weight.grad.abs().sum() > 0
