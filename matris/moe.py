"""MatRIS-MoE model-level utilities: specialisation for inference, the balance loss from
chemistry alone, parameter counts.

With element routing the experts a row uses depend only on its route key (the centre
element, or a bond's element pair), so for a fixed composition the set of experts every
layer can use is known in advance. `specialize` keeps exactly those experts: the result
computes the same energies, forces and stress (same experts, same gates, same order of
operations) while holding and touching only the used experts, so MD cost and memory
track the active, not the total, parameter count.

Why pre-selection and not merging: a row's output is Σ_j g_j·Expert_j(x) with constant
gates g_j, but each gated expert is nonlinear (norms, SiLU, sigmoid), so k experts cannot
be folded into one MLP of the same shape; the only exact merge is the trivial one
(stacking the k experts side by side, which is what the grouped compute already does).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from matris.graph import AtomGraph
from matris.nn.geometry import compute_topology
from matris.nn.moe import FINAL_BLOCK_SKIPS, ROLE_ROWS, MoELayer, moe_layers


def _block_layers(stage_or_model):
    """(global block index, MoE layer) of every MoE layer of a stage or model."""
    first = getattr(stage_or_model, "block_range", (0, 0))[0]
    for i, block in enumerate(stage_or_model.blocks):
        for layer in moe_layers(block):
            yield first + i, layer


def _row_keys(topo, row: str) -> Tensor:
    return {"atom": topo.z_atom, "edge": topo.z_edge, "bond": topo.z_bond_pair,
            "angle": topo.z_angle}[row]


def stage_aux_loss(stage, graph: AtomGraph) -> Tensor | None:
    """Balance-loss share of a stage (or of a whole model's single stage) on `graph`,
    from the route keys of its rows: the same value a training forward records."""
    layers = list(_block_layers(stage))
    if not layers:
        return None
    topo = compute_topology(graph)
    n_blocks = stage.config.num_blocks
    total = None
    for k, layer in layers:
        if k == n_blocks - 1 and layer.role in FINAL_BLOCK_SKIPS:
            continue  # the last block does not compute these outputs
        if layer.router_kind != "element":
            raise ValueError(f"MoE layer {layer.role}: a feature router's balance loss "
                             f"needs the features; use StageIO.aux_loss of the forward")
        a = layer.router.aux_from_keys(_row_keys(topo, ROLE_ROWS[layer.role]))
        total = a if total is None else total + a
    from matris.nn.moe import moe_layers_run

    return total / moe_layers_run(stage.config)


def _used_experts(layer: MoELayer, elements: list[int]) -> Tensor:
    """Global expert ids that rows with keys built from `elements` route to."""
    device = layer.router.logits.device
    if ROLE_ROWS[layer.role] == "bond":
        pairs = list(itertools.combinations_with_replacement(elements, 2))
        z = torch.tensor(pairs, dtype=torch.long, device=device)
    else:
        z = torch.tensor(elements, dtype=torch.long, device=device)
    with torch.no_grad():
        return torch.unique(layer.router(z).experts)


def specialize(model: nn.Module, elements: Iterable[int]):
    """A copy of `model` holding only the experts that `elements` route to.

    Args:
        model: a `MatRIS` with element-routed MoE layers.
        elements: the atomic numbers that will occur (e.g. ``atoms.numbers``).

    Returns a `MatRIS` (same mode and dtype) whose MoE layers keep the used experts and
    the matching router columns; energies, forces and stress of structures made of these
    elements are identical to the full model's. Structures with other elements raise a
    ValueError naming them. The full model is left untouched (its expert lists are
    swapped out only while the copy is made, so unused experts are never copied).
    """
    elements = sorted({int(z) for z in elements})
    max_z = model.config.max_z
    if not elements or elements[0] < 1 or elements[-1] > max_z:
        raise ValueError(f"elements must be atomic numbers in 1..{max_z}, got {elements}")
    layers = moe_layers(model)
    if not layers:
        return copy.deepcopy(model)
    for layer in layers:
        if layer.router_kind != "element":
            raise ValueError(f"MoE layer {layer.role} routes on features: its experts "
                             f"depend on the geometry and cannot be pre-selected")
    used = [_used_experts(layer, elements) for layer in layers]
    full = [layer.experts for layer in layers]
    try:
        for layer, ids in zip(layers, used):
            local = layer.local_of.index_select(0, ids)
            layer.experts = nn.ModuleList(layer.experts[int(i)] for i in local)
        special = copy.deepcopy(model)
    finally:
        for layer, experts in zip(layers, full):
            layer.experts = experts
    allowed = torch.zeros(max_z + 1, dtype=torch.bool)
    allowed[elements] = True
    for layer, ids in zip(moe_layers(special), used):
        router = layer.router
        # Router columns of the kept experts, in the order of `ids` (= new local order).
        col_of = {int(g): c for c, g in enumerate(router.expert_ids.tolist())}
        cols = torch.tensor([col_of[int(g)] for g in ids], device=ids.device)
        logits = router.logits.detach().index_select(1, cols).clone()
        router.logits = nn.Parameter(logits, requires_grad=router.logits.requires_grad)
        router.expert_ids = ids.clone()
        router.allowed = allowed.to(router.allowed.device)
        local_of = torch.full_like(layer.local_of, -1)
        local_of[ids] = torch.arange(len(ids), device=ids.device)
        layer.local_of = local_of
    special.specialized_elements = elements
    return special


def count_parameters(config) -> dict[str, int]:
    """`MatRIS.parameter_breakdown` of `config` without building every expert.

    Parameters are affine in the number of experts E (each expert and each router
    column has a fixed size), so the model is built on the meta device with E = top_k
    and the missing experts and router columns are added per layer. Exact (tested
    against instantiation); a ``moe-1b`` count takes a second instead of minutes.
    """
    from matris.model import MatRIS

    moe = config.moe_config
    small_cfg = config if moe is None else config.replace(
        moe={**config.moe, "num_experts": moe.top_k})
    with torch.device("meta"):
        small = MatRIS(small_cfg)
    out = small.parameter_breakdown()
    if moe is None:
        return out
    extra_total = extra_router = 0
    for layer in moe_layers(small):
        router = sum(p.numel() for p in layer.router.parameters()) // moe.top_k
        n = (moe.num_experts - moe.top_k) * (layer.expert_parameters() + router)
        key = f"{layer.role.split('.')[0]} (all blocks)"
        out[key] += n
        extra_total += n
        extra_router += (moe.num_experts - moe.top_k) * router
    out["total"] += extra_total
    out["active (per row)"] += extra_router
    return out


def parameter_summary(model) -> dict[str, int]:
    """total, active (per row), experts held and MoE layers of a model."""
    layers = moe_layers(model)
    return {"total": sum(p.numel() for p in model.parameters()),
            "active": model.active_parameters(),
            "experts held": sum(len(m.experts) for m in layers),
            "moe layers": len(layers)}
