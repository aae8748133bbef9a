"""Merging candidate sources equals a slow per-request loop: quotas, de-duplication, order."""
import numpy as np

from argusrank.models.candidate_merge import merge_candidates


def _slow(lists, quotas):
    out = []
    for b in range(lists[0].shape[0]):
        row, seen = [], set()
        for cand, q in zip(lists, quotas):
            took = 0
            for x in cand[b].tolist():
                if took == q:
                    break
                if x >= 0 and x not in seen:
                    row.append(x)
                    seen.add(x)
                    took += 1
        out.append(row + [-1] * (sum(quotas) - len(row)))
    return np.array(out)


def test_merge_equals_a_slow_loop():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n_items, B = int(rng.integers(5, 40)), int(rng.integers(1, 6))
        lists = [np.where(rng.random((B, n)) < 0.15, -1, rng.integers(0, n_items, (B, n)))
                 for n in rng.integers(1, 12, int(rng.integers(1, 4)))]
        quotas = [int(q) for q in rng.integers(0, 8, len(lists))]
        np.testing.assert_array_equal(merge_candidates(lists, quotas, n_items), _slow(lists, quotas), err_msg=str(trial))
