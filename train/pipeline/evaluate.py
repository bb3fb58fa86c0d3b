"""Validation through the pipeline: energies, forces, stress and magmoms of one batch.

No loss, no schedule: one P1 sweep 0 → S−1 (energy), one P2 sweep S−1 → 0 without
``create_graph`` (per-stage ∂E/∂x and ∂E/∂ε summed on the way down), then the last
stage's energy / magmoms go to pipeline rank 0, which hosts stage 0 under every placement
(linear and wave) and returns the predictions; the other ranks return None (the trainer
counts each frame once per DP replica). Under GP, forces and magmoms are gathered to
part 0, which alone returns them.
"""

from __future__ import annotations

import torch

from matris.nn.exchange import LOCAL
from matris.stages import StageIO

from .phases import in_fields, out_tensors
from .runtime import MAX_TAG

EVAL_TAG = MAX_TAG // 2  # disjoint from the step's hand-off tags


def _tag(stage: int, sweep: int) -> int:
    return EVAL_TAG + 4 * stage + sweep


def pipeline_predict(runner, batch) -> dict | None:
    """Predictions of ``batch`` (see the module docstring); call on every rank."""
    prog, links, me = runner.program, runner.links, runner.rank
    S, place = prog.num_stages, prog.placement
    micro = runner.micro(batch, train=False)
    g, ex = micro.graph, micro.exchange
    local: dict[tuple[int, int], list] = {}
    kept: dict[int, tuple] = {}
    mine = [s for s in range(S) if place[s] == me]

    def take(s: int, sweep: int, src: int) -> list:
        if place[src] == me:
            return local.pop((s, sweep))
        return links.recv(place[src], _tag(src, sweep))

    def give(out: list, s: int, sweep: int, dst: int) -> None:
        if place[dst] == me:
            local[(dst, sweep)] = out
        else:
            links.send(out, place[dst], _tag(s, sweep))

    for s in mine:  # P1, energy forward
        x = g.positions.detach().clone().requires_grad_(True)
        strain = (torch.zeros(g.num_structures, 3, 3, dtype=x.dtype, device=x.device,
                              requires_grad=True) if micro.stress else None)
        h = None if s == 0 else [t.requires_grad_(True) for t in take(s, 0, s - 1)]
        io = None if h is None else StageIO(**dict(zip(in_fields(runner.stages[s]), h)))
        with torch.enable_grad():
            io = runner.stages[s](io, g, x if ex is LOCAL else ex.positions(x), strain, ex)
        outs = [io.energy] if s == S - 1 else out_tensors(io)
        kept[s] = (x, strain, h, outs, io)
        if s < S - 1:
            give([t.detach() for t in outs], s, 0, s + 1)
    pred: dict = {}
    for s in reversed(mine):  # P2, force backward (no create_graph)
        x, strain, h, outs, io = kept.pop(s)
        geo = [x] + ([strain] if strain is not None else [])
        if s == S - 1:
            cots, acc = [torch.full_like(outs[0], micro.seed)], None
            pred["energy"] = io.energy.detach()
            if io.magmoms is not None:
                m = io.magmoms.detach()
                pred["magmoms"] = m if micro.owned is None else m[:micro.owned]
        else:
            msg = take(s, 1, s + 1)
            cots, acc = msg[:len(outs)], msg[len(outs):]
        wrt = geo + (h or [])
        with torch.enable_grad():
            grads = torch.autograd.grad(outs, wrt, cots, allow_unused=True)
        grads = [torch.zeros_like(t) if gr is None else gr.detach() for gr, t in zip(grads, wrt)]
        sums = grads[:len(geo)] if acc is None else [a + b for a, b in zip(acc, grads)]
        if s > 0:
            give(grads[len(geo):] + sums, s, 1, s - 1)
        else:
            pred.update(_first_stage(sums, micro))
    last = place[S - 1]
    if last != place[0]:  # energy (+ magmoms) to the rank of stage 0
        if me == last:
            links.send([pred[k] for k in ("energy", "magmoms") if k in pred], place[0],
                       _tag(S, 2))
        elif me == place[0]:
            pred.update(zip(("energy", "magmoms"), links.recv(last, _tag(S, 2))))
    links.finish()
    if me != place[0]:
        return None
    if ex is not LOCAL:
        for key in ("forces", "magmoms"):
            if key in pred:
                pred[key] = ex.gather_owned(pred[key], micro.owned_ids, batch.graph.n_atoms)
        if ex.rank != 0:
            return None
    return {k: v.to(runner.dtype) for k, v in pred.items()}


def _first_stage(sums: list, micro) -> dict:
    from ..graph_parallel.forward import _per_volume

    gx = sums[0] if micro.owned is None else sums[0][:micro.owned]
    out = {"forces": -gx}
    if micro.stress:
        virial = sums[1] if micro.exchange is LOCAL else micro.exchange.reduce(sums[1])
        out["stress"] = _per_volume(virial, micro.graph)
    return out

