"""Schedule generators: ``SCHEDULES[name](P, M, costs=None, **options) -> Program``.

Every generator is a pure function; its output passes :func:`~.validate.validate`.
Common options (where a generator supports them):

* ``lazy_p3`` (bool): lazy-P3 variant (P3 computes only ā; A' lives until P4);
* ``split_w`` (bool or subset of {"P3", "P4"}): defer weight-gradient parts as W3/W4;
* ``fused_turn`` (bool): P3+P4 of the last stage as one ``P34`` action;
* ``phases`` (4 or 2): 2 is energy-only training (classic forward/backward pipeline);
* ``waves`` (int): Hanayo zigzag placement with 2·waves·P stages (default 1 for hanayo4,
  0 = linear placement elsewhere).

Definitions, grids and fairness notes: docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .actions import FOUR_PHASES, TWO_PHASES, W_OF, Action, Kind, ScheduleError
from .costs import MEM_FIELDS, CostModel, uniform
from .listsched import list_schedule
from .policies import CappedDepthFirst, UnitOneFOneB, chain_position, virtual_caps
from .program import Program, linear_placement, wave_placement
from .validate import validate

#: Generator-specific options recorded in ``Program.meta`` (anything else is a typo).
_META_KEYS = {"warmup", "K"}


def skeleton(name: str, P: int, M: int, *, waves: int = 0, phases: int = 4,
             lazy_p3: bool = False, split_w=False, fused_turn: bool = False,
             **meta) -> Program:
    """A Program with placement and flags set and empty orders."""
    unknown = set(meta) - _META_KEYS
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {sorted(unknown)}; common options are "
                        "lazy_p3, split_w, fused_turn, phases, waves")
    if P < 1 or M < 1:
        raise ValueError(f"need P >= 1 and M >= 1, got P={P}, M={M}")
    if phases not in (2, 4):
        raise ValueError(f"phases must be 4 (force training) or 2 (energy-only), got {phases}")
    if split_w is True:
        split = frozenset({Kind.P3, Kind.P4}) if phases == 4 else frozenset({Kind.P4})
    elif not split_w:
        split = frozenset()
    else:
        split = frozenset(Kind[k] if isinstance(k, str) else k for k in split_w)
    placement = wave_placement(P, waves) if waves else linear_placement(P)
    meta = {**meta, "waves": waves}
    return Program(name=name, num_devices=P, num_microbatches=M, placement=placement,
                   orders=((),) * P, phases=FOUR_PHASES if phases == 4 else TWO_PHASES,
                   lazy_p3=lazy_p3, split_w=split, fused_turn=fused_turn, meta=meta)


def _unit_costs(skel: Program, costs: CostModel | None = None) -> CostModel:
    """Unit phase times (a cost-oblivious replay); the memory sizes of ``costs`` if given,
    so that a memory cap in its units means the same in the replay."""
    unit = uniform(skel.num_stages)
    if costs is None:
        return unit
    cm = costs.for_program(skel)
    return replace(unit, **{f: getattr(cm, f) for f in MEM_FIELDS})


# --------------------------------------------------------------------------- gpipe4
def gpipe4(P: int, M: int, costs: CostModel | None = None, **options) -> Program:
    """Phase-major: every rank runs all its P1s, then all P2s, all P3s, all P4s (each
    phase in sweep order over its stages, micro-batches ascending); W parts, if split,
    right after their phase's block. Cost-oblivious."""
    skel = skeleton("gpipe4", P, M, **_variant(costs, options))
    orders: list[list[Action]] = [[] for _ in range(P)]
    for k in skel.phases:
        # The kinds that make up phase k's block: k itself (P34 stands in for P3 at a
        # fused last stage; its P4 block is then empty), then k's W part.
        block_kinds = [k, *([Kind.P34] if k is Kind.P3 else []), *(
            w for w, parent in W_OF.items() if parent is k)]
        for d in range(P):
            stages = sorted(skel.stages_of(d), key=lambda s: chain_position(skel, k, s))
            for kk in block_kinds:
                for s in stages:
                    if kk in skel.stage_kinds(s):
                        orders[d] += [Action(kk, s, m) for m in range(M)]
    return validate(skel.with_orders(orders))


# --------------------------------------------------------------------------- 1f1b4
def onef1b4(P: int, M: int, costs: CostModel | None = None, *, warmup="full",
            cost_aware="best", **options) -> Program:
    """Megatron-style 1F1B port: forward unit = P1+P2, backward unit = P3+P4 (see
    :class:`~.policies.UnitOneFOneB`); linear placement.

    ``warmup``: "full" (default: S forward units on every stage, the classic 1F1B
    derivation applied to the four-phase round trip, see docs), "classic" (P − s, the
    Megatron formula copied verbatim: the last stage then holds a single micro-batch and
    serialises the round trips), or an int / per-stage list. ``cost_aware``: False
    replays the rule on unit costs (a fixed pattern), True on ``costs``, "best" (default)
    keeps whichever is faster under ``costs``.
    """
    skel = skeleton("1f1b4", P, M, warmup=str(warmup), **_variant(costs, options))
    if isinstance(warmup, str):
        if warmup not in ("classic", "full"):
            raise ValueError(f"warmup must be 'classic', 'full', an int or a list: {warmup!r}")
        w = [P - s if warmup == "classic" else _full_warmup(skel, s) for s in range(P)]
    elif isinstance(warmup, int):
        w = [warmup] * P
    else:
        w = list(warmup)
    return _best_of(skel, costs, cost_aware, lambda sk: UnitOneFOneB(sk, w))


def _full_warmup(skel: Program, s: int) -> int:
    """Classic 1F1B keeps P − s micro-batches in flight on stage s: half the hops between
    its forward and its backward (2(P − s)). On the four-phase path the forward unit
    starts at hop s and the backward unit at hop 2S + s: 2S hops, so S units (energy-only:
    P − s, the classic value)."""
    return skel.num_stages if skel.four_phase else skel.num_stages - s


def _best_of(skel: Program, costs: CostModel | None, cost_aware, make_policy) -> Program:
    """Run a rule on unit costs and/or on ``costs``; keep the faster under ``costs``."""
    from .simulate import simulate

    modes = {"best": [False, True], True: [True], False: [False]}.get(cost_aware)
    if modes is None:
        raise ValueError(f"cost_aware must be True, False or 'best', got {cost_aware!r}")
    if costs is None:
        modes = [False]
    best = None
    for aware in modes:
        prog = list_schedule(skel, costs if aware else _unit_costs(skel, costs),
                             make_policy(skel))
        prog.meta["cost_aware"] = aware
        span = simulate(prog, costs).makespan if costs is not None else 0.0
        if best is None or span < best[0] - 1e-9:
            best = (span, prog)
    return validate(best[1])


# --------------------------------------------------------------------------- symfold
def symfold(P: int, M: int, costs: CostModel | None = None, *, w_slot: str = "end",
            cycle: str | None = None, **options) -> Program:
    """SymFold: linear placement read as a 2P-virtual-stage V, with the ZB-V-like cyclic
    order. Rank i runs, in cycle c = 0, 1, 2, ...::

        P1(c), P4(c − (2P−1−i)), P2(c − (P−1−i)), P3(c − (P−1))

    skipping micro-batches outside 0..M−1 (warm-up and cool-down are the same pattern
    with holes). In flight on rank i: 2P − i P1 graphs, i + 1 P2 graphs (P with lazy-P3).
    ``cycle="p4-first"`` runs the cycle's P4 before its P1, so a set is freed before the
    next is allocated: 2P − 1 − i P1 graphs at the same makespan at equal costs (the
    default with lazy P3, where A' also lives until P4 and every rank's peak drops by
    one P1 graph; with eager P3 the peak is reached elsewhere in the cycle and the
    classic ``"p1-first"`` order is kept).
    Energy-only (``phases=2``): P1(c), P4(c − (P−1−i)), i.e. classic 1F1B.
    ``split_w`` (ZBV-4): W4 and W3 of the cycle's P4/P3 micro-batches go at the cycle's
    end (``w_slot="end"``) or right after their phase (``"after"``). Fused turn: rank
    P−1 runs P34 in the P3 slot. Cost-oblivious: ``costs`` is not used.
    """
    skel = skeleton("symfold", P, M, **_variant(costs, options))
    if cycle is None:
        cycle = "p4-first" if skel.lazy_p3 else "p1-first"
    if cycle not in ("p1-first", "p4-first"):
        raise ValueError(f"symfold: cycle must be 'p1-first' or 'p4-first', got {cycle!r}")
    if skel.four_phase:
        slots = [(Kind.P1, lambda i: 0), (Kind.P4, lambda i: 2 * P - 1 - i),
                 (Kind.P2, lambda i: P - 1 - i), (Kind.P3, lambda i: P - 1)]
    else:
        slots = [(Kind.P1, lambda i: 0), (Kind.P4, lambda i: P - 1 - i)]
    if cycle == "p4-first":
        slots[:2] = slots[1::-1]
    orders = []
    for i in range(P):
        order: list[Action] = []
        cycles = M + max(off(i) for _, off in slots)
        for c in range(cycles):
            tail = []
            for k, off in slots:
                m = c - off(i)
                if not 0 <= m < M:
                    continue
                a = skel.resolve(k, i, m)
                if a.kind is Kind.P34 and k is Kind.P4:
                    continue  # the fused turn already ran in the P3 slot
                order.append(a)
                w = {Kind.P3: Kind.W3, Kind.P4: Kind.W4}.get(k)
                if w in skel.w_kinds(i):
                    (tail if w_slot == "end" else order).append(Action(w, i, m))
            order += tail
        orders.append(order)
    return validate(skel.with_orders(orders))


def _variant(costs: CostModel | None, options: dict) -> dict:
    """Default ``lazy_p3`` from the cost model; refuse a mismatch (wrong lifetimes)."""
    if costs is not None:
        lazy = options.setdefault("lazy_p3", costs.lazy_p3)
        if lazy != costs.lazy_p3:
            raise ValueError(f"lazy_p3={lazy} but the cost model describes "
                             f"{'lazy' if costs.lazy_p3 else 'eager'} P3 ({costs.label})")
    return options


# --------------------------------------------------------------------------- hanayo4
def hanayo4(P: int, M: int, costs: CostModel | None = None, *, waves: int = 1,
            cost_aware="best", order: str = "depth", mem_cap=None, split_mode: str = "all",
            **options) -> Program:
    """Hanayo: wave placement (the model cut into 2·waves·P stages laid out in zigzags,
    each rank hosting 2·waves of them) with Hanayo's 1F1B-style order: depth-first (the
    action furthest along its micro-batch's path first) under the classic 1F1B caps of
    the virtual pipeline (:func:`~.policies.virtual_caps`). ``cost_aware`` as in 1f1b4.
    ``mem_cap`` (per-rank activation memory, cost-model units) additionally limits
    admissions, for comparisons at equal memory; with a W split, ``split_mode="fits"``
    splits only the P3 / P4 whose W queue fits under it (see ``CappedDepthFirst``), and
    ``"fitted"`` admits as if the W queues were free, splits every phase, and then runs
    whole the phases whose queues overflow the cap (:func:`~.fitsplit.fit_splits`).
    """
    from .fitsplit import fit_splits

    skel = skeleton("hanayo4", P, M, waves=waves, **_variant(costs, options))
    cap_a, cap_ap = virtual_caps(skel)
    caps = None if mem_cap is None else (
        [mem_cap] * P if isinstance(mem_cap, (int, float)) else list(mem_cap))
    cm = (costs or _unit_costs(skel)).for_program(skel)
    fitted = split_mode == "fitted"
    prog = _best_of(skel, costs, cost_aware, lambda sk: CappedDepthFirst(
        sk, cap_a, cap_ap, mem_cap=caps, mem_of=cm.set_sizes(), order=order,
        split_mode="all" if fitted else split_mode, book_queues=False if fitted else None))
    if fitted and caps is not None and skel.split_w:
        prog = fit_splits(prog, costs or _unit_costs(skel), caps)
        if prog is None:
            raise ScheduleError(f"hanayo4: no split choice fits mem_cap at P={P}, M={M}")
        prog = validate(prog)
    return prog


from .wavek import wavek  # noqa: E402  (wavek builds on the generators above)

#: Registry used by the trainer config (``parallel.schedule``) and the study.
SCHEDULES: dict[str, Callable[..., Program]] = {
    "gpipe4": gpipe4,
    "1f1b4": onef1b4,
    "hanayo4": hanayo4,
    "symfold": symfold,
    "wavek": wavek,
}


def make_schedule(name: str, P: int, M: int, costs: CostModel | None = None, *,
                  wavek_k: int | None = None, **options) -> Program:
    """``SCHEDULES[name](P, M, costs, **options)`` with a helpful error for unknown names.

    Maps the trainer config directly: ``parallel.schedule`` → name,
    ``parallel.microbatches`` → M, ``parallel.lazy_p3`` → ``lazy_p3=``,
    ``parallel.wavek_k`` → ``wavek_k=`` (used by wavek only, ignored by the others).
    ``whole_microbatches`` (with ``split_w``): those micro-batches run their P3 / P4
    whole (``Program.run_whole``; the order is the generator's).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    if name == "wavek" and wavek_k is not None:
        options["K"] = wavek_k
    whole = options.pop("whole_microbatches", None)
    prog = SCHEDULES[name](P, M, costs, **options)
    if whole:
        if not prog.split_w or not set(whole) <= set(range(M)):
            raise ValueError(f"whole_microbatches={whole} needs split_w and micro-batch "
                             f"indices in 0..{M - 1}")
        prog = validate(prog.run_whole(a for a in prog.split_phases()
                                       if a.microbatch in set(whole)))
    return prog
