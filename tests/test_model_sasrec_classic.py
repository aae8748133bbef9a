"""sasrec-classic: loss equals a slow per-position reference, it learns a planted pattern;
the corrected logQ loss matches its formula; trimmed / bucketed batches change no output."""
import math

import numpy as np
import pytest
import torch

from argusrank.features.sequences import iterate_batches, trim_batch
from argusrank.models.batch import SequenceBatch, random_sequence_arrays
from argusrank.models.factory import model_from_config
from argusrank.models.losses import corrected_sampled_softmax_loss, mixture_log_q
from argusrank.models.sasrec_classic import SASRecClassic, SASRecClassicConfig
from test_model_train import ITEM_IDS, N_ITEMS, planted, popularity_recall_at_5


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def classic(**kw) -> SASRecClassic:
    m = model_from_config(SASRecClassicConfig(n_items=N_ITEMS, max_len=16, **kw).to_dict())
    m.set_vocab(torch.as_tensor(ITEM_IDS))
    m.set_catalog(torch.as_tensor(ITEM_IDS))
    return m


def test_loss_matches_slow_reference():
    torch.manual_seed(0)
    m = classic(dropout=0.0).eval()
    b = SequenceBatch.from_numpy(random_sequence_arrays(6, 12, seed=2, n_items=N_ITEMS, min_len=3))
    b.item_id = torch.where(b.valid, torch.as_tensor(ITEM_IDS)[torch.randint(N_ITEMS, b.item_id.shape)], 0)
    b.played_ratio = torch.ones_like(b.played_ratio)  # all positive: positives_only keeps every event
    b.liked, b.disliked = torch.zeros_like(b.liked), torch.zeros_like(b.disliked)
    torch.manual_seed(5)
    got = m.pretrain_losses(b)["loss"]
    torch.manual_seed(5)
    rows = m.vocab(b.item_id)
    neg = m._negatives(b, rows)
    h = m._feats(b)
    pos_terms, neg_terms = [], []
    for i in range(b.item_id.shape[0]):
        for t in range(1, b.item_id.shape[1]):
            if b.valid[i, t] and b.target_mask[i, t]:
                assert int(neg[i, t]) not in rows[i, b.valid[i]].tolist()
                e_p, e_n = m.item_emb.weight[rows[i, t]], m.item_emb.weight[neg[i, t]]
                pos_terms.append(-math.log(torch.sigmoid(h[i, t - 1] @ e_p).item()))
                neg_terms.append(-math.log(1 - torch.sigmoid(h[i, t - 1] @ e_n).item()))
    assert got.item() == pytest.approx(np.mean(pos_terms) + np.mean(neg_terms), rel=1e-5)


def test_learns_planted_pattern_and_beats_popularity():
    torch.manual_seed(0)
    data = planted(256, seed=1)
    data.played_ratio = torch.ones_like(data.played_ratio)  # every event positive (SASRec drops skips)
    m = classic(dropout=0.2)
    opt = m.configure_optimizer(1e-2)
    for _ in range(80):
        rows = torch.randint(0, 256, (32,))
        loss = m.pretrain_losses(SequenceBatch(**{k: getattr(data, k)[rows] for k in data.__dataclass_fields__}))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    m.eval()
    test = planted(200, seed=99)
    test.played_ratio = torch.ones_like(test.played_ratio)
    with torch.no_grad():
        scores = m.nip_queries(test)[:, -1] @ m.nip_item_embeddings(torch.as_tensor(ITEM_IDS)).T
    top = torch.as_tensor(ITEM_IDS)[scores.topk(5, dim=1).indices]
    recall = float((top == test.item_id[:, -1:]).any(1).float().mean())
    assert recall > popularity_recall_at_5() + 0.2, recall
    state = m.state_dict()  # the vocabulary travels with the weights
    m2 = model_from_config(m.cfg.to_dict())
    m2.load_state_dict(state)
    assert torch.equal(m2.nip_item_embeddings(torch.as_tensor(ITEM_IDS)), m.nip_item_embeddings(torch.as_tensor(ITEM_IDS)))


def test_corrected_logq_matches_formula_and_gradient():
    g = torch.Generator().manual_seed(0)
    q, pe, ne = (torch.randn(n, 4, generator=g) for n in (5, 5, 7))
    pos_ids, neg_ids = torch.tensor([1, 2, 3, 1, 9]), torch.tensor([1, 4, 5, 6, 7, 8, 2])
    log_q = mixture_log_q(pos_ids, neg_ids, n_inbatch=3, n_uniform=4, n_catalog=20)
    assert torch.allclose(log_q, torch.log(3 * torch.tensor([2, 0, 0, 0, 0, 0, 1]) / 5 + 4 / 20))
    q.requires_grad_(True)
    loss = corrected_sampled_softmax_loss(q, pe, pos_ids, ne, neg_ids, log_q, 0.5)
    ref = []
    for i in range(5):
        s_p = (q[i] @ pe[i]) / 0.5
        keep = neg_ids != pos_ids[i]
        lse = torch.logsumexp((ne[keep] @ q[i]) / 0.5 - log_q[keep], 0)
        p = torch.sigmoid(s_p - lse).detach()
        ref.append((1 - p) * (lse - s_p))
    ref = torch.stack(ref).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    (g1,) = torch.autograd.grad(loss, q, retain_graph=True)
    (g2,) = torch.autograd.grad(ref, q)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_trimmed_and_bucketed_batches_keep_rows_and_outputs():
    a = random_sequence_arrays(40, 16, seed=3, n_items=N_ITEMS)
    a["valid"][:, 10:] = False  # no row is longer than 10
    a["played_ratio"][:] = 1.0
    a["disliked"][:] = 0.0
    plain = list(iterate_batches(a, 8, shuffle=True, seed=1))
    bucketed = list(iterate_batches(a, 8, shuffle=True, seed=1, trim=True, bucket=3))
    assert sorted(np.concatenate([b["timestamp"][:, 0] for b in plain])) == \
        sorted(np.concatenate([b["timestamp"][:, 0] for b in bucketed]))
    assert all(b["valid"].shape[1] == b["valid"].sum(1).max() for b in bucketed)
    assert list(iterate_batches(a, 8, True, 1, trim=True, bucket=3))[2]["item_id"].tolist() == bucketed[2]["item_id"].tolist()
    m = classic(dropout=0.0).eval()
    full, cut = SequenceBatch.from_numpy(plain[0]), SequenceBatch.from_numpy(trim_batch(plain[0]))
    L = cut.item_id.shape[1]
    assert L <= 10
    with torch.no_grad():
        assert torch.allclose(m.nip_queries(full)[:, :L][cut.valid], m.nip_queries(cut)[cut.valid], atol=1e-5)


def test_candidate_recall_applies_to_models_with_tower_and_nip_spaces_only():
    """`argusrank quality --model sasrec-classic --protocol temporal` skips the candidate-recall stage (it has no
    tower or NIP space; it crashed there), ARGUS and its same-code ablation run it."""
    from argusrank.models.argus import ArgusModel
    from argusrank.models.config import preset, sasrec_config
    from argusrank.platform.training.candidate_recall import has_candidate_spaces

    assert not has_candidate_spaces(SASRecClassic(SASRecClassicConfig(n_items=20, max_len=8)))
    assert has_candidate_spaces(ArgusModel(preset("tiny")))
    assert has_candidate_spaces(ArgusModel(sasrec_config(preset("tiny"))))
