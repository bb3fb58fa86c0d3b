"""`GraphPartition`: split one (batched) `AtomGraph` into G parts. Pure numpy, no torch
communication, no state: the same graph and G give the same partition on every rank.

Ownership (what makes per-part sums equal serial sums):

- every atom is **owned** by exactly one part;
- a directed edge and an angle belong to the part owning their **centre** atom;
- a bond (undirected) is **local** to the parts owning its two endpoints: one part, or two
  for a *cut* bond, whose features are then replicated on both;
- a part also holds the reverse edge of each cut bond (centred on a **halo** atom), so
  both directions of every local bond are present;
- the **halo** of a part is the set of atoms it does not own that are endpoints of its
  local bonds (one hop within the two-body cutoff); it receives their rows from the owner.

The split is recursive weighted coordinate bisection. Atoms of different structures of a
batch are never mixed inside a bisection step unless one structure straddles the cut, so
a batch of many small structures is shared out almost structure by structure, and a big
structure is cut spatially. Within a structure, coordinates are fractional coordinates
(wrapped on periodic axes) scaled by the spacing of lattice planes, so "widest axis"
means the widest perpendicular extent, also in non-orthogonal cells; molecules and
singular cells use Cartesian coordinates. The quality of a partition only affects cost:
any assignment of atoms to parts gives exact results.

Per-atom weight (cost model of one interaction block, see `MatRIS.unit_costs`):
``w_i = atom + edge·deg_i + angle·ang_i`` with deg_i the directed edges and ang_i the
angles centred on atom i.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_WEIGHTS = (20.0, 12.0, 12.0)  # per atom, per centred edge, per centred angle


def _frozen(a, dtype=np.int64) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class PartIndex:
    """One part, in global ids of the graph it was cut from (all int64, read-only).

    Local atom order is ``owned`` then ``halo``; the halo is sorted by (owner part,
    global id), so the rows received from each peer are contiguous.

    Attributes:
        owned: (n_own,) global ids of owned atoms, ascending.
        halo: (n_halo,) global ids of halo atoms, grouped by owner part, ascending within.
        halo_owner: (n_halo,) owner part of each halo atom.
        recv_counts: (G,) halo rows received from each part (0 for itself).
        send: G arrays; ``send[q]`` = local rows (into owned) whose features part q needs,
            in the order of q's halo.
        edges: (E_p,) global ids of the local directed edges, ordered by local centre,
            then global id (owned-centred edges first).
        bonds: (U_p,) global ids of the local bonds, ascending.
        angles: (A_p,) global ids of the angles centred on owned atoms, ascending.
        shared: G arrays; ``shared[q]`` = local bond rows of bonds cut between this part
            and q, ordered by global bond id (the same order on both sides).
    """

    owned: np.ndarray
    halo: np.ndarray
    halo_owner: np.ndarray
    recv_counts: np.ndarray
    send: tuple[np.ndarray, ...]
    edges: np.ndarray
    bonds: np.ndarray
    angles: np.ndarray
    shared: tuple[np.ndarray, ...]

    @property
    def num_owned(self) -> int:
        return int(self.owned.shape[0])

    @property
    def atoms(self) -> np.ndarray:
        """(n_own + n_halo,) global id of each local atom row."""
        return np.concatenate([self.owned, self.halo])

    def counts(self) -> dict[str, int]:
        """Row counts of this part: owned/halo atoms, edges, bonds, angles, cut bonds."""
        return {"owned": self.num_owned, "halo": int(self.halo.shape[0]),
                "edges": int(self.edges.shape[0]), "bonds": int(self.bonds.shape[0]),
                "angles": int(self.angles.shape[0]),
                "cut_bonds": int(sum(s.shape[0] for s in self.shared))}


@dataclass(frozen=True)
class GraphPartition:
    """G parts of a graph (see the module docstring for the ownership rules).

    Attributes:
        num_parts: G.
        owner: (N,) part owning each atom.
        parts: G `PartIndex` objects.
        weights: (N,) the balancing weight of each atom.
    """

    num_parts: int
    owner: np.ndarray
    parts: tuple[PartIndex, ...]
    weights: np.ndarray = field(repr=False)

    def __getitem__(self, p: int) -> PartIndex:
        return self.parts[p]

    def stats(self) -> dict:
        """Balance and halo figures: per-part counts, weight imbalance (max/mean),
        halo fraction (Σ halo / Σ owned)."""
        counts = [p.counts() for p in self.parts]
        loads = np.array([float(self.weights[p.owned].sum()) for p in self.parts])
        own = sum(c["owned"] for c in counts)
        return {"parts": counts,
                "imbalance": float(loads.max() / loads.mean()) if loads.sum() > 0 else 1.0,
                "halo_fraction": sum(c["halo"] for c in counts) / max(own, 1)}


# --------------------------------------------------------------------------- coordinates

def _split_coordinates(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(n, 3) coordinates in Å along which one structure is bisected (see module doc)."""
    det = float(np.linalg.det(cell)) if pbc.any() else 0.0
    if abs(det) < 1e-9:
        return positions.copy()  # molecule or singular cell: Cartesian, no wrapping
    frac = positions @ np.linalg.inv(cell)
    frac[:, pbc] -= np.floor(frac[:, pbc])  # wrap periodic axes into [0, 1)
    a = cell
    spacing = abs(det) / np.linalg.norm(np.cross(a[[1, 2, 0]], a[[2, 0, 1]]), axis=1)
    return frac * spacing


def _weighted_cut(w: np.ndarray, fraction: float) -> int:
    """Number k of leading items whose weight sum is closest to ``fraction`` of the total."""
    c = np.concatenate([[0.0], np.cumsum(w)])
    target = fraction * c[-1]
    return int(np.argmin(np.abs(c - target)))


def _bisect(ids: np.ndarray, g: int, first: int, coords: np.ndarray, batch: np.ndarray,
            w: np.ndarray, owner: np.ndarray) -> None:
    """Assign atoms ``ids`` (ascending) to parts ``first .. first+g-1`` in place."""
    if g == 1 or ids.size == 0:
        owner[ids] = first
        return
    key = np.empty(ids.size)
    for b in np.unique(batch[ids]):  # widest axis of each structure's share of this set
        sel = batch[ids] == b
        c = coords[ids[sel]]
        axis = int(np.argmax(c.max(0) - c.min(0)))
        key[sel] = c[:, axis]
    order = np.lexsort((ids, key, batch[ids]))  # structure, then position, then id
    ids = ids[order]
    g_left = g // 2
    k = _weighted_cut(w[ids], g_left / g)
    _bisect(np.sort(ids[:k]), g_left, first, coords, batch, w, owner)
    _bisect(np.sort(ids[k:]), g - g_left, first + g_left, coords, batch, w, owner)


def assign_owners(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                  batch: np.ndarray, weights: np.ndarray, num_parts: int) -> np.ndarray:
    """(N,) owner part of each atom by recursive weighted coordinate bisection.

    Args:
        positions: (N, 3) Å; cell (B, 3, 3) rows are lattice vectors; pbc (B, 3);
        batch: (N,) structure of each atom; weights: (N,) cost of each atom.
    """
    n = positions.shape[0]
    coords = np.zeros((n, 3))
    for b in range(cell.shape[0]):
        sel = batch == b
        if sel.any():
            coords[sel] = _split_coordinates(positions[sel], cell[b], pbc[b])
    owner = np.zeros(n, dtype=np.int64)
    _bisect(np.arange(n), num_parts, 0, coords, batch, weights, owner)
    return owner


# --------------------------------------------------------------------------- partition

def partition_arrays(positions, cell, pbc, batch, edge_index, edge_bond, bond_edge,
                     angle_edges, num_parts: int, owner=None,
                     weights: tuple[float, float, float] = DEFAULT_WEIGHTS) -> GraphPartition:
    """`GraphPartition` from numpy arrays with the `AtomGraph` field meanings.

    ``owner`` (N,) forces an assignment (e.g. in tests); by default it is computed by
    :func:`assign_owners`.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.shape[0]
    centre, neighbour = np.asarray(edge_index[0]), np.asarray(edge_index[1])
    edge_bond, bond_edge = np.asarray(edge_bond), np.asarray(bond_edge)
    angle_p = np.asarray(angle_edges[0])
    deg = np.bincount(centre, minlength=n)
    ang = np.bincount(centre[angle_p], minlength=n)
    w_atom, w_edge, w_angle = weights
    atom_w = w_atom + w_edge * deg + w_angle * ang
    if owner is None:
        owner = assign_owners(positions, np.asarray(cell, dtype=np.float64),
                              np.asarray(pbc, dtype=bool), np.asarray(batch), atom_w,
                              num_parts)
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (n,) or (n and (owner.min() < 0 or owner.max() >= num_parts)):
        raise ValueError(f"owner must be (N,) = ({n},) part ids in [0, {num_parts})")

    bond_a = owner[centre[bond_edge]]  # owner of each bond's two endpoints
    bond_b = owner[neighbour[bond_edge]]
    edge_owner = owner[centre]
    angle_owner = edge_owner[angle_p]
    parts = []
    for p in range(num_parts):
        owned = np.nonzero(owner == p)[0]
        bond_local = (bond_a == p) | (bond_b == p)
        bonds = np.nonzero(bond_local)[0]
        edges = np.nonzero(bond_local[edge_bond])[0]  # both directions of each local bond
        ends = np.unique(np.concatenate([centre[edges], neighbour[edges]]))
        halo = ends[owner[ends] != p]
        halo = halo[np.lexsort((halo, owner[halo]))]
        local = np.full(n, -1, dtype=np.int64)
        local[owned] = np.arange(owned.size)
        local[halo] = owned.size + np.arange(halo.size)
        edges = edges[np.lexsort((edges, local[centre[edges]]))]
        recv = np.bincount(owner[halo], minlength=num_parts)
        parts.append(dict(owned=owned, halo=halo, halo_owner=owner[halo], recv_counts=recv,
                          edges=edges, bonds=bonds,
                          angles=np.nonzero(angle_owner == p)[0], local=local))
    out = []
    for p, d in enumerate(parts):
        send, shared = [], []
        for q, dq in enumerate(parts):
            if q == p:
                send.append(np.zeros(0, np.int64))
                shared.append(np.zeros(0, np.int64))
                continue
            needed = dq["halo"][dq["halo_owner"] == p]  # q's halo rows owned by p, in order
            send.append(d["local"][needed])
            cut = np.nonzero(((bond_a == p) & (bond_b == q)) | ((bond_a == q) & (bond_b == p)))[0]
            shared.append(np.searchsorted(d["bonds"], cut))
        out.append(PartIndex(
            owned=_frozen(d["owned"]), halo=_frozen(d["halo"]),
            halo_owner=_frozen(d["halo_owner"]), recv_counts=_frozen(d["recv_counts"]),
            send=tuple(_frozen(s) for s in send), edges=_frozen(d["edges"]),
            bonds=_frozen(d["bonds"]), angles=_frozen(d["angles"]),
            shared=tuple(_frozen(s) for s in shared)))
    return GraphPartition(num_parts=num_parts, owner=_frozen(owner), parts=tuple(out),
                          weights=_frozen(atom_w, np.float64))


def partition_graph(graph, num_parts: int, owner=None,
                    weights: tuple[float, float, float] = DEFAULT_WEIGHTS) -> GraphPartition:
    """`GraphPartition` of a `matris.graph.AtomGraph` (any device/dtype) into G parts."""
    def a(t):
        return t.detach().cpu().numpy()
    return partition_arrays(a(graph.positions).astype(np.float64), a(graph.cell).astype(np.float64),
                            a(graph.pbc), a(graph.batch), a(graph.edge_index), a(graph.edge_bond),
                            a(graph.bond_edge), a(graph.angle_edges), num_parts, owner, weights)
