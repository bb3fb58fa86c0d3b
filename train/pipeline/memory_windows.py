"""Idle time a per-rank memory cap forces at both ends of a pipeline step.

:func:`window_bound` strengthens the memory term of :mod:`.bounds` for one rank d with
cap C (the simulator's memory accounting: a set is allocated at its creator's start and
freed at the end of the last of its freeing actions, see :mod:`.deps`).

**Micro-batch groups.** The actions of one micro-batch on one stage form a *group*; its
sets (A, A', and Q3 / Q4 where a P3 / P4 runs split) live inside the group. Two facts tie
an action x's work to memory:

* *start side*: every set whose creator is x or precedes x in the group exists from x's
  start on;
* *end side*: every set with a freeing action that is x or follows x lives until after
  x ends (a set dies at the end of the *last* of its freeing actions).

**Start window** [0, F): F is the earliest time any set of rank d can be freed (for each
set the latest of its freeing actions' head + duration, minimised over sets). Every
action working before F started before F, so just before F the sets its group created
up to it are all live: their sizes, summed over the groups working in the window, are at
most C.

**End window** (T0, makespan], T0 = makespan − L: L is the least duration + tail of any
action that may create a set on rank d, so no set is created after T0. An action
working after T0 ends after T0, so just after T0 the sets it (or a later action of its
group) frees are still live, and were created by T0: again at most C in all.

**Work in a window** of length λ is then at most an LP: each action x contributes at most
c_x = min(p_x, λ − r_x) (r_x: its head for the start window, its tail for the end
window; the rest of x lies outside), all actions of class r ≥ b fit into λ − b (one rank
runs one action at a time), and the groups working in the window hold at most C. Its
value is at most, for every threshold b,

    (λ − b) + the fractional knapsack of the groups' work in the classes below b,

each group choosing a subset of its actions (memory: the union of their sets, work: the
sum of their c_x), relaxed to the upper concave hull of those choices, M identical
groups per stage. The smallest value over the thresholds bounds the work; the rest of
the window is idle, and with W the rank's work, h / q its least head / tail,

    makespan ≥ max(I_start + W + q, h + W + I_end),

and where that already reaches F + L the two windows are disjoint, so
makespan ≥ I_start + I_end + W as well.

**Programs that split only some phases** (``unsplit``): heads, tails and durations come
from the :func:`~.bounds.split_relaxation` of the fully split skeleton (never longer
than any real choice), while every group may run each splittable phase split (its
real queue pinned, its real durations) or whole (its real duration, its tail without the
W edge), so the bound holds for every choice. Sizes and work use the real costs: the
relaxation's empty queues would make the end window free.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .actions import W_OF, Action, Kind
from .costs import CostModel
from .deps import creates, freeing_actions, predecessors
from .program import Program


@dataclass(frozen=True)
class _Entry:
    """One action of a group option: real duration, relaxed head / tail (lower bounds),
    the sets it pins from the start and from the end side, the set it creates."""

    work: float
    head: float
    tail: float
    duration_lb: float
    pins_start: frozenset[str]
    pins_end: frozenset[str]
    creates: str | None


def window_bound(sk: Program, ht: dict, real: CostModel, d: int, cap: float,
                 whole_tails: dict | None) -> float:
    """Makespan lower bound of rank ``d`` under per-rank memory ``cap`` (module docstring).

    Args:
        sk: the program with every split phase split (the relaxation's skeleton when the
            real program splits only some), its stage count matching ``real``.
        ht: :func:`~.bounds.heads_tails` of ``sk`` under the relaxed costs (heads, tails
            and window lengths: lower bounds).
        real: costs for durations and set sizes of the real program.
        whole_tails: :func:`whole_phase_tails` if each splittable phase may run split or
            whole (``Program.unsplit``), else None (every split phase splits).
    """
    stages = sk.stages_of(d)
    if not stages or math.isinf(cap):
        return 0.0
    M = sk.num_microbatches
    sizes = real.set_sizes()
    size_of = {s: {name: sizes[name][s] for name in sizes} for s in stages}
    options = {s: _group_options(sk, ht, real, s, whole_tails, size_of[s]) for s in stages}
    entries_of = {s: [opt for opt, _ in options[s]] for s in stages}

    f_start = min(free for s in stages for _, free in options[s])
    creating = [e.duration_lb + e.tail for s in stages for opt, _ in options[s] for e in opt
                if e.creates is not None and size_of[s][e.creates] > 0]
    l_end = min(creating, default=math.inf)

    work = M * sum(min(sum(e.work for e in opt) for opt, _ in options[s]) for s in stages)
    entries = [e for s in stages for opt, _ in options[s] for e in opt]
    h_min = min(e.head for e in entries)
    q_min = min(e.tail for e in entries)

    idle_start = idle_end = 0.0
    if math.isfinite(f_start):
        busy = _window_work(entries_of, size_of, M, cap, f_start, side="start")
        idle_start = max(0.0, f_start - busy)
    if math.isfinite(l_end):
        busy = _window_work(entries_of, size_of, M, cap, l_end, side="end")
        idle_end = max(0.0, l_end - busy)
    separate = max(idle_start + work + q_min, h_min + work + idle_end)
    if separate >= f_start + l_end:  # the windows are disjoint: both idles add up
        return max(separate, idle_start + idle_end + work)
    return separate


def _group_options(sk: Program, ht: dict, real: CostModel, s: int,
                   whole_tails: dict | None, size: dict) -> list[tuple[list[_Entry], float]]:
    """Per split choice of stage ``s`` (every splittable phase split or, with
    ``whole_tails``, also whole): the entries of micro-batch 0's group, and the earliest
    time any of its sets that count (``size`` > 0) can be freed (a set dies at the end of
    the last of its freeing actions: the latest of their earliest ends, relaxed head +
    duration)."""
    splittable = [Action(k, s, 0) for k in (Kind.P3, Kind.P4) if sk.splits(Action(k, s, 0))]
    choices = [()]
    if whole_tails is not None:
        choices = [c for n in range(len(splittable) + 1)
                   for c in itertools.combinations(splittable, n)]
    out = []
    for whole in choices:
        var = sk.run_whole(whole) if whole else sk
        kinds = var.stage_kinds(s, 0)
        acts = [Action(k, s, 0) for k in kinds]
        before = _ancestors(var, acts)
        made = {a: creates(var, a) for a in acts}
        frees = {name: freeing_actions(var, name, s, 0) for name in made.values() if name}
        entries = []
        for a in acts:
            head, dur_lb, tail = ht[(a.kind, s)]
            if a in whole:  # whole: no W edge behind it
                tail = whole_tails[a]
            entries.append(_Entry(
                work=real.duration(var, a), head=head, tail=tail, duration_lb=dur_lb,
                pins_start=frozenset(made[b] for b in before[a] | {a} if made[b]),
                pins_end=frozenset(name for name, fs in frees.items()
                                   if any(a == f or a in before[f] for f in fs)),
                creates=made[a]))
        ends = {a: ht[(a.kind, s)][0] + ht[(a.kind, s)][1] for a in acts}
        first_free = min((max(ends[f] for f in fs) for name, fs in frees.items()
                          if size[name] > 0), default=math.inf)
        out.append((entries, first_free))
    return out


def _ancestors(prog: Program, acts: list[Action]) -> dict[Action, set[Action]]:
    """Within one group (same stage and micro-batch): the actions each one waits for."""
    mine = set(acts)
    out: dict[Action, set[Action]] = {}
    for a in acts:  # stage_kinds lists a group in dependency order
        direct = {dep.producer for dep in predecessors(prog, a) if dep.producer in mine}
        out[a] = set(direct).union(*(out[b] for b in direct))
    return out


def whole_phase_tails(sk: Program, ht: dict, relaxed: CostModel) -> dict[Action, float]:
    """Relaxed tail of every split phase's critical part (micro-batch 0) without the
    edge to its own W: the tail of the same phase run whole. One pass over the
    micro-batch's actions."""
    out = {a: 0.0 for a in (Action(k, st, 0) for st in range(sk.num_stages)
                            for k in (Kind.P3, Kind.P4)) if sk.splits(a)}
    for b in (Action(k, st, 0) for st in range(sk.num_stages) for k in sk.stage_kinds(st, 0)):
        if b.kind in W_OF:
            continue
        _, dur, tail = ht[(b.kind, b.stage)]
        for dep in predecessors(sk, b):
            a = dep.producer
            if a not in out:
                continue
            cross = sk.device_of(a.stage) != sk.device_of(b.stage)
            lat = relaxed.comm_time(dep.phase) if (cross and dep.phase) else 0.0
            out[a] = max(out[a], lat + dur + tail)
    return out


def _window_work(options: dict, size_of: dict, M: int, cap: float, length: float,
                 side: str) -> float:
    """Upper bound on rank work inside a window of ``length`` (module docstring)."""
    def cls(e):
        return e.head if side == "start" else e.tail

    def pins(e):
        return e.pins_start if side == "start" else e.pins_end

    values = sorted({cls(e) for opts in options.values() for opt in opts for e in opt
                     if cls(e) < length})
    best = length
    for b in [*values, math.inf]:
        base = max(0.0, length - b) if math.isfinite(b) else 0.0
        curves = []
        for s, opts in options.items():
            points = [(0.0, 0.0)]
            for opt in opts:
                live = [e for e in opt if cls(e) < b and min(e.work, length - cls(e)) > 0]
                for n in range(1, len(live) + 1):
                    for subset in itertools.combinations(live, n):
                        names = frozenset().union(*(pins(e) for e in subset))
                        points.append((sum(size_of[s][x] for x in names),
                                       sum(min(e.work, length - cls(e)) for e in subset)))
            curves.append(_upper_hull(points))
        best = min(best, base + _fractional_knapsack(curves, M, cap))
    return best


def _upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper concave hull of (memory, work) points through the best zero-memory point,
    as segments (d_memory, d_work) of decreasing slope; a first (0, w) is free work."""
    free = max(w for m, w in points if m <= 0)
    frontier = [(0.0, free)]  # the Pareto frontier: more memory buys more work
    for m, w in sorted((m, -w) for m, w in points if m > 0):
        if -w > frontier[-1][1]:
            frontier.append((m, -w))
    hull = [frontier[0]]
    for p in frontier[1:]:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    segs = [(0.0, free)] if free > 0 else []
    segs += [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(hull)]
    return segs


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _fractional_knapsack(curves: list[list[tuple[float, float]]], M: int,
                         cap: float) -> float:
    """Most work M copies of each concave curve can do within memory ``cap``."""
    total, room = 0.0, cap
    segs = [seg for curve in curves for seg in curve]
    for dm, dw in sorted(segs, key=lambda sg: math.inf if sg[0] <= 0 else sg[1] / sg[0],
                         reverse=True):
        if dm <= 0:
            total += M * dw
            continue
        take = min(float(M), room / dm)
        total += take * dw
        room -= take * dm
        if room <= 0:
            break
    return total
