"""ArgusConfig presets, overrides, (de)serialization and the SASRec ablation config."""
import pytest
import torch

from argusrank.models.argus import ArgusModel
from argusrank.models.config import PRESETS, ArgusConfig, preset, sasrec_config


def test_preset_overrides_and_roundtrip():
    cfg = preset("tiny", encoder="hstu", dropout=0.1, fp_weights={"liked": 2.0})
    assert (cfg.encoder, cfg.dropout, cfg.d_model) == ("hstu", 0.1, PRESETS["tiny"].d_model)
    assert cfg.fp_weights == {"played_ratio": 0.0, "liked": 2.0, "disliked": 0.0, "skip": 0.0}
    assert ArgusConfig.from_dict(cfg.to_dict()) == cfg
    assert PRESETS["tiny"].encoder == "simplified"  # presets are not mutated


@pytest.mark.parametrize("call, word", [(lambda: preset("huge"), "huge"), (lambda: preset("xs", bogus=1), "bogus"),
                                        (lambda: preset("xs", encoder="rnn"), "encoder"),
                                        (lambda: preset("xs", n_heads=3), "d_model"),
                                        (lambda: preset("xs", fp_weights={"clicks": 1.0}), "clicks")])
def test_bad_names_raise_value_error_naming_them(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_sasrec_is_same_sizes_without_context_feedback_or_fp():
    cfg = preset("tiny")
    s = sasrec_config(cfg)
    assert (s.d_model, s.n_layers, s.encoder) == (cfg.d_model, cfg.n_layers, cfg.encoder)
    assert not s.use_context and not s.use_feedback and s.positives_only
    m = ArgusModel(s)
    assert m.fp is None


def test_preset_sizes_span_3m_to_1b_encoder_parameters():
    counts = {}
    for name in ("xs", "s", "m", "l", "xl"):
        with torch.device("meta"):
            counts[name] = ArgusModel(preset(name)).num_parameters()
    assert 2.5e6 < counts["xs"] < 4e6 and 0.95e9 < counts["xl"] < 1.1e9
    assert list(counts.values()) == sorted(counts.values())
