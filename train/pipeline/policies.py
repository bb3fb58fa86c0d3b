"""Scheduling rules (policies) for :func:`~.listsched.list_schedule`.

* :class:`CappedDepthFirst`: among ready actions run the one furthest along its
  micro-batch's path (backward before forward), older micro-batches first; admit a new
  P1 (P2) on a stage only while fewer than ``cap_a[stage]`` P1 graphs
  (``cap_ap[stage]`` P2 graphs) are alive there. With the caps of classic 1F1B applied to
  the virtual pipeline this is the 1F1B / ZB-V rule (symfold, hanayo4).
* :class:`UnitOneFOneB`: the Megatron-style port (1f1b4): a micro-batch's P1+P2 is its
  forward unit, P3+P4 its backward unit; each rank starts units strictly in the
  classic 1F1B sequence (``warmup`` forward units, then one backward / one forward,
  then the remaining backwards) and finishes started units as soon as their second
  half is ready.
"""

from __future__ import annotations

import random

from .actions import Action, Kind
from .deps import QUEUE_OF, freeing_actions, sets_created
from .listsched import DeviceState, Policy
from .program import Program

#: CappedDepthFirst's rules for which phases of a W-splitting skeleton split.
SPLIT_MODES = ("all", "fits", "drain")
_QUEUES = frozenset(QUEUE_OF.values())


def chain_position(prog: Program, kind: Kind, stage: int) -> float:
    """Hop index of (kind, stage) along a micro-batch's path 0→S−1→0→S−1→0.

    W3/W4 get the position of their phase + 0.5 (they follow it; nothing waits on them).
    """
    S = prog.num_stages
    if kind is Kind.W3:
        return chain_position(prog, Kind.P3, stage) + 0.5
    if kind is Kind.W4:
        return chain_position(prog, Kind.P4, stage) + 0.5
    if kind is Kind.P34:
        kind = Kind.P3
    if not prog.four_phase:
        return stage if kind is Kind.P1 else 2 * S - 1 - stage
    return {Kind.P1: stage, Kind.P2: 2 * S - 1 - stage, Kind.P3: 2 * S + stage,
            Kind.P4: 4 * S - 1 - stage}[kind]


def path_length(prog: Program) -> int:
    """Number of hops of a micro-batch's path (2S energy-only, 4S with forces)."""
    return len(prog.phases) * prog.num_stages


def virtual_caps(prog: Program, slack: int = 0) -> tuple[list[int], list[int]]:
    """Classic 1F1B in-flight caps, read off the micro-batch path.

    In 1F1B a stage holds a micro-batch's activations from its forward to its backward,
    and the cap is half the number of hops in between: on a P-stage pipeline the
    activations of stage s span 2(P−s) hops, cap P−s. Applied to the four-phase path,
    a P1 graph of stage s lives from hop s to the hop of its last freeing action:
    cap 2S − s; an eager P2 graph from hop 2S−1−s to P3 at hop 2S+s: cap s + 1 (the
    research note's SymFold memory); a lazy-P3 P2 graph until P4: cap S. ``slack`` (K)
    is added to every cap.
    """
    caps = {}
    for name, creator in (("A", Kind.P1), ("A'", Kind.P2)):
        out = []
        for s in range(prog.num_stages):
            if name == "A'" and not prog.four_phase:
                out.append(prog.num_microbatches)
                continue
            start = chain_position(prog, creator, s)
            stop = max(int(chain_position(prog, f.kind, s))
                       for f in freeing_actions(prog, name, s, 0))
            out.append(max(1, (stop - int(start) + 1) // 2 + slack))
        caps[name] = out
    return caps["A"], caps["A'"]


class CappedDepthFirst(Policy):
    """Depth-first priority with per-stage in-flight caps (and an optional memory cap).

    Args:
        cap_a, cap_ap: per stage, max live P1 / P2 graphs (None: unlimited).
        mem_cap: per device, max Σ|A|+|A'|+|Q| in the cost model's units (None: unlimited).
        mem_of: {set name: per-stage sizes} (``CostModel.set_sizes()``), needed with
            ``mem_cap``.
        order: "depth" (furthest along the path first) or "mb" (oldest micro-batch first).
        w_mode: "last": W actions only when nothing else is ready (Zero-Bubble style);
            "pressure": the same, except that while admitting one more micro-batch would
            break ``mem_cap`` the W parts (which free memory) go before P1/P2 work.
        reserve: see :meth:`allowed`.
        split_mode: which P3 / P4 of a W-splitting skeleton run split (:meth:`split`):
            "all"; "fits": those whose W queue fits under ``mem_cap`` when they start
            (admissions book no queues then); "drain": those that fit and start after
            the rank's last P1 (memory is freed there, and that is where the bubbles are).
        book_queues: whether an admission books the W queues too (default: with
            ``split_mode="all"``); False with "all" admits as if the queues were free
            (for :func:`~.fitsplit.fit_splits` to run the overflowing phases whole).
        jitter: ``(seed, amplitude)``: each action's primary rank (its path position for
            "depth", its micro-batch for "mb") is offset by a pseudo-random amount in
            [0, amplitude), drawn once per action from ``seed`` (a biased random
            sampling pass of multi-pass list scheduling; None: the plain rule).
    """

    def __init__(self, prog: Program, cap_a=None, cap_ap=None, mem_cap=None, mem_of=None,
                 order: str = "depth", w_mode: str = "last", reserve: bool = True,
                 split_mode: str = "all", book_queues: bool | None = None,
                 jitter: tuple[int, float] | list | None = None):
        if w_mode not in ("last", "pressure"):
            raise ValueError(f"w_mode must be 'last' or 'pressure', got {w_mode!r}")
        if split_mode not in SPLIT_MODES:
            raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {split_mode!r}")
        self.prog, self.cap_a, self.cap_ap = prog, cap_a, cap_ap
        self.mem_cap, self.mem_of = mem_cap, mem_of
        self.order, self.w_mode, self.reserve = order, w_mode, reserve
        self.split_mode = split_mode
        self.book_queues = split_mode == "all" if book_queues is None else book_queues
        self.dynamic = w_mode == "pressure" and mem_cap is not None
        self._jitter = None if jitter is None else (random.Random(jitter[0]), jitter[1])
        self._p1_left = [prog.num_microbatches * len(prog.stages_of(d))
                         for d in range(prog.num_devices)]
        if mem_cap is not None:
            # One micro-batch's sets on each rank (all the stages it hosts); the W queues
            # only where every split phase splits.
            self._mb_need = [sum(mem_of[n][s] for s in prog.stages_of(d)
                                 for n in sets_created(prog, s, self.book_queues))
                             for d in range(prog.num_devices)]
            self._admitted: set[tuple[int, int]] = set()

    def key(self, a: Action) -> tuple:
        # list_schedule asks once per action, in a fixed order: the jitter is reproducible.
        pos = chain_position(self.prog, a.kind, a.stage)
        w_rank = 2 if a.kind in (Kind.W3, Kind.W4) else 0
        shift = 0.0 if self._jitter is None else self._jitter[0].random() * self._jitter[1]
        if self.order == "mb":
            return (w_rank, a.microbatch + shift, -pos)
        return (w_rank, -pos + shift, a.microbatch)

    def dynamic_key(self, a: Action, st: DeviceState, static: tuple) -> tuple:
        if self._reserved(st) + self._mb_need[st.device] <= self.mem_cap[st.device] + 1e-9:
            return static
        # Under memory pressure: critical backward work, then W parts (they free
        # memory), then forward work.
        if static[0] == 2:
            return (0.5, *static[1:])
        if a.kind in (Kind.P1, Kind.P2):
            return (1, *static[1:])
        return static

    def allowed(self, a: Action, st: DeviceState) -> bool:
        """In-flight caps per stage; memory cap per rank.

        With ``reserve``, a micro-batch's first P1 on a rank books all the sets it will
        create there (P1 and P2 graphs and W queues of every hosted stage), so its later
        actions never wait for memory: a rank full of half-finished micro-batches cannot
        deadlock. Without it, a P1 needs room for its P1 and P2 graphs now and a P2 for
        its own (W queues are not checked: critical work is never held back).
        """
        limit = None if self.mem_cap is None else self.mem_cap[st.device] + 1e-9
        if a.kind is Kind.P1:
            if self.cap_a is not None and \
                    st.live_stage.get(("A", a.stage), 0) >= self.cap_a[a.stage]:
                return False
            if limit is None:
                return True
            if self.reserve:
                if (st.device, a.microbatch) in self._admitted:
                    return True
                return self._reserved(st) + self._mb_need[st.device] <= limit
            return st.mem + self.mem_of["A"][a.stage] + self._ap_size(a.stage) <= limit
        if a.kind is Kind.P2 and self.prog.four_phase:
            if self.cap_ap is not None and \
                    st.live_stage.get(("A'", a.stage), 0) >= self.cap_ap[a.stage]:
                return False
            if limit is not None and not self.reserve:
                return st.mem + self._ap_size(a.stage) <= limit
        return True

    def split(self, a: Action, st: DeviceState) -> bool:
        if self.split_mode == "all":
            return True
        if self.split_mode == "drain" and self._p1_left[st.device] > 0:
            return False
        if self.mem_cap is None:
            return True
        queue = self.mem_of[QUEUE_OF[a.kind]][a.stage]
        return self._reserved(st) + queue <= self.mem_cap[st.device] + 1e-9

    def _ap_size(self, stage: int) -> float:
        return self.mem_of["A'"][stage] if self.prog.four_phase else 0.0

    def _reserved(self, st: DeviceState) -> float:
        """Live sets plus sets booked by admitted micro-batches but not yet created."""
        return st.mem + st.extra.get("booked", 0.0)

    def on_start(self, a: Action, st: DeviceState) -> None:
        if a.kind is Kind.P1:
            self._p1_left[st.device] -= 1
        if self.mem_cap is None or not self.reserve:
            return
        if a.kind is Kind.P1 and (st.device, a.microbatch) not in self._admitted:
            self._admitted.add((st.device, a.microbatch))
            st.extra["booked"] = st.extra.get("booked", 0.0) + self._mb_need[st.device]
        name = st.last_created  # the engine has already added it to st.mem
        if name is not None and (self.book_queues or name not in _QUEUES):
            st.extra["booked"] -= self.mem_of[name][a.stage]


class UnitOneFOneB(Policy):
    """1F1B over (P1+P2, P3+P4) units; ``warmup[s]`` forward units before the first
    backward unit on stage s. Only for placements with one stage per rank.

    ``strict`` additionally refuses a forward unit while ``warmup`` P1 graphs are alive
    (1F1B's memory guarantee taken literally: a forward waits until a backward unit has
    *finished*). On the four-phase path a backward unit spans a round trip, so this
    starves the pipeline (bubble 66–82 % at P = 8, M ≥ 16, w = P, toy profiles); the
    generator does not use it.
    """

    def __init__(self, prog: Program, warmup: list[int], strict: bool = False):
        self.prog, self.strict, self.warmup = prog, strict, warmup
        M = prog.num_microbatches
        self.seq: dict[int, list[tuple[str, int]]] = {}
        for s in range(prog.num_stages):
            w = min(M, max(1, warmup[s]))
            units = [("F", m) for m in range(w)]
            for j in range(M):
                units.append(("B", j))
                if w + j < M:
                    units.append(("F", w + j))
            self.seq[s] = units
        self.ptr = dict.fromkeys(range(prog.num_stages), 0)
        # The action that starts each unit: P1 (forward); P3, or F34 at a fused last
        # stage, (backward); energy-only programs have P1 / P4 units.
        self.starts = {Kind.P1: "F", Kind.P34: "B",
                       (Kind.P3 if prog.four_phase else Kind.P4): "B"}

    def _unit_start(self, a: Action) -> str | None:
        return self.starts.get(a.kind)

    def key(self, a: Action) -> tuple:
        # Second halves of started units first (backward before forward), then the next
        # unit start, W parts last.
        rank = {Kind.P4: 0, Kind.P2: 1, Kind.P34: 2, Kind.P3: 2, Kind.P1: 2,
                Kind.W3: 3, Kind.W4: 3}[a.kind]
        if not self.prog.four_phase and a.kind is Kind.P4:
            rank = 2
        return (rank, a.microbatch)

    def allowed(self, a: Action, st: DeviceState) -> bool:
        unit = self._unit_start(a)
        if unit is None:
            return True
        if self.strict and unit == "F" and \
                st.live_stage.get(("A", a.stage), 0) >= self.warmup[a.stage]:
            return False
        seq, i = self.seq[a.stage], self.ptr[a.stage]
        return i < len(seq) and seq[i] == (unit, a.microbatch)

    def on_start(self, a: Action, st: DeviceState) -> None:
        if self._unit_start(a) is not None:
            self.ptr[a.stage] += 1
