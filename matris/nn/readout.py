"""Readout: per-atom energies (with reference energies), total energies, magnetic moments."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matris.config import ModelConfig
from matris.nn.deferred import linear
from matris.nn.exchange import Exchange
from matris.nn.geometry import Geometry, Topology
from matris.nn.mlp import make_norm

NUM_ELEMENTS = 119  # reference-energy table rows, indexed by Z (row 0 unused)


class MLP(nn.Module):
    """Linear layers with biases and SiLU between them (none after the last)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for k, layer in enumerate(self.layers):
            x = linear(x, layer.weight, layer.bias)
            if k < len(self.layers) - 1:
                x = F.silu(x)
        return x


class Readout(nn.Module):
    """h̃ = Norm(h); ε_i = g_i·MLP_E(h̃_i) + E_ref[Z_i]; E_b = Σ_{owned i ∈ b} ε_i (eV).

    g_i = 1 − exp(−Σ_{k: c_k=i} u(d_k/r_c)) is a smooth coordination gate: an isolated
    atom (no neighbours) has exactly its reference energy, and an atom whose last
    neighbour leaves the cutoff goes there continuously (departure, see docs/model.md).
    Magnetic moments: m_i = |MLP_m(h̃_i)| in μB (D → 2D → 1).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.norm = make_norm(config.norm, d)
        self.energy = MLP([d, *config.energy_head, 1])
        self.magmom = MLP([d, 2 * d, 1]) if config.magmom_head else None
        self.register_buffer("reference_energies", torch.zeros(NUM_ELEMENTS))

    def forward(self, h: Tensor, geo: Geometry, topo: Topology, batch: Tensor,
                num_structures: int, exchange: Exchange
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns energy (B,), per-atom energies (N,) (zero on halo rows), magmoms (N,)."""
        x = self.norm(h)
        n_atoms = h.shape[0]
        coordination = h.new_zeros(n_atoms).index_add(
            0, topo.centre, geo.env2.squeeze(1).index_select(0, topo.edge_bond))
        gate = 1.0 - torch.exp(-coordination)
        ref = self.reference_energies.to(h.dtype).index_select(0, topo.z_atom)
        atom_energy = gate * self.energy(x).squeeze(1) + ref
        if exchange.owned is not None:  # halo rows belong to other parts
            owned = torch.arange(n_atoms, device=h.device) < exchange.owned
            atom_energy = torch.where(owned, atom_energy, torch.zeros_like(atom_energy))
        energy = h.new_zeros(num_structures).index_add(0, batch, atom_energy)
        energy = exchange.structures(energy)
        magmoms = self.magmom(x).squeeze(1).abs() if self.magmom is not None else None
        return energy, atom_energy, magmoms
