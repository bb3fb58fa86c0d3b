"""Checks that need the teacher (CHGNet, the optional `teacher` extra); skipped without it.

* the teacher's force and stress conventions (finite differences of its energy);
* a sample of the shipped labels equals what the installed teacher predicts;
* labelled generation is byte-deterministic, including after an interrupted run.
"""

from __future__ import annotations

import itertools

import ase.io
import numpy as np
import pytest
from ase.build import bulk

try:
    import chgnet  # noqa: F401
except ImportError:
    pytest.skip("chgnet is not installed (teacher extra: pip install -e '.[teacher]'); "
                "teacher-label checks skipped", allow_module_level=True)

from matris.datasets.embedded import embedded_metadata, iter_embedded_atoms
from matris.datasets.synth.config import SynthConfig
from matris.datasets.synth.generate import generate
from matris.datasets.synth.teacher import load_teacher


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("chgnet", "0.3.0", threads=1)


def _strained_cu():
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)
    atoms.positions += np.random.default_rng(0).normal(0, 0.04, atoms.positions.shape)
    eps = np.array([[0.02, 0.004, 0.0], [0.004, -0.01, 0.006], [0.0, 0.006, 0.015]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def test_stress_is_volume_normalised_strain_derivative_ase_sign(teacher):
    """σ_ij = (1/V) ∂E/∂ε_ij in eV/Å³ (positive = tensile), by central differences."""
    atoms = _strained_cu()
    stress = teacher.label(atoms).stress
    h, volume = 2e-3, atoms.get_volume()
    fd = np.zeros((3, 3))
    for i, j in itertools.product(range(3), repeat=2):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] += sign * h / 2
            eps[j, i] += sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            energies.append(teacher.label(strained).energy)
        fd[i, j] = (energies[0] - energies[1]) / (2 * h) / volume
    # float32 energies: ~1e-5 eV noise / (2h V) ≈ 1e-4 eV/Å³ of finite-difference noise
    np.testing.assert_allclose(stress, fd, atol=2e-4)
    assert np.abs(stress).max() > 1e-3  # the strained cell is really stressed


def test_forces_are_minus_energy_gradient(teacher):
    atoms = _strained_cu()
    forces = teacher.label(atoms).forces
    dx = 2e-3
    for a, c in [(0, 0), (1, 2), (3, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, c] += sign * dx
            energies.append(teacher.label(moved).energy)
        assert -(energies[0] - energies[1]) / (2 * dx) == pytest.approx(forces[a, c], abs=5e-3)


def test_shipped_sample_matches_teacher(teacher):
    meta = embedded_metadata()
    if meta["teacher"]["package_version"] != teacher.package_version:
        pytest.skip(f"installed chgnet {teacher.package_version} != "
                    f"{meta['teacher']['package_version']} that labelled the file")
    n = meta["stats"]["frames"]
    wanted = {int(k) for k in np.linspace(0, n - 1, 5)}  # first, last and three between
    checked = 0
    for index, atoms in enumerate(iter_embedded_atoms()):
        if index not in wanted:
            continue
        ref = teacher.label(atoms)
        nat = len(atoms)
        assert atoms.info["task"] == teacher.task_tag
        # Re-labelling the *stored* structure differs from the stored labels because the
        # coordinates were rounded to 1e-6 Å (stiff bonds, ~300 eV/Å², move forces by
        # ~3e-4 eV/Å) and CHGNet runs in float32. Over 40 frames spread through the file the
        # largest differences were 1.3e-6 eV/atom, 3.1e-4 eV/Å, 3.2e-6 eV/Å³ and 5e-5 μB;
        # the tolerances are ~3x those. A wrong teacher/version/unit is off by >1e-2.
        assert atoms.get_potential_energy() / nat == pytest.approx(ref.energy / nat, abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-3)
        np.testing.assert_allclose(atoms.get_stress(voigt=False), ref.stress, atol=1e-5)
        np.testing.assert_allclose(atoms.get_magnetic_moments(), ref.magmoms, atol=1e-3)
        checked += 1
    assert checked == len(wanted)


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_labelled_generation_is_deterministic_and_resumable(tmp_path, teacher):
    cfg = SynthConfig(seed=11, frames=12)
    out_a, out_b = tmp_path / "a.extxyz.gz", tmp_path / "b.extxyz.gz"
    meta = generate(cfg, out_a, tmp_path / "wa", teacher, log=lambda _: None)
    assert meta["stats"]["frames"] >= 10  # a unit may fall short after rejects
    assert len(list(ase.io.iread(out_a, index=":"))) == meta["stats"]["frames"]

    # Crash after the third unit, then resume: same bytes as the uninterrupted run.
    def crash(msg: str) -> None:
        if msg.startswith("[3/"):
            raise _Interrupt
    with pytest.raises(_Interrupt):
        generate(cfg, out_b, tmp_path / "wb", teacher, log=crash)
    assert not out_b.exists()
    messages: list[str] = []
    generate(cfg, out_b, tmp_path / "wb", teacher, log=messages.append)
    assert any(m.startswith("resuming after unit 3/") for m in messages)
    assert out_a.read_bytes() == out_b.read_bytes()
