"""Greedy list scheduling over the simulator: how the static orders are produced.

Given a Program skeleton (placement, phases, flags; empty orders), a cost model and a
:class:`Policy`, :func:`list_schedule` plays the pipeline forward in time: whenever a
rank is free it starts the best (lowest ``policy.key``) action that is *ready* (inputs
arrived) and *allowed* (in-flight caps, unit order, ...). It never idles while an
allowed action is ready. The resulting per-rank orders replay exactly (same times)
under :func:`~.simulate.simulate` with the same costs, and stay deadlock-free under any
other costs (the order is a linear extension of the dependency DAG).

Cost-oblivious schedules (the baselines, symfold) call it with unit costs, so their
order is a fixed pattern like their papers'; wavek calls it with the measured costs.

Where the skeleton splits P3 / P4, ``policy.split`` decides for each of them when it
starts: split (critical part now, its W action later, the W queue held in between) or
whole (the unsplit duration, no queue; its W action disappears and the phase is listed
in the result's ``Program.unsplit``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .actions import SPLIT_W, Action, ScheduleError
from .costs import SET_NAMES, CostModel
from .deps import creates, freeing_actions, successors_map
from .grid import format_grid
from .program import Program


@dataclass
class DeviceState:
    """What a policy may look at when deciding on one rank."""

    device: int
    live: dict = field(default_factory=lambda: dict.fromkeys(SET_NAMES, 0))
    live_stage: dict = field(default_factory=dict)   # (set name, stage) -> count
    mem: float = 0.0
    started: int = 0
    last_created: str | None = None  # the set the action just started allocated
    extra: dict = field(default_factory=dict)


class Policy:
    """Override ``key`` (static priority, lower first) and ``allowed``/``on_start``."""

    #: True if ``dynamic_key`` must be consulted at every decision (slower).
    dynamic = False

    def key(self, a: Action) -> tuple:
        raise NotImplementedError

    def dynamic_key(self, a: Action, st: DeviceState, static: tuple) -> tuple:
        return static

    def allowed(self, a: Action, st: DeviceState) -> bool:
        return True

    def split(self, a: Action, st: DeviceState) -> bool:
        """For a P3 / P4 the skeleton splits: run it split (True) or whole (False)."""
        return True

    def on_start(self, a: Action, st: DeviceState) -> None:
        pass


def list_schedule(skel: Program, costs: CostModel, policy: Policy) -> Program:
    """Fill ``skel``'s orders by greedy list scheduling under ``costs``."""
    costs = costs.for_program(skel)
    actions = list(skel.expected_actions())
    idx = {a: i for i, a in enumerate(actions)}  # integer ids: hashing Actions is slow
    n = len(actions)
    succ: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    npred = [0] * n
    dev = [skel.device_of(a.stage) for a in actions]
    for a, outs in successors_map(skel).items():
        i = idx[a]
        for b, dep in outs:
            j = idx[b]
            lat = costs.comm_time(dep.phase) if (dev[j] != dev[i] and dep.phase) else 0.0
            succ[i].append((j, lat))
            npred[j] += 1
    ready_at = [0.0] * n
    dur = [costs.duration(skel, a) for a in actions]
    # Split P3/P4: index of its W action (-1: none) and its duration when run whole.
    w_of = [idx.get(Action(SPLIT_W[a.kind], a.stage, a.microbatch), -1)
            if a.kind in SPLIT_W else -1 for a in actions]
    whole = [costs.t(a.stage, a.kind) if w_of[i] >= 0 else 0.0
             for i, a in enumerate(actions)]
    unsplit: list[Action] = []
    key = [policy.key(a) for a in actions]
    # Memory bookkeeping: a set dies when all of its freeing actions have run.
    alloc: list[tuple[str, int] | None] = [None] * n
    pending_free: dict[tuple, int] = {}
    frees_of: list[list[tuple]] = [[] for _ in range(n)]
    mem_of = costs.set_sizes()
    for i, a in enumerate(actions):
        name = creates(skel, a)
        if name is None:
            continue
        alloc[i] = (name, a.stage)
        fa = freeing_actions(skel, name, a.stage, a.microbatch)
        tag = (name, a.stage, a.microbatch)
        pending_free[tag] = len(fa)
        for f in fa:
            frees_of[idx[f]].append(tag)

    P = skel.num_devices
    pool: list[list[int]] = [[] for _ in range(P)]
    state = [DeviceState(d) for d in range(P)]
    free_at = [0.0] * P
    orders: list[list[Action]] = [[] for _ in range(P)]
    events: list[tuple[float, int, int]] = []
    seq = 0
    for i in range(n):
        if npred[i] == 0:
            pool[dev[i]].append(i)
    for d in range(P):
        heapq.heappush(events, (0.0, seq, d))
        seq += 1
    done = 0
    while events:
        t, _, d = heapq.heappop(events)
        if free_at[d] > t:
            continue
        st = state[d]
        best = -1
        if policy.dynamic:
            best_key = None
            for i in pool[d]:
                if ready_at[i] <= t and policy.allowed(actions[i], st):
                    k = policy.dynamic_key(actions[i], st, key[i])
                    if best < 0 or k < best_key:
                        best, best_key = i, k
        else:
            for i in pool[d]:
                if ready_at[i] <= t and (best < 0 or key[i] < key[best]) \
                        and policy.allowed(actions[i], st):
                    best = i
        if best < 0:
            continue
        a = actions[best]
        pool[d].remove(best)
        orders[d].append(a)
        finished = [best]
        if w_of[best] >= 0 and not policy.split(a, st):
            finished.append(w_of[best])  # its W part runs now, inside it
            unsplit.append(a)
            end = t + whole[best]
        else:
            end = t + dur[best]
        free_at[d] = end
        done += len(finished)
        created = alloc[best] if len(finished) == 1 else None  # a whole phase queues nothing
        st.last_created = created[0] if created else None
        if created:
            name, stage = created
            st.live[name] += 1
            st.live_stage[(name, stage)] = st.live_stage.get((name, stage), 0) + 1
            st.mem += mem_of[name][stage]
            if st.mem > st.extra.get("peak_mem", 0.0):
                st.extra["peak_mem"] = st.mem
        skip = (alloc[best][0], a.stage, a.microbatch) if len(finished) > 1 else None
        for tag in (tag for i in finished for tag in frees_of[i]):
            if tag == skip:
                continue  # the queue of a phase run whole: never allocated
            pending_free[tag] -= 1
            if pending_free[tag] == 0:  # freed at `end`; only this rank's later choices see it
                st.live[tag[0]] -= 1
                st.live_stage[tag[:2]] -= 1
                st.mem -= mem_of[tag[0]][tag[1]]
        st.started += 1
        policy.on_start(a, st)
        heapq.heappush(events, (end, seq, d))
        seq += 1
        for j, lat in (x for i in finished for x in succ[i]):
            if end + lat > ready_at[j]:
                ready_at[j] = end + lat
            npred[j] -= 1
            if npred[j] == 0 and j not in finished:
                pool[dev[j]].append(j)
                heapq.heappush(events, (ready_at[j], seq, dev[j]))
                seq += 1
    if done != n:
        partial = skel.with_orders(orders)
        stuck = {d: sorted(str(actions[i]) for i in pool[d])[:6] for d in range(P) if pool[d]}
        raise ScheduleError(f"list scheduling of {skel.describe()} stalled after {done} of "
                            f"{n} actions (caps too tight?); waiting: {stuck}\n"
                            + format_grid(partial, max_steps=8))
    out = skel.with_orders(orders, unsplit=skel.unsplit | frozenset(unsplit))
    out.meta["list_schedule"] = {"makespan": max(free_at),
                                 "peak_mem": [st.extra.get("peak_mem", 0.0) for st in state]}
    return out
