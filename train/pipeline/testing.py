"""Helpers shared by the executor's unit tests, mpirun scripts and benchmarks.

:func:`in_process_step` runs every pipeline rank of a Program in this process (the
ranks interleaved cooperatively, hand-offs through a mailbox) with the real four-phase
compute, so the exactness of every schedule / variant can be checked without MPI.
:func:`serial_gradients` is the reference: ``LocalRunner`` (whole model, double backward).
"""

from __future__ import annotations

import copy
import json

import torch

from matris.nn.exchange import LOCAL

from ..graph_parallel.testing import labelled_batch, lattice
from .executor import build_program, stage_cuts, stage_parameters
from .phases import FourPhase, Micro
from .runtime import StageEngine, run_in_process

#: Small structures (``tiny`` preset cutoffs) so that exactness checks stay cheap.
MICRO_CASES = ("sheared", "pair", "molecule", "selfimage")


def case_structures(name: str, seed: int) -> list:
    """Graphs of one micro-batch: a sheared 12-atom cell, a batch of two cells, a
    molecule (no stress labels: a micro-batch without strain leaves) or a 3-atom cell
    smaller than the cutoff (bonds to its own images)."""
    if name == "sheared":
        return [lattice((2, 2, 3), 3.1, 0.2, 0.2, seed=seed)]
    if name == "pair":
        return [lattice((2, 2, 2), 3.2, 0.0, 0.2, seed=seed),
                lattice((1, 2, 3), 3.1, -0.15, 0.2, seed=seed + 1)]
    if name == "molecule":
        return [lattice((2, 2, 2), 2.6, 0.0, 0.3, seed=seed, pbc=False)]
    if name == "selfimage":
        return [lattice((1, 1, 3), 2.9, 0.15, 0.2, seed=seed)]
    raise KeyError(f"unknown case {name!r}")


def microbatches(M: int, dtype=torch.float64, offset: int = 0) -> list:
    """M labelled micro-batches of different structures (cycling :data:`MICRO_CASES`,
    fresh geometry and labels for each)."""
    out = []
    for m in range(offset, offset + M):
        graphs = case_structures(MICRO_CASES[m % len(MICRO_CASES)], seed=100 + m)
        out.append(labelled_batch(graphs, seed=7 * m + 1, dtype=dtype))
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
    stages = model.stages(stage_cuts(model, program.num_stages, cuts,
                                     num_devices=program.num_devices))
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
                 ("lazy+W4", {"lazy_p3": True, "split_w": ["P4"]}),
                 # W split for some micro-batches only (Program.unsplit)
                 ("eager+W-part", {"split_w": True, "whole_microbatches": [1]})]
    if name == "gpipe4":
        base += [("eager+W", {"split_w": True})]
    if name == "1f1b4":
        base += [("lazy+fused", {"lazy_p3": True, "fused_turn": True})]
    if name == "hanayo4":
        base += [("eager+W", {"split_w": True})]
    return base


def schedule_jobs(wanted: list[str]) -> list[tuple[str, str, list[str]]]:
    """(schedule, variant label, config overrides) for every ``SCHEDULE[:VARIANT]`` item
    of ``wanted`` (all of a schedule's `variants` when no variant is named; a VARIANT
    starting with ``{`` is a JSON object of generator options, e.g.
    ``hanayo4:{"waves": 2}``); the overrides set ``parallel.schedule``,
    ``parallel.lazy_p3`` and the generator options."""
    jobs = []
    for item in wanted:
        name, _, only = item.partition(":")
        chosen = [(only, json.loads(only))] if only.startswith("{") else \
            [(label, options) for label, options in variants(name) if only in ("", label)]
        for label, options in chosen:
            opts = dict(options)
            lazy = opts.pop("lazy_p3", False)
            jobs.append((name, label, [f"parallel.schedule={name}", f"parallel.lazy_p3={lazy}",
                                       f"parallel.schedule_options={json.dumps(opts)}"]))
    return jobs


def make_program(name, P, M, num_blocks, options):
    """The lowered program the executor would build for ``options`` (lazy_p3 + generator
    options); wavek's choice depends on the default cost model."""
    opts = dict(options)
    lazy = opts.pop("lazy_p3", False)
    return build_program(name, P, M, num_blocks, lazy_p3=lazy, options=opts)
