"""Supercells, random strain, rattling and the geometric sanity check.

All randomness comes from the `np.random.Generator` passed in, drawn in a fixed order, so a
frame is a pure function of (parent, generator state).
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

_MAX_REPEAT = 8


def cell_widths(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths (Å) of a cell with lattice vectors as rows, shape (3,)."""
    volume = abs(np.linalg.det(cell))
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return volume / areas


def supercell_options(atoms: Atoms, natoms_min: int, natoms_max: int,
                      max_aspect: float) -> list[tuple[int, int, int]]:
    """Diagonal repeats (r1, r2, r3) giving natoms_min..natoms_max atoms, sorted.

    Repeats whose supercell is more elongated than `max_aspect` (longest / shortest
    perpendicular width) are dropped; if that leaves nothing, the least elongated of the
    size-valid repeats is kept so that every parent yields some cell.
    """
    n0 = len(atoms)
    widths = cell_widths(atoms.cell.array)
    valid: list[tuple[float, tuple[int, int, int]]] = []
    for reps in itertools.product(range(1, _MAX_REPEAT + 1), repeat=3):
        n = n0 * reps[0] * reps[1] * reps[2]
        if natoms_min <= n <= natoms_max:
            w = widths * np.array(reps)
            valid.append((float(w.max() / w.min()), reps))
    if not valid:
        raise ValueError(f"no diagonal supercell of a {n0}-atom cell has "
                         f"{natoms_min}..{natoms_max} atoms")
    good = sorted(r for aspect, r in valid if aspect <= max_aspect)
    return good or [min(valid)[1]]


def random_strain(rng: np.random.Generator, max_strain: float) -> np.ndarray:
    """Symmetric strain ε (3,3): the 6 independent components uniform in ±max_strain."""
    upper = rng.uniform(-max_strain, max_strain, size=6)
    eps = np.zeros((3, 3))
    eps[np.triu_indices(3)] = upper
    return eps + np.triu(eps, 1).T


def nearest_neighbour_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance (Å), periodic images included."""
    cutoff = 2.5 * (atoms.get_volume() / len(atoms)) ** (1.0 / 3.0)
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min())


def min_distance_ratio(atoms: Atoms) -> float:
    """min over pairs of d_ij / (r_cov,i + r_cov,j); periodic images included.

    Returns +inf when no pair is closer than the largest possible covalent-radii sum.
    """
    radii = covalent_radii[atoms.numbers]
    cutoff = 2.0 * float(radii.max())
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    if len(d) == 0:
        return float("inf")
    return float((d / (radii[i] + radii[j])).min())


def make_static_frame(parent: Atoms, parent_nn: float, rng: np.random.Generator,
                      natoms_min: int, natoms_max: int, max_aspect: float, max_strain: float,
                      rattle_min: float, rattle_max: float, rattle_nn_cap: float) -> Atoms:
    """One perturbed supercell of `parent`: random repeat, strain, then Gaussian rattle.

    Draw order (fixed): repeat index, 6 strain components, σ, N×3 displacements.
    """
    options = supercell_options(parent, natoms_min, natoms_max, max_aspect)
    reps = options[int(rng.integers(len(options)))]
    atoms = parent.repeat(reps)
    eps = random_strain(rng, max_strain)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    sigma = min(float(rng.uniform(rattle_min, rattle_max)), rattle_nn_cap * parent_nn)
    atoms.positions = atoms.positions + rng.normal(0.0, sigma, size=(len(atoms), 3))
    atoms.info["rattle_sigma"] = sigma
    return atoms
