"""Fit a W-splitting program under a memory cap by running some of its phases whole.

A fixed pattern with the W split (symfold's ZBV-4 order, Hanayo's rule with W) holds a
W queue from every split P3 / P4 to its W action. Where that breaks a per-rank memory
cap, :func:`fit_splits` keeps the order and runs whole (``Program.run_whole``) the split
phases whose queues are live at each rank's first overflow, those held longest first,
until every rank fits. Running a phase whole frees its queue at once but lengthens its
critical part, so the program is replayed after each round.
"""

from __future__ import annotations

from .actions import Action
from .costs import CostModel
from .deps import QUEUE_OF
from .program import Program
from .simulate import simulate

_PHASE_OF_QUEUE = {q: k for k, q in QUEUE_OF.items()}


def fit_splits(prog: Program, costs: CostModel, mem_cap, max_rounds: int = 1000
               ) -> Program | None:
    """``prog`` with as few phases run whole as this greedy finds so that every rank's
    peak stays within ``mem_cap`` (one number or one per rank, the cost model's units);
    None if the sets other than W queues already break it."""
    caps = [mem_cap] * prog.num_devices if isinstance(mem_cap, (int, float)) \
        else list(mem_cap)
    for _ in range(max_rounds):
        res = simulate(prog, costs)
        whole: set[Action] = set()
        for d, events in enumerate(res.mem_events):
            over = _queues_to_drop(events, caps[d] + 1e-9)
            if over is None:
                return None
            whole |= over
        if not whole:
            return prog
        prog = prog.run_whole(whole)
    return None


def _queues_to_drop(events: list[tuple], cap: float) -> set[Action] | None:
    """At the first moment a rank's memory exceeds ``cap``: the queued phases to run
    whole (longest held first) to get under it; empty if it never does; None if
    dropping every live queue is not enough."""
    mem = 0.0
    live: dict[tuple, tuple[float, float]] = {}  # (queue, stage, mb) -> (size, free time)
    frees = {(name, key): t for t, sign, name, _, key in events if sign < 0}
    for _, sign, name, size, key in events:
        mem += size
        if name in _PHASE_OF_QUEUE:
            if sign > 0:
                live[(name, *key)] = (size, frees[(name, key)])
            else:
                live.pop((name, *key), None)
        if sign > 0 and mem > cap:
            out, excess = set(), mem - cap
            for (q, stage, mb), (qsize, _) in sorted(live.items(), key=lambda kv: -kv[1][1]):
                if qsize <= 0:
                    continue
                out.add(Action(_PHASE_OF_QUEUE[q], stage, mb))
                excess -= qsize
                if excess <= 0:
                    return out
            return None
    return set()
