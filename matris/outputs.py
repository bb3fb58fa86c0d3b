"""Energies, forces, stress and magnetic moments of a batch (conservative, by autograd).

forces = −∂E/∂x (eV/Å); stress = (1/V)·∂E/∂ε (eV/Å³, ASE sign: positive under tension),
with ε a symmetric strain applied to positions and cell (see `matris.nn.geometry`).
Stress is NaN for structures that are not periodic along all three axes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from matris.graph import AtomGraph
from matris.nn.exchange import LOCAL, Exchange
from matris.nn.ops import no_param_grads


def compute_outputs(model, graph: AtomGraph, *, forces: bool = True, stress: bool = False,
                    magmoms: bool = True, atom_energies: bool = False,
                    create_graph: bool = False, exchange: Exchange = LOCAL,
                    checkpoint: bool | None = None) -> dict[str, Tensor]:
    """Evaluate `model` on `graph`.

    Args:
        model: a `MatRIS` (anything mapping (graph, positions, strain, exchange) → StageIO).
        graph: a (batched) `AtomGraph` in the model's dtype and device.
        forces, stress: derive them by autograd.
        magmoms: include magnetic moments when the model has the head.
        atom_energies: include per-atom energies (eV, reference included).
        create_graph: keep the derivative graph (training through forces/stress).
        exchange: graph-parallel exchange (default: identity).
        checkpoint: recompute interaction blocks in the backward to save memory (about
            +40% time). Default (None): on for inference (no create_graph) when the
            kept block intermediates are estimated above `CHECKPOINT_BYTES`.

    Returns:
        dict with "energy" (B,) eV and, as requested, "forces" (N, 3) eV/Å,
        "stress" (B, 3, 3) eV/Å³, "magmoms" (N,) μB, "atom_energies" (N,) eV; MoE
        models in training mode add "aux_loss" (scalar, the load-balancing loss of
        this forward, differentiable w.r.t. the routers; docs/moe.md).
    """
    positions = graph.positions.detach()
    strain = None
    if forces:
        positions.requires_grad_(True)
    if stress:
        strain = torch.zeros(graph.num_structures, 3, 3, dtype=positions.dtype,
                             device=positions.device, requires_grad=True)
    need_grad = forces or stress
    with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
        if checkpoint is None:
            checkpoint = need_grad and not create_graph and \
                activation_bytes(model, graph) > CHECKPOINT_BYTES
        io = model(graph, positions, strain, exchange, checkpoint=checkpoint)
    out = {"energy": io.energy}
    if need_grad:
        inputs = [x for x in (positions if forces else None, strain) if x is not None]
        with no_param_grads():  # only position/strain gradients are taken here
            grads = torch.autograd.grad(io.energy.sum(), inputs, create_graph=create_graph,
                                        allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if forces:
            out["forces"] = -grads[0]
        if stress:
            # Divide by a finite volume and mark non-periodic rows NaN afterwards, so the
            # backward of a loss that masks those rows out stays finite (0/NaN → NaN).
            vol = cell_volumes(graph)
            valid = torch.isfinite(vol)
            per_vol = grads[-1] / torch.where(valid, vol, torch.ones_like(vol))[:, None, None]
            out["stress"] = torch.where(valid[:, None, None], per_vol,
                                        torch.full_like(per_vol, float("nan")))
    if magmoms and io.magmoms is not None:
        out["magmoms"] = io.magmoms
    if atom_energies:
        out["atom_energies"] = io.atom_energy
    if io.aux_loss is not None:
        out["aux_loss"] = io.aux_loss
    if not create_graph:
        out = {k: v.detach() for k, v in out.items()}
    return out


CHECKPOINT_BYTES = 8 * 2**30


def activation_bytes(model, graph: AtomGraph) -> float:
    """Rough bytes of block intermediates kept for a force backward (~24 angle-width
    rows per angle per block; angles dominate)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return 0.0
    item = graph.positions.element_size()
    return 24.0 * cfg.width * item * graph.n_angles * cfg.num_blocks


def cell_volumes(graph: AtomGraph) -> Tensor:
    """(B,) |det(cell)| in Å³; NaN where a structure is not periodic along all axes."""
    vol = torch.linalg.det(graph.cell).abs()
    full = graph.pbc.all(dim=1)
    return torch.where(full & (vol > 0), vol, torch.full_like(vol, float("nan")))


def energy_and_forces(model, graph: AtomGraph, create_graph: bool = False):
    """Shortcut: (energy (B,), forces (N, 3))."""
    out = compute_outputs(model, graph, forces=True, create_graph=create_graph)
    return out["energy"], out["forces"]
