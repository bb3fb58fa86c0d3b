"""WaveK: cost-aware schedules produced offline by list scheduling over the simulator.

For each candidate configuration (placement: linear V or a 2-chunk wave; W split on or
off; priority rule), :func:`~.listsched.list_schedule` plays the pipeline forward with
the *measured* per-stage phase costs: a free rank runs the ready action furthest along
its micro-batch's path (or of the oldest micro-batch), deferred W parts only when nothing
critical is ready, and admits a new micro-batch only within

* the in-flight caps of the virtual pipeline plus slack ``K`` (symfold's 2P − i P1 graphs
  and i + 1 P2 graphs per rank at K = 0), and
* a per-rank memory cap (default: symfold's peak plus K micro-batches' worth of |A|+|A'|),
  checked with the new micro-batch's P2 graph reserved (``reserve``) or not.

Each candidate is replayed by the simulator (which reproduces the list schedule's
times exactly), candidates over the cap are dropped, and the fastest wins (ties: the
simpler configuration). Then ``restarts`` randomized passes (multi-pass list scheduling
with biased random sampling) re-run the :data:`RESTART_CONFIGS` fastest list-scheduled
configurations with each action's priority jittered by up to 1, 2 or 4 hops
(:data:`JITTER_HOPS`; reproducible: seeded per pass); one replaces the choice only if it
is strictly faster within the cap. Where hand-offs cost time, every list-scheduled
configuration is also planned without latency and replayed with it (greedy rules that
see each hand-off a little late lose their pattern). The chosen configuration and every
candidate's makespan are recorded in ``program.meta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from .actions import Kind, ScheduleError
from .costs import CostModel, uniform
from .fitsplit import fit_splits
from .listsched import list_schedule
from .policies import SPLIT_MODES, CappedDepthFirst, virtual_caps
from .program import Program
from .simulate import simulate
from .validate import validate


def default_mem_cap(P: int, M: int, costs: CostModel, K: int, split_w=None,
                    **options) -> float:
    """Symfold's peak per-rank activation memory plus K micro-batches' sets. Symfold
    without W split, unless the split is forced (``split_w`` not None/False): then
    symfold with that split (its W queues count)."""
    from .schedules import symfold

    opts = {k: v for k, v in options.items() if k in ("lazy_p3", "fused_turn", "phases")}
    if split_w:
        opts["split_w"] = split_w
    peak = max(simulate(symfold(P, M, costs, **opts), costs).peak_mem)
    lin = costs.for_stages(P)
    return peak + K * (max(lin.mem_a) + max(lin.mem_ap))


#: Count-cap slacks tried on top of the memory cap (None: the memory cap alone governs).
SLACKS = (0, 2, None)
#: Randomized passes re-run the fastest this many list-scheduled configurations ...
RESTART_CONFIGS = 3
#: ... with priority jitter of up to this many path hops (micro-batches for "mb").
JITTER_HOPS = (1.0, 2.0, 4.0)


def candidates(waves=(0, 1), split_w=None, orders=("depth", "mb"), slacks=SLACKS,
               w_modes=("last", "pressure"), split_modes=SPLIT_MODES):
    """The configurations wavek tries (W split off only with the plainest rule)."""
    out = []
    for w in waves:
        for split in ([True, False] if split_w is None else [split_w]):
            for order in orders:
                for slack in slacks:
                    for w_mode in (w_modes if split else w_modes[:1]):
                        for mode in (split_modes if split else split_modes[:1]):
                            if split or (order == orders[0] and slack == slacks[0]):
                                out.append({"waves": w, "split_w": split, "order": order,
                                            "slack": slack, "w_mode": w_mode,
                                            "split_mode": mode})
    return out


class _Task(NamedTuple):
    """One candidate of wavek's search (pure: any process can evaluate it)."""

    cfg: dict                       # its row in ``meta["candidates"]``
    level: list                     # per-rank memory caps it is built under
    make: Callable                  # () → (program or None, extra config)
    planned_with: CostModel | None  # a list schedule's planning costs; None: fixed pattern


def wavek(P: int, M: int, costs: CostModel | None = None, *, K: int = 0,
          mem_cap=None, waves=None, max_waves: int = 1, split_w=None,
          orders=("depth", "mb"), slacks=SLACKS, restarts: int = 8, seed: int = 0,
          share=None, **options) -> Program:
    """Best list schedule over the candidate grid (see module docstring).

    Args:
        K: in-flight slack: the default memory cap is symfold's peak plus K micro-batches'
            sets. With K > 0 every candidate is also tried at the K = 0 cap, so a larger
            K is never slower.
        mem_cap: per-rank cap (number or list) in the cost model's memory units;
            None: :func:`default_mem_cap`; ``math.inf``: unlimited.
        waves: fix the placement (0: linear V, w: Hanayo zigzag with 2w chunks per rank),
            or None to try 0..max_waves (the chunk budget; the model must have at least
            2·max_waves·P blocks).
        split_w: True/False, or None to try both.
        orders, slacks: candidate priority rules and count-cap slacks.
        restarts: randomized passes per (configuration, jitter amplitude): up to
            ``restarts · RESTART_CONFIGS · len(JITTER_HOPS)`` extra list schedules (0: the
            deterministic search only). ``seed`` seeds them.
        share: ``(rank, size, allgather)`` to split the search over ``size`` processes
            that all build this program (the trainer's ranks): each evaluates every
            size-th candidate, ``allgather(obj)`` returns every process's obj in rank
            order, and every process then rebuilds the chosen one. The result is the
            unshared search's, in 1/size of its time.
        **options: lazy_p3, fused_turn, phases (as for the other generators).
    """
    from .schedules import _variant

    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    costs = costs if costs is not None else uniform(P)
    options = _variant(costs, options)
    levels = [mem_cap]
    if mem_cap is None:
        levels = [default_mem_cap(P, M, costs, k, split_w, **options)
                  for k in sorted({K, 0})]
    levels = [[c] * P if isinstance(c, (int, float)) else list(c) for c in levels]
    caps = max(levels, key=sum)
    wave_list = list(range(max_waves + 1)) if waves is None else [waves]

    # The search as a list of independent tasks (pure: any process can evaluate any of
    # them). Seeds first: the fixed patterns compete too, so at equal memory wavek is
    # never slower than symfold / ZBV-4 or than Hanayo's rule under the same cap.
    # With communication latency every list-scheduled configuration is also planned
    # without it and replayed with it: a greedy rule that sees every hand-off a little
    # late breaks its pattern (at α = 0.001 t1 the plan lost 3 % at (8, 8); the α-free
    # plan replayed with α lost 0.02 %).
    plans = {"": costs}
    if any(costs.comm_time(k) > 0 for k in (Kind.P1, Kind.P2, Kind.P3, Kind.P4)):
        plans["no-latency"] = replace(costs, alpha=0.0, beta=math.inf)
    tasks: list[_Task] = []
    for level in levels:
        for cfg, make in _seeds(P, M, costs, level, wave_list, split_w, options):
            tasks.append(_Task(cfg, level, make, None))
        for plan, plan_costs in plans.items():
            for cfg in candidates(wave_list, split_w, orders, slacks):
                cfg = {**cfg, "plan": plan} if plan else cfg
                tasks.append(_Task(cfg, level, _list_task(P, M, plan_costs, cfg, K, level,
                                                          options), plan_costs))

    def evaluate(i: int) -> tuple[dict, Program | None]:
        task = tasks[i]
        prog, extra = task.make()
        row = {**task.cfg, **extra, "cap": max(task.level)}
        if prog is None:
            return {**row, "makespan": None, "note": "stalled"}, None
        if task.planned_with is costs:  # the simulator reproduces the list schedule exactly
            span, peak = (prog.meta["list_schedule"][k] for k in ("makespan", "peak_mem"))
        else:  # a fixed pattern, or a plan made without latency: replay with the costs
            sim = simulate(prog, costs)
            span, peak = sim.makespan, sim.peak_mem
        fits = all(p <= c + 1e-9 for p, c in zip(peak, caps))
        return {**row, "makespan": span, "peak_mem": max(peak), "fits": fits}, prog

    local: dict[int, Program | None] = {}
    table: list[dict] = []

    def run(first: int) -> None:
        """Evaluate tasks[first:] (split over the processes with ``share``)."""
        if share is None:
            for i in range(first, len(tasks)):
                row, local[i] = evaluate(i)
                table.append(row)
            return
        rank, size, allgather = share
        mine = {}
        for i in range(first + rank, len(tasks), size):
            mine[i], local[i] = evaluate(i)
        rows = [None] * (len(tasks) - first)
        for part in allgather(mine):
            for i, row in part.items():
                rows[i - first] = row
        table.extend(rows)

    run(0)
    n_plain = len(tasks)
    if restarts > 0:  # randomized passes over the fastest list-scheduled configurations
        listed = sorted((i for i, row in enumerate(table)
                         if tasks[i].planned_with is not None and row.get("fits")),
                        key=lambda i: table[i]["makespan"])[:RESTART_CONFIGS]
        for n, i in enumerate(listed):
            task = tasks[i]
            for a, amp in enumerate(JITTER_HOPS):
                for r in range(restarts):
                    jit = {**task.cfg,
                           "jitter": [(seed * 1009 + n * 101 + a) * 1000 + r, amp]}
                    tasks.append(_Task(jit, task.level, _list_task(
                        P, M, task.planned_with, jit, K, task.level, options),
                        task.planned_with))
        run(n_plain)
    chosen = None  # the first of the fastest (ties: the earlier, simpler configuration)
    for i, row in enumerate(table):
        if row.get("fits") and (chosen is None or
                                row["makespan"] < table[chosen]["makespan"] * (1 - 1e-9)):
            chosen = i
    if chosen is None:
        raise ScheduleError(f"wavek: no candidate fits mem_cap={mem_cap} at P={P}, M={M}")
    found = local[chosen] if chosen in local else evaluate(chosen)[1]
    span = table[chosen]["makespan"]
    prog = found.with_orders(found.orders, name="wavek")
    sim = simulate(prog, costs)  # the list schedule replays exactly; check it
    if abs(sim.makespan - span) > 1e-6 * max(1.0, span):
        raise ScheduleError(f"wavek: replay {sim.makespan} != list schedule {span}")
    config = {k: v for k, v in table[chosen].items() if k not in ("makespan", "peak_mem",
                                                                    "fits")}
    best_plain = min((row["makespan"] for row in table[:n_plain] if row.get("fits")),
                     default=None)
    prog.meta.update({"chosen": config, "mem_cap": caps, "candidates": table[:n_plain],
                      "restarts": {"passes": len(table) - n_plain, "best_plain": best_plain,
                                   "best": span}, "K": K})
    return validate(prog)


def _seeds(P, M, costs, caps, waves, split_w, options):
    """(config, make) of the fixed patterns: symfold (linear) and Hanayo (waves);
    ``make()`` → (program or None, {})."""
    from .schedules import hanayo4, symfold

    def make_symfold(split, fitted):
        def make():
            prog = symfold(P, M, costs, split_w=split, **options)
            return (fit_splits(prog, costs, caps) if fitted else prog), {}
        return make

    def make_hanayo(w, split, mode):
        def make():
            try:
                return hanayo4(P, M, costs, waves=w, split_w=split, mem_cap=caps,
                               split_mode=mode, **options), {}
            except ScheduleError:
                return None, {}
        return make

    for split in ([False, True] if split_w is None else [split_w]):
        for w in waves:
            if w == 0:
                yield ({"waves": 0, "split_w": split, "order": "symfold-cyclic"},
                       make_symfold(split, False))
                if split:  # ZBV-4's order, phases run whole where the queues overflow
                    yield ({"waves": 0, "split_w": split, "order": "symfold-cyclic",
                            "split_mode": "fitted"}, make_symfold(split, True))
                continue
            for mode in (("all", "fits", "fitted") if split else ("all",)):
                yield ({"waves": w, "split_w": split, "order": "hanayo-rule",
                        "split_mode": mode}, make_hanayo(w, split, mode))


def _list_task(P, M, costs, cfg, K, caps, options):
    """``make()`` of a list-scheduled candidate: (program or None, {"reserve": ...});
    the admission reservation is tried only if the plain rule stalls."""
    def make():
        for reserve in (False, True):
            prog = _try(P, M, costs, cfg, K, caps, reserve, options)
            if prog is not None:
                break
        return prog, {"reserve": reserve}
    return make


def _try(P, M, costs, cfg, K, caps, reserve, options) -> Program | None:
    from .schedules import skeleton

    skel = skeleton("wavek", P, M, waves=cfg["waves"], split_w=cfg["split_w"], K=K,
                    **options)
    cm = costs.for_program(skel)
    if cfg["slack"] is None:
        cap_a = cap_ap = None
    else:
        cap_a, cap_ap = virtual_caps(skel, slack=cfg["slack"])
    limited = not all(math.isinf(c) for c in caps)
    policy = CappedDepthFirst(skel, cap_a, cap_ap, mem_cap=caps if limited else None,
                              mem_of=cm.set_sizes(), order=cfg["order"],
                              w_mode=cfg["w_mode"], reserve=reserve,
                              split_mode=cfg.get("split_mode", "all"),
                              jitter=cfg.get("jitter"))
    try:
        return list_schedule(skel, costs, policy)
    except ScheduleError:
        return None
