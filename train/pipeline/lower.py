"""Lowering: make every cross-device hand-off explicit.

:func:`lower` turns a compute-only Program into one an executor can walk action by
action: for every chain dependency whose producer and consumer stages sit on different
ranks it inserts

* ``SEND`` (``2F1.0>3``) on the producer's rank, right after the producing action: the
  boundary tensors :data:`~.actions.BOUNDARY` [phase] of that action go to ``peer``;
* ``RECV`` (``3F1.0<2``) on the consumer's rank, right before the consuming action.

Same-device hand-offs (turns, and zigzag turns of a wave placement) get no action.
With ``reduce_grad=True`` a ``REDUCE`` (``2GR``) follows the last compute action of each
stage: from there on the stage's gradients are final and its data-parallel all-reduce
may overlap the remaining work.

Semantics assumed (and checked by simulation): SEND is non-blocking (post an isend and
go on), RECV blocks until the message is there. Placing each SEND right after its
producer keeps the lowered program exactly as deadlock-free as the compute order, and
the simulated timings identical.
"""

from __future__ import annotations

from .actions import DIRECTION, Action, Kind, ScheduleError
from .costs import uniform
from .deps import predecessors, successors_map
from .program import Program


def matching_send_key(prog: Program, recv: Action) -> tuple:
    """(phase, producer stage, mb, peer) of the SEND that feeds ``recv``."""
    producer_stage = recv.stage - DIRECTION[recv.phase]
    return (recv.phase, producer_stage, recv.microbatch, prog.device_of(recv.stage))


def lower(prog: Program, reduce_grad: bool = False, check: bool = True) -> Program:
    """Insert SEND/RECV (and optionally REDUCE); ``check`` replays it to prove it runs."""
    if prog.lowered:
        raise ScheduleError(f"{prog.name} is already lowered")
    succ = successors_map(prog)
    orders = []
    for d, order in enumerate(prog.orders):
        out: list[Action] = []
        last_of_stage = {a.stage: i for i, a in enumerate(order)} if reduce_grad else {}
        for i, a in enumerate(order):
            for dep in predecessors(prog, a):
                src = prog.device_of(dep.producer.stage)
                if src != d:
                    out.append(Action(Kind.RECV, a.stage, a.microbatch, dep.phase, src))
            out.append(a)
            for b, dep in succ.get(a, ()):
                dst = prog.device_of(b.stage)
                if dst != d:
                    out.append(Action(Kind.SEND, a.stage, a.microbatch, dep.phase, dst))
            if reduce_grad and last_of_stage.get(a.stage) == i:
                out.append(Action(Kind.REDUCE, a.stage, -1))
        orders.append(out)
    low = prog.with_orders(orders)
    if check:
        from .simulate import simulate
        simulate(low, uniform(prog.num_stages))  # raises ScheduleError on deadlock
    return low


def unlower(prog: Program) -> Program:
    """Drop SEND/RECV/REDUCE again."""
    return prog.with_orders(prog.compute_orders())


def comm_volume(prog: Program) -> dict[str, int]:
    """Number of cross-device hand-offs per sweep (P1..P4) in one step."""
    low = prog if prog.lowered else lower(prog, check=False)
    out: dict[str, int] = {}
    for order in low.orders:
        for a in order:
            if a.kind is Kind.SEND:
                out[a.phase.name] = out.get(a.phase.name, 0) + 1
    return out
