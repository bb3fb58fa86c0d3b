"""Routers of the MatRIS-MoE layers: which k experts each row uses, with what gate weight.

A *row* is one output row of an MoE layer: an atom, a directed edge, a bond or an angle.
`ElementRouter` (default) routes on chemistry only: the row's *route key* is the element
of its centre atom (atoms, edges, angles) or the unordered element pair of a bond. Its
logits are a learned table ``L`` (max_z, E); a key (a, b) has logits ``(L[a] + L[b]) / 2``
(for a single element a = b, so exactly ``L[a]``). The route is constant under atomic
motion: energies and forces stay smooth and MD never sees a routing jump.

`FeatureRouter` (option) computes logits from the row's input features; the top-k set
then changes when the features cross a tie, and the energy jumps there (documented and
tested in tests/unit/moe/test_routing.py).

Gates: a softmax over the k selected logits. They multiply the expert outputs, so the
router weights get gradients from every loss through them (twice differentiable: plain
autograd ops). The load-balancing auxiliary loss of a layer call (Switch-style):

    aux = E · Σ_j f_j · P_j,   f_j = (pairs routed to j) / (k·R),   P_j = mean_r softmax(logits_r)_j

equal to 1 for a uniform router and growing with imbalance; f is a count (no gradient),
P carries the gradient to the router.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matris.nn.ops import gather


@dataclass
class Route:
    """Routing of R rows to k experts.

    experts: (R, k) int64 global expert ids (distinct per row, by decreasing gate);
    gates: (R, k) gate weights (sum to 1 per row; differentiable w.r.t. the router);
    aux: the load-balancing loss of this call (scalar) or None when not requested.
    """

    experts: Tensor
    gates: Tensor
    aux: Tensor | None = None


def balance_loss(probs: Tensor, weights: Tensor | None, experts: Tensor,
                 num_experts: int) -> Tensor:
    """E·Σ_j f_j·P_j for router probabilities `probs` (u, E_cols) of u keys that occur
    `weights` (u,) times (None: once each), and routed experts (R, k) (column ids)."""
    rows, k = experts.shape
    if rows == 0:
        return probs.sum() * 0.0
    if weights is None:
        mean_p = probs.mean(0)
    else:
        mean_p = (weights.to(probs.dtype)[:, None] * probs).sum(0) / rows
    load = torch.bincount(experts.reshape(-1), minlength=probs.shape[1]).to(probs.dtype)
    return num_experts * (load / (rows * k) * mean_p).sum()


class ElementRouter(nn.Module):
    """Route keys (elements or element pairs) → top-k experts (see the module docstring).

    Args:
        num_experts: E; top_k: k; max_z: largest atomic number; std: init std of logits.

    Buffers (changed by specialisation, `matris.moe.specialize`): ``expert_ids`` (the
    global expert id of each logit column) and ``allowed`` ((max_z + 1,) bool: elements
    this router may be asked about; all True for a full model).
    """

    def __init__(self, num_experts: int, top_k: int, max_z: int, std: float = 1.0):
        super().__init__()
        self.num_experts, self.top_k, self.max_z = num_experts, top_k, max_z
        self.init_std = std
        self.logits = nn.Parameter(torch.randn(max_z, num_experts) * std)
        self.register_buffer("expert_ids", torch.arange(num_experts))
        self.register_buffer("allowed", torch.ones(max_z + 1, dtype=torch.bool))

    def keys(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Unique route keys of rows z ((R,) elements or (R, 2) bond pairs): returns
        (first element (u,), second element (u,), inverse (R,), counts (u,))."""
        if z.dim() == 2:
            a, b = torch.minimum(z[:, 0], z[:, 1]), torch.maximum(z[:, 0], z[:, 1])
        else:
            a = b = z
        span = self.max_z + 1
        uk, inv, counts = torch.unique(a * span + b, return_inverse=True, return_counts=True)
        ua, ub = uk // span, uk % span
        if uk.numel() and not bool(self.allowed[ua].all() & self.allowed[ub].all()):
            bad = sorted({int(x) for x in torch.cat([ua, ub]) if not bool(self.allowed[x])})
            raise ValueError(f"element(s) Z={bad} are not among the elements this "
                             f"specialised MoE model was built for; specialise it again "
                             f"with them (model.specialize(elements))")
        return ua, ub, inv, counts

    def key_logits(self, ua: Tensor, ub: Tensor) -> Tensor:
        """(u, E_cols) logits of keys (ua, ub): (L[a] + L[b]) / 2."""
        la = self.logits.index_select(0, ua - 1)
        lb = self.logits.index_select(0, ub - 1)
        return 0.5 * (la + lb)

    def forward(self, z: Tensor, want_aux: bool = False) -> Route:
        ua, ub, inv, counts = self.keys(z)
        lg = self.key_logits(ua, ub)
        val, col = lg.topk(self.top_k, dim=1)
        gates_u = torch.softmax(val, dim=1)
        cols = col.index_select(0, inv)
        aux = None
        if want_aux:
            aux = balance_loss(torch.softmax(lg, dim=1), counts, cols, self.num_experts)
        return Route(self.expert_ids[cols], gather(gates_u, inv), aux)

    def aux_from_keys(self, z: Tensor) -> Tensor:
        """The balance loss of rows with route keys z, without any features (the route
        depends on chemistry only): equals the forward's `aux` for the same rows."""
        return self(z, want_aux=True).aux


class FeatureRouter(nn.Module):
    """Logits = a linear map of the row's (concatenated) input parts; top-k of them.

    Not smooth: when two logits of a row cross at the k-th place, the selected set and
    therefore the output jump. Gates depend on the features (forces include their
    derivative between flips).
    """

    def __init__(self, in_dims, num_experts: int, top_k: int, std: float = 1.0):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.init_std = std
        self.proj = nn.ModuleList(nn.Linear(d, num_experts, bias=(i == 0))
                                  for i, d in enumerate(in_dims))
        self.reset_parameters()
        self.register_buffer("expert_ids", torch.arange(num_experts))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for lin in self.proj:
                lin.weight.normal_(0.0, self.init_std / max(1, lin.in_features) ** 0.5)
                if lin.bias is not None:
                    lin.bias.zero_()

    def forward(self, parts, want_aux: bool = False) -> Route:
        from matris.nn.mlp import gather_sum

        lg = gather_sum(parts, self.proj)
        val, col = lg.topk(self.top_k, dim=1)
        aux = None
        if want_aux:
            aux = balance_loss(F.softmax(lg, dim=1), None, col, self.num_experts)
        return Route(self.expert_ids[col], torch.softmax(val, dim=1), aux)


def apply_capacity(local: Tensor, gates: Tensor, num_experts: int, factor: float | None,
                   policy: str, where: str) -> tuple[Tensor | None, Tensor | None]:
    """Capacity limit per expert: ceil(factor·k·R/E) (row, expert) pairs per call.

    Returns (keep (R, k) bool or None when nothing overflows / dropless, overflow gate
    mass per row (R,) or None). Pairs beyond an expert's capacity are taken in row order
    (deterministic). policy "raise" raises instead of returning an overflow.
    """
    if factor is None or local.numel() == 0:
        return None, None
    rows, k = local.shape
    cap = int(-(-factor * k * rows // num_experts))
    flat = local.reshape(-1)
    perm = torch.argsort(flat, stable=True)
    sorted_e = flat[perm]
    counts = torch.bincount(sorted_e, minlength=int(local.max()) + 1)
    if int(counts.max()) <= cap:
        return None, None
    if policy == "raise":
        j = int(counts.argmax())
        raise RuntimeError(f"MoE layer {where}: expert {j} got {int(counts[j])} rows, above "
                           f"its capacity {cap} (moe.capacity_factor={factor}); raise the "
                           f"factor, use capacity_factor=null (dropless) or "
                           f"overflow='shared'")
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(flat.numel(), device=flat.device) - starts[sorted_e]
    keep = torch.empty_like(flat, dtype=torch.bool)
    keep[perm] = pos < cap
    keep = keep.view(rows, k)
    overflow = (gates * (~keep).to(gates.dtype)).sum(1)
    return keep, overflow
