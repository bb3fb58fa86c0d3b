"""Replay a Program with a cost model: makespan, bubble, peak activation memory, trace.

Semantics (the executor's contract, see docs/schedules.md): each rank runs its list in
order; an action starts when the previous action on its rank has finished and all its
inputs are there. A compute action lasts ``costs.duration``. A cross-device hand-off of
sweep k arrives ``costs.comm_time(k)`` (α + bytes/β) after its producer finished;
communication overlaps compute (sends are non-blocking). In a lowered program SEND and
RECV take no compute time: a RECV completes when its message has arrived.

The replay is a longest-path pass over the DAG (rank order + data edges) in topological
order: O(actions + edges). Anything left unprocessed sits on a cycle: a deadlock, reported
with the grid.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .actions import Action, Kind, ScheduleError
from .costs import CostModel
from .deps import creates, freeing_actions, predecessors
from .grid import format_grid
from .lower import matching_send_key
from .program import Program


@dataclass
class SimResult:
    """Outcome of :func:`simulate`. Times are in the cost model's units."""

    program: Program
    costs: CostModel
    times: dict[Action, tuple[float, float]]   # action -> (start, end)
    device: dict[Action, int]
    makespan: float
    busy: list[float]                            # compute time per device
    peak_a: list[int] = field(default_factory=list)     # max live P1 graphs per device
    peak_ap: list[int] = field(default_factory=list)    # max live P2 graphs per device
    peak_mem: list[float] = field(default_factory=list)  # max Σ|A|+|A'|+|Q| per device
    mem_events: list[list[tuple]] = field(default_factory=list)  # see memory_events

    @property
    def bubble(self) -> float:
        """Idle share of P × makespan."""
        total = self.makespan * self.program.num_devices
        return 1.0 - sum(self.busy) / total if total > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Micro-batches per time unit."""
        return self.program.num_microbatches / self.makespan

    def summary(self) -> dict:
        return {"makespan": self.makespan, "bubble": self.bubble,
                "busy": self.busy, "peak_a": self.peak_a, "peak_ap": self.peak_ap,
                "peak_mem": self.peak_mem, "max_peak_mem": max(self.peak_mem, default=0.0)}


def simulate(prog: Program, costs: CostModel) -> SimResult:
    """Replay ``prog`` (compute-only or lowered) under ``costs``."""
    costs = costs.for_program(prog)
    node_dev: dict[Action, int] = {}
    for d, order in enumerate(prog.orders):
        for a in order:
            if a in node_dev:
                raise ScheduleError(f"{a} appears twice (ranks {node_dev[a]} and {d})\n"
                                    + format_grid(prog))
            node_dev[a] = d
    lowered = prog.lowered
    preds = _edges(prog, costs, node_dev, lowered)
    succ: dict[Action, list[tuple[Action, float]]] = {a: [] for a in node_dev}
    indeg = dict.fromkeys(node_dev, 0)
    for a, plist in preds.items():
        indeg[a] = len(plist)
        for p, lat in plist:
            succ[p].append((a, lat))
    ready_at = dict.fromkeys(node_dev, 0.0)
    times: dict[Action, tuple[float, float]] = {}
    queue = deque(a for a, n in indeg.items() if n == 0)
    dur_cache: dict[tuple[Kind, int, bool], float] = {}
    while queue:
        a = queue.popleft()
        key = (a.kind, a.stage, a in prog.unsplit)
        if key not in dur_cache:
            dur_cache[key] = costs.duration(prog, a)
        start = ready_at[a]
        end = start + dur_cache[key]
        times[a] = (start, end)
        for b, lat in succ[a]:
            t = end + lat
            if t > ready_at[b]:
                ready_at[b] = t
            indeg[b] -= 1
            if indeg[b] == 0:
                queue.append(b)
    if len(times) != len(node_dev):
        raise ScheduleError("deadlock: these ranks wait forever\n" + _deadlock_grid(prog, times))
    makespan = max((e for _, e in times.values()), default=0.0)
    busy = [0.0] * prog.num_devices
    for a, (s, e) in times.items():
        busy[node_dev[a]] += e - s
    res = SimResult(prog, costs, times, node_dev, makespan, busy)
    _memory(res)
    return res


def _edges(prog: Program, costs: CostModel, node_dev: dict[Action, int], lowered: bool):
    """Predecessor lists with latencies: rank order (0) plus data edges."""
    preds: dict[Action, list[tuple[Action, float]]] = {}
    recv_of: dict[tuple, Action] = {}
    send_of: dict[tuple, Action] = {}
    if lowered:
        for a in node_dev:
            if a.kind is Kind.RECV:
                recv_of[(a.phase, a.stage, a.microbatch)] = a
            elif a.kind is Kind.SEND:
                send_of[(a.phase, a.stage, a.microbatch, a.peer)] = a
    for d, order in enumerate(prog.orders):
        prev = None
        for a in order:
            plist = [] if prev is None else [(prev, 0.0)]
            prev = a
            if a.kind is Kind.SEND:
                producer = prog.resolve(a.phase, a.stage, a.microbatch)
                plist.append((_need(producer, node_dev, a, prog), 0.0))
            elif a.kind is Kind.RECV:
                key = matching_send_key(prog, a)
                if key not in send_of:
                    raise ScheduleError(f"{a} has no matching SEND\n" + format_grid(prog))
                plist.append((send_of[key], costs.comm_time(a.phase)))
            else:
                for dep in predecessors(prog, a):
                    p = _need(dep.producer, node_dev, a, prog)
                    cross = node_dev[p] != d
                    if not cross:
                        plist.append((p, 0.0))
                    elif lowered:
                        r = recv_of.get((dep.phase, a.stage, a.microbatch))
                        if r is None or node_dev[r] != d:
                            raise ScheduleError(f"{a} needs a RECV of {p}'s output on rank "
                                                f"{d}\n" + format_grid(prog))
                        plist.append((r, 0.0))
                    else:
                        plist.append((p, costs.comm_time(dep.phase)))
            preds[a] = plist
    return preds


def _need(p: Action, node_dev: dict, a: Action, prog: Program) -> Action:
    if p not in node_dev:
        raise ScheduleError(f"{a} depends on {p}, which no rank runs\n" + format_grid(prog))
    return p


def _deadlock_grid(prog: Program, times: dict) -> str:
    mark = {}
    for d, order in enumerate(prog.orders):
        for i, a in enumerate(order):
            if a not in times:
                mark[(d, i)] = "blocked here"
                break
    return format_grid(prog, mark, max_steps=max(i for _, i in mark) + 2)


def memory_events(res: SimResult) -> list[list[tuple]]:
    """Per device, the allocations and frees of activation sets in time order:
    ``(time, +1 | -1, set name, size, (stage, microbatch))`` (allocated at the creator's
    start, freed at the end of the last freeing action; a free at time t comes before an
    allocation at t)."""
    prog, costs = res.program, res.costs
    sizes = costs.set_sizes()
    events: list[list[tuple]] = [[] for _ in range(prog.num_devices)]
    for a, (start, _) in res.times.items():
        name = creates(prog, a)
        if name is None:
            continue
        frees = freeing_actions(prog, name, a.stage, a.microbatch)
        free_t = max(res.times[f][1] for f in frees if f in res.times)
        size = sizes[name][a.stage]
        d = res.device[a]
        events[d].append((start, 1, name, size, (a.stage, a.microbatch)))
        events[d].append((free_t, -1, name, -size, (a.stage, a.microbatch)))
    for ev in events:
        ev.sort(key=lambda e: (e[0], e[1]))
    return events


def _memory(res: SimResult) -> None:
    """Peak live activation sets and bytes per device (see :func:`memory_events`)."""
    names = res.costs.set_sizes()
    res.peak_a, res.peak_ap, res.peak_mem = [], [], []
    res.mem_events = memory_events(res)
    for ev in res.mem_events:
        live = dict.fromkeys(names, 0)
        peak = dict.fromkeys(names, 0)
        mem = peak_mem = 0.0
        for _, sign, name, size, _ in ev:
            live[name] += sign
            peak[name] = max(peak[name], live[name])
            mem += size
            peak_mem = max(peak_mem, mem)
        res.peak_a.append(peak["A"])
        res.peak_ap.append(peak["A'"])
        res.peak_mem.append(peak_mem)
