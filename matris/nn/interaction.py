"""One MatRIS interaction block: line attention, atom attention, line and atom refinement.

Shapes: h (N, D) atoms, e (U, D) bonds, t (A, D) angles. For angle a: centre i_a,
"target" bond P_a (first edge) and "source" bond Q_a (second edge). For directed edge k:
centre c_k, neighbour n_k, bond u(k).

Smooth attention (departure from the official softmax, see docs/model.md): per channel,
    w_a = env_a·exp(ℓ_a),  ℓ = c·tanh(raw/c),  A_b = Σ_a w_a m_a / (κ + Σ_a w_a)
with env the cutoff envelope of the row (angles: u(d_P/r_3)·u(d_Q/r_3); edges:
u(d/r_c)). Rows at a cutoff get zero weight, a lone neighbour fades in continuously
(κ > 0), logits are bounded so exp() cannot overflow and no max pass is needed, and the
numerator and denominator are plain sums: a graph-parallel part sums its partials with
`exchange.bonds` before the division.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matris.config import ModelConfig
from matris.nn.attention import smooth_attention
from matris.nn.deferred import linear
from matris.nn.exchange import LOCAL, Exchange
from matris.nn.fused import gather_mul_scatter
from matris.nn.geometry import Geometry, Topology
from matris.nn.mlp import build_mlp
from matris.nn.ops import scatter_sum


class _Gammas(nn.Module):
    def __init__(self, names: tuple[str, ...], dim: int):
        super().__init__()
        for name in names:
            self.register_parameter(name, nn.Parameter(torch.ones(dim)))


class LineAttention(nn.Module):
    """Angles attend into bonds: e' = G₂([e, A^T, A^S]) + γ⊙e, t' = m + γ⊙t."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.bound, self.kappa = config.attention_logit_bound, config.attention_kappa
        self.smooth = True  # tests switch this off to show the cutoff test can fail
        self.logits = nn.Linear(d, 2 * d, bias=False)  # W_T and W_S stacked
        self.message = build_mlp("gated", [d, d, d], d, d, config, "line_attention.message")
        self.update = build_mlp("gated", [d, d, d], d, d, config, "line_attention.update")
        self.gamma = _Gammas(("bond", "angle"), d)

    def forward(self, e: Tensor, t: Tensor, geo: Geometry, topo: Topology,
                exchange: Exchange) -> tuple[Tensor, Tensor]:
        d, n_bonds = t.shape[1], e.shape[0]
        m = self.message([(t, None), (e, topo.angle_p), (e, topo.angle_q)], topo.z_angle)
        logits = linear(t, self.logits.weight)
        agg = smooth_attention(logits, geo.angle_env if self.smooth else None, m,
                               None, topo.angle_p, topo.angle_q, n_bonds, self.bound)
        num_t, den_t, num_s, den_s = exchange.bonds(agg).split(d, dim=1)
        a_t = num_t / (den_t + self.kappa)
        a_s = num_s / (den_s + self.kappa)
        e_new = self.update([(e, None), (a_t, None), (a_s, None)], topo.z_bond_pair) \
            + self.gamma.bond * e
        t_new = m + self.gamma.angle * t
        return e_new, t_new


class AtomAttention(nn.Module):
    """Bonds attend into atoms: h' = G₄([h, A^T, A^S]) + γ⊙h, e'' = mean_dir(m) + γ⊙e."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.bound, self.kappa = config.attention_logit_bound, config.attention_kappa
        self.smooth = True
        self.logits = nn.Linear(d, 2 * d, bias=False)
        self.message = build_mlp("gated", [d, d, d], d, d, config, "atom_attention.message")
        self.update = build_mlp("gated", [d, d, d], d, d, config, "atom_attention.update")
        self.gamma = _Gammas(("atom", "bond"), d)

    def forward(self, h: Tensor, e: Tensor, geo: Geometry, topo: Topology,
                exchange: Exchange) -> tuple[Tensor, Tensor]:
        h = exchange.atoms(h)  # neighbour features of halo atoms are read below
        d, n_atoms, n_bonds = h.shape[1], h.shape[0], e.shape[0]
        m = self.message([(e, topo.edge_bond), (h, topo.centre), (h, topo.neighbour)],
                         topo.z_edge)
        # Logits depend on the bond only: computed on U rows, shared by both directions.
        logits = linear(e, self.logits.weight)
        agg = smooth_attention(logits, geo.env2 if self.smooth else None, m,
                               topo.edge_bond, topo.centre, topo.neighbour, n_atoms, self.bound)
        num_t, den_t, num_s, den_s = agg.split(d, dim=1)
        a_t = num_t / (den_t + self.kappa)
        a_s = num_s / (den_s + self.kappa)
        h_new = self.update([(h, None), (a_t, None), (a_s, None)], topo.z_atom) \
            + self.gamma.atom * h
        e_new = 0.5 * scatter_sum(m, topo.edge_bond, n_bonds) + self.gamma.bond * e
        return h_new, e_new


class LineRefinement(nn.Module):
    """r = G₅([t, h_i, e_P, e_Q]); s_b = ε_b⊙Σ_{P_a=b} r_a⊙ε_{Q_a}; e += F₁(s); t += F₂(r)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.envelope = nn.Linear(config.num_radial, d, bias=False)  # ε = V₃·B3
        self.message = build_mlp("gated", [d, d, d, d], d, d, config, "line_refine.message")
        self.bond_ffn = build_mlp("ffn", [d], d, d, config, "line_refine.bond")
        self.angle_ffn = build_mlp("ffn", [d], d, d, config, "line_refine.angle")
        self.gamma = _Gammas(("bond", "angle"), d)

    def forward(self, h: Tensor, e: Tensor, t: Tensor, geo: Geometry, topo: Topology,
                exchange: Exchange, need_angles: bool = True) -> tuple[Tensor, Tensor | None]:
        eps = linear(geo.basis3, self.envelope.weight)  # (U, D), zero beyond r_3
        # h is read at angle centres only, which a part owns: no halo refresh needed.
        r = self.message([(t, None), (h, topo.angle_centre), (e, topo.angle_p),
                          (e, topo.angle_q)], topo.z_angle)
        partial = gather_mul_scatter(r, eps, topo.angle_q, topo.angle_p, e.shape[0])
        s = exchange.bonds(partial) * eps
        e_new = self.bond_ffn(s, topo.z_bond_pair) + self.gamma.bond * e
        if not need_angles:  # the model's last block: nothing reads the angles
            return e_new, None
        t_new = self.angle_ffn(r, topo.z_angle) + self.gamma.angle * t
        return e_new, t_new


class AtomRefinement(nn.Module):
    """r = G₆([e, h_c, h_n]); s_i = Σ_{c_k=i} r_k⊙η_k; h += F₃(s); e += mean_dir F₄(r)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.envelope = nn.Linear(config.num_radial, d, bias=False)  # η = V₄·B2
        self.message = build_mlp("gated", [d, d, d], d, d, config, "atom_refine.message")
        self.atom_ffn = build_mlp("ffn", [d], d, d, config, "atom_refine.atom")
        self.bond_ffn = build_mlp("ffn", [d], d, d, config, "atom_refine.bond")
        self.gamma = _Gammas(("atom", "bond"), d)

    def forward(self, h: Tensor, e: Tensor, geo: Geometry, topo: Topology,
                exchange: Exchange, need_bonds: bool = True) -> tuple[Tensor, Tensor | None]:
        h = exchange.atoms(h)
        eta = linear(geo.basis2, self.envelope.weight)  # (U, D), zero beyond r_c
        r = self.message([(e, topo.edge_bond), (h, topo.centre), (h, topo.neighbour)],
                         topo.z_edge)
        s = gather_mul_scatter(r, eta, topo.edge_bond, topo.centre, h.shape[0])
        h_new = self.atom_ffn(s, topo.z_atom) + self.gamma.atom * h
        if not need_bonds:
            return h_new, None
        e_new = 0.5 * scatter_sum(self.bond_ffn(r, topo.z_edge), topo.edge_bond, e.shape[0]) \
            + self.gamma.bond * e
        return h_new, e_new


class InteractionBlock(nn.Module):
    """(h, e, t) → (h'', e'''', t''): the four sub-steps in order.

    With ``final=True`` (the model's last block) the bond and angle outputs, which
    nothing reads, are not computed (returned as None); their parameters then get no
    gradient, as in the official model where they are equally unused.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.line_attention = LineAttention(config)
        self.atom_attention = AtomAttention(config)
        self.line_refine = LineRefinement(config)
        self.atom_refine = AtomRefinement(config)

    def forward(self, h: Tensor, e: Tensor, t: Tensor, geo: Geometry, topo: Topology,
                exchange: Exchange = LOCAL, final: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        e, t = self.line_attention(e, t, geo, topo, exchange)
        h, e = self.atom_attention(h, e, geo, topo, exchange)
        e, t = self.line_refine(h, e, t, geo, topo, exchange, need_angles=not final)
        h, e = self.atom_refine(h, e, geo, topo, exchange, need_bonds=not final)
        return h, e, t
