"""The action vocabulary of a four-phase pipeline schedule (pure data, no torch).

A force-trained micro-batch crosses the pipeline four times (ARCHITECTURE.md section 3):

=====  =========  ===============================================================
kind   direction  work on stage s
=====  =========  ===============================================================
P1     0 → S−1    energy forward; builds the P1 graph A_s
P2     S−1 → 0    force backward with create_graph; builds the P2 graph A'_s
P3     0 → S−1    backward of P2 (second-order); eager: full, lazy: only ā
P4     S−1 → 0    backward of P1 (first-order + deferred second-order terms)
=====  =========  ===============================================================

Extra compute kinds: ``W3``/``W4`` are the weight-gradient parts of P3/P4 when a schedule
defers them (Zero-Bubble style split), ``P34`` is P3+P4 fused into one autograd call at
the last stage (the turn). Lowering adds ``SEND``/``RECV`` (one per cross-device tensor
hand-off) and ``REDUCE`` (a stage's gradients are final: the data-parallel all-reduce may
start).

Text form (parsed by :func:`parse_action`, printed by ``str(action)``)::

    2F1.0     stage 2, phase 1 (P1), micro-batch 0         compute
    2W3.5     stage 2, weight part of P3, micro-batch 5
    7F34.3    stage 7, fused P3+P4 turn, micro-batch 3
    2F1.0>3   SEND: the P1 output of stage 2, micro-batch 0, to rank 3
    3F1.0<2   RECV: the P1 input of stage 3, micro-batch 0, from rank 2
    2GR       REDUCE: stage 2's gradients are complete

``F<k>`` reads "phase k"; a SEND names the *producing* action, a RECV the *consuming*
one, so ``2F1.0>3`` pairs with ``3F1.0<2`` (stage 2 + direction(P1) = stage 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class ScheduleError(ValueError):
    """A schedule is malformed; the message carries the grid with the failing step."""


class Kind(str, Enum):
    """Action kinds. The value is the text token used in the compact form."""

    P1 = "F1"
    P2 = "F2"
    P3 = "F3"
    P4 = "F4"
    W3 = "W3"
    W4 = "W4"
    P34 = "F34"
    SEND = "S"
    RECV = "R"
    REDUCE = "GR"

    def __str__(self) -> str:
        return self.value

    @property
    def is_compute(self) -> bool:
        return self not in (Kind.SEND, Kind.RECV, Kind.REDUCE)

    @property
    def is_comm(self) -> bool:
        return self in (Kind.SEND, Kind.RECV)


#: The four sweeps of a micro-batch, in order.
FOUR_PHASES: tuple[Kind, ...] = (Kind.P1, Kind.P2, Kind.P3, Kind.P4)
#: Energy-only training (no force loss): an ordinary forward/backward pipeline. Used to
#: check the simulator against the classic 2-phase closed forms.
TWO_PHASES: tuple[Kind, ...] = (Kind.P1, Kind.P4)

#: Direction of each sweep in stage index (+1: towards the last stage). A table, so the
#: dependency rules, lowering and the validator never hard-code ±1.
DIRECTION: dict[Kind, int] = {Kind.P1: +1, Kind.P2: -1, Kind.P3: +1, Kind.P4: -1}

#: Tensors that cross a stage boundary in each sweep (names used for byte sizes).
BOUNDARY: dict[Kind, tuple[str, ...]] = {
    Kind.P1: ("h",),               # features h_{s+1} (atom, bond, angle)
    Kind.P2: ("a", "f_acc"),       # a_s = ∂E/∂h_s, running force/virial sum (N×3 + 3×3)
    Kind.P3: ("abar", "dl_df"),    # cotangent ā of a, and ∂L/∂F (N×3) piggy-backed
    Kind.P4: ("hbar",),            # h̄_s = total ∂L/∂h_s
}

#: The phase whose weight-gradient part a W kind holds.
W_OF: dict[Kind, Kind] = {Kind.W3: Kind.P3, Kind.W4: Kind.P4}
SPLIT_W: dict[Kind, Kind] = {Kind.P3: Kind.W3, Kind.P4: Kind.W4}

_TOKENS = "|".join(sorted((k.value for k in Kind if k not in (Kind.SEND, Kind.RECV)),
                          key=len, reverse=True))
_PATTERN = re.compile(rf"^(\d+)({_TOKENS})(?:\.(\d+))?(?:([<>])(\d+))?$")


@dataclass(frozen=True, slots=True, order=True)
class Action:
    """One step of a rank's program.

    ``kind``/``stage``/``microbatch`` identify a compute action. Communication actions
    additionally carry ``phase`` (the sweep whose boundary tensors move; see
    :data:`BOUNDARY`) and ``peer`` (the other rank). For SEND, ``stage`` is the producing
    stage; for RECV, the consuming stage. REDUCE has ``microbatch == -1``.
    """

    kind: Kind
    stage: int
    microbatch: int
    phase: Kind | None = None
    peer: int | None = None

    def __str__(self) -> str:
        if self.kind is Kind.REDUCE:
            return f"{self.stage}GR"
        if self.kind is Kind.SEND:
            return f"{self.stage}{self.phase.value}.{self.microbatch}>{self.peer}"
        if self.kind is Kind.RECV:
            return f"{self.stage}{self.phase.value}.{self.microbatch}<{self.peer}"
        return f"{self.stage}{self.kind.value}.{self.microbatch}"

    @property
    def compute_key(self) -> Action:
        """For SEND/RECV, the phase action they serve (producer resp. consumer). At a
        fused last stage that phase is performed by P34: use ``Program.resolve``."""
        if self.kind.is_comm:
            return Action(self.phase, self.stage, self.microbatch)
        return self


def parse_action(text: str) -> Action:
    """Parse the compact text form (see module docstring)."""
    m = _PATTERN.match(text.strip())
    if not m:
        raise ScheduleError(f"cannot parse action {text!r}; expected e.g. '2F1.0', "
                            "'2W3.5', '7F34.0', '2F1.0>3', '3F1.0<2' or '2GR'")
    stage, token, mb, arrow, peer = m.groups()
    kind = Kind(token)
    if kind is Kind.REDUCE:
        if mb is not None or arrow is not None:
            raise ScheduleError(f"REDUCE takes no micro-batch or peer: {text!r}")
        return Action(Kind.REDUCE, int(stage), -1)
    if mb is None:
        raise ScheduleError(f"missing '.microbatch' in {text!r}")
    if arrow is None:
        return Action(kind, int(stage), int(mb))
    if kind not in DIRECTION:
        raise ScheduleError(f"only phase outputs cross devices, not {kind.value}: {text!r}")
    comm = Kind.SEND if arrow == ">" else Kind.RECV
    return Action(comm, int(stage), int(mb), phase=kind, peer=int(peer))


def parse_actions(text: str) -> list[Action]:
    """Parse whitespace-separated actions; ``.`` or ``-`` entries are ignored (bubbles)."""
    return [parse_action(t) for t in text.split() if t not in (".", "-")]
