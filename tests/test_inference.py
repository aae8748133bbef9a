"""The exported vectors: the NIP query of the serving context equals the model's own query at the next event."""
import numpy as np
import pytest
import torch

from argusrank.features.histories import build_histories
from argusrank.features.schema import SURFACE_CODE
from argusrank.features.synth import generate
from argusrank.models.argus import ArgusModel
from argusrank.models.config import preset
from argusrank.platform.config import load_config
from argusrank.platform.inference import item_vectors, user_vectors, window_arrays


def _feed_events(encoder: str):
    """A tiny model with spread-out random weights and up to 8 feed-recommendation events j (not a user's first):
    (model, histories, j, window start = at most 20 events before j)."""
    cfg = load_config(env={}, overrides={"data.synth.n_users": 30, "data.synth.n_items": 50, "data.synth.days": 5})
    hist = build_histories(generate(cfg.data.synth, seed=0).events)
    torch.manual_seed(0)
    model = ArgusModel(preset("tiny", encoder=encoder)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    feed = (hist.surface == SURFACE_CODE["feed"]) & ~hist.is_organic.astype(bool)
    j = np.flatnonzero(feed & (np.arange(hist.n_events) > hist.offsets[hist.user_index()]))[:8]
    start = np.maximum(hist.offsets[hist.user_index()[j]], j - 20)
    return model, hist, j, start


@pytest.mark.parametrize("encoder", ["simplified", "full"])
def test_nip_query_of_the_serving_slot_equals_the_query_at_a_real_next_event(encoder):
    # users whose event j (j >= 1) is a feed recommendation: the query at j sees events < j and j's context only
    model, hist, j, start = _feed_events(encoder)
    full = window_arrays(hist, start, j - start + 1, hist.timestamp[j], "tower", 64)  # the real event j included
    from argusrank.models.batch import SequenceBatch

    with torch.no_grad():
        want = model.nip_queries(SequenceBatch.from_numpy(full))[torch.arange(len(j)), torch.as_tensor(j - start)]
    got = user_vectors(model, window_arrays(hist, start, j - start, hist.timestamp[j], "nip", 64), "nip")
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    assert item_vectors(model, hist.item_id[j], "nip").shape == (len(j), got.shape[1])


def test_a_full_window_gives_up_its_oldest_event_for_the_serving_slot():
    cfg = load_config(env={}, overrides={"data.synth.n_users": 5, "data.synth.n_items": 20, "data.synth.days": 5})
    hist = build_histories(generate(cfg.data.synth, seed=1).events)
    arr = window_arrays(hist, hist.offsets[:1], np.array([8]), np.array([10**9]), "nip", max_len=8)
    assert arr["valid"].shape == (1, 8) and arr["valid"].all()
    assert arr["item_id"][0, 0] == hist.item_id[hist.offsets[0] + 1] and arr["timestamp"][0, -1] == 10**9


@pytest.mark.parametrize("encoder", ["simplified", "hstu"])
def test_fp_features_of_the_exported_parts_equal_the_fp_head_at_a_real_next_event(encoder):
    """user part (serving slot) + item part + the output layer, in numpy (features/argus_features.py) = the
    model's own FP predictions for event j from events < j, j's context and j's item."""
    from argusrank.features.argus_features import FP_FEATURES, FP_TARGETS, argus_features
    from argusrank.models.batch import SequenceBatch

    model, hist, j, start = _feed_events(encoder)
    full = window_arrays(hist, start, j - start + 1, hist.timestamp[j], "tower", 64)
    with torch.no_grad():
        pred = model.fp_predictions(SequenceBatch.from_numpy(full))
    at = (torch.arange(len(j)), torch.as_tensor(j - start))
    users = user_vectors(model, window_arrays(hist, start, j - start, hist.timestamp[j], "fp", 64), "fp")
    items = item_vectors(model, hist.item_id[j], "fp")
    w, b = model.fp.output_layer()
    got = argus_features(list(FP_FEATURES), {"user_fp": users, "item_fp": items}, {"weight": w.numpy(), "bias": b.numpy()})
    for name, target in FP_FEATURES.items():
        np.testing.assert_allclose(got[name], pred[target][at].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert FP_TARGETS == tuple(pred)  # the head's row order


def test_the_full_encoder_refuses_fp_parts():
    model = ArgusModel(preset("tiny", encoder="full")).eval()
    assert not model.fp_separable()
    with pytest.raises(ValueError, match="one token per event"):
        model.fp_user_parts(None)


@pytest.mark.parametrize("encoder", ["simplified", "hstu", "full"])
def test_snapshot_vectors_of_one_pass_per_window_start_equal_window_by_window(encoder):
    """``snapshot_user_vectors`` (one pass per distinct window start, every space from it) equals the reference:
    each (user, snapshot) window run alone through ``window_arrays`` + ``user_vectors``, space by space. Daily
    snapshots over users with histories longer than ``max_len`` (windows that slide and are full, the NIP / FP slot
    taking the last position) and shorter (prefixes of one pass), spaces split over two networks (the fp
    space from another one, as with ``features.fp_from=parent``)."""
    from argusrank.platform.export import user_windows
    from argusrank.platform.inference import snapshot_user_vectors

    cfg = load_config(env={}, overrides={"data.synth.n_users": 40, "data.synth.n_items": 60, "data.synth.days": 12})
    hist = build_histories(generate(cfg.data.synth, seed=2).events)
    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        net = ArgusModel(preset("tiny", encoder=encoder, max_len=24)).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0.0, 0.3)
        nets.append(net)
    t = hist.timestamp
    snaps = np.linspace(np.quantile(t, 0.2), t.max() + 1, 7).astype(np.int64)
    w = user_windows(hist, snaps, 3600, 24)
    start, length, as_of = (w[c].to_numpy() for c in ("start", "length", "as_of"))
    assert (length == 24).mean() > 0.2 and (length < 24).mean() > 0.2  # both kinds of windows
    spaces = ["tower", "nip"] + (["fp"] if encoder != "full" else [])
    models = {s: nets[s == "fp"] for s in spaces}
    got = snapshot_user_vectors(models, hist, start, length, as_of, batch_size=16)
    assert (nets[0].one_pass_prefixes(), set(got)) == (encoder != "full", set(spaces))
    for space in spaces:
        ref = user_vectors(models[space], window_arrays(hist, start, length, as_of, space, 24), space)
        assert got[space].shape == ref.shape and np.abs(ref).max() > 0.1
        np.testing.assert_allclose(got[space], ref, rtol=1e-4, atol=1e-5, err_msg=space)
    empty = snapshot_user_vectors(models, hist, start[:0], length[:0], as_of[:0], batch_size=16)
    assert all(empty[s].shape == (0, got[s].shape[1]) for s in spaces)
