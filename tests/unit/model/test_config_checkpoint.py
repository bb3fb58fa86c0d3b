"""ModelConfig validation and presets, parameter counts, checkpoints, CLI, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matris.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from matris.cli import main as cli_main
from matris.config import OFFICIAL_PARAMS, MatrisConfigError, ModelConfig, preset
from matris.graph import build_graph
from matris.model import MatRIS
from matris.outputs import compute_outputs
from matris.testing import random_model


@pytest.mark.parametrize(("field", "value", "match"), [
    ("num_blocks", 0, "num_blocks"), ("width", 2.5, "width"), ("norm", "batch", "layernorm"),
    ("three_body_cutoff", 7.0, "three_body_cutoff"), ("num_angular", 6, "odd"),
    ("cutoff", -1.0, "cutoff"), ("max_z", 200, "max_z"), ("energy_head", (0,), "energy_head"),
    ("attention_kappa", 0.0, "attention_kappa"), ("magmom_head", "yes", "magmom_head")])
def test_config_validation_names_field(field, value, match):
    with pytest.raises(MatrisConfigError, match=match):
        ModelConfig(**{field: value})


def test_config_roundtrip_and_presets():
    cfg = preset("tiny", width=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["energy_head"], list)
    with pytest.raises(MatrisConfigError, match="unknown model config field"):
        ModelConfig.from_dict({"widht": 3})
    with pytest.raises(MatrisConfigError, match="allowed"):
        preset("huge")


@pytest.mark.parametrize("name", ["4m", "10m"])
def test_parameter_counts_within_two_percent(name):
    total = MatRIS(name).parameter_breakdown()["total"]
    assert abs(total - OFFICIAL_PARAMS[name]) / OFFICIAL_PARAMS[name] < 0.02
    # Per-block sizes of the official model (research note, section 5).
    block = MatRIS(preset(name, num_blocks=1)).blocks[0]
    sizes = [sum(p.numel() for p in getattr(block, m).parameters())
             for m in ("line_attention", "atom_attention", "line_refine", "atom_refine")]
    assert sizes == [297_216, 297_216, 231_552, 198_784]


def test_cli_count(capsys):
    assert cli_main(["count", "10m"]) == 0
    out = capsys.readouterr().out
    assert "10,443,394" in out and "10,443,505" in out
    assert cli_main(["count", "nope"]) == 2


def _graph(model):
    rng = np.random.default_rng(0)
    cell = np.diag([4.0, 4.5, 4.2])
    g = build_graph([14, 8, 8, 1], rng.random((4, 3)) @ cell, cell, True,
                    model.config.cutoff, model.config.three_body_cutoff)
    return g.to(dtype=next(model.parameters()).dtype)


def test_checkpoint_roundtrip(tmp_path):
    model = random_model(preset("tiny"), seed=4)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, extra={"step": 12, "tags": ["a", "b"]})
    assert not list(path.parent.glob(".*.tmp"))  # no leftover temporary file
    loaded = load_checkpoint(path)
    assert loaded.checkpoint_extra == {"step": 12, "tags": ["a", "b"]}
    assert next(loaded.parameters()).dtype == torch.float64
    g = _graph(model)
    a = compute_outputs(model, g, stress=True)
    b = compute_outputs(loaded, g, stress=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["config"] == model.config.to_dict()


def test_checkpoint_errors(tmp_path):
    model = MatRIS("tiny")
    with pytest.raises(CheckpointError, match="plain data"):
        save_checkpoint(tmp_path / "x.pt", model, extra={"obj": object()})
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_checkpoint(path)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(path)


def test_reference_energies():
    model = MatRIS("tiny")
    ref = np.arange(119, dtype=float) * -0.1
    model.set_reference_energies(ref)
    assert torch.allclose(model.reference_energies, torch.tensor(ref, dtype=torch.float32))
    assert not model.reference_energies.requires_grad
    assert "readout.reference_energies" in model.state_dict()
    with pytest.raises(ValueError, match="length 119"):
        model.set_reference_energies(np.zeros(94))


def test_float32_and_float64_agree_and_train_step():
    m64 = random_model(preset("tiny"), seed=2)
    m32 = random_model(preset("tiny"), seed=2).float()
    g = _graph(m64)
    a = compute_outputs(m64, g, stress=True)
    b = compute_outputs(m32, g.to(dtype=torch.float32), stress=True)
    assert b["forces"].dtype == torch.float32
    torch.testing.assert_close(b["energy"].double(), a["energy"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b["forces"].double(), a["forces"], rtol=1e-3, atol=1e-4)
    # A force-trained step: gradients reach every trainable parameter through
    # create_graph, except the last block's bond/angle updates that nothing reads.
    out = compute_outputs(m32, g.to(dtype=torch.float32), stress=True, create_graph=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum() \
        + out["stress"].square().sum() + out["magmoms"].sum()
    loss.backward()
    missing = {n for n, p in m32.named_parameters() if p.grad is None}
    unused = {f"blocks.1.{n}" for n in (
        "line_refine.angle_ffn.lin1.weight", "line_refine.angle_ffn.lin2.weight",
        "line_refine.gamma.angle", "atom_refine.bond_ffn.lin1.weight",
        "atom_refine.bond_ffn.lin2.weight", "atom_refine.gamma.bond")}
    assert missing == unused


def test_dtype_and_cutoff_mismatch_errors():
    model = MatRIS("tiny")
    g = _graph(model.double()).to(dtype=torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        model(g)
    model.float()
    g2 = build_graph([1, 1], [[0, 0, 0], [0.7, 0, 0]], None, False, 6.0, 3.5)
    with pytest.raises(ValueError, match="cutoffs"):
        model(g2.to(dtype=torch.float32))
    g3 = build_graph([100], [[0, 0, 0]], None, False, 5.0, 3.5).to(dtype=torch.float32)
    with pytest.raises(ValueError, match="Z=100"):
        model(g3)


def test_stress_of_molecule_is_nan_but_gradients_stay_finite():
    """A molecule next to a crystal in one batch: its stress row is NaN, and a loss that
    selects the crystal's stress only has finite parameter gradients."""
    from matris.graph import collate

    model = random_model(preset("tiny"), seed=5)
    crystal = _graph(model)
    molecule = build_graph([29, 29], [[0, 0, 0], [2.4, 0, 0]], None, False, 5.0, 3.5)
    batch = collate([crystal, molecule.to(dtype=torch.float64)])
    out = compute_outputs(model, batch, stress=True, create_graph=True)
    assert torch.isnan(out["stress"][1]).all() and torch.isfinite(out["stress"][0]).all()
    loss = out["stress"][0].square().sum() + out["forces"].square().sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
