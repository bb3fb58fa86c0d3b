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
    """Return (i, j, d) for some pair closer than ``cutoff`` Å, or None (i == j: an atom
    and its own periodic image).

    Positions are wrapped into the cell; pairs inside the cell come from a KD-tree query,
    pairs across a periodic boundary from querying that tree with the shifted images of the
    few atoms within ``cutoff`` of a face (3^k − 1 shifts for k periodic directions). Exact
    for ``cutoff`` below the smallest cell height (any non-pathological cell at 0.1 Å; a
    thinner cell marks every atom as near a face, which is still handled).
    """
    pbc = np.asarray(pbc, dtype=bool)
    pos = positions
    if pbc.any():
        frac = np.linalg.solve(_complete_cell(cell, pbc).T, positions.T).T
        frac[:, pbc] -= np.floor(frac[:, pbc])
        pos = frac @ _complete_cell(cell, pbc)
    tree = cKDTree(pos)
    best: tuple[int, int, float] | None = None
    if len(pos) > 1:
        dist, idx = tree.query(pos, k=2, distance_upper_bound=cutoff)
        hit = np.flatnonzero(np.isfinite(dist[:, 1]))
        if hit.size:
            i = int(hit[np.argmin(dist[hit, 1])])
            best = (i, int(idx[i, 1]), float(dist[i, 1]))
    if not pbc.any():
        return best
    # Fractional distance to the nearest face along each periodic axis, in Å.
    full = _complete_cell(cell, pbc)
    vol = abs(np.linalg.det(full))
    heights = vol / np.linalg.norm(np.cross(full[[1, 2, 0]], full[[2, 0, 1]]), axis=1)
    gap = np.minimum(frac, 1.0 - frac) * heights
    near = np.flatnonzero((gap[:, pbc] < cutoff).any(axis=1))
    if near.size == 0:
        return best
    ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
    shifts = np.array([s for s in itertools.product(*ranges) if any(s)], dtype=float) @ full
    images = (pos[near][None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    dist, idx = tree.query(images, k=1, distance_upper_bound=cutoff)
    hit = np.flatnonzero(np.isfinite(dist))
    if hit.size:
        k = int(hit[np.argmin(dist[hit])])
        d = float(dist[k])
        if best is None or d < best[2]:
            best = (int(near[k % near.size]), int(idx[k]), d)
    return best


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
