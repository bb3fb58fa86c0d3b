"""Strict config loading: unknown keys and bad values name the dotted key."""

from __future__ import annotations

import pytest

from matris.train.config import (
    ConfigError,
    TrainConfig,
    from_yaml_text,
    load_config,
    to_yaml,
)

TINY = "configs/tiny.yaml"


def test_defaults_and_overrides_with_yaml_typed_values():
    cfg = load_config(None, ["optim.lr=3e-4", "parallel.dp=2", "data.val_split=null",
                             "optim.betas=[0.8, 0.99]", "ema.enabled=false",
                             "model.overrides.hidden=64"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.parallel.dp == 2
    assert cfg.data.val_split is None
    assert cfg.optim.betas == [0.8, 0.99]
    assert cfg.ema.enabled is False
    assert cfg.model.overrides == {"hidden": 64}


def test_resolved_yaml_round_trips():
    cfg = load_config(None, ["train.dtype=float64", "loss.kind=huber", "train.steps=7"])
    assert from_yaml_text(to_yaml(cfg)) == cfg
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize(("override", "fragments"), [
    ("optim.lrr=1", ["optim.lrr", "did you mean optim.lr", "weight_decay"]),
    ("parallel.schedule=foo", ["parallel.schedule", "gpipe4", "1f1b4", "hanayo4", "symfold",
                               "wavek"]),
    ("train.dtype=fp16", ["train.dtype", "float32", "float64", "bf16"]),
    ("loss.kind=l2", ["loss.kind", "mse", "mae", "huber"]),
    ("train.max_atoms=many", ["train.max_atoms", "integer"]),
    ("train.max_atoms=0", ["train.max_atoms", ">= 1"]),
    ("loss.weights.forces=-1", ["loss.weights.forces", ">= 0"]),
    ("ema.decay=1.5", ["ema.decay", "[0, 1)"]),
    ("train.steps=null", ["train.steps", "train.epochs"]),
    ("parallel.pp=0", ["parallel.pp", ">= 1"]),
    ("parallel.stage_cuts=[3]", ["parallel.stage_cuts", "pp - 1"]),
    ("unknown_section.x=1", ["unknown_section", "allowed keys"]),
    ("train.dtype=bf16", []),  # fine with device auto: checked at device selection
    ("log.every=true", ["log.every", "integer"]),
])
def test_bad_values_name_the_key(override, fragments):
    if not fragments:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_bf16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match=r"train\.dtype"):
        load_config(None, ["train.dtype=bf16", "train.device=cpu"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\n  warmup: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.warmup'.*warmup_steps"):
        load_config(path)


def test_missing_file_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["optim.lr"])


def test_shipped_tiny_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / TINY
    cfg = load_config(path)
    assert cfg.model.preset == "tiny" and cfg.train.device == "cpu"
