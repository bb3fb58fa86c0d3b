"""Radius neighbour search with cell lists (numpy, linear in the number of atoms).

`neighbor_pairs` returns every *undirected* pair once, as (i, j, S) with
|x_j + S·cell − x_i| <= cutoff, in a canonical orientation (i < j, or i == j with S
lexicographically positive). Callers mirror the pairs into directed edges, so both
directions of a bond are exact negatives of each other by construction.

Method: positions are wrapped into the cell along periodic axes; image copies of the
atoms are added only where they lie within the cutoff of the cell (fractional window
[-r/h_k, 1 + r/h_k] along periodic axis k, h_k the cell height), which covers cells
smaller than the cutoff and skewed cells; then points are binned on a Cartesian grid of
bin size r and each atom is compared with the points of the 27 surrounding bins. Work
and memory are proportional to N·(density·r³); query atoms are processed in chunks.
"""

from __future__ import annotations

import itertools

import numpy as np

_CHUNK = 4096  # query atoms per chunk: bounds the candidate-pair arrays


def periodic_basis(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """A full-rank 3×3 basis: periodic rows are the lattice vectors, the others are
    orthonormal vectors completing them (non-periodic lattice vectors are ignored)."""
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    periodic = [k for k in range(3) if pbc[k]]
    basis = np.zeros((3, 3))
    for k in periodic:
        basis[k] = cell[k]
    if len(periodic) == 3:
        comp = []
    elif len(periodic) == 2:
        n = np.cross(cell[periodic[0]], cell[periodic[1]])
        comp = [n / np.linalg.norm(n)] if np.linalg.norm(n) > 0 else []
    elif len(periodic) == 1:
        a = cell[periodic[0]] / max(np.linalg.norm(cell[periodic[0]]), 1e-300)
        trial = np.eye(3)[int(np.argmin(np.abs(a)))]
        u = np.cross(a, trial)
        u /= np.linalg.norm(u)
        comp = [u, np.cross(a, u)]
    else:
        comp = list(np.eye(3))
    for k, v in zip([k for k in range(3) if not pbc[k]], comp):
        basis[k] = v
    scale = max(float(np.abs(basis).max()), 1.0)
    if abs(np.linalg.det(basis)) < 1e-9 * scale**3:
        raise ValueError(
            f"cell: the periodic lattice vectors {[k for k in range(3) if pbc[k]]} are "
            f"zero or linearly dependent (cell={cell.tolist()}, pbc={list(map(bool, pbc))})")
    return basis


def _images(frac: np.ndarray, pbc: np.ndarray, window: np.ndarray):
    """Image copies of wrapped atoms within the fractional window.

    Returns (atom index, integer shift S (·,3)) of every copy whose fractional
    coordinates lie in [-window_k, 1 + window_k] along each periodic axis k.
    """
    n_atoms = len(frac)
    reach = np.where(pbc, np.ceil(window).astype(np.int64), 0)
    shifts = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])),
                      dtype=np.int64)
    lo, hi = -window - 1e-9, 1.0 + window + 1e-9
    atoms_out, shifts_out = [], []
    step = max(1, 2_000_000 // max(n_atoms, 1))
    for s0 in range(0, len(shifts), step):
        block = shifts[s0:s0 + step]
        f = frac[None, :, :] + block[:, None, :]
        ok = np.ones(f.shape[:2], dtype=bool)
        for k in range(3):
            if pbc[k]:
                ok &= (f[..., k] >= lo[k]) & (f[..., k] <= hi[k])
        si, ai = np.nonzero(ok)
        atoms_out.append(ai)
        shifts_out.append(block[si])
    return np.concatenate(atoms_out), np.concatenate(shifts_out)


def neighbor_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """All atom pairs within `cutoff`, each undirected pair once.

    Args:
        positions: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows (only periodic rows are used).
        pbc: (3,) periodicity flags.
        cutoff: radius r, Å (pairs with d <= r are kept).

    Returns:
        i, j: (P,) int64 atom indices; shift: (P, 3) int64 image shifts S such that the
        neighbour sits at x_j + S·cell; dist: (P,) float64 distances. Canonical
        orientation: i < j, or i == j with S lexicographically positive.
    """
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    n_atoms = len(positions)
    basis = periodic_basis(cell, pbc)
    inv = np.linalg.inv(basis)
    frac = positions @ inv
    wrap = np.where(pbc, np.floor(frac), 0.0)
    frac = frac - wrap
    wrap = wrap.astype(np.int64)
    heights = 1.0 / np.linalg.norm(inv, axis=0)  # column k of inv is reciprocal vector b_k
    window = np.where(pbc, cutoff / heights, 0.0)

    img_atom, img_shift = _images(frac, pbc, window)
    points = (frac[img_atom] + img_shift) @ basis  # Cartesian image positions
    query = frac @ basis  # wrapped central positions (image shift 0)

    origin = points.min(axis=0) - 1e-6
    bins = np.floor((points - origin) / cutoff).astype(np.int64)
    dims = bins.max(axis=0) + 1
    keys = (bins[:, 0] * dims[1] + bins[:, 1]) * dims[2] + bins[:, 2]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    qbins = np.floor((query - origin) / cutoff).astype(np.int64)
    # Visit query atoms in bin order: consecutive queries read the same points (cache).
    qkeys = (qbins[:, 0] * dims[1] + qbins[:, 1]) * dims[2] + qbins[:, 2]
    qorder = np.argsort(qkeys, kind="stable")

    offsets = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.int64)
    out_i, out_j, out_s, out_d = [], [], [], []
    cut2 = cutoff * cutoff
    for q0 in range(0, n_atoms, _CHUNK):
        qidx = qorder[q0:q0 + _CHUNK]
        nb = qbins[qidx][:, None, :] + offsets[None, :, :]  # (q, 27, 3)
        valid = np.all((nb >= 0) & (nb < dims), axis=-1)
        nkeys = (nb[..., 0] * dims[1] + nb[..., 1]) * dims[2] + nb[..., 2]
        start = np.searchsorted(sorted_keys, nkeys, side="left")
        stop = np.searchsorted(sorted_keys, nkeys, side="right")
        counts = np.where(valid, stop - start, 0).ravel()
        total = int(counts.sum())
        if total == 0:
            continue
        qi = np.repeat(np.repeat(qidx, 27), counts)
        first = np.repeat(start.ravel(), counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        pj = order[first + within]
        diff = points[pj] - query[qi]
        d2 = np.einsum("ij,ij->i", diff, diff)
        aj = img_atom[pj]
        shift = img_shift[pj] - wrap[aj] + wrap[qi]
        keep = d2 <= cut2
        keep &= (qi < aj) | ((qi == aj) & _lex_positive(shift))
        out_i.append(qi[keep])
        out_j.append(aj[keep])
        out_s.append(shift[keep])
        out_d.append(np.sqrt(d2[keep]))
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    return (np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s),
            np.concatenate(out_d))


def _lex_positive(shift: np.ndarray) -> np.ndarray:
    """True where the first nonzero component of each row is positive."""
    s0, s1, s2 = shift[:, 0], shift[:, 1], shift[:, 2]
    return (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
