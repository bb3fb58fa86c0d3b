"""Fixtures for dataset-layer tests: random frames and extxyz writers."""

from __future__ import annotations

import numpy as np
import pytest


def random_frame(rng: np.random.Generator, n: int, *, labels=("energy", "forces", "stress"),
                 group: str | None = None, pbc=True) -> dict:
    """A normalized frame with N atoms on a jittered grid (no two atoms closer than ~1 Å)."""
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cell = np.diag([2.0 * side] * 3) + 0.05 * rng.standard_normal((3, 3))
    frac = (grid[:n] + 0.5 + 0.1 * rng.standard_normal((n, 3))) / side
    frame = {
        "numbers": rng.integers(1, 119, n).astype(np.uint8),
        "positions": frac @ cell,
        "cell": cell if pbc else np.zeros((3, 3)),
        "pbc": np.array([pbc] * 3),
    }
    if "energy" in labels:
        frame["energy"] = np.float64(rng.normal(-3.0 * n, 1.0))
    if "forces" in labels:
        frame["forces"] = rng.normal(0, 1.0, (n, 3))
    if "stress" in labels:
        s = rng.normal(0, 0.01, (3, 3))
        frame["stress"] = s + s.T
    if "magmoms" in labels:
        frame["magmoms"] = rng.normal(0, 1, n)
    if "charge" in labels:
        frame["charge"] = int(rng.integers(-2, 3))
        frame["spin"] = int(rng.integers(1, 4))
    if "energy_correction" in labels:
        frame["energy_correction"] = np.float64(rng.normal())
    frame["dataset"] = "unit"
    frame["task"] = "PBE"
    frame["source_id"] = f"f{rng.integers(1 << 30)}"
    frame["group_id"] = group or frame["source_id"]
    return frame


def frame_to_atoms(frame: dict, prefix: str = ""):
    """Frame -> ASE Atoms with labels either in a calculator (prefix '') or in info/arrays
    under ``prefix + name`` (MACE style, e.g. REF_energy)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=frame["numbers"], positions=frame["positions"], cell=frame["cell"],
                  pbc=frame["pbc"])
    results = {k: frame[k] for k in ("energy", "forces", "stress") if k in frame}
    if "stress" in results:
        s = results["stress"]
        results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if prefix:
        for k, v in results.items():
            if k == "forces":
                atoms.arrays[prefix + k] = v
            else:
                atoms.info[prefix + k] = v
    elif results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["group_id"] = frame["group_id"]
    return atoms


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def make_frame():
    return random_frame


@pytest.fixture
def write_extxyz():
    """write_extxyz(path, frames, prefix='') writes frames as one extxyz file."""
    import ase.io

    def _write(path, frames, prefix=""):
        ase.io.write(path, [frame_to_atoms(f, prefix) for f in frames], format="extxyz")
        return path

    return _write
