"""Energy, forces, stress and magnetic moments of one part, through the exchange seam.

The model runs unchanged on the part's local graph (``model(graph, positions, strain,
exchange)``, or a pipeline `Stage` chain); the exchange makes every per-part sum equal
its serial counterpart. Outputs of part p:

- ``energy`` (B,) eV: the totals (the same on every part, via ``exchange.structures``);
- ``forces`` (n_own, 3) eV/Å: −∂E/∂x for the part's owned atoms. The positions leaf is
  the part's (n_local, 3) copy; `exchange.positions` makes its halo rows copies of the
  owners' rows, so halo contributions to ∂E/∂x are reverse-summed to the owners;
- ``stress`` (B, 3, 3) eV/Å³: (1/V)·∂E/∂ε, each part's partial derivative summed over
  the group (``exchange.reduce``);
- ``magmoms`` / ``atom_energies`` (n_own,): owned rows.

Seeding: ``structures`` is an exact all-reduce (self-adjoint), so every part holds the
total energy and differentiating it on every part would count it G times. The energy is
therefore seeded with 1 on part 0 and 0 elsewhere; the all-reduce's backward hands the
seed to every part's partial energies. The zero seed still runs the same backward on the
other parts: every rank visits the same communicating nodes in the same order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .part import LocalPart


def part_outputs(model, part: LocalPart, exchange, *, forces: bool = True,
                 stress: bool = False, magmoms: bool = True, atom_energies: bool = False,
                 create_graph: bool = False) -> dict[str, Tensor]:
    """Outputs of ``part`` (see the module docstring for shapes and units).

    Args:
        model: anything called as ``model(graph, positions, strain, exchange) -> StageIO``
            (a ``MatRIS``, or a composition of its stages).
        part: the `LocalPart` of this rank.
        exchange: the part's ``GraphExchange`` (``matris.train.dist.halo``).
        forces, stress, magmoms, atom_energies: what to return.
        create_graph: keep the derivative graph (training through forces/stress).

    Every rank of the group must call this with the same flags.
    """
    graph = part.graph
    owned = part.num_owned
    x = graph.positions.detach()
    if forces:
        x.requires_grad_(True)
    strain = None
    if stress:
        strain = torch.zeros(graph.num_structures, 3, 3, dtype=x.dtype, device=x.device,
                             requires_grad=True)
    need_grad = forces or stress
    with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
        positions = exchange.positions(x)
        io = model(graph, positions, strain, exchange)
    out = {"energy": io.energy}
    if need_grad:
        inputs = [t for t in (x if forces else None, strain) if t is not None]
        seed = io.energy.new_full(io.energy.shape, 1.0 if exchange.rank == 0 else 0.0)
        grads = torch.autograd.grad(io.energy, inputs, grad_outputs=seed,
                                    create_graph=create_graph, allow_unused=True)
        # An unused input would break the structural symmetry between ranks; keep it
        # connected (never happens with MatRIS, where empty parts still record ops).
        grads = [t * 0.0 if g is None else g for g, t in zip(grads, inputs)]
        if forces:
            out["forces"] = -grads[0][:owned]
        if stress:
            out["stress"] = _per_volume(exchange.reduce(grads[-1]), graph)
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        if magmoms and io.magmoms is not None:
            out["magmoms"] = io.magmoms[:owned]
        if atom_energies:
            out["atom_energies"] = io.atom_energy[:owned]
    if not create_graph:
        out = {k: v.detach() for k, v in out.items()}
    return out


def _per_volume(virial: Tensor, graph) -> Tensor:
    """(B, 3, 3) virial / V; NaN for structures not periodic along all axes.

    Divides by a safe volume and selects NaN afterwards, so a masked-out non-periodic
    frame gives a zero (not 0/NaN = NaN) gradient in the backward. (The serial
    ``matris.outputs.compute_outputs`` divides by NaN directly, so there a batch mixing
    a molecule with stress-labelled cells gets NaN parameter gradients.)
    """
    vol = torch.linalg.det(graph.cell).abs()
    full = graph.pbc.all(dim=1) & (vol > 0)
    safe = torch.where(full, vol, torch.ones_like(vol))[:, None, None]
    return torch.where(full[:, None, None], virial / safe, torch.full_like(virial, float("nan")))
