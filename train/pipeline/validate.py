"""Check a Program against the four-phase dependency rules; show the grid when it fails.

Checks, in order (each failure names its rule and marks the action in the grid):

1. **placement**: every compute action runs on the rank hosting its stage; a SEND on the
   producer's rank, a RECV on the consumer's, with the right peer;
2. **exactly once**: every expected action (``Program.expected_actions``) appears once,
   nothing else appears (stray W, P3 of a fused stage, micro-batch out of range ...);
3. **same-rank order**: a dependency whose producer runs on the same rank must come
   earlier in the list: P1/P2/P3/P4 chains between co-located stages, the three turns
   (P1→P2 at S−1, P2→P3 at 0, P3→P4 at S−1), P2/P3/P4 after the earlier phase of the
   same stage, W3/W4 after their phase, REDUCE after the stage's last compute;
4. **send/recv matching** (lowered programs): each cross-device dependency has exactly
   one SEND after its producer and one RECV before its consumer, paired by
   (phase, stage, micro-batch, peer); no stray messages;
5. **deadlock freedom**: the rank orders plus cross-rank dependencies form no cycle. A
   cycle is reported as a wait-for chain: each rank's first stuck action and the
   hand-off (with its rule) it waits for.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from .actions import DIRECTION, Action, Kind, ScheduleError
from .deps import Dep, predecessors
from .grid import format_grid
from .program import Program


@dataclass(frozen=True)
class Problem:
    device: int
    step: int
    rule: str
    message: str


def rule_name(dep: Dep, consumer: Action) -> str:
    """Human name of a dependency edge, e.g. 'P1 chain', 'turn P2→P3', 'W after P3'."""
    p = dep.producer
    if dep.rule == "chain":
        return f"{dep.phase.name} chain"
    if dep.rule == "w-after":
        return f"W after {p.kind.name}"
    if dep.rule == "reduce":
        return "REDUCE after the stage's compute"
    ck = "P3/P4" if consumer.kind is Kind.P34 else consumer.kind.name
    if dep.rule == "turn":
        return f"turn {p.kind.name}→{ck}"
    return f"{p.kind.name}→{ck} same stage"


def find_problems(prog: Program) -> list[Problem]:
    """All problems found (empty list: the program is valid)."""
    probs = _structure(prog)
    if probs:
        return probs  # later checks assume each action exists exactly once
    probs = _order(prog)
    if prog.lowered:
        probs += _messages(prog)
    if not probs:
        probs = _deadlock(prog)
    return probs


def validate(prog: Program) -> Program:
    """Return ``prog`` if valid, else raise :class:`ScheduleError` with the marked grid."""
    probs = find_problems(prog)
    if probs:
        mark = {}
        for p in probs:
            if p.step >= 0:
                mark.setdefault((p.device, p.step), p.rule)
        text = "\n".join(f"- [{p.rule}] {p.message}" for p in probs[:20])
        more = f"\n  ... and {len(probs) - 20} more" if len(probs) > 20 else ""
        steps = max([i for _, i in mark] + [0]) + 3
        raise ScheduleError(f"invalid schedule {prog.describe()}:\n{text}{more}\n"
                            + format_grid(prog, mark, max_steps=steps))
    return prog


def _where(prog: Program) -> dict[Action, tuple[int, int]]:
    return {a: (d, i) for d, order in enumerate(prog.orders) for i, a in enumerate(order)}


def _structure(prog: Program) -> list[Problem]:
    probs = []
    expected = set(prog.expected_actions())
    seen: Counter = Counter()
    for d, order in enumerate(prog.orders):
        for i, a in enumerate(order):
            seen[a] += 1
            if seen[a] == 2:
                probs.append(Problem(d, i, "exactly once", f"{a} appears twice"))
            if a.kind.is_comm:
                probs += _comm_placement(prog, d, i, a)
                continue
            if a.kind is Kind.REDUCE:
                if not 0 <= a.stage < prog.num_stages or prog.device_of(a.stage) != d:
                    probs.append(Problem(d, i, "placement", f"{a} on rank {d}"))
                continue
            if a not in expected:
                probs.append(Problem(d, i, "exactly once",
                                     f"{a} is not an action of {prog.describe()}"))
            elif prog.device_of(a.stage) != d:
                probs.append(Problem(d, i, "placement", f"{a} on rank {d}, but stage "
                                     f"{a.stage} lives on rank {prog.device_of(a.stage)}"))
    missing = sorted(expected - set(seen))
    for a in missing[:10]:
        probs.append(Problem(prog.device_of(a.stage), -1, "exactly once", f"{a} is missing"))
    if len(missing) > 10:
        probs.append(Problem(0, -1, "exactly once", f"... {len(missing) - 10} more missing"))
    return probs


def _comm_placement(prog: Program, d: int, i: int, a: Action) -> list[Problem]:
    S = prog.num_stages
    other = a.stage + DIRECTION[a.phase] * (1 if a.kind is Kind.SEND else -1)
    if not (0 <= a.stage < S and 0 <= other < S and 0 <= a.microbatch < prog.num_microbatches):
        return [Problem(d, i, "send/recv", f"{a} names no stage boundary")]
    if prog.device_of(a.stage) != d:
        return [Problem(d, i, "placement", f"{a} on rank {d}; stage {a.stage} lives on rank "
                        f"{prog.device_of(a.stage)}")]
    if prog.device_of(other) != a.peer or a.peer == d:
        return [Problem(d, i, "send/recv", f"{a}: stage {other} lives on rank "
                        f"{prog.device_of(other)}, not {a.peer}")]
    return []


def _order(prog: Program) -> list[Problem]:
    where = _where(prog)
    probs = []
    for d, order in enumerate(prog.orders):
        for i, a in enumerate(order):
            if a.kind.is_comm:
                continue
            for dep in predecessors(prog, a):
                pd, pi = where[dep.producer]
                if pd == d and pi > i:
                    probs.append(Problem(d, i, rule_name(dep, a),
                                         f"{a} (step {i}) runs before {dep.producer} "
                                         f"(step {pi}) that it needs"))
    return probs


def _messages(prog: Program) -> list[Problem]:
    where = _where(prog)
    probs = []
    needed_send, needed_recv = set(), set()
    for a in prog.expected_actions():
        for dep in predecessors(prog, a):
            src, dst = prog.device_of(dep.producer.stage), prog.device_of(a.stage)
            if src == dst:
                continue
            send = Action(Kind.SEND, dep.producer.stage, a.microbatch, dep.phase, dst)
            recv = Action(Kind.RECV, a.stage, a.microbatch, dep.phase, src)
            needed_send.add(send)
            needed_recv.add(recv)
            for msg, anchor, after in ((send, dep.producer, True), (recv, a, False)):
                if msg not in where:
                    d, i = where[anchor]
                    probs.append(Problem(d, i, "send/recv", f"{anchor} has no {msg} "
                                         f"({'SEND' if after else 'RECV'} missing)"))
                    continue
                (md, mi), (ad, ai) = where[msg], where[anchor]
                if after and mi < ai:
                    probs.append(Problem(md, mi, "send/recv", f"{msg} before its producer"))
                if not after and mi > ai:
                    probs.append(Problem(ad, ai, "send/recv",
                                         f"{anchor} runs before its {msg}"))
    for a, (d, i) in where.items():
        if a.kind is Kind.SEND and a not in needed_send:
            probs.append(Problem(d, i, "send/recv", f"{a} has no matching RECV"))
        if a.kind is Kind.RECV and a not in needed_recv:
            probs.append(Problem(d, i, "send/recv", f"{a} has no matching SEND"))
    return probs


def _deadlock(prog: Program) -> list[Problem]:
    """Kahn over rank order + dependencies; report the wait-for cycle if stuck."""
    where = _where(prog)
    waits: dict[Action, list[tuple[Action, str]]] = {}
    for a in where:
        if a.kind is Kind.SEND:
            waits[a] = [(prog.resolve(a.phase, a.stage, a.microbatch), "SEND after its producer")]
        elif a.kind is Kind.RECV:
            src = a.stage - DIRECTION[a.phase]
            waits[a] = [(Action(Kind.SEND, src, a.microbatch, a.phase,
                                prog.device_of(a.stage)), f"{a.phase.name} message")]
        else:
            waits[a] = [(d.producer, rule_name(d, a)) for d in predecessors(prog, a)]
    done: set[Action] = set()
    pos = [0] * prog.num_devices
    progress = deque(range(prog.num_devices))
    while progress:
        d = progress.popleft()
        order = prog.orders[d]
        moved = False
        while pos[d] < len(order) and all(p in done for p, _ in waits[order[pos[d]]]):
            done.add(order[pos[d]])
            pos[d] += 1
            moved = True
        if moved:
            progress.extend(r for r in range(prog.num_devices) if r != d)
    stuck = [d for d in range(prog.num_devices) if pos[d] < len(prog.orders[d])]
    if not stuck:
        return []
    probs = []
    for d in stuck:
        a = prog.orders[d][pos[d]]
        for p, rule in waits[a]:
            if p in done:
                continue
            pd, pi = where[p]
            probs.append(Problem(d, pos[d], rule, f"deadlock: {a} waits for {p} "
                                 f"(rank {pd} step {pi}), but rank {pd} is stuck at step "
                                 f"{pos[pd]} ({prog.orders[pd][pos[pd]]})"))
            break
    return probs
