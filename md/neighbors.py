"""Neighbour-list reuse with a skin (Verlet-list style) on top of `matris.graph`.

A *candidate* graph is built with `build_graph` at the enlarged radius r_c + skin. As
long as every atom stays within skin/2 of where it was at that build (modulo lattice
translations along periodic axes) and pbc and numbers are unchanged, every pair within
r_c at the new positions is among the candidates: a pair distance changes by at most
|δ_i| + |δ_j| <= skin. `restrict_graph` then recomputes the candidate bond lengths at
the new positions and returns the `AtomGraph` at the model's true cutoffs.

Cell changes (NPT, cell relaxation) of a 3D-periodic cell are allowed too. With the
deformation F = L⁻¹L' (rows are lattice vectors, so L' = L·F) and the non-affine
displacement δ = x' − x·F, a new pair vector is v' = v·F + δ_n − δ_c, hence
|v| <= (|v'| + 2·max|δ|) / σ_min(F). The candidates are reused while
(r_c + 2·max|δ|) / σ_min(F) <= r_c + skin (for F = I: max|δ| <= skin/2). Cells with
partial periodicity must stay unchanged; without periodicity the cell is irrelevant.

The restricted graph equals a fresh `build_graph` at the new positions: candidate
edges are stored in build_graph's canonical order (sorted by centre, neighbour, shift),
the kept edges are a subsequence in the same order, and angles are regenerated from the
kept short edges with build_graph's documented rule and order (grouped by centre, then
first edge, then second edge). Energies therefore agree with a fresh build bit for bit
when no atom was wrapped, and to float64 rounding otherwise (see docs/md.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from matris.graph import AtomGraph, build_graph

# build_graph needs 0 < three_body_cutoff: a tiny one makes it skip the (unused) angles
# of the candidate graph; `restrict_graph` regenerates angles at the true r_3.
_NO_ANGLES = 1e-9


def ordered_pairs(centre: np.ndarray, short: np.ndarray, n_atoms: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Angles: ordered pairs (p, q), p != q, of short edges sharing a centre atom.

    Args:
        centre: (E,) centre atom of each directed edge, sorted ascending.
        short: (E,) bool, edges shorter than the three-body cutoff.
        n_atoms: N.

    Returns:
        p, q: (A,) int64 edge indices, A = Σ_i k_i (k_i − 1), grouped by centre, then p,
        then q (the order `build_graph` documents).
    """
    idx = np.flatnonzero(short)
    k = np.bincount(centre[idx], minlength=n_atoms)
    if idx.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    k_of = k[centre[idx]]  # size of the group each short edge belongs to
    first_of = (np.cumsum(k) - k)[centre[idx]]  # its group's first slot in idx
    p_slot = np.repeat(np.arange(idx.size), k_of)
    # q runs over the whole group of p: slot first_of[p] + 0..k-1.
    offset = np.arange(p_slot.size) - np.repeat(np.cumsum(k_of) - k_of, k_of)
    q_slot = np.repeat(first_of, k_of) + offset
    keep = p_slot != q_slot
    return idx[p_slot[keep]], idx[q_slot[keep]]


class CandidateGraph:
    """A one-structure graph built with enlarged cutoffs, prepared for fast restriction.

    Holds numpy views of the topology and the image vectors S·cell of every bond's
    canonical edge (the cell is fixed while the candidates are reused).
    """

    def __init__(self, graph: AtomGraph):
        if graph.num_structures != 1:
            raise ValueError("CandidateGraph: expected a one-structure graph, got "
                             f"{graph.num_structures} structures")
        self.graph = graph
        self.bond_edge = graph.bond_edge.numpy()
        self.edge_bond = graph.edge_bond.numpy()
        self.centre = graph.edge_index[0].numpy()
        self.bond_c = self.centre[self.bond_edge]
        self.bond_n = graph.edge_index[1].numpy()[self.bond_edge]
        self.bond_shift = graph.edge_shift.numpy()[self.bond_edge].astype(np.float64)
        self.last_min_length = np.inf  # shortest kept bond of the last restriction, Å
        self._cell = None
        self.set_cell(graph.cell[0].numpy())

    def set_cell(self, cell: np.ndarray) -> None:
        """Use lattice vectors `cell` (3, 3) for the image vectors S·cell from now on."""
        cell = np.asarray(cell, dtype=np.float64)
        if self._cell is None or not np.array_equal(cell, self._cell):
            self._cell = cell.copy()
            self.bond_image = self.bond_shift @ cell

    def bond_lengths(self, positions: np.ndarray) -> np.ndarray:
        """(U,) float64 |x_n + S·cell − x_c| of every candidate bond at `positions` (N, 3)."""
        vec = positions[self.bond_n] - positions[self.bond_c] + self.bond_image
        return np.sqrt(np.einsum("ij,ij->i", vec, vec))

    def restrict(self, positions: np.ndarray, cutoff: float, three_body_cutoff: float,
                 cell: np.ndarray | None = None) -> AtomGraph:
        """See `restrict_graph`; `cell` (3, 3) replaces the build cell when given."""
        g = self.graph
        if cell is not None:
            self.set_cell(cell)
        positions = np.asarray(positions, dtype=np.float64)
        length = self.bond_lengths(positions)
        keep_bond = length <= cutoff
        keep_edge = keep_bond[self.edge_bond]
        # Old → new ids (valid where kept); kept rows keep their relative order.
        new_bond = np.cumsum(keep_bond) - 1
        new_edge = np.cumsum(keep_edge) - 1
        kept_edge_bond = self.edge_bond[keep_edge]
        self.last_min_length = float(length[keep_bond].min()) if keep_bond.any() else np.inf
        short = (length < three_body_cutoff)[kept_edge_bond]
        p, q = ordered_pairs(self.centre[keep_edge], short, g.n_atoms)
        mask = torch.from_numpy(keep_edge)
        t = torch.from_numpy
        return dataclasses.replace(
            g,
            positions=t(positions.copy()),
            cell=t(self._cell.copy()).reshape(1, 3, 3),
            edge_index=g.edge_index[:, mask],
            edge_shift=g.edge_shift[mask],
            edge_bond=t(new_bond[kept_edge_bond]),
            bond_edge=t(new_edge[self.bond_edge[keep_bond]]),
            angle_edges=t(np.stack([p, q])),
            num_edges=torch.tensor([int(keep_edge.sum())]),
            num_bonds=torch.tensor([int(keep_bond.sum())]),
            num_angles=torch.tensor([p.size]),
            cutoff=float(cutoff),
            three_body_cutoff=float(three_body_cutoff),
        )


def restrict_graph(candidates: AtomGraph, positions: np.ndarray, cutoff: float,
                   three_body_cutoff: float) -> AtomGraph:
    """The graph at the true cutoffs, from a one-structure candidate graph built with
    larger cutoffs (its angles are ignored) and new positions (N, 3) in Å.

    The caller guarantees that the candidates contain every pair within `cutoff` at
    `positions` (`SkinNeighborList` checks the skin/2 criterion). Edge image shifts are
    taken from the candidates, so `positions` must be expressed in the same images
    (un-wrapped relative to the build positions). Bonds with length <= cutoff are kept
    and angles use edges with length < three_body_cutoff, as in `build_graph`.
    """
    return CandidateGraph(candidates).restrict(positions, cutoff, three_body_cutoff)


class SkinNeighborList:
    """Builds candidate graphs at r_c + skin and reuses them while atoms stay close.

    Args:
        cutoff, three_body_cutoff: the model's r_c and r_3, Å.
        skin: extra radius, Å (>= 0). 0 rebuilds on every change of positions.

    Attributes:
        builds, reuses: counters of candidate builds and of calls served by reuse.
        last_max_displacement: largest atom displacement (Å, modulo lattice vectors)
            since the last build, measured at the last call.
    """

    def __init__(self, cutoff: float, three_body_cutoff: float, skin: float):
        if not (isinstance(skin, (int, float)) and np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin!r}")
        self.cutoff = float(cutoff)
        self.three_body_cutoff = float(three_body_cutoff)
        self.skin = float(skin)
        self.builds = 0
        self.reuses = 0
        self.last_max_displacement = 0.0
        self._candidates: CandidateGraph | None = None
        self._ref: tuple | None = None

    @property
    def last_min_length(self) -> float:
        """Shortest bond (Å) of the last graph returned (inf if none)."""
        return self._candidates.last_min_length if self._candidates is not None else np.inf

    def reset(self) -> None:
        """Forget the candidate graph (the next call rebuilds)."""
        self._candidates = None
        self._ref = None

    def graph(self, numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
              pbc: np.ndarray) -> AtomGraph:
        """The one-structure `AtomGraph` at the true cutoffs (CPU, float64).

        Inputs as for `build_graph` (numbers (N,), positions (N, 3) Å, cell (3, 3) rows,
        pbc (3,)); they must already be validated.
        """
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        local = self._reusable_positions(numbers, positions, cell, pbc)
        if local is None:
            local = positions
            self._rebuild(numbers, positions, cell, pbc)
        else:
            self.reuses += 1
        return self._candidates.restrict(local, self.cutoff, self.three_body_cutoff, cell)

    # ------------------------------------------------------------------ internals
    def _rebuild(self, numbers, positions, cell, pbc) -> None:
        self._candidates = CandidateGraph(build_graph(
            numbers, positions, cell, pbc, self.cutoff + self.skin, _NO_ANGLES))
        pbc = np.array(pbc, dtype=bool).reshape(3)
        self._ref = (np.array(numbers, copy=True), positions.copy(), cell.copy(), pbc,
                     _fractional(positions, cell, pbc))
        self.builds += 1
        self.last_max_displacement = 0.0

    def _reusable_positions(self, numbers, positions, cell, pbc) -> np.ndarray | None:
        """Positions in the candidate graph's images if it can be reused, else None."""
        if self._ref is None:
            return None
        ref_numbers, ref_pos, ref_cell, ref_pbc, ref_frac = self._ref
        if (ref_numbers.shape != np.shape(numbers) or not np.array_equal(ref_numbers, numbers)
                or not np.array_equal(ref_pbc, np.asarray(pbc, dtype=bool).reshape(3))):
            return None
        deform = None  # F with cell = ref_cell·F; None means F = I
        if ref_pbc.any() and not np.array_equal(ref_cell, cell):
            if not ref_pbc.all():
                return None
            deform = np.linalg.solve(ref_cell, cell)
        local = positions
        if ref_pbc.any():
            # Atoms wrapped back into the cell jumped by a lattice vector: undo that in
            # fractional coordinates (lattice-equivalent positions give the same results).
            whole = np.where(ref_pbc, np.rint(_fractional(positions, cell, ref_pbc) - ref_frac),
                             0.0)
            if whole.any():
                local = positions - whole @ cell
        affine = ref_pos if deform is None else ref_pos @ deform
        moved = local - affine
        disp = float(np.sqrt(np.einsum("ij,ij->i", moved, moved).max()))
        self.last_max_displacement = disp
        smin = 1.0 if deform is None else float(np.linalg.svd(deform, compute_uv=False)[-1])
        if (self.cutoff + 2.0 * disp) / smin > self.cutoff + self.skin:
            return None
        return local


def _fractional(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Fractional coordinates along periodic axes (zeros along the others), (N, 3)."""
    if not pbc.any():
        return np.zeros_like(positions)
    basis = np.array(cell, dtype=np.float64, copy=True)
    free = np.flatnonzero(~pbc)
    if free.size:
        # Complete the periodic rows with an orthonormal basis of their complement
        # (the right-singular vectors beyond their rank); they must be independent.
        _, _, vt = np.linalg.svd(basis[pbc])
        basis[free] = vt[3 - free.size:]
    return np.where(pbc, positions @ np.linalg.inv(basis), 0.0)
