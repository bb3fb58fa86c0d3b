"""A part's local `AtomGraph` and its exchange plan (pure: no communication).

Every rank of a graph-parallel group holds the same global micro-batch graph, cuts it
with the same `GraphPartition` and keeps its own part:

- local atoms: owned atoms first (rows ``[0, num_owned)``), then the halo, grouped by
  owner part; numbers and positions are copied from the global graph, so no position
  exchange is needed in the forward;
- local edges: both directed edges of every local bond, ordered by local centre;
  angles: those centred on owned atoms; bonds: the local bonds, ascending global id
  (the canonical edge of a bond is the same edge as in the global graph, so each bond
  vector is computed with the same arithmetic as serially);
- ``cell``/``pbc`` and the structure count are the global ones, so per-structure
  tensors (energies, strain, stress) have the same shape on every part.

`HaloPlan` is the plain data the exchange (``matris.train.dist.halo``) needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from matris.graph import AtomGraph

from .partition import GraphPartition, PartIndex


@dataclass(frozen=True)
class HaloPlan:
    """What part ``part`` of ``num_parts`` exchanges (index tensors on the graph's device).

    Attributes:
        num_owned, num_atoms, num_bonds: local row counts (atoms = owned + halo).
        send: per peer q, (k_q,) owned rows whose features q needs, in q's halo order.
        recv_offsets: (G + 1) local row offsets: halo rows from peer q are
            ``[recv_offsets[q], recv_offsets[q + 1])`` (empty for this part itself).
        shared: per peer q, local bond rows of bonds cut between this part and q, in
            ascending global bond id (the same order on q).
    """

    part: int
    num_parts: int
    num_owned: int
    num_atoms: int
    num_bonds: int
    send: tuple[Tensor, ...]
    recv_offsets: tuple[int, ...]
    shared: tuple[Tensor, ...]

    def recv_count(self, q: int) -> int:
        return self.recv_offsets[q + 1] - self.recv_offsets[q]

    def peers(self) -> list[int]:
        """Parts this part exchanges anything with, ascending."""
        return [q for q in range(self.num_parts) if q != self.part and (
            self.send[q].numel() or self.recv_count(q) or self.shared[q].numel())]


@dataclass(frozen=True)
class LocalPart:
    """One part of a micro-batch.

    Attributes:
        graph: the local `AtomGraph` (owned atoms first, then halo).
        plan: its `HaloPlan`.
        atoms: (n_local,) global id of each local atom row (int64, graph's device).
        index: the `PartIndex` it was built from (global ids, numpy).
    """

    graph: AtomGraph
    plan: HaloPlan
    atoms: Tensor
    index: PartIndex

    @property
    def num_owned(self) -> int:
        return self.plan.num_owned

    @property
    def owned_atoms(self) -> Tensor:
        """(n_own,) global ids of the owned atoms."""
        return self.atoms[: self.plan.num_owned]


def _remap(n: int, ids: np.ndarray) -> np.ndarray:
    """Global → local row map for rows ``ids`` (−1 elsewhere)."""
    out = np.full(n, -1, dtype=np.int64)
    out[ids] = np.arange(ids.size)
    return out


def build_part(graph: AtomGraph, partition: GraphPartition, part: int) -> LocalPart:
    """The local graph and plan of part ``part`` of ``partition`` (cut from ``graph``)."""
    if not 0 <= part < partition.num_parts:
        raise ValueError(f"part {part} outside [0, {partition.num_parts})")
    if partition.owner.shape[0] != graph.n_atoms:
        raise ValueError(f"partition is of a graph with {partition.owner.shape[0]} atoms, "
                         f"this graph has {graph.n_atoms}")
    idx = partition[part]
    dev = graph.device
    atoms = idx.atoms
    atom_map = _remap(graph.n_atoms, atoms)
    edge_map = _remap(graph.n_edges, idx.edges)
    bond_map = _remap(graph.n_bonds, idx.bonds)
    ei = graph.edge_index.cpu().numpy()
    edge_index = atom_map[ei[:, idx.edges]]
    edge_bond = bond_map[graph.edge_bond.cpu().numpy()[idx.edges]]
    bond_edge = edge_map[graph.bond_edge.cpu().numpy()[idx.bonds]]
    angle_edges = edge_map[graph.angle_edges.cpu().numpy()[:, idx.angles]]
    if min(edge_index.min(initial=0), edge_bond.min(initial=0), bond_edge.min(initial=0),
           angle_edges.min(initial=0)) < 0:
        raise AssertionError("partition is inconsistent with the graph (missing local rows)")

    def t(a: np.ndarray) -> Tensor:
        return torch.tensor(np.array(a, dtype=np.int64), device=dev)  # a writable copy

    atoms_t = t(atoms)
    batch = graph.batch.index_select(0, atoms_t)
    b = graph.num_structures
    centre = t(edge_index[0])
    edge_struct = batch.index_select(0, centre)
    local = AtomGraph(
        numbers=graph.numbers.index_select(0, atoms_t),
        positions=graph.positions.index_select(0, atoms_t),
        cell=graph.cell, pbc=graph.pbc, batch=batch,
        edge_index=t(edge_index),
        edge_shift=graph.edge_shift.index_select(0, t(idx.edges)),
        edge_bond=t(edge_bond), bond_edge=t(bond_edge), angle_edges=t(angle_edges),
        num_atoms=torch.bincount(batch, minlength=b),
        num_edges=torch.bincount(edge_struct, minlength=b),
        num_bonds=torch.bincount(edge_struct.index_select(0, t(bond_edge)), minlength=b),
        num_angles=torch.bincount(edge_struct.index_select(0, t(angle_edges[0])), minlength=b),
        cutoff=graph.cutoff, three_body_cutoff=graph.three_body_cutoff)
    offsets = np.concatenate([[0], np.cumsum(idx.recv_counts)]) + idx.num_owned
    plan = HaloPlan(part=part, num_parts=partition.num_parts, num_owned=idx.num_owned,
                    num_atoms=int(atoms.size), num_bonds=int(idx.bonds.size),
                    send=tuple(t(s) for s in idx.send),
                    recv_offsets=tuple(int(o) for o in offsets),
                    shared=tuple(t(s) for s in idx.shared))
    return LocalPart(graph=local, plan=plan, atoms=atoms_t, index=idx)
