"""Walking one rank's lowered Program: routing, point-to-point hand-offs, timing.

:class:`Walker` runs ``program.orders[rank]`` action by action (docs/schedules.md
section 2, the executor contract):

* a compute action takes its inputs from the *inbox* (filled by a RECV, or directly by a
  producer stage on the same rank), calls the engine, and puts the output for the next
  stage of its sweep into the inbox (same rank) or the *outbox* (another rank);
* ``SEND`` posts a non-blocking send of the outbox entry; ``RECV`` blocks until its
  message is there; ``REDUCE`` is recorded only (the trainer all-reduces after the step);
* every action is timed; :attr:`Walker.slices` uses the simulator's trace format.

Messages of one hand-off are matched by a tag built from (sweep, producing stage,
micro-batch), so a pair of ranks may have any number of hand-offs in flight in any order.

Engines: :class:`StageEngine` (real compute, :mod:`.phases`) and
:class:`~.emulate.SleepEngine` (each action sleeps for its modelled cost). Links:
``matris.train.dist.p2p.PeerLinks`` (torch.distributed) or :class:`LocalLinks` (all
ranks in one process, driven by :func:`run_in_process`: unit tests, no MPI).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .actions import DIRECTION, W_OF, Action, Kind, ScheduleError
from .phases import FourPhase, Micro, Slot
from .program import Program
from .trace import TraceSlice

PHASE_CODE = {Kind.P1: 0, Kind.P2: 1, Kind.P3: 2, Kind.P4: 3}
MAX_TAG = 2 ** 24  # gloo slots are 32-bit; stay well inside


def handoff_tag(prog: Program, phase: Kind, producer: int, mb: int) -> int:
    """Unique tag of one hand-off within a step."""
    tag = (producer * 4 + PHASE_CODE[phase]) * prog.num_microbatches + mb
    if tag >= MAX_TAG:
        raise ValueError(f"too many stages × micro-batches for message tags ({tag})")
    return tag


class StageEngine:
    """Real compute: routes messages into :class:`~.phases.FourPhase` calls.

    Message layouts (BOUNDARY order): P1 h = [atom, bond, angle]; P2 [a (3), f_acc (1–2)];
    P3 [ā (3), dl (1–2)]; P4 h̄ (3). ``micro_of(m)`` gives micro-batch m's :class:`Micro`.
    """

    def __init__(self, prog: Program, rank: int, phases: FourPhase,
                 micro_of: Callable[[int], Micro]) -> None:
        self.prog, self.rank, self.ph, self.micro_of = prog, rank, phases, micro_of
        self.slots: dict[tuple[int, int], Slot] = {}

    def _slot(self, s: int, m: int) -> Slot:
        if (s, m) not in self.slots:
            split = frozenset(W_OF[w] for w in self.prog.w_kinds(s, m))
            self.slots[(s, m)] = Slot(s, m, self.micro_of(m), split=split)
        return self.slots[(s, m)]

    def run(self, a: Action, msg):
        s, m, ph = a.stage, a.microbatch, self.ph
        slot = self._slot(s, m)
        n_geo = 2 if slot.micro.stress else 1
        k, out = a.kind, None
        if k is Kind.P1:
            out = ph.p1(slot, msg)
        elif k is Kind.P2:
            a_in, f_acc = (None, None) if msg is None else (msg[:-n_geo], msg[-n_geo:])
            a_out, sums = ph.p2(slot, a_in, f_acc)
            out = None if a_out is None else a_out + sums
        elif k is Kind.P3:
            abar, dl = (None, None) if msg is None else (msg[:-n_geo], msg[-n_geo:])
            abar_out, dl = ph.p3(slot, abar, dl)
            out = None if abar_out is None else abar_out + dl
        elif k is Kind.P4:
            out = ph.p4(slot, msg)
        elif k is Kind.P34:
            abar, dl = (None, None) if msg is None else (msg[:-n_geo], msg[-n_geo:])
            out = ph.p34(slot, abar, dl)
        elif k is Kind.W3:
            ph.w3(slot)
        elif k is Kind.W4:
            ph.w4(slot)
        else:
            raise ScheduleError(f"not a compute action: {a}")
        slot.done.add(k)
        if slot.done >= set(self.prog.stage_kinds(s, m)):
            del self.slots[(s, m)]  # frees A_s (and A'_s) of this micro-batch
        return out


class Walker:
    """Runs one rank's lowered program. ``links``: send(tensors, peer, tag),
    recv(peer, tag), ready(peer, tag), finish(); peers are pipeline ranks."""

    def __init__(self, prog: Program, rank: int, engine, links,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not prog.lowered and prog.num_devices > 1:
            raise ScheduleError("the executor walks lowered programs (see lower.lower)")
        self.prog, self.rank, self.engine, self.links, self.clock = (
            prog, rank, engine, links, clock)
        self.order = prog.orders[rank]
        self.pos = 0
        self.inbox: dict[tuple, list] = {}
        self.outbox: dict[tuple, list] = {}
        self.slices: list[TraceSlice] = []
        self.t0 = clock()

    @property
    def finished(self) -> bool:
        return self.pos >= len(self.order)

    def _consumer_key(self, kind: Kind, s: int, m: int):
        """Inbox key of the stage that consumes the output of (kind, s, m), or None."""
        phase = Kind.P4 if kind is Kind.P34 else kind
        if phase not in DIRECTION:
            return None, phase
        u = s + DIRECTION[phase]
        return ((phase, u, m) if 0 <= u < self.prog.num_stages else None), phase

    def _input(self, a: Action):
        phase = Kind.P3 if a.kind is Kind.P34 else a.kind
        if phase not in DIRECTION:
            return None
        u = a.stage - DIRECTION[phase]
        if not 0 <= u < self.prog.num_stages:
            return None  # the sweep starts here: inputs are local (turn, loss, seed)
        key = (phase, a.stage, a.microbatch)
        if key not in self.inbox:
            raise ScheduleError(f"rank {self.rank}: {a} has no input (missing RECV or "
                                "producer) — the program is not valid")
        return self.inbox.pop(key)

    def step(self, block: bool = True) -> bool:
        """Run the next action; with ``block=False`` return False instead of waiting."""
        a = self.order[self.pos]
        if a.kind is Kind.RECV:
            producer = a.stage - DIRECTION[a.phase]
            tag = handoff_tag(self.prog, a.phase, producer, a.microbatch)
            if not block and not self.links.ready(a.peer, tag):
                return False
        start = self.clock()
        if a.kind is Kind.SEND:
            msg = self.outbox.pop((a.phase, a.stage, a.microbatch))
            self.links.send(msg, a.peer, handoff_tag(self.prog, a.phase, a.stage,
                                                     a.microbatch))
        elif a.kind is Kind.RECV:
            self.inbox[(a.phase, a.stage, a.microbatch)] = self.links.recv(a.peer, tag)
        elif a.kind is not Kind.REDUCE:
            out = self.engine.run(a, self._input(a))
            key, phase = self._consumer_key(a.kind, a.stage, a.microbatch)
            if out is not None and key is not None:
                if self.prog.placement[key[1]] == self.rank:
                    self.inbox[key] = out
                else:
                    self.outbox[(phase, a.stage, a.microbatch)] = out
        end = self.clock()
        self.slices.append(TraceSlice(self.rank, a, start - self.t0, end - self.t0))
        self.pos += 1
        return True

    def run(self) -> list[TraceSlice]:
        while not self.finished:
            self.step()
        self.links.finish()
        if self.inbox or self.outbox:
            raise ScheduleError(f"rank {self.rank}: unused hand-offs after the step: "
                                f"{sorted(map(str, self.inbox))} {sorted(map(str, self.outbox))}")
        return self.slices


class LocalLinks:
    """All pipeline ranks in one process: a shared mailbox (for :func:`run_in_process`)."""

    def __init__(self, rank: int, box: dict) -> None:
        self.rank, self.box = rank, box

    def send(self, tensors, peer: int, tag: int) -> None:
        self.box.setdefault((self.rank, peer, tag), []).append(list(tensors))

    def ready(self, peer: int, tag: int) -> bool:
        return bool(self.box.get((peer, self.rank, tag)))

    def recv(self, peer: int, tag: int):
        queue = self.box.get((peer, self.rank, tag))
        if not queue:
            raise ScheduleError(f"rank {self.rank} waits for tag {tag} from {peer}: deadlock")
        return queue.pop(0)

    def finish(self) -> None:
        pass


def run_in_process(prog: Program, engines: list) -> list[Walker]:
    """Run every rank of ``prog`` in this process, interleaving ranks cooperatively
    (a rank waits while its next RECV has no message). Raises on deadlock."""
    box: dict = {}
    walkers = [Walker(prog, r, engines[r], LocalLinks(r, box)) for r in range(prog.num_devices)]
    while not all(w.finished for w in walkers):
        progress = False
        for w in walkers:
            while not w.finished and w.step(block=False):
                progress = True
        if not progress:
            stuck = {w.rank: str(w.order[w.pos]) for w in walkers if not w.finished}
            raise ScheduleError(f"deadlock: ranks wait at {stuck}")
    for w in walkers:
        w.links.finish()
    return walkers
