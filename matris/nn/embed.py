"""Embeddings of atoms, bonds and angles (stage 0)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from matris.config import ModelConfig
from matris.nn.geometry import Geometry, GeometryModule, Topology
from matris.nn.ops import silu


class Embedding(nn.Module):
    """h⁰ = φ(W_a·Emb[Z]); e⁰ = u(d/r_c)·φ(W_s·LN(W_2·W_1·b(d))); t⁰ = φ(W_t2·W_t1·Φ(θ)).

    b(d) is the Bessel basis *without* envelope; the bond embedding is multiplied by the
    two-body envelope afterwards so it vanishes smoothly (C²) at the cutoff. (The
    official model feeds the enveloped basis to the LayerNorm, whose output does not
    vanish.) Products of bias-free linear maps are applied as one fused matrix on the
    many bond/angle rows; the parameters are the same.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, r = config.width, config.num_radial
        self.max_z = config.max_z
        self.atom_table = nn.Embedding(config.max_z, d)
        self.atom_proj = nn.Linear(d, d, bias=False)
        self.bond_w1 = nn.Linear(r, d, bias=False)
        self.bond_w2 = nn.Linear(d, d, bias=False)
        self.bond_norm = nn.LayerNorm(d)
        self.bond_ws = nn.Linear(d, d, bias=False)
        self.angle_w1 = nn.Linear(config.num_angular, d, bias=False)
        self.angle_w2 = nn.Linear(d, d, bias=False)

    def forward(self, geometry_module: GeometryModule, geo: Geometry, topo: Topology):
        """Returns atom (N, D), bond (U, D) and angle (A, D) features."""
        z = topo.z_atom
        if not z.is_cuda and z.numel() and int(z.max()) > self.max_z:
            bad = int(z.max())
            raise ValueError(f"element Z={bad} is beyond this model's max_z={self.max_z}")
        # φ(W_a·Emb) for the whole table (≤ 118 rows), then one gather per atom.
        table = F.silu(self.atom_proj(self.atom_table.weight))
        atom = table.index_select(0, z - 1)
        w_bond = self.bond_w2.weight @ self.bond_w1.weight  # (D, R)
        bond = F.silu(self.bond_ws(self.bond_norm(F.linear(geo.raw_basis2, w_bond))))
        bond = bond * geo.env2
        w_angle = self.angle_w2.weight @ self.angle_w1.weight  # (D, n_angular)
        angle = silu(F.linear(geometry_module.angle_basis(geo.angle_cos), w_angle))
        return atom, bond, angle
