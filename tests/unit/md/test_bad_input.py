"""Bad input gives clear errors naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from matris.checkpoint import CheckpointError
from matris.md import MatRISCalculator, MatrisInputError

from .conftest import si_cell, skewed_oxide, smooth_model


@pytest.fixture(scope="module")
def calc(model):
    return MatRISCalculator(model, dtype="float64")


def test_element_beyond_embedding(calc):
    atoms = si_cell(1)
    atoms.numbers[3] = 98  # Cf; the tiny preset's table covers Z = 1..94
    with pytest.raises(MatrisInputError, match=r"Cf \(Z=98\).*Z=1\.\.94"):
        calc.get_potential_energy(atoms)


def test_elements_unseen_in_training():
    model = smooth_model()
    ref = np.zeros(119)
    ref[[8, 14]] = [-4.9, -5.4]  # a model "trained" on Si and O only
    model.set_reference_energies(ref)
    oxide = skewed_oxide()  # Mg, Zn, O
    strict = MatRISCalculator(model, dtype="float64")
    with pytest.raises(MatrisInputError, match=r"Mg \(Z=12\), Zn \(Z=30\).*training data"):
        strict.get_potential_energy(oxide)
    assert np.isfinite(strict.get_potential_energy(si_cell(1)))
    with pytest.warns(UserWarning, match="training data"):
        MatRISCalculator(model, dtype="float64", unseen_elements="warn").get_forces(oxide)
    allowed = MatRISCalculator(model, dtype="float64", unseen_elements="allow")
    assert np.isfinite(allowed.get_potential_energy(oxide))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_positions(calc, value):
    atoms = si_cell(1)
    atoms.positions[5, 2] = value
    with pytest.raises(MatrisInputError, match=r"non-finite.*\[5\]"):
        calc.get_forces(atoms)


def test_singular_cells(calc):
    flat = si_cell(1)
    flat.cell[2] = [0.0, 0.0, 0.0]
    with pytest.raises(MatrisInputError, match="singular cell"):
        calc.get_potential_energy(flat)
    coplanar = si_cell(1)
    coplanar.cell[2] = coplanar.cell[0] + coplanar.cell[1]
    with pytest.raises(MatrisInputError, match="singular cell"):
        calc.get_potential_energy(coplanar)
    # the same zero vector is fine along a non-periodic axis
    flat.pbc = [True, True, False]
    assert np.isfinite(calc.get_potential_energy(flat))


def test_empty_atoms(calc):
    with pytest.raises(MatrisInputError, match="empty structure"):
        calc.get_potential_energy(Atoms(cell=np.eye(3) * 5, pbc=True))


def test_overlapping_atoms(calc):
    atoms = si_cell(1, rattle=0.0)
    atoms.positions[1] = atoms.positions[0]
    with pytest.raises(MatrisInputError, match="atoms overlap"):
        calc.get_potential_energy(atoms)


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        MatRISCalculator(model, dtype="float16")
    with pytest.raises(ValueError, match="skin"):
        MatRISCalculator(model, skin=-1.0)
    with pytest.raises(ValueError, match="unseen_elements"):
        MatRISCalculator(model, unseen_elements="ignore")
    with pytest.raises(FileNotFoundError, match="not found"):
        MatRISCalculator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        MatRISCalculator(junk)
    with pytest.raises(TypeError, match="checkpoint path or a matris"):
        MatRISCalculator(object())
