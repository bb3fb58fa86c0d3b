"""Emulated compute: every compute action sleeps for its modelled cost; hand-offs are real.

Sleeping ranks need no cores, so P = 8 (or more) ranks run on a 2-core machine and the
measured makespan of a Program can be compared with the simulator's for the same costs:
the difference is what the runtime adds (message latency, scheduling noise, Python
overhead per action). A hand-off sends one uint8 tensor of the cost model's byte size for
that sweep (``CostModel.tensor_bytes`` summed over ``actions.BOUNDARY``; at least 1 byte).

Each action sleeps until ``start + duration`` (an absolute deadline), so oversleeping
does not accumulate inside an action; the walker's clock measures what really happened.
"""

from __future__ import annotations

import time

import torch

from .actions import BOUNDARY, DIRECTION, Action, Kind
from .costs import CostModel
from .program import Program
from .runtime import Walker
from .trace import TraceSlice


class SleepEngine:
    """Engine for :class:`~.runtime.Walker`: sleep ``seconds_per_unit · duration``."""

    def __init__(self, prog: Program, costs: CostModel, seconds_per_unit: float = 1.0,
                 byte_scale: float = 1.0) -> None:
        self.prog, self.costs = prog, costs.for_program(prog)
        self.scale, self.byte_scale = seconds_per_unit, byte_scale
        self.slots: dict = {}

    def message(self, phase: Kind) -> list[torch.Tensor]:
        nbytes = sum(self.costs.tensor_bytes.get(n, 0.0) for n in BOUNDARY[phase])
        return [torch.zeros(max(1, int(nbytes * self.byte_scale)), dtype=torch.uint8)]

    def run(self, a: Action, msg):
        deadline = time.perf_counter() + self.scale * self.costs.duration(self.prog, a)
        phase = Kind.P4 if a.kind is Kind.P34 else a.kind
        out = None
        if phase in DIRECTION:  # build the outgoing message inside the action's time
            out = self.message(phase)
        left = deadline - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return out


def run_emulated(prog: Program, rank: int, costs: CostModel, links,
                 seconds_per_unit: float = 1.0, byte_scale: float = 1.0) -> list[TraceSlice]:
    """Walk ``prog`` (lowered) on pipeline rank ``rank`` with sleeping compute."""
    walker = Walker(prog, rank, SleepEngine(prog, costs, seconds_per_unit, byte_scale), links)
    return walker.run()


def measure(prog: Program, costs: CostModel, rank: int, links, seconds_per_unit: float,
            repeats: int = 1, byte_scale: float = 1.0):
    """Run the emulated program ``repeats`` times on every rank of the world (one
    pipeline: world rank = pipeline rank), each run after a barrier. Returns, on rank 0,
    (makespans in seconds, the merged trace of the first run); (None, None) elsewhere.

    Times are ``time.perf_counter`` (CLOCK_MONOTONIC, shared by the processes of a node),
    so per-rank slices merge onto one time line; the makespan runs from the first action's
    start to the last action's end over all ranks."""
    from matris.train import dist as mdist

    spans, first = [], None
    for _ in range(repeats):
        mdist.barrier()
        walker = Walker(prog, rank, SleepEngine(prog, costs, seconds_per_unit, byte_scale),
                        links)
        slices = walker.run()
        mine = [(s.action, walker.t0 + s.start, walker.t0 + s.end) for s in slices]
        everyone = mdist.allgather_object((rank, mine))
        if rank == 0:
            merged = [TraceSlice(d, a, s, e) for d, sl in everyone for a, s, e in sl]
            base = min(x.start for x in merged)
            merged = sorted((TraceSlice(x.device, x.action, x.start - base, x.end - base)
                             for x in merged), key=lambda x: (x.device, x.start))
            spans.append(max(x.end for x in merged))
            first = first or merged
    return (spans, first) if rank == 0 else (None, None)
