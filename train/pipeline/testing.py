"""Helpers shared by the executor's unit tests, mpirun scripts and benchmarks.

:func:`in_process_step` runs every pipeline rank of a Program in this process (the
ranks interleaved cooperatively, hand-offs through a mailbox) with the real four-phase
compute, so the exactness of every schedule / variant can be checked without MPI.
:func:`serial_gradients` is the reference: ``LocalRunner`` (whole model, double backward).
"""

from __future__ import annotations

import copy

import torch

from matris.nn.exchange import LOCAL

from ..graph_parallel.testing import case_graphs, labelled_batch
from .executor import build_program, stage_cuts, stage_parameters
from .phases import FourPhase, Micro
from .runtime import StageEngine, run_in_process

#: Micro-batches of different structures (sheared cell, batch of cells, tiny cell with
#: self-image bonds, a second sheared cell); stress labels on all of them.
MICRO_CASES = (("triclinic", 0), ("batch", 1), ("tiny", 2), ("triclinic", 3),
               ("batch", 4), ("tiny", 5), ("triclinic", 6), ("batch", 7))


def microbatches(M: int, dtype=torch.float64) -> list:
    """M labelled micro-batches (cycling through :data:`MICRO_CASES`, fresh labels)."""
    out = []
    for m in range(M):
        case, seed = MICRO_CASES[m % len(MICRO_CASES)]
        out.append(labelled_batch(case_graphs(case), seed=seed + 10 * m, dtype=dtype))
    return out


def counts_of(batches) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in batches:
        for k, v in b.labels.counts().items():
            out[k] = out.get(k, 0.0) + v
    return out


def grads(model) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for n, p in model.named_parameters()}


def serial_gradients(model, batches, loss) -> tuple[dict, dict]:
    """(parameter gradients, loss sums) of the serial double backward on a copy."""
    from ..step import LocalRunner

    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    result = LocalRunner(ref, loss, torch.device("cpu"), "float64").run(
        batches, counts_of(batches))
    return grads(ref), result.sums


def in_process_step(model, program, batches, loss, cuts=None, phases_cls=FourPhase):
    """Gradients and loss sums of one pipeline step with every rank in this process.

    ``program`` may be compute-only or lowered; ``phases_cls`` lets negative tests
    inject a broken phase implementation.
    """
    from .lower import lower

    if not program.lowered and program.num_devices > 1:
        program = lower(program)
    model.zero_grad(set_to_none=True)
    model.train()
    stages = model.stages(stage_cuts(model, program.num_stages, cuts))
    counts = counts_of(batches)
    engines, all_phases = [], []
    for r in range(program.num_devices):
        mine = {s: stages[s] for s in program.stages_of(r)}
        _, params = stage_parameters(model, mine)
        ph = phases_cls(mine, program.num_stages, loss, counts, lazy_p3=program.lazy_p3,
                        split=program.split_w, params=params)
        all_phases.append(ph)

        def micro_of(m, _b=batches):
            b = _b[m]
            return Micro(b.graph, b.labels, LOCAL, None, 1.0, bool(b.labels.stress_mask.any()))

        engines.append(StageEngine(program, r, ph, micro_of))
    walkers = run_in_process(program, engines)
    sums: dict[str, float] = {}
    for ph in all_phases:
        for k, v in ph.sums.items():
            sums[k] = sums.get(k, 0.0) + v
    leftovers = [(r, sorted(e.slots)) for r, e in enumerate(engines) if e.slots]
    if leftovers:
        raise AssertionError(f"unfinished slots after the step: {leftovers}")
    return grads(model), sums, walkers


def variants(name: str):
    """(label, generator options) of the variants a schedule is checked with."""
    base = [("eager", {}), ("lazy", {"lazy_p3": True})]
    if name == "symfold":
        base += [("eager+W+fused", {"split_w": True, "fused_turn": True}),
                 ("lazy+W4", {"lazy_p3": True, "split_w": ["P4"]})]
    if name == "gpipe4":
        base += [("eager+W", {"split_w": True})]
    if name == "1f1b4":
        base += [("lazy+fused", {"lazy_p3": True, "fused_turn": True})]
    if name == "hanayo4":
        base += [("eager+W", {"split_w": True})]
    return base


def make_program(name, P, M, num_blocks, options):
    """A lowered program; wavek's choice depends on the (default) cost model."""
    from .schedules import make_schedule

    opts = dict(options)
    lazy = opts.pop("lazy_p3", False)
    if not opts:
        return build_program(name, P, M, num_blocks, lazy_p3=lazy)
    from .executor import default_costs
    from .lower import lower

    prog = make_schedule(name, P, M, default_costs(P, lazy), lazy_p3=lazy, **opts)
    return lower(prog) if P > 1 else prog
