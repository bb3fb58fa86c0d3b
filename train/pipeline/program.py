"""`Program`: per-rank action lists plus the metadata every consumer needs.

One Program feeds the validator, the simulator, the trace writer and the executor.
Placements map *stages* to devices; all four phases of a stage run on the device that
hosts it, because P2/P3/P4 reuse the P1 graph held there (ARCHITECTURE.md section 3).

* ``linear_placement(P)``: stage s on device s (S = P). The micro-batch path
  0→P−1→0→P−1→0 is then a 2P-virtual-stage V pipeline: device i hosts virtual stage i
  (P1, P4) and 2P−1−i (P2, P3). gpipe4, 1f1b4, symfold and wavek use it.
* ``wave_placement(P, waves)``: the model cut into S = 2·waves·P stages laid out in
  zigzags (Hanayo): stage s sits at position r = s mod 2P of its wave and on device r
  for r < P, else 2P−1−r. A P1 sweep goes down *and back up* ``waves`` times; turns
  between zigzags stay on one device (no transfer). hanayo4 uses it (and wavek may).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from matris.cuts import wave_devices

from .actions import FOUR_PHASES, SPLIT_W, TWO_PHASES, W_OF, Action, Kind, ScheduleError


def linear_placement(num_devices: int) -> tuple[int, ...]:
    """Stage s on device s."""
    return tuple(range(num_devices))


def wave_placement(num_devices: int, waves: int) -> tuple[int, ...]:
    """Hanayo zigzag: 2·waves·P stages; each device hosts 2·waves of them."""
    if waves < 1:
        raise ValueError(f"waves must be >= 1, got {waves}")
    return tuple(wave_devices(2 * waves * num_devices, num_devices))


@dataclass(frozen=True)
class Program:
    """A pipeline schedule: for each rank, the ordered actions it runs in one step.

    Attributes:
        name: generator name (a ``SCHEDULES`` key) or a free label.
        num_devices: P, pipeline ranks.
        num_microbatches: M.
        placement: stage → device; ``len(placement)`` is the stage count S.
        orders: per device, the ordered actions (compute only, or lowered with SEND/RECV).
        phases: the sweeps of a micro-batch, ``FOUR_PHASES`` or ``TWO_PHASES`` (energy-only).
        lazy_p3: P3 computes only ā; its other terms run inside P4, so A' lives until P4.
        split_w: phases whose weight-gradient part is a separate W action (subset of P3, P4).
        unsplit: P3 / P4 actions of a ``split_w`` kind that run whole all the same (no W
            action, no W queue): a schedule may split only where memory allows.
        fused_turn: at the last stage, P3 and P4 of a micro-batch are one ``P34`` action.
        meta: generator options and notes (free-form, JSON-serialisable).
    """

    name: str
    num_devices: int
    num_microbatches: int
    placement: tuple[int, ...]
    orders: tuple[tuple[Action, ...], ...]
    phases: tuple[Kind, ...] = FOUR_PHASES
    lazy_p3: bool = False
    split_w: frozenset[Kind] = frozenset()
    unsplit: frozenset[Action] = frozenset()
    fused_turn: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.orders) != self.num_devices:
            raise ScheduleError(f"{len(self.orders)} action lists for {self.num_devices} ranks")
        if any(not 0 <= d < self.num_devices for d in self.placement):
            raise ScheduleError(f"placement {self.placement} names a rank outside "
                                f"0..{self.num_devices - 1}")
        if self.phases not in (FOUR_PHASES, TWO_PHASES):
            raise ScheduleError(f"unsupported phase list {self.phases}")
        if not self.split_w <= {Kind.P3, Kind.P4}:
            raise ScheduleError(f"split_w must be a subset of {{P3, P4}}, got {self.split_w}")
        if not self.four_phase and (self.lazy_p3 or self.fused_turn or
                                         Kind.P3 in self.split_w):
            raise ScheduleError("lazy_p3 / fused_turn / W3 need the four-phase chain")
        for a in self.unsplit:
            if not (a.kind in SPLIT_W and 0 <= a.stage < self.num_stages and
                    0 <= a.microbatch < self.num_microbatches and
                    SPLIT_W[a.kind] in self.w_kinds(a.stage)):
                raise ScheduleError(f"unsplit names {a}, which is not a split P3/P4 of "
                                    f"{self.describe()}")

    # ----------------------------------------------------------------- geometry
    @property
    def num_stages(self) -> int:
        return len(self.placement)

    @property
    def last_stage(self) -> int:
        return len(self.placement) - 1

    @property
    def four_phase(self) -> bool:
        return len(self.phases) == 4

    @property
    def lowered(self) -> bool:
        return any(a.kind.is_comm for order in self.orders for a in order)

    def device_of(self, stage: int, kind: Kind | None = None) -> int:
        """Device that runs ``kind`` of ``stage`` (every phase of a stage: the same one)."""
        return self.placement[stage]

    def stages_of(self, device: int) -> list[int]:
        return [s for s, d in enumerate(self.placement) if d == device]

    # ----------------------------------------------------------------- actions
    def is_fused(self, stage: int) -> bool:
        return self.fused_turn and stage == self.last_stage

    def w_kinds(self, stage: int, microbatch: int | None = None) -> tuple[Kind, ...]:
        """Deferred weight-gradient kinds of ``stage``: for every micro-batch (``None``)
        or for ``microbatch`` (without those of its :attr:`unsplit` phases)."""
        if self.is_fused(stage):
            return ()
        out = []
        if Kind.P3 in self.split_w and not self.lazy_p3:
            out.append(Kind.W3)
        if Kind.P4 in self.split_w:
            out.append(Kind.W4)
        if microbatch is not None and self.unsplit:
            out = [w for w in out
                   if Action(W_OF[w], stage, microbatch) not in self.unsplit]
        return tuple(out)

    def stage_kinds(self, stage: int, microbatch: int | None = None) -> tuple[Kind, ...]:
        """Compute kinds a micro-batch runs on ``stage``, in dependency order (see
        :meth:`w_kinds` for ``microbatch``)."""
        if self.is_fused(stage):
            return (Kind.P1, Kind.P2, Kind.P34)
        return (*self.phases, *self.w_kinds(stage, microbatch))

    def expected_actions(self) -> Iterator[Action]:
        """Every compute action the program must contain exactly once."""
        for s in range(self.num_stages):
            for m in range(self.num_microbatches):
                for k in self.stage_kinds(s, m):
                    yield Action(k, s, m)

    def resolve(self, kind: Kind, stage: int, microbatch: int) -> Action:
        """The action that performs phase ``kind`` of (stage, mb): P3/P4 of a fused stage
        are performed by its P34."""
        if kind in (Kind.P3, Kind.P4) and self.is_fused(stage):
            return Action(Kind.P34, stage, microbatch)
        return Action(kind, stage, microbatch)

    def compute_orders(self) -> tuple[tuple[Action, ...], ...]:
        """Per-device orders without SEND/RECV/REDUCE."""
        return tuple(tuple(a for a in order if a.kind.is_compute) for order in self.orders)

    def with_orders(self, orders: Iterable[Iterable[Action]], **changes) -> Program:
        """A copy with new orders (and optionally other fields changed)."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fields.update(changes)
        fields["orders"] = tuple(tuple(o) for o in orders)
        fields["meta"] = dict(fields["meta"])
        return Program(**fields)

    def splits(self, action: Action) -> bool:
        """Whether ``action`` is a P3 / P4 whose weight part is its own W action."""
        return action.kind in SPLIT_W and \
            SPLIT_W[action.kind] in self.w_kinds(action.stage, action.microbatch)

    def split_phases(self) -> list[Action]:
        """The P3 / P4 actions that run split (each has a W action)."""
        return [a for a in self.expected_actions() if self.splits(a)]

    def run_whole(self, phases: Iterable[Action]) -> Program:
        """A copy in which the split P3 / P4 actions ``phases`` run whole: their W actions
        leave the orders and they join :attr:`unsplit` (the order is kept otherwise)."""
        phases = frozenset(phases)
        gone = {Action(SPLIT_W[a.kind], a.stage, a.microbatch) for a in phases
                if a.kind in SPLIT_W}
        orders = [[a for a in order if a not in gone] for order in self.orders]
        return self.with_orders(orders, unsplit=self.unsplit | phases)

    # ----------------------------------------------------------------- text
    def to_text(self) -> str:
        """One line per rank: ``rank: a a a ...`` (round-trips through :func:`from_text`)."""
        return "\n".join(f"{d}: " + " ".join(map(str, order))
                         for d, order in enumerate(self.orders))

    def describe(self) -> str:
        flags = [f"P={self.num_devices}", f"S={self.num_stages}", f"M={self.num_microbatches}"]
        if not self.four_phase:
            flags.append("energy-only")
        if self.lazy_p3:
            flags.append("lazy-P3")
        if self.split_w:
            flags.append("W-split " + "+".join(sorted(k.name for k in self.split_w)))
        if self.unsplit:
            flags.append(f"{len(self.unsplit)} phases unsplit")
        if self.fused_turn:
            flags.append("fused turn")
        return f"{self.name} ({', '.join(flags)})"


def from_text(text: str, **program_fields) -> Program:
    """Build a Program from :meth:`Program.to_text` output plus the metadata fields."""
    from .actions import parse_actions

    orders = []
    for line in text.strip().splitlines():
        _, _, body = line.partition(":")
        orders.append(tuple(parse_actions(body)))
    program_fields.setdefault("num_devices", len(orders))
    return Program(orders=tuple(orders), **program_fields)

