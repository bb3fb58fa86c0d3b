"""`AtomGraph`: topology and inputs of one structure or a batch of structures.

All fields are torch tensors (CPU after `build_graph`; move with `.to(device, dtype)`).
Indices are int64 and refer to rows of the same (batched) graph.

Shapes: N atoms, E directed edges, U = E/2 undirected bonds, A angles, B structures.

| field | shape | meaning |
|---|---|---|
| numbers | (N,) int64 | atomic numbers 1..118 |
| positions | (N, 3) float | Cartesian, Å |
| cell | (B, 3, 3) float | lattice vectors as rows, Å (zeros allowed without pbc) |
| pbc | (B, 3) bool | periodicity |
| batch | (N,) int64 | structure of each atom |
| edge_index | (2, E) int64 | (centre, neighbour) of each directed edge, sorted by centre |
| edge_shift | (E, 3) float | integer image shift S: the neighbour sits at x_n + S·cell |
| edge_bond | (E,) int64 | undirected bond of each edge |
| bond_edge | (U,) int64 | the bond's canonical edge; the other edge's vector is its negative |
| angle_edges | (2, A) int64 | (p, q): ordered pairs of distinct edges with the same centre,
  both shorter than the three-body cutoff |
| num_atoms, num_edges, num_bonds, num_angles | (B,) int64 | per-structure counts |

Topology is constant within a step: derivatives treat it as fixed. The edge geometry is
*not* stored; the model recomputes it from positions (and strain) on every call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

_INDEX_FIELDS = ("numbers", "batch", "edge_index", "edge_bond", "bond_edge", "angle_edges",
                 "num_atoms", "num_edges", "num_bonds", "num_angles")
_FLOAT_FIELDS = ("positions", "cell", "edge_shift")


@dataclass
class AtomGraph:
    """Graph of one or more structures (see the module docstring for the fields)."""

    numbers: Tensor
    positions: Tensor
    cell: Tensor
    pbc: Tensor
    batch: Tensor
    edge_index: Tensor
    edge_shift: Tensor
    edge_bond: Tensor
    bond_edge: Tensor
    angle_edges: Tensor
    num_atoms: Tensor
    num_edges: Tensor
    num_bonds: Tensor
    num_angles: Tensor
    cutoff: float
    three_body_cutoff: float

    # ------------------------------------------------------------------ sizes
    @property
    def num_structures(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def n_bonds(self) -> int:
        return int(self.bond_edge.shape[0])

    @property
    def n_angles(self) -> int:
        return int(self.angle_edges.shape[1])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    # ------------------------------------------------------------------ conversion
    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> AtomGraph:
        """A copy on `device` with floating fields cast to `dtype` (indices stay int64)."""
        changes = {}
        for name in (*_INDEX_FIELDS, "pbc"):
            changes[name] = getattr(self, name).to(device=device)
        for name in _FLOAT_FIELDS:
            changes[name] = getattr(self, name).to(device=device, dtype=dtype)
        return dataclasses.replace(self, **changes)

    def split_counts(self) -> dict[str, list[int]]:
        """Per-structure row counts of atoms, edges, bonds and angles (for splitting)."""
        return {k: getattr(self, f"num_{k}").tolist()
                for k in ("atoms", "edges", "bonds", "angles")}


def collate(graphs: list[AtomGraph]) -> AtomGraph:
    """Batch graphs: concatenate rows and offset every index by the rows before it.

    All graphs must have been built with the same cutoffs; float fields are promoted to
    the first graph's dtype.
    """
    if not graphs:
        raise ValueError("collate: need at least one graph")
    first = graphs[0]
    for g in graphs[1:]:
        if (g.cutoff, g.three_body_cutoff) != (first.cutoff, first.three_body_cutoff):
            raise ValueError(
                f"collate: graphs built with different cutoffs "
                f"({first.cutoff}, {first.three_body_cutoff}) vs "
                f"({g.cutoff}, {g.three_body_cutoff})")
    if len(graphs) == 1:
        return first
    atom_off = edge_off = bond_off = struct_off = 0
    parts: dict[str, list[Tensor]] = {k: [] for k in (
        "numbers", "positions", "cell", "pbc", "batch", "edge_index", "edge_shift",
        "edge_bond", "bond_edge", "angle_edges", "num_atoms", "num_edges", "num_bonds",
        "num_angles")}
    dtype = first.positions.dtype
    for g in graphs:
        parts["numbers"].append(g.numbers)
        parts["positions"].append(g.positions.to(dtype))
        parts["cell"].append(g.cell.to(dtype))
        parts["pbc"].append(g.pbc)
        parts["batch"].append(g.batch + struct_off)
        parts["edge_index"].append(g.edge_index + atom_off)
        parts["edge_shift"].append(g.edge_shift.to(dtype))
        parts["edge_bond"].append(g.edge_bond + bond_off)
        parts["bond_edge"].append(g.bond_edge + edge_off)
        parts["angle_edges"].append(g.angle_edges + edge_off)
        for k in ("num_atoms", "num_edges", "num_bonds", "num_angles"):
            parts[k].append(getattr(g, k))
        atom_off += g.n_atoms
        edge_off += g.n_edges
        bond_off += g.n_bonds
        struct_off += g.num_structures
    cat_dim1 = {"edge_index", "angle_edges"}
    merged = {k: torch.cat(v, dim=1 if k in cat_dim1 else 0) for k, v in parts.items()}
    return AtomGraph(**merged, cutoff=first.cutoff, three_body_cutoff=first.three_body_cutoff)
