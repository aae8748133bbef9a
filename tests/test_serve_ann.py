"""Candidate index (models/ann.py) against a brute-force reference."""
import numpy as np
import pytest

from argusrank.models.ann import build_index, exact_topk, recall_at_k


def _clustered(n, d=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(20, d))
    x = (c[rng.integers(0, 20, n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
    q = (c[rng.integers(0, 20, 50)] + 0.7 * rng.normal(size=(50, d))).astype(np.float32)
    return x, q


def test_exact_index_equals_brute_force_with_ids_and_exclusion():
    x, q = _clustered(500)
    ids = np.arange(500, dtype=np.int64) * 7 + 3
    index = build_index(ids, x, "auto", exact_max_items=1000)
    assert index.kind == "exact"
    got, sc = index.search(q, 10)
    for b in range(len(q)):
        s = x @ q[b]
        want = ids[np.argsort(-s, kind="stable")[:10]]
        assert got[b].tolist() == want.tolist()
        np.testing.assert_allclose(sc[b], np.sort(s)[::-1][:10], rtol=1e-5)
    excl = [got[b, :3].tolist() + [999_999] for b in range(len(q))]
    got2, _ = index.search(q, 10, excl)
    assert (got2[:, :7] == got[:, 3:]).all()
    assert not any(np.isin(got2[b], excl[b]).any() for b in range(len(q)))


def test_padding_when_catalog_smaller_than_k():
    x, q = _clustered(5)
    ids, sc = build_index(np.arange(5), x, "exact").search(q[:2], 8, [[0], None])
    assert (ids[0, 4:] == -1).all() and np.isneginf(sc[0, 4:]).all() and (ids[1, 5:] == -1).all()
    assert set(ids[0, :4]) == {1, 2, 3, 4}


def test_hnsw_auto_above_threshold_and_recall_on_clustered_vectors():
    x, q = _clustered(4000)
    index = build_index(np.arange(4000), x, "auto", exact_max_items=1000, ef_search=64)
    assert index.kind == "hnsw"
    got, sc = index.search(q, 50)
    want, _ = exact_topk(q, x, 50)
    assert recall_at_k(got, want) >= 0.95
    np.testing.assert_allclose(sc[:, 0], (x[got[:, 0]] * q).sum(1), rtol=1e-4)  # scores are true inner products


def test_positions_and_bad_input():
    index = build_index(np.array([10, 3, 7]), np.eye(3, dtype=np.float32), "exact")
    assert index.positions([7, 10, 5]).tolist() == [2, 0, -1]
    with pytest.raises(ValueError, match="item_id=3"):
        build_index(np.array([10, 3]), np.array([[0, 1], [np.nan, 0]], np.float32))
    with pytest.raises(ValueError, match="unique"):
        build_index(np.array([1, 1]), np.zeros((2, 2), np.float32))
