"""MatRISCalculator: derivatives against ASE's numeric ones, conventions, loading,
batch evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from matris.md import MatRISCalculator

from .conftest import si_cell, skewed_oxide, smooth_model


def molecule() -> Atoms:
    pos = [[0.0, 0, 0], [1.2, 0.1, 0], [-0.4, 1.1, 0.2], [0.3, -0.6, 1.2], [2.5, 1.1, -0.4]]
    return Atoms(numbers=[6, 1, 1, 8, 7], positions=pos, pbc=False)


def slab() -> Atoms:
    atoms = si_cell(1, rattle=0.1)
    atoms.pbc = [True, True, False]
    return atoms


def test_forces_and_stress_match_ase_numeric_derivatives(model):
    atoms = skewed_oxide()
    atoms.calc = MatRISCalculator(model, dtype="float64")
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    assert np.sqrt((forces**2).mean()) > 0.05  # moderate forces, not a trivial check
    num_f = calculate_numerical_forces(atoms, eps=1e-5)
    num_s = calculate_numerical_stress(atoms, eps=1e-6)
    np.testing.assert_allclose(forces, num_f, atol=1e-7 * max(1.0, np.abs(num_f).max()))
    np.testing.assert_allclose(stress, num_s, atol=1e-7 * np.abs(num_s).max())
    assert np.abs(stress).max() > 1e-4


def test_result_conventions(model):
    atoms = skewed_oxide()
    calc = MatRISCalculator(model, dtype="float64")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert abs(atoms.get_potential_energies().sum() - energy) < 1e-10 * abs(energy)
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and forces.dtype == np.float64
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # translation invariance
    voigt = atoms.get_stress()
    full = atoms.get_stress(voigt=False)
    assert voigt.shape == (6,) and full.shape == (3, 3)
    np.testing.assert_allclose(full, full.T, atol=1e-14)
    np.testing.assert_allclose(voigt, full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])
    magmoms = atoms.get_magnetic_moments()
    assert magmoms.shape == (len(atoms),) and (magmoms >= 0).all()
    assert set(calc.implemented_properties) == {"energy", "free_energy", "energies", "forces",
                                                "stress", "magmoms"}


@pytest.mark.parametrize("make", [molecule, slab])
def test_stress_only_for_3d_periodic_cells(make, model):
    atoms = make()
    atoms.calc = MatRISCalculator(model, dtype="float64")
    assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="periodic along all three"):
        atoms.get_stress()


def test_isolated_atom_has_reference_energy(model):
    atoms = Atoms("Fe", positions=[[0, 0, 0]], pbc=False)
    atoms.calc = MatRISCalculator(model, dtype="float64")
    ref = float(model.reference_energies[26])
    assert atoms.get_potential_energy() == pytest.approx(ref, abs=1e-12)
    assert np.all(atoms.get_forces() == 0)


def test_checkpoint_path_equals_model_object_and_model_untouched(model, checkpoint):
    atoms = skewed_oxide()
    from_obj = MatRISCalculator(model, dtype="float32")
    from_path = MatRISCalculator(checkpoint, dtype="float64")
    # the caller's float64 model is neither converted nor frozen by the calculator
    assert next(model.parameters()).dtype == torch.float64
    assert all(p.requires_grad for p in model.parameters())
    e64 = from_path.get_potential_energy(atoms)
    e32 = from_obj.get_potential_energy(atoms)
    assert from_obj.model.reference_energies.dtype == torch.float32
    assert e64 == pytest.approx(MatRISCalculator(model, dtype="float64")
                                .get_potential_energy(atoms), abs=1e-12)
    assert e32 == pytest.approx(e64, rel=1e-5)
    np.testing.assert_allclose(from_obj.get_forces(atoms), from_path.get_forces(atoms),
                               atol=2e-4 * np.abs(from_path.get_forces(atoms)).max())
    assert from_obj.device == torch.device("cpu")  # "auto" without CUDA


def test_model_without_magmom_head():
    calc = MatRISCalculator(smooth_model(magmom_head=False), dtype="float64")
    assert "magmoms" not in calc.implemented_properties
    atoms = si_cell(1)
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_magnetic_moments()


def test_batch_evaluate_equals_single(model):
    structures = [skewed_oxide(), molecule(), si_cell(1), slab(), skewed_oxide(seed=7)]
    calc = MatRISCalculator(model, dtype="float64")
    # 20 atoms per batch: [12], [5, 8], [8], [12] -> several chunks, mixed periodicity
    batched = calc.batch_evaluate(structures, max_batch_atoms=20)
    assert len(batched) == len(structures)
    for atoms, got in zip(structures, batched):
        single = MatRISCalculator(model, dtype="float64")
        single.calculate(atoms, ["energy", "forces"] + (["stress"] if atoms.pbc.all() else []))
        ref = single.results
        assert set(got) == set(ref)
        assert abs(got["energy"] - ref["energy"]) <= 1e-12 * abs(ref["energy"])
        for key in ("forces", "energies", "magmoms", "stress"):
            if key in ref:
                np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12)
        assert ("stress" in got) == bool(atoms.pbc.all())


def test_batch_evaluate_names_the_bad_structure(model):
    calc = MatRISCalculator(model, dtype="float64")
    bad = si_cell(1)
    bad.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match="structure 1: non-finite"):
        calc.batch_evaluate([si_cell(1), bad])


def test_checkpoint_auto_rule_and_equal_results(model):
    atoms = skewed_oxide()
    on = MatRISCalculator(model, dtype="float64", checkpoint_budget_gb=1e-9)
    off = MatRISCalculator(model, dtype="float64", checkpoint_budget_gb=1e3)
    forced = MatRISCalculator(model, dtype="float64", checkpoint=True)
    graph = on.neighbors.graph(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    assert on._use_checkpoint(graph) and forced._use_checkpoint(graph)
    assert not off._use_checkpoint(graph)
    assert on.get_potential_energy(atoms) == pytest.approx(off.get_potential_energy(atoms),
                                                          rel=1e-12)
    np.testing.assert_allclose(on.get_forces(atoms), off.get_forces(atoms), atol=1e-12)
    with pytest.raises(ValueError, match="checkpoint"):
        MatRISCalculator(model, checkpoint="sometimes")


def test_stress_policy_auto_and_always(model):
    atoms = skewed_oxide()
    calc = MatRISCalculator(model, dtype="float64")
    atoms.calc = calc
    atoms.get_forces()
    assert "stress" not in calc.results  # nobody asked: no strain derivative
    stress = atoms.get_stress()  # recomputed with stress at the same geometry
    assert calc.evaluations == 2
    np.testing.assert_allclose(stress, MatRISCalculator(model, dtype="float64", stress="always")
                               .get_stress(atoms), rtol=1e-12)
    for _ in range(4):  # cell-filter pattern: forces, then stress, at every geometry
        atoms.positions[0] += 0.01
        atoms.get_forces()
        assert "stress" in calc.results  # read at the previous geometry: computed ahead
        atoms.get_stress()
    assert calc.evaluations == 6
    atoms.positions[0] += 0.01
    atoms.get_forces()  # sticky for one geometry after the last read...
    atoms.positions[0] += 0.01
    atoms.get_forces()  # ...then off again
    assert "stress" not in calc.results
    calc.request_stress()
    atoms.positions[0] += 0.01
    atoms.get_forces()
    assert "stress" in calc.results
    with pytest.raises(ValueError, match="stress"):
        MatRISCalculator(model, stress="never")
