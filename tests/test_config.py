"""The typed config: defaults, YAML, environment and dotted overrides, field-naming errors."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from argusrank.platform.config import ArgusrankConfig, load_config


def test_defaults_are_absolute_and_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.paths.home.is_absolute()
    assert cfg.tracking_uri == f"sqlite:///{tmp_path.resolve() / '.argusrank' / 'mlflow.db'}"


def test_yaml_env_and_overrides_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 7\ntrain: {epochs: 4, lr: 0.01}\n")
    cfg = load_config(f, ["train.epochs=9", "model.preset=s"], env={"ARGUSRANK_HOME": str(tmp_path / "h")})
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr, cfg.model.preset) == (7, 9, 0.01, "s")
    assert cfg.paths.home == (tmp_path / "h").resolve()


def test_redis_env_selects_redis_store():
    cfg = load_config(env={"ARGUSRANK_REDIS_URL": "127.0.0.1:6390"})
    assert cfg.features.online_store == "redis" and cfg.features.redis_url == "127.0.0.1:6390"


@pytest.mark.parametrize("override, field", [("train.epochs=0", "train.epochs"), ("train.bogus=1", "train.bogus"),
                                             ("model.kind=bert", "model.kind")])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ValidationError) as e:
        load_config(overrides=[override], env={})
    assert field in str(e.value)


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_yaml_roundtrip():
    cfg = load_config(env={})
    import yaml
    again = ArgusrankConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_stage_schedule_reads_each_stage_from_its_own_section():
    from argusrank.platform.config import load_config

    cfg = load_config(env={}, overrides=["train.epochs=7", "train.patience_steps=40", "finetune.epochs=4",
                                         "finetune.lr=0.01"])
    pre, fine = cfg.stage_schedule("pretrain"), cfg.stage_schedule("finetune")
    assert (pre.section, pre.epochs, pre.patience_steps) == ("train", 7, 40)
    assert (fine.section, fine.epochs, fine.lr, fine.patience_steps) == ("finetune", 4, 0.01, 0)
    with pytest.raises(ValueError, match="stage"):
        cfg.stage_schedule("export")
