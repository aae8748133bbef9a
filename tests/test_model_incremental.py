"""Incremental user vectors (models/incremental.py) equal model.user_vectors of a full causal pass."""
import numpy as np
import pytest
import torch

from argusrank.models import incremental as inc
from argusrank.models.argus import ArgusModel
from argusrank.models.batch import SequenceBatch, random_sequence_arrays
from argusrank.models.config import preset, sasrec_config

TOL = 1e-4


def _model(name="tiny", **kw):
    torch.manual_seed(0)
    m = ArgusModel(preset(name, **kw)).eval()
    with torch.no_grad():  # larger weights than init so vectors differ visibly between histories
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


def _history(L, seed=1):
    a = random_sequence_arrays(1, L, seed=seed, min_len=L)
    return {k: v[0] for k, v in a.items()}


def _cut(h, lo, hi):
    return {k: v[lo:hi] for k, v in h.items()}


def _event(h, i):
    return {k: h[k][i].item() for k in inc.EVENT_FIELDS}


def _full(m, rows):
    """model.user_vectors of one full pass over each row (dict of 1-D arrays)."""
    L = max(len(r["timestamp"]) for r in rows)
    pad = {"item_id": 0, "timestamp": 0, "is_organic": False, "surface": 0, "played_ratio": np.nan,
           "liked": np.nan, "disliked": np.nan, "valid": False, "target_mask": False}
    a = {k: np.stack([np.concatenate([r[k], np.full(L - len(r[k]), pad[k], r[k].dtype)]) for r in rows])
         for k in pad}
    with torch.no_grad():
        return m.user_vectors(SequenceBatch.from_numpy(a)).numpy()


CASES = [("simplified", {}), ("simplified", {"tower_pool": True}),
         ("simplified", {"positions": "rotary", "tower_pool": True}), ("simplified", {"positions": "none"}),
         ("full", {}), ("full", {"tower_pool": True}), ("full", {"positions": "rotary"}),
         ("hstu", {}), ("hstu", {"tower_pool": True})]


@pytest.mark.parametrize("encoder, kw", CASES, ids=[f"{e}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                                                      for e, kw in CASES])
def test_init_plus_appends_equals_full_pass(encoder, kw):
    m = _model(encoder=encoder, **kw)
    h = _history(40)
    s = inc.init_state(m, _cut(h, 0, 25))
    assert np.abs(inc.user_vector(m, s) - _full(m, [_cut(h, 0, 25)])[0]).max() < TOL
    before, got = inc.user_vector(m, s), []
    for i in range(25, 40):
        s = inc.append(m, s, _event(h, i))
        got.append(inc.user_vector(m, s))
    want = _full(m, [_cut(h, 0, i + 1) for i in range(25, 40)])  # one batched full pass per prefix
    assert np.abs(np.stack(got) - want).max() < TOL
    assert s.n_events == 40
    assert np.abs(got[-1] - before).max() > 1e-2  # the comparison can fail


@pytest.mark.parametrize("encoder", ["simplified", "full", "hstu"])
def test_xxs_preset_gate_pool_residual(encoder):
    m = _model("xxs", encoder=encoder)
    assert m.cfg.tower_pool and m.cfg.feedback_gate
    h = _history(30, seed=4)
    s = inc.init_state(m, _cut(h, 0, 10))
    for i in range(10, 30):
        s = inc.append(m, s, _event(h, i))
    assert np.abs(inc.user_vector(m, s) - _full(m, [h])[0]).max() < TOL


@pytest.mark.parametrize("encoder, pool", [("simplified", True), ("full", False), ("hstu", True)])
def test_max_len_fallback_equals_full_pass_over_last_max_len(encoder, pool):
    ml = 12
    m = _model(encoder=encoder, max_len=ml, tower_pool=pool)
    h = _history(30, seed=2)
    s, got, rows = inc.init_state(m, _cut(h, 0, 10)), [], []
    for i in range(10, 30):
        s = inc.append(m, s, _event(h, i))
        lo = max(0, i + 1 - ml)
        assert s.n_events == i + 1 - lo
        got.append(inc.user_vector(m, s))
        rows.append(_cut(h, lo, i + 1))
    assert np.abs(np.stack(got) - _full(m, rows)).max() < TOL
    # a window longer than max_len keeps its last max_len events
    s2 = inc.init_state(m, h)
    assert s2.n_events == ml
    assert np.abs(inc.user_vector(m, s2) - _full(m, [_cut(h, 30 - ml, 30)])[0]).max() < TOL


def test_fallback_keep_restarts_from_a_shorter_window():
    ml, keep = 12, 8
    m = _model(max_len=ml, tower_pool=True)
    h = _history(30, seed=3)
    s, got, rows, n = inc.init_state(m, _cut(h, 0, ml)), [], [], []
    for i in range(ml, 30):
        s = inc.append(m, s, _event(h, i), keep=keep)
        n.append(s.n_events)
        got.append(inc.user_vector(m, s))
        rows.append(_cut(h, i + 1 - s.n_events, i + 1))
    assert n[:6] == [8, 9, 10, 11, 12, 8]  # one full pass per ml - keep + 1 appends
    assert np.abs(np.stack(got) - _full(m, rows)).max() < TOL
    with pytest.raises(ValueError, match="keep"):
        inc.append(m, s, _event(h, 29), keep=ml + 1)


@pytest.mark.parametrize("encoder", ["simplified", "full", "hstu"])
def test_batched_init_and_append(encoder):
    ml = 16
    m = _model(encoder=encoder, max_len=ml, tower_pool=True)
    hs = [_history(20, seed=10 + u) for u in range(5)]
    n0 = [0, 3, 9, 15, 16]  # empty, short, ..., one step below the window, a full window (fallback)
    rows = [_cut(h, 0, n) for h, n in zip(hs, n0)]
    width = max(n0)
    a = random_sequence_arrays(5, width, seed=0, min_len=width)  # right-padded container
    for u, r in enumerate(rows):
        for k in inc.EVENT_FIELDS:
            a[k][u, :len(r[k])] = r[k]
        a["valid"][u] = np.arange(width) < n0[u]
    states = inc.init_states(m, a)
    assert [s.n_events for s in states] == n0
    got = inc.user_vectors(m, states)
    assert np.abs(got - _full(m, rows)).max() < TOL  # the empty row: the learned empty state
    for step in range(3):
        states = inc.append_batch(m, states, [_event(h, n + step) for h, n in zip(hs, n0)])
        want = _full(m, [_cut(h, max(0, n + step + 1 - ml), n + step + 1) for h, n in zip(hs, n0)])
        assert np.abs(inc.user_vectors(m, states) - want).max() < TOL, step


def test_event_conversion_and_errors():
    m = _model()
    h = _history(6)
    s = inc.init_state(m, _cut(h, 0, 5))
    ev = _event(h, 5)
    with pytest.raises(ValueError, match="timestamp"):
        inc.append(m, s, {**ev, "timestamp": int(h["timestamp"][4]) - 1})
    with pytest.raises(ValueError, match="item_id"):
        inc.append(m, s, {k: v for k, v in ev.items() if k != "item_id"})
    assert s.n_events == 5  # a refused event leaves the state as it was
    named = {**ev, "surface": "feed", "liked": None, "disliked": False, "played_ratio": None}
    s = inc.append(m, s, named)
    row = _cut(h, 0, 6)
    row["surface"][5], row["liked"][5], row["disliked"][5], row["played_ratio"][5] = 4, np.nan, 0.0, np.nan
    assert np.abs(inc.user_vector(m, s) - _full(m, [row])[0]).max() < TOL
    assert s.nbytes > 0 and s.last_timestamp == int(h["timestamp"][5])
    with pytest.raises(NotImplementedError, match="positives_only"):
        inc.init_state(ArgusModel(sasrec_config(preset("tiny"))).eval(), h)
    with pytest.raises(ValueError, match="eval"):
        inc.init_state(m.train(), h)


def _nip_reference(m, rows, as_of, surface):
    """The export's NIP query (platform/inference.py): one full pass over each window (its last max_len - 1 events
    when full) + a placeholder event in the serving context at as_of, the query read at that slot."""
    from argusrank.platform.inference import SERVING_ORGANIC

    ml = m.cfg.max_len
    slot = {"item_id": 0, "timestamp": 0, "is_organic": SERVING_ORGANIC, "surface": surface, "played_ratio": np.nan,
            "liked": np.nan, "disliked": np.nan}
    full_rows = []
    for r, t in zip(rows, as_of):
        keep = {k: v[-(ml - 1):] if len(v) >= ml else v for k, v in r.items()}
        full_rows.append({k: np.concatenate([keep[k], np.array([t if k == "timestamp" else slot[k]],
                                                                dtype=r[k].dtype)]) for k in inc.EVENT_FIELDS})
    L = max(len(r["timestamp"]) for r in full_rows)
    pad = {"item_id": 0, "timestamp": 0, "is_organic": False, "surface": 0, "played_ratio": np.nan,
           "liked": np.nan, "disliked": np.nan}
    a = {k: np.stack([np.concatenate([r[k], np.full(L - len(r[k]), pad[k], r[k].dtype)]) for r in full_rows])
         for k in pad}
    n = np.array([len(r["timestamp"]) for r in full_rows])
    a["valid"], a["target_mask"] = np.arange(L)[None, :] < n[:, None], np.zeros((len(n), L), bool)
    with torch.no_grad():
        q = m.nip_queries(SequenceBatch.from_numpy(a))
    return q[torch.arange(len(n)), torch.as_tensor(n - 1)].numpy()


@pytest.mark.parametrize("encoder, kw", [("simplified", {}), ("full", {}), ("full", {"positions": "rotary"}),
                                         ("hstu", {})], ids=["simplified", "full", "full-rotary", "hstu"])
def test_fresh_nip_queries_equal_the_exports_query_and_leave_the_states_alone(encoder, kw):
    from argusrank.models.incremental_nip import nip_queries
    from argusrank.platform.inference import SERVING_SURFACE

    ml = 16
    m = _model(encoder=encoder, max_len=ml, **kw)
    hs = [_history(24, seed=30 + u) for u in range(4)]
    n0 = [3, 9, 15, 16]  # short, longer, one below a full window, a full window (the slot evicts its oldest)
    states = [inc.init_state(m, _cut(h, 0, n)) for h, n in zip(hs, n0)]
    last = np.array([int(h["timestamp"][n - 1]) for h, n in zip(hs, n0)])
    as_of = last + np.array([0, 60, 3600, 86400 * 3])  # right after the last event .. days later
    before = inc.user_vectors(m, states)
    got = nip_queries(m, states, as_of, SERVING_SURFACE)
    want = _nip_reference(m, [_cut(h, 0, n) for h, n in zip(hs, n0)], as_of, SERVING_SURFACE)
    assert got.shape == want.shape and np.abs(got - want).max() < TOL
    assert np.abs(got - nip_queries(m, states, as_of + 7 * 86400, SERVING_SURFACE)).max() > 1e-4  # as_of matters
    # the slot is not kept: vectors and later appends are those of states that never saw it
    assert np.abs(inc.user_vectors(m, states) - before).max() == 0
    states = inc.append_batch(m, states, [_event(h, n) for h, n in zip(hs, n0)])
    want = _full(m, [_cut(h, max(0, n + 1 - ml), n + 1) for h, n in zip(hs, n0)])
    assert np.abs(inc.user_vectors(m, states) - want).max() < TOL
    with pytest.raises(ValueError, match="before the window's last event"):
        nip_queries(m, states[:1], np.array([0]), SERVING_SURFACE)
