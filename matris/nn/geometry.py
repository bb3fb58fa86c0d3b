"""Per-stage geometry and topology, recomputed from explicit positions and strain.

Every stage calls `compute_geometry` with the `positions` (N, 3) and `strain` (B, 3, 3)
tensors it was given, so a pipeline executor can make them per-stage autograd leaves.
Bond vectors are computed once per undirected bond from its canonical edge; the
reverse edge's vector is the exact negative (no rounding asymmetry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from matris.config import ModelConfig
from matris.graph import AtomGraph
from matris.nn.basis import Bessel, Envelope, fourier_angle_basis
from matris.nn.ops import gather


@dataclass
class Topology:
    """Index tensors derived from the graph (int64). z_* = atomic number of the centre atom
    of each row, for element-aware MLPs; bonds have no centre, so MoE layers on bond rows
    route on the unordered pair `z_bond_pair` (permutation invariant)."""

    centre: Tensor  # (E,) centre atom of each directed edge
    neighbour: Tensor  # (E,)
    edge_bond: Tensor  # (E,)
    angle_centre: Tensor  # (A,)
    angle_p: Tensor  # (A,) bond of the first ("target") edge of each angle
    angle_q: Tensor  # (A,) bond of the second ("source") edge
    z_atom: Tensor  # (N,)
    z_edge: Tensor  # (E,)
    z_bond: Tensor  # (U,) centre of the canonical edge
    z_angle: Tensor  # (A,)
    z_bond_pair: Tensor  # (U, 2) both atoms of each bond (symmetric MoE route key)


def compute_topology(graph: AtomGraph) -> Topology:
    centre, neighbour = graph.edge_index[0], graph.edge_index[1]
    p, q = graph.angle_edges[0], graph.angle_edges[1]
    angle_centre = centre.index_select(0, p)
    z = graph.numbers
    z_bond_a = z.index_select(0, centre.index_select(0, graph.bond_edge))
    z_bond_b = z.index_select(0, neighbour.index_select(0, graph.bond_edge))
    return Topology(
        centre=centre, neighbour=neighbour, edge_bond=graph.edge_bond,
        angle_centre=angle_centre,
        angle_p=graph.edge_bond.index_select(0, p),
        angle_q=graph.edge_bond.index_select(0, q),
        z_atom=z, z_edge=z.index_select(0, centre),
        z_bond=z_bond_a, z_angle=z.index_select(0, angle_centre),
        z_bond_pair=torch.stack([z_bond_a, z_bond_b], dim=1))


@dataclass
class Geometry:
    """Differentiable geometry of one stage (functions of positions and strain)."""

    length: Tensor  # (U,) bond lengths, Å
    env2: Tensor  # (U, 1) two-body envelope u(d/r_c)
    basis2: Tensor  # (U, R) enveloped Bessel basis on r_c (B2)
    basis3: Tensor  # (U, R) enveloped Bessel basis on r_3 (B3)
    angle_env: Tensor  # (A, 1) u(d_P/r_3)·u(d_Q/r_3)
    raw_basis2: Tensor | None  # (U, R) Bessel basis without envelope (embedding only)
    angle_cos: Tensor | None  # (A,) cosine of each angle (embedding only)


class GeometryModule(nn.Module):
    """Computes `Geometry` for a config (holds only buffers: safe to share by stages)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.bessel2 = Bessel(config.cutoff, config.num_radial)
        self.bessel3 = Bessel(config.three_body_cutoff, config.num_radial)
        self.env2 = Envelope(config.cutoff, config.envelope_exponent)
        self.env3 = Envelope(config.three_body_cutoff, config.envelope_exponent)
        self.num_angular = config.num_angular

    def forward(self, graph: AtomGraph, topo: Topology, positions: Tensor,
                strain: Tensor | None, with_embedding: bool) -> Geometry:
        vec = bond_vectors(graph, positions, strain)
        length = torch.linalg.vector_norm(vec, dim=1)
        env2 = self.env2(length)[:, None]
        env3 = self.env3(length)[:, None]
        raw2 = self.bessel2(length)
        basis2 = raw2 * env2
        basis3 = self.bessel3(length) * env3
        angle_env = gather(env3, topo.angle_p) * gather(env3, topo.angle_q)
        cos = None
        if with_embedding:
            unit = vec / length[:, None]
            # Sign of each edge relative to its bond's canonical direction.
            n_edges = graph.edge_bond.shape[0]
            canon = graph.bond_edge.index_select(0, graph.edge_bond) == torch.arange(
                n_edges, device=vec.device)
            sign = torch.where(canon, 1.0, -1.0).to(vec.dtype)
            p, q = graph.angle_edges[0], graph.angle_edges[1]
            sp, sq = sign.index_select(0, p), sign.index_select(0, q)
            up = gather(unit, topo.angle_p)
            uq = gather(unit, topo.angle_q)
            cos = (up * uq).sum(1) * (sp * sq)
        return Geometry(length=length, env2=env2, basis2=basis2, basis3=basis3,
                        angle_env=angle_env, raw_basis2=raw2 if with_embedding else None,
                        angle_cos=cos)

    def angle_basis(self, cos: Tensor) -> Tensor:
        return fourier_angle_basis(cos, self.num_angular)


def bond_vectors(graph: AtomGraph, positions: Tensor, strain: Tensor | None) -> Tensor:
    """(U, 3) vectors x_n + S·cell − x_c of each bond's canonical edge, under strain.

    With strain ε (B, 3, 3), its symmetric part ε_s deforms positions and cell:
    x ← x + x·ε_s, cell ← cell + cell·ε_s, so (1/V)·∂E/∂ε is the (ASE-sign) stress.
    """
    e = graph.bond_edge
    c = graph.edge_index[0].index_select(0, e)
    n = graph.edge_index[1].index_select(0, e)
    shift = graph.edge_shift.index_select(0, e)
    cell = graph.cell
    if strain is not None:
        sym = 0.5 * (strain + strain.transpose(1, 2))
        positions = positions + torch.bmm(positions[:, None, :],
                                          sym.index_select(0, graph.batch)).squeeze(1)
        cell = cell + torch.bmm(cell, sym)
    bond_struct = graph.batch.index_select(0, c)
    image = torch.bmm(shift[:, None, :], cell.index_select(0, bond_struct)).squeeze(1)
    return positions.index_select(0, n) - positions.index_select(0, c) + image
