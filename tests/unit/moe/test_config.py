"""MoE config: validation names the field, defaults are filled in, the config and weights
round-trip through a weights_only checkpoint; parameter counts; meta materialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matris.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from matris.cli import main as cli_main
from matris.config import MatrisConfigError, ModelConfig, MoEConfig, preset
from matris.meta import is_meta, materialize_
from matris.model import MatRIS
from matris.moe import count_parameters
from matris.nn.moe import moe_layers
from matris.outputs import compute_outputs
from matris.testing import graph_of, random_model


@pytest.mark.parametrize(("moe", "match"), [
    ({"num_experts": 0}, "moe.num_experts"), ({"top_k": 5, "num_experts": 4}, "moe.top_k"),
    ({"router": "geometry"}, "moe.router"), ({"roles": ["line_attention.msg"]}, "moe.roles"),
    ({"capacity_factor": -1.0}, "moe.capacity_factor"), ({"overflow": "drop"}, "moe.overflow"),
    ({"capacity_factor": 1.0, "shared_expert": False}, "shared_expert"),
    ({"expert_count": 3}, "unknown moe config field"), ({"shared_expert": 1}, "shared_expert")])
def test_moe_validation_names_field(moe, match):
    with pytest.raises(MatrisConfigError, match=match):
        preset("tiny", moe=moe)


def test_moe_defaults_and_roundtrip():
    cfg = preset("tiny", moe={"num_experts": 3, "top_k": 1})
    assert cfg.moe == {**MoEConfig(num_experts=3, top_k=1).to_dict()}
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.moe_config.roles[0] == "line_attention.message"
    assert preset("tiny").moe_config is None


def test_checkpoint_roundtrip(tmp_path):
    model = random_model(preset("tiny-moe", moe={"num_experts": 3, "top_k": 1,
                                                 "roles": ["atom_attention.update",
                                                           "line_refine.bond"]}), seed=2)
    save_checkpoint(tmp_path / "m.pt", model)
    assert read_checkpoint(tmp_path / "m.pt")["config"]["moe"]["num_experts"] == 3
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config and len(moe_layers(loaded)) == 4
    crystal = (np.array([14, 8, 8, 1]), np.random.default_rng(0).random((4, 3)) * 4.0,
               np.diag([4.0, 4.5, 4.2]), np.ones(3, bool))
    g = graph_of(model, crystal)
    model.eval()
    a, b = compute_outputs(model, g, stress=True), compute_outputs(loaded, g, stress=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("moe", [{"num_experts": 5, "top_k": 2},
                                 {"num_experts": 3, "top_k": 1, "shared_expert": False,
                                  "router": "features", "roles": ["atom_refine.bond"]}])
def test_count_without_building_equals_instantiation(moe):
    cfg = preset("tiny", moe=moe)
    assert count_parameters(cfg) == MatRIS(cfg).parameter_breakdown()


def test_counts_and_cli(capsys):
    model = MatRIS(preset("tiny-moe"))
    per_expert = moe_layers(model)[0].expert_parameters()
    total = sum(p.numel() for p in model.parameters())
    # 12 MoE layers with 4 experts each, top-2: two experts per layer are inactive.
    inactive = sum((len(m.experts) - 2) * m.expert_parameters() for m in moe_layers(model))
    assert model.active_parameters() == total - inactive and per_expert > 0
    assert cli_main(["count", "moe-1b"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.strip().startswith("total"))
    assert 0.95e9 < int(line.split()[-1].replace(",", "")) < 1.1e9
    assert "active (per row)" in out and "120 experts, top-2 + shared expert" in out


def test_meta_materialise_matches_constructor_buffers():
    cfg = preset("tiny-moe")
    with torch.device("meta"):
        model = MatRIS(cfg)
    assert is_meta(model)
    stage = model.stages([1])[1]
    materialize_(stage.blocks, torch.float64)  # only what one rank needs
    assert not is_meta(stage.blocks) and is_meta(model.embedding)
    materialize_(model, torch.float64)
    ref = MatRIS(cfg).double()
    for (n, a), (m, b) in zip(model.named_buffers(), ref.named_buffers(), strict=True):
        assert n == m and torch.equal(a, b), n
    for (n, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        assert a.shape == b.shape and torch.isfinite(a).all(), n
        if n.endswith(("gamma.atom", "norm_core.weight")):
            assert torch.equal(a, b), n  # deterministic inits (ones)
