"""The ASE calculator evaluates MoE models specialised to the elements it sees: results
identical to the full model, only the experts the elements route to are allocated, new
elements re-specialise ("auto"), a fixed element list refuses others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from matris.config import preset
from matris.md.calculator import MatRISCalculator
from matris.nn.moe import moe_layers
from matris.testing import random_model

E = 8  # experts per layer: with 3 elements (6 bond pairs) some are always unused


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return random_model(preset("tiny-moe", moe={"num_experts": E, "top_k": 2}), seed=4)


def oxide(numbers=(12, 12, 30, 30, 8, 8, 8, 8), seed=0) -> Atoms:
    """A small triclinic cell on a jittered grid (every element pair within 5 Å)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.4, 0.0, 0.0], [0.6, 4.2, 0.0], [0.3, -0.5, 4.6]])
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)]) + 0.5
    frac = (grid + rng.uniform(-0.12, 0.12, grid.shape)) / 2
    return Atoms(numbers=list(numbers), scaled_positions=frac, cell=cell, pbc=True)


def results(calc, atoms, stress=False):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        out["stress"] = atoms.get_stress()
    return out


def held(model) -> list[set[int]]:
    """Global ids of the experts each MoE layer holds."""
    return [{int(g) for g in m.router.expert_ids} for m in moe_layers(model)]


def routed(model) -> list[set[int]]:
    """Global ids of the experts each layer's rows routed to in the last forward."""
    return [{int(g) for g in m.last_experts.unique()} for m in moe_layers(model)]


def assert_same(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_specialised_calculator_is_exact_and_holds_only_used_experts(model):
    atoms = oxide()
    full = MatRISCalculator(model, device="cpu", dtype="float64", moe_elements="all")
    ref = results(full, atoms, stress=True)
    used = routed(full.model)  # what the full model's rows actually used
    calc = MatRISCalculator(model, device="cpu", dtype="float64")
    assert_same(results(calc, atoms, stress=True), ref)
    assert calc.experts.elements == [8, 12, 30]
    # Exactly the routed experts are held (every element and element pair occurs here).
    assert held(calc.model) == used
    n_full = sum(len(m.experts) for m in moe_layers(full.model))
    n_held = sum(len(m.experts) for m in moe_layers(calc.model))
    assert n_full == E * len(moe_layers(model)) and n_held == sum(map(len, used)) < n_full
    expert = moe_layers(model)[0].expert_parameters()
    saved = sum(p.numel() for p in full.model.parameters()) - \
        sum(p.numel() for p in calc.model.parameters())
    assert saved >= (n_full - n_held) * expert > 0
    # The caller's model is untouched.
    assert all(len(m.experts) == E for m in moe_layers(model))


def test_auto_mode_adds_experts_for_new_elements(model):
    calc = MatRISCalculator(model, device="cpu", dtype="float64")
    full = MatRISCalculator(model, device="cpu", dtype="float64", moe_elements="all")
    mg_o = oxide((12, 12, 12, 12, 8, 8, 8, 8), seed=1)
    assert_same(results(calc, mg_o), results(full, mg_o))
    first = calc.model
    assert calc.experts.elements == [8, 12] and calc.experts.specialisations == 1
    zn = oxide(seed=2)
    assert_same(results(calc, zn), results(full, zn))
    assert calc.experts.elements == [8, 12, 30] and calc.experts.specialisations == 2
    assert calc.model is not first
    # A subset of the covered elements reuses the model; batches use the union.
    o_only = oxide((8,) * 8, seed=3)
    assert_same(results(calc, o_only), results(full, o_only))
    assert calc.experts.specialisations == 2
    many = calc.batch_evaluate([mg_o, zn, o_only])
    for a, b in zip(many, full.batch_evaluate([mg_o, zn, o_only])):
        assert_same(a, b)


def test_fixed_elements_refuse_others(model):
    calc = MatRISCalculator(model, device="cpu", dtype="float64", moe_elements=[8, 12])
    assert calc.experts.elements == [8, 12]
    full = MatRISCalculator(model, device="cpu", dtype="float64", moe_elements="all")
    mg_o = oxide((12, 12, 12, 12, 8, 8, 8, 8), seed=1)
    assert_same(results(calc, mg_o), results(full, mg_o))
    with pytest.raises(ValueError, match=r"Z=\[30\]"):
        results(calc, oxide())


def test_dense_model_is_used_whole():
    dense = random_model(preset("tiny"), seed=1)
    calc = MatRISCalculator(dense, device="cpu", dtype="float64")
    results(calc, oxide())
    assert calc.experts.elements is None and calc.experts.specialisations == 0
