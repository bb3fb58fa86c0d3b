"""Physical sanity checks applied to every frame at ingest.

``check_frame`` takes a frame already passed through ``schema.normalize_frame`` (finite
values, consistent shapes, Z in 1..118) and raises :class:`FrameError` when:

* a periodic direction has a degenerate lattice (singular cell with pbc);
* two atoms (including periodic images, and an atom with its own image) are closer
  than ``min_distance`` Å (default 0.1 Å, far below any physical bond).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import cKDTree

from .schema import FrameError

MIN_DISTANCE = 0.1  # Å
# A periodic lattice vector set whose |det| (or Gram determinant for 1D/2D) falls below
# this is treated as singular; 1e-6 Å^3 is far below any real cell volume.
SINGULAR_TOL = 1e-6


def check_cell(cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise FrameError if the periodic lattice vectors are (nearly) linearly dependent."""
    periodic = cell[np.asarray(pbc, dtype=bool)]
    if len(periodic) == 0:
        return
    gram = periodic @ periodic.T
    # sqrt(det(Gram)) is the k-dimensional volume spanned by the periodic vectors.
    vol = float(np.sqrt(max(np.linalg.det(gram), 0.0)))
    if vol < SINGULAR_TOL:
        raise FrameError(f"singular cell with pbc={pbc.tolist()} (periodic volume {vol:.3g})")


def _complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Replace the non-periodic rows by unit vectors orthogonal to the periodic ones, so the
    matrix is invertible even when a slab/wire stores zeros there (only the periodic
    fractional coordinates are used)."""
    if pbc.all():
        return cell
    periodic = cell[pbc]
    _, _, vt = np.linalg.svd(periodic)
    out = cell.copy()
    out[~pbc] = vt[len(periodic):]
    return out


def min_distance_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                      cutoff: float) -> tuple[int, int, float] | None:
    """Return (i, j, d) for some pair closer than ``cutoff`` Å, or None.

    Periodic images are included by replicating wrapped positions over the 3^k neighbouring
    cells of the k periodic directions; exact for ``cutoff`` below the smallest cell height,
    which holds for any non-pathological cell at 0.1 Å (a cell thinner than the cutoff is
    reported as an atom close to its own image).
    """
    pbc = np.asarray(pbc, dtype=bool)
    n = len(positions)
    pos = positions
    shifts = np.zeros((1, 3))
    if pbc.any():
        frac = np.linalg.solve(_complete_cell(cell, pbc).T, positions.T).T
        frac[:, pbc] -= np.floor(frac[:, pbc])
        pos = frac @ cell
        ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
        shifts = np.array(list(itertools.product(*ranges)), dtype=float) @ cell
    images = (pos[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    tree = cKDTree(images)
    k = min(2, len(images))
    dist, idx = tree.query(pos, k=k, distance_upper_bound=cutoff)
    if k < 2:
        return None
    # Column 0 is the atom itself (distance 0) unless an exact duplicate sorts first;
    # the second neighbour is therefore the closest *other* point (atom or image).
    second = dist[:, 1]
    hit = np.flatnonzero(np.isfinite(second))
    if hit.size == 0:
        return None
    i = int(hit[np.argmin(second[hit])])
    j = int(idx[i, 1] % n)
    if j == i and int(idx[i, 0] % n) != i:
        j = int(idx[i, 0] % n)
    return i, j, float(second[i])


def check_frame(frame: dict, min_distance: float = MIN_DISTANCE) -> None:
    """Run all physical checks on a normalized frame; raise FrameError on the first failure."""
    cell, pbc = frame["cell"], frame["pbc"]
    check_cell(cell, pbc)
    if min_distance > 0 and len(frame["numbers"]) > 0:
        pair = min_distance_pair(frame["positions"], cell, pbc, min_distance)
        if pair is not None:
            i, j, d = pair
            what = f"atom {i} and its own periodic image" if i == j else f"atoms {i} and {j}"
            raise FrameError(f"{what} are {d:.4f} Å apart (< {min_distance} Å)")
