"""Grouped expert compute: plan → dispatch → per-expert MLP → combine.

One MoE layer call has R rows, each routed to k experts: R·k (row, expert) *pairs*. The
pairs are sorted by expert (`make_plan`), so each expert's rows are one contiguous block
and every expert runs **one** GEMM chain on all of its rows. The loop is over the experts
that have rows (at most E; a few per layer for one composition), never over rows.

The three steps are separate functions because they are the seam for expert parallelism
(docs/moe.md section 6): with experts sharded over ranks, `dispatch` becomes an
all-to-all that sends each expert's input rows to its owner, `expert_forward` runs there,
and `combine` receives the outputs back by the inverse all-to-all. Nothing here
communicates and no branch depends on which experts are empty in a way that changes
communication.

Projection split per expert: the first layer of a gated expert is applied to each input
part on the part's *source* rows (bond or atom rows), not on gathered row copies, as in
the dense `GatedMLP`. Per part, the (source row, expert) pairs needed are deduplicated
(`torch.unique` on ``expert·S + source``), projected once, and gathered per pair: an angle
expert projects each incident bond once instead of once per angle.

All ops are twice differentiable: gathers/scatters of `matris.nn.ops`, `F.linear` (as
`matris.nn.deferred.linear`, so a pipeline's W split defers the experts' input
projections too), the fused `silu_linear` and `gated_tail`, `torch.split`/`torch.cat`
and one product with the gate values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from matris.nn.deferred import linear
from matris.nn.fused import gated_tail
from matris.nn.ops import gather, scatter_sum, silu_linear

Part = tuple[Tensor, Tensor | None]


@dataclass
class Plan:
    """(row, expert) pairs of one layer call, sorted by local expert.

    order: (P,) flat pair index r·k + s of each kept pair, grouped by expert;
    rows: (P,) row r of each sorted pair; expert_of: (P,) local expert of each pair;
    experts: local ids of the experts that have pairs (ascending); sizes: their pair
    counts; num_rows: R; num_local: experts held by the layer.
    """

    order: Tensor
    rows: Tensor
    expert_of: Tensor
    experts: list[int]
    sizes: list[int]
    num_rows: int
    num_local: int


def make_plan(local: Tensor, keep: Tensor | None, num_local: int) -> Plan:
    """Sort the pairs of routed local experts (R, k) (optionally only `keep`ed ones)."""
    rows, k = local.shape
    flat = local.reshape(-1)
    pair = torch.arange(flat.numel(), device=flat.device)
    if keep is not None:
        mask = keep.reshape(-1)
        pair, flat = pair[mask], flat[mask]
    perm = torch.argsort(flat, stable=True)
    order, expert_of = pair[perm], flat[perm]
    counts = torch.bincount(expert_of, minlength=num_local)
    active = torch.nonzero(counts).squeeze(1)
    return Plan(order, torch.div(order, k, rounding_mode="floor"), expert_of,
                active.tolist(), counts[active].tolist(), rows, num_local)


@dataclass
class PartRows:
    """One input part dispatched to the experts of a plan.

    pieces: per active expert, its unique source rows' features (u_j, d);
    inverse: per active expert, (n_j,) index of each of its pairs into its piece, or
    None when the pairs map 1:1 onto the piece (row-aligned part).
    """

    pieces: list[Tensor]
    inverse: list[Tensor | None]


def dispatch(plan: Plan, parts: Sequence[Part]) -> list[PartRows]:
    """Per input part, the source rows each active expert needs (deduplicated)."""
    out = []
    for feat, idx in parts:
        if idx is None:  # row-aligned: an expert sees each of its rows once
            rows = gather(feat, plan.rows)
            out.append(PartRows(list(torch.split(rows, plan.sizes)), [None] * len(plan.sizes)))
            continue
        src = idx.index_select(0, plan.rows)
        span = feat.shape[0]
        uk, inv = torch.unique(plan.expert_of * span + src, return_inverse=True)
        usizes_all = torch.bincount(torch.div(uk, span, rounding_mode="floor"),
                                    minlength=plan.num_local)
        usizes = usizes_all[plan.experts].tolist()
        ustart = torch.cumsum(usizes_all, 0) - usizes_all
        local_inv = inv - ustart.index_select(0, plan.expert_of)
        rows = gather(feat, uk % span)
        out.append(PartRows(list(torch.split(rows, usizes)),
                            list(torch.split(local_inv, plan.sizes))))
    return out


def gated_expert_forward(expert: nn.Module, parts: Sequence[PartRows], j: int) -> Tensor:
    """A `GatedMLP` expert on its dispatched rows: (n_j, out)."""
    x = None
    for part, layer in zip(parts, expert.first):
        y = linear(part.pieces[j], layer.weight, layer.bias)
        if part.inverse[j] is not None:
            y = gather(y, part.inverse[j])
        x = y if x is None else x + y
    core, gate = silu_linear(x, [expert.core.weight, expert.gate.weight],
                             [expert.core.bias, expert.gate.bias])
    return gated_tail(core, gate, expert.norm_core, expert.norm_gate)


def ffn_expert_forward(expert: nn.Module, parts: Sequence[PartRows], j: int) -> Tensor:
    """An `FFN` expert (one row-aligned part): (n_j, out)."""
    (y,) = silu_linear(linear(parts[0].pieces[j], expert.lin1.weight), [expert.lin2.weight],
                       [None])
    return y


def combine(plan: Plan, outputs: list[Tensor], gates: Tensor, out_dim: int,
            like: Tensor) -> Tensor:
    """(R, out) Σ over each row's pairs of gate · expert output."""
    if not outputs:
        return like.new_zeros(plan.num_rows, out_dim)
    y = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    g = gather(gates.reshape(-1, 1), plan.order)
    return scatter_sum(y * g, plan.rows, plan.num_rows)


def grouped_experts(experts: nn.ModuleList, plan: Plan, parts: Sequence[Part], gates: Tensor,
                    out_dim: int, kind: str) -> Tensor:
    """dispatch → one expert forward per active expert → combine."""
    rows = dispatch(plan, parts)
    fwd = gated_expert_forward if kind == "gated" else ffn_expert_forward
    outputs = [fwd(experts[e], rows, j) for j, e in enumerate(plan.experts)]
    return combine(plan, outputs, gates, out_dim, parts[0][0])

