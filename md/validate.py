"""Input checks for the calculator and the batch API: clear errors naming the problem.

What a model "knows": atomic numbers 1..max_z are covered by its embedding table
(larger Z cannot be evaluated at all). Among those, a trained model's reference
energies are fitted per element on its training data, and elements absent from the
data get exactly 0 (`matris.datasets` does this). So when the reference table has any
nonzero entry, the elements with a zero entry are *unseen*: the model never saw them
and its predictions for them are meaningless. By default they are an error
(``unseen="error"``); ``"warn"`` or ``"allow"`` relax this. A model whose whole table
is zero (untrained, random weights) treats all of 1..max_z as known.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase.data import chemical_symbols

UNSEEN_POLICIES = ("error", "warn", "allow")


class MatrisInputError(ValueError):
    """A structure cannot be evaluated; the message names the problem."""


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def known_elements(reference_energies: np.ndarray, max_z: int) -> np.ndarray:
    """Sorted atomic numbers the model knows (see the module docstring)."""
    ref = np.asarray(reference_energies, dtype=np.float64).reshape(-1)
    zs = np.arange(1, max_z + 1)
    seen = ref[zs] != 0.0
    return zs[seen] if seen.any() else zs


def check_elements(numbers: np.ndarray, max_z: int, known: np.ndarray,
                   unseen: str = "error") -> None:
    """Raise `MatrisInputError` for elements beyond the embedding (always) or unseen in
    training (per the `unseen` policy: "error", "warn" or "allow")."""
    present = np.unique(np.asarray(numbers, dtype=np.int64))
    bad = present[(present < 1) | (present > max_z)]
    if bad.size:
        names = ", ".join(f"{_symbol(int(z))} (Z={int(z)})" for z in bad)
        raise MatrisInputError(
            f"element(s) {names} not supported: this model's embedding covers Z=1..{max_z}")
    missing = np.setdiff1d(present, known)
    if missing.size and unseen != "allow":
        names = ", ".join(f"{_symbol(int(z))} (Z={int(z)})" for z in missing)
        msg = (f"element(s) {names} were not in this model's training data (zero reference "
               f"energy); its predictions for them are meaningless. Pass "
               f"unseen_elements='warn' or 'allow' to evaluate anyway")
        if unseen == "error":
            raise MatrisInputError(msg)
        warnings.warn(msg, stacklevel=3)


def check_geometry(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise `MatrisInputError` for no atoms, non-finite positions or cell, or a cell
    whose periodic lattice vectors are zero or linearly dependent (zero volume)."""
    positions = np.asarray(positions)
    if positions.shape[0] == 0:
        raise MatrisInputError("empty structure: the Atoms object has no atoms")
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        idx = np.flatnonzero(~finite)
        raise MatrisInputError(
            f"non-finite (NaN/inf) positions for {idx.size} atom(s), e.g. atom indices "
            f"{idx[:5].tolist()}")
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not np.isfinite(cell).all():
        raise MatrisInputError(f"cell contains non-finite values: {cell.tolist()}")
    if pbc.any():
        rows = cell[pbc]
        lengths = np.linalg.norm(rows, axis=1)
        # Gram determinant = squared volume (3D), area (2D) or length (1D) of the
        # periodic lattice; relative to the product of the row lengths it is a sin².
        gram = float(np.linalg.det(rows @ rows.T))
        scale = float(np.prod(lengths)) ** 2
        if lengths.min() <= 0 or gram <= 1e-12 * scale:
            axes = [a for a, p in zip("abc", pbc) if p]
            what = "volume" if pbc.all() else "periodic area/length"
            raise MatrisInputError(
                f"singular cell: the periodic lattice vectors {axes} are zero or linearly "
                f"dependent ({what} ≈ {np.sqrt(max(gram, 0.0)):.3g}); cell={cell.tolist()}, "
                f"pbc={pbc.tolist()}")


def check_min_distance(length, threshold: float = 1e-3) -> None:
    """Raise when two atoms (or an atom and its image) practically coincide: the
    geometry is undefined there (zero bond length). `length`: bond lengths (array or
    their minimum), Å."""
    shortest = float(np.min(length)) if np.size(length) else np.inf
    if shortest < threshold:
        raise MatrisInputError(
            f"atoms overlap: a bond of length {shortest:.3g} Å (< {threshold} Å); "
            f"check for duplicated atoms or an exploded MD run")
