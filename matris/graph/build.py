"""Build one structure's `AtomGraph` from numpy arrays (runs in DataLoader workers)."""

from __future__ import annotations

import numpy as np
import torch

from matris.graph.batch import AtomGraph
from matris.graph.neighbors import neighbor_pairs


def build_graph(numbers, positions, cell, pbc, cutoff: float,
                three_body_cutoff: float) -> AtomGraph:
    """Two-body graph within `cutoff` and its line graph (angles) within `three_body_cutoff`.

    Args:
        numbers: (N,) atomic numbers 1..118.
        positions: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows, Å (ignored along non-periodic axes; may be
            all zeros for a molecule).
        pbc: (3,) periodicity flags (a bool broadcasts to all three axes).
        cutoff: two-body cutoff r_c, Å.
        three_body_cutoff: angle cutoff r_3 <= r_c, Å.

    Returns:
        An `AtomGraph` of one structure (float64 positions, CPU tensors). Every bond
        appears as two directed edges (i→j with shift S and j→i with −S); an angle is
        an ordered pair of distinct edges with the same centre, both shorter than r_3.
        Isolated atoms (no neighbours) are legal.
    """
    numbers = np.asarray(numbers).astype(np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    n = len(numbers)
    if n == 0:
        raise ValueError("build_graph: a structure needs at least one atom")
    if positions.shape != (n, 3):
        raise ValueError(f"positions must have shape ({n}, 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain non-finite values")
    bad = (numbers < 1) | (numbers > 118)
    if bad.any():
        raise ValueError(f"numbers must be atomic numbers in 1..118, got {numbers[bad][:5]}")
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if not 0 < three_body_cutoff <= cutoff:
        raise ValueError(
            f"need 0 < three_body_cutoff <= cutoff, got {three_body_cutoff}, {cutoff}")

    i, j, shift, dist = neighbor_pairs(positions, cell, pbc, cutoff)
    # Canonical order of bonds (deterministic for a given input).
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    i, j, shift, dist = i[order], j[order], shift[order], dist[order]
    n_bonds = len(i)

    # Directed edges: 2u = canonical (i→j, S), 2u+1 = reverse (j→i, −S); then sort by
    # centre (CSR-friendly), keeping the bond id of every edge.
    centre = np.stack([i, j], axis=1).reshape(-1)
    neigh = np.stack([j, i], axis=1).reshape(-1)
    eshift = np.stack([shift, -shift], axis=1).reshape(-1, 3)
    ebond = np.repeat(np.arange(n_bonds), 2)
    edist = np.repeat(dist, 2)
    eorder = np.lexsort((eshift[:, 2], eshift[:, 1], eshift[:, 0], neigh, centre))
    centre, neigh, eshift, ebond, edist = (a[eorder] for a in (centre, neigh, eshift, ebond,
                                                                edist))
    canonical = (eorder % 2) == 0
    bond_edge = np.empty(n_bonds, dtype=np.int64)
    bond_edge[ebond[canonical]] = np.nonzero(canonical)[0]

    angle_p, angle_q = _angles(centre, edist < three_body_cutoff, n)

    t = torch.from_numpy
    return AtomGraph(
        numbers=t(numbers),
        positions=t(positions.copy()),
        cell=t(cell.copy()).reshape(1, 3, 3),
        pbc=t(pbc).reshape(1, 3),
        batch=torch.zeros(n, dtype=torch.int64),
        edge_index=t(np.stack([centre, neigh]).astype(np.int64)),
        edge_shift=t(eshift.astype(np.float64)),
        edge_bond=t(ebond.astype(np.int64)),
        bond_edge=t(bond_edge),
        angle_edges=t(np.stack([angle_p, angle_q]).astype(np.int64)),
        num_atoms=torch.tensor([n]),
        num_edges=torch.tensor([len(centre)]),
        num_bonds=torch.tensor([n_bonds]),
        num_angles=torch.tensor([len(angle_p)]),
        cutoff=float(cutoff),
        three_body_cutoff=float(three_body_cutoff),
    )


def _angles(centre: np.ndarray, short: np.ndarray, n_atoms: int):
    """Ordered pairs (p, q), p != q, of short edges sharing a centre.

    `centre` must be sorted. Returns edge indices p, q of the A = Σ_i k_i(k_i − 1) angles,
    grouped by centre, then p, then q.
    """
    idx = np.nonzero(short)[0]  # short edges, still grouped by centre
    k = np.bincount(centre[idx], minlength=n_atoms)
    group_start = np.cumsum(k) - k  # position in `idx` of each centre's first short edge
    k_of = k[centre[idx]]
    start_of = group_start[centre[idx]]
    total = int((k_of).sum())
    p_pos = np.repeat(np.arange(len(idx)), k_of)
    within = np.arange(total) - np.repeat(np.cumsum(k_of) - k_of, k_of)
    q_pos = np.repeat(start_of, k_of) + within
    keep = p_pos != q_pos
    return idx[p_pos[keep]], idx[q_pos[keep]]
