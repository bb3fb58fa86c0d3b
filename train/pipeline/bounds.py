"""Lower bounds on the makespan of one synchronous pipeline step, and ratio ceilings.

:func:`lower_bound` generalises the research note's section-4.5 formulas. For every
compute action j of a program skeleton (placement, flags, costs; the order is free)
let p_j be its duration, the *head* r_j the longest dependency path from the step's
start to j's start and the *tail* q_j the longest path from j's end to the step's end
(both with unlimited ranks, communication latencies included). On one rank the actions
must run one at a time, so for any subset J of its actions

    makespan ≥ min_{j∈J} r_j + Σ_{j∈J} p_j + min_{j∈J} q_j,

the bound of the preemptive one-machine relaxation 1|r_j, q_j, pmtn|C_max (Carlier
1982; its optimum equals the best such subset). It suffices to try the subsets
{j : r_j ≥ a, q_j ≥ b} for every head value a and tail value b, so the bound is exact for
that relaxation. With linear placement and no W split it contains the note's terms
i·t1 + M·T + i·t4 (all of rank i's work) and P(t1+t2) + i·t3 + M(t3+t4) + i·t4 (its
P3/P4 work, which cannot start before the round trip); it is never weaker than them and
is tighter for wave placements, unequal stages and non-zero communication.

A program that splits only some P3 / P4 (``Program.unsplit``) is bounded through
:func:`split_relaxation`: every phase of a split kind becomes a critical part of
min(t, (1 − w)·f·t) followed by a W part that brings it to t, with empty W queues. Both
real choices are at least as long in every part (split: (1 − w)·f·t and w·f·t, f ≥ 1;
whole: t, whose successors wait for all of it) and hold at least as much memory, so
the relaxed bound holds for every choice of which phases split.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import replace
from functools import cache

from .actions import Action, Kind
from .costs import CostModel
from .deps import creates, freeing_actions, predecessors, successors_map
from .memory_windows import whole_phase_tails, window_bound
from .program import Program


def heads_tails(prog: Program, costs: CostModel) -> dict:
    """(kind, stage) → (head, duration, tail) for one micro-batch (all are identical)."""
    costs = costs.for_program(prog)
    one = [a for a in prog.expected_actions() if a.microbatch == 0]
    dur = {a: costs.duration(prog, a) for a in one}
    succ = successors_map(prog)

    def lat(p, a, dep):
        cross = prog.device_of(p.stage) != prog.device_of(a.stage)
        return costs.comm_time(dep.phase) if (cross and dep.phase) else 0.0

    @cache
    def head(a):
        return max((head(d.producer) + dur[d.producer] + lat(d.producer, a, d)
                    for d in predecessors(prog, a)), default=0.0)

    @cache
    def tail(a):
        return max((lat(a, b, d) + dur[b] + tail(b) for b, d in succ.get(a, ())),
                   default=0.0)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * len(one) + 1000))
    try:
        return {(a.kind, a.stage): (head(a), dur[a], tail(a)) for a in one}
    finally:
        sys.setrecursionlimit(limit)


def split_relaxation(costs: CostModel) -> CostModel:
    """Costs under which a fully split skeleton bounds every per-phase split choice (see
    the module docstring): split factor 1, W share 1 − min(1, (1 − w)·f), no queues."""
    w = {k.name: 1.0 - min(1.0, (1.0 - costs.w(k)) * costs.f(k)) for k in (Kind.P3, Kind.P4)}
    zero = tuple(0.0 for _ in costs.mem_q3)
    return replace(costs, w_frac=w, split_factor={"P3": 1.0, "P4": 1.0},
                   mem_q3=zero, mem_q4=zero, label=f"{costs.label} [split relaxation]")


def lower_bound(prog: Program, costs: CostModel, mem_cap=None) -> float:
    """Makespan lower bound for any order of ``prog``'s actions on its placement.

    With ``mem_cap`` (per device, or one number for all, in the units of
    ``costs.mem_a``) the memory terms :func:`_memory_term` and
    :func:`.memory_windows.window_bound` (idle forced at both ends of the step) are
    added. A program with :attr:`~.program.Program.unsplit` phases is bounded by its
    :func:`split_relaxation`.
    """
    real = costs.for_program(prog)
    mixed = bool(prog.unsplit)
    if mixed:
        prog = prog.with_orders(prog.orders, unsplit=frozenset())
        costs = split_relaxation(costs)
    ht = heads_tails(prog, costs)
    best = _subset_bound(ht, prog)
    if mem_cap is not None:
        caps = [mem_cap] * prog.num_devices if isinstance(mem_cap, (int, float)) \
            else list(mem_cap)
        cm = costs.for_program(prog)
        whole_tails = whole_phase_tails(prog, ht, cm) if mixed else None
        for d in range(prog.num_devices):
            best = max(best, _memory_term(prog, cm, ht, d, caps[d]),
                       window_bound(prog, ht, real, d, caps[d], whole_tails))
    return best


def _subset_bound(ht: dict, prog: Program) -> float:
    M = prog.num_microbatches
    per_dev: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for (_, stage), (h, p, q) in ht.items():
        per_dev[prog.device_of(stage)].append((h, M * p, q))
    best = max(h + p / M + q for h, p, q in
               ((h, p, q) for groups in per_dev.values() for h, p, q in groups))
    for groups in per_dev.values():
        heads = sorted({h for h, _, _ in groups})
        tails = sorted({q for _, _, q in groups})
        for a in heads:
            for b in tails:
                work = sum(p for h, p, q in groups if h >= a and q >= b)
                if work:
                    best = max(best, a + work + b)
    return best


def _memory_term(prog: Program, costs: CostModel, ht: dict, d: int, cap: float) -> float:
    """Idle time forced by the memory cap on rank d, plus its work and its last tail.

    No activation set on rank d can be freed before F_d, the earliest end of any of its
    freeing actions (P3/P4/W/P34, from heads and durations). Every set-creating action
    (P1, P2, a split P3/P4 queueing for its W) started before F_d still holds its set
    then, so their sizes add up to at most ``cap``: their work before F_d is at most a
    fractional knapsack of (size, duration) items. Other actions cannot start before
    their heads. The rest of [0, F_d] is idle, and
    makespan ≥ idle + Σ work(d) + min tail(d).
    """

    M = prog.num_microbatches
    mine = {k: v for k, v in ht.items() if prog.device_of(k[1]) == d}
    if not mine:
        return 0.0
    sizes = costs.set_sizes()
    f_d = math.inf
    items, others = [], []
    for (kind, stage), (h, p, _) in mine.items():
        name = creates(prog, Action(kind, stage, 0))
        size = 0.0 if name is None else sizes[name][stage]
        if size <= 0:  # creates nothing that counts against the cap
            others.append((h, p))
            continue
        items.append((p / size, size, p))
        frees = freeing_actions(prog, name, stage, 0)
        f_d = min(f_d, max(ht[(f.kind, f.stage)][0] + ht[(f.kind, f.stage)][1]
                           for f in frees))
    knap, room = 0.0, cap
    for _, size, p in sorted(items, reverse=True):
        take = M if size == 0 else min(M, room / size)
        knap += take * p
        room -= take * size
        if room <= 0:
            break
    other = sum(min(M * p, max(0.0, f_d - h)) for h, p in others)
    other = min(other, max(0.0, f_d - min((h for h, _ in others), default=f_d)))
    first = min(h for h, _, _ in mine.values())
    busy = min(f_d - first, knap + other)
    idle = max(0.0, f_d - busy)
    work = M * sum(p for _, p, _ in mine.values())
    return idle + work + min(q for _, _, q in mine.values())


def total_work(prog: Program, costs: CostModel) -> float:
    """Σ of compute time over all ranks in one step."""
    costs = costs.for_program(prog)
    return sum(costs.duration(prog, a) for a in prog.expected_actions())


def bubble_lower_bound(prog: Program, costs: CostModel, mem_cap=None) -> float:
    """Smallest bubble fraction any order of ``prog``'s actions can reach (within
    ``mem_cap`` if given)."""
    lb = lower_bound(prog, costs, mem_cap)
    return 1.0 - total_work(prog, costs) / (prog.num_devices * lb)


def ceiling(baseline_bubble: float) -> float:
    """1 / (1 − bubble): the best throughput ratio over a baseline with that bubble that
    any schedule doing the same work could reach (zero bubble)."""
    return 1.0 / (1.0 - baseline_bubble)
