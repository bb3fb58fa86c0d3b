"""Fixtures for the md tests: a smooth random-weight `tiny` model in float64 with
moderate forces, its checkpoint, and small periodic structures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from matris.checkpoint import save_checkpoint
from matris.config import preset
from matris.testing import random_model

# random_model's energy head gives forces of ~1e-3 eV/Å on rattled Si; scaling its last
# layer by this factor gives RMS forces of a few tenths of an eV/Å (moderate, like a
# real potential) while keeping the model smooth.
ENERGY_SCALE = 30.0


def smooth_model(seed: int = 1, scale: float = ENERGY_SCALE, **overrides):
    """A float64 `tiny` MatRIS with random (perturbed) weights and scaled energy head."""
    model = random_model(preset("tiny", **overrides), seed=seed)
    with torch.no_grad():
        last = model.readout.energy.layers[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model


@pytest.fixture(scope="session")
def model():
    return smooth_model()


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model)
    return path


def si_cell(repeat: int = 1, rattle: float = 0.05, seed: int = 0) -> Atoms:
    """Cubic diamond Si (8 atoms per repeat³), rattled."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def skewed_oxide(seed: int = 3) -> Atoms:
    """A 12-atom triclinic Mg/Zn/O cell with random positions (no symmetry)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[5.1, 0.0, 0.0], [0.8, 4.9, 0.0], [0.5, -0.6, 5.3]])
    numbers = [12, 12, 12, 30, 30, 8, 8, 8, 8, 8, 8, 8]
    # Jittered grid keeps atoms apart (>= ~1.5 Å) without a relaxation.
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(3)]) + 0.5
    frac = (grid + rng.uniform(-0.15, 0.15, grid.shape)) / [2, 2, 3]
    return Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=True)


@pytest.fixture()
def si8():
    return si_cell(1)


@pytest.fixture()
def oxide():
    return skewed_oxide()
