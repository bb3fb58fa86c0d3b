"""W split per phase (``Program.unsplit``): a schedule may defer the weight part of some
P3 / P4 and run the others whole, so the W queues are held only where memory allows.
The IR, the simulator's durations and memory, the list scheduler's split-or-whole
choice, wavek's use of it, the relaxed lower bound, and the executor (in process,
float64 against the serial double backward: test_executor_exact.py)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from matris.train.pipeline.actions import Action, Kind, ScheduleError, parse_actions
from matris.train.pipeline.bounds import lower_bound
from matris.train.pipeline.costs import CostModel, measured_profile, uniform
from matris.train.pipeline.fitsplit import fit_splits
from matris.train.pipeline.listsched import list_schedule
from matris.train.pipeline.policies import CappedDepthFirst, virtual_caps
from matris.train.pipeline.program import Program
from matris.train.pipeline.schedules import make_schedule, skeleton
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.validate import validate
from matris.train.pipeline.wavek import default_mem_cap, wavek

P3_0_1 = Action(Kind.P3, 0, 1)


def one_stage(order: str, unsplit=(), **kw) -> Program:
    return Program("hand", 1, 2, (0,), (tuple(parse_actions(order)),),
                   split_w=frozenset({Kind.P3, Kind.P4}), unsplit=frozenset(unsplit), **kw)


def test_unsplit_phases_have_no_w_action():
    p = one_stage("0F1.0 0F2.0 0F3.0 0F4.0 0W3.0 0W4.0 0F1.1 0F2.1 0F3.1 0F4.1 0W4.1",
                  unsplit=[P3_0_1])
    validate(p)
    assert Action(Kind.W3, 0, 1) not in set(p.expected_actions())
    assert p.w_kinds(0) == (Kind.W3, Kind.W4) and p.w_kinds(0, 1) == (Kind.W4,)
    with pytest.raises(ScheduleError):  # the W part of a whole phase is an extra action
        validate(one_stage("0F1.0 0F2.0 0F3.0 0F4.0 0W3.0 0W4.0 "
                           "0F1.1 0F2.1 0F3.1 0W3.1 0F4.1 0W4.1", unsplit=[P3_0_1]))
    with pytest.raises(ScheduleError, match="not a split P3/P4"):
        one_stage("0F1.0", unsplit=[Action(Kind.P1, 0, 0)])
    with pytest.raises(ScheduleError, match="not a split P3/P4"):  # lazy P3 has no W3
        one_stage("0F1.0", unsplit=[P3_0_1], lazy_p3=True)


def test_run_whole_and_the_generator_option():
    p = make_schedule("symfold", 2, 3, split_w=True, whole_microbatches=[1])
    assert {(a.kind, a.microbatch) for a in p.unsplit} == {(Kind.P3, 1), (Kind.P4, 1)}
    assert not any(a.kind in (Kind.W3, Kind.W4) and a.microbatch == 1
                   for order in p.orders for a in order)
    with pytest.raises(ValueError, match="whole_microbatches"):
        make_schedule("symfold", 2, 3, whole_microbatches=[1])  # nothing is split


def test_simulator_durations_and_queues_follow_the_choice():
    cm = uniform(1, (1, 1, 1, 1), w_frac={"P3": 0.5, "P4": 0.5}, mem_a=(1.0,),
                 mem_ap=(1.0,), mem_q3=(5.0,), mem_q4=(5.0,))
    order = "0F1.0 0F2.0 0F3.0 0F4.0 0W3.0 0W4.0 0F1.1 0F2.1 0F3.1 0F4.1"
    whole1 = [P3_0_1, Action(Kind.P4, 0, 1)]
    r = simulate(one_stage(order, unsplit=whole1), cm)
    assert r.times[Action(Kind.P3, 0, 0)] == (2, 2.5)  # split: critical part only
    assert r.times[P3_0_1] == (6, 7)                   # whole
    assert r.makespan == 8
    assert r.peak_mem == [12.0]  # micro-batch 0: A + A' + Q3 + Q4 while W3.0 waits
    r1 = simulate(one_stage("0F1.1 0F2.1 0F3.1 0F4.1 0F1.0 0F2.0 0F3.0 0F4.0 0W3.0 0W4.0",
                            unsplit=whole1), cm)
    assert r1.peak_mem == [12.0] and r1.makespan == 8
    r2 = simulate(one_stage("0F1.0 0F2.0 0F3.0 0F4.0 0F1.1 0F2.1 0F3.1 0F4.1",
                            unsplit=[*whole1, Action(Kind.P3, 0, 0), Action(Kind.P4, 0, 0)]),
                  cm)
    assert r2.peak_mem == [2.0]  # no queue anywhere


def _fits_policy(skel, cm, cap, mode="fits", reserve=True):
    cap_a, cap_ap = virtual_caps(skel)
    return CappedDepthFirst(skel, cap_a, cap_ap, mem_cap=[cap] * skel.num_devices,
                            mem_of=cm.for_stages(skel.num_stages).set_sizes(),
                            split_mode=mode, reserve=reserve)


@pytest.mark.parametrize("reserve", [False, True])
def test_fits_splits_only_under_the_cap(reserve):
    P, M = 4, 8
    cm = measured_profile("eager", P)
    skel = skeleton("x", P, M, split_w=True)
    cap = default_mem_cap(P, M, cm, 0)  # symfold's peak without W: queues do not all fit
    prog = validate(list_schedule(skel, cm, _fits_policy(skel, cm, cap, reserve=reserve)))
    r = simulate(prog, cm)
    assert r.makespan == pytest.approx(prog.meta["list_schedule"]["makespan"])
    assert max(r.peak_mem) <= cap + 1e-9
    split = [a for o in prog.orders for a in o if a.kind in (Kind.W3, Kind.W4)]
    assert prog.unsplit and split, "some phases split, some whole"
    # Without a cap every phase splits, as with the plain rule.
    free = list_schedule(skel, cm, CappedDepthFirst(skel, *virtual_caps(skel),
                                                    split_mode="fits"))
    assert not free.unsplit


def test_drain_splits_only_after_the_last_p1():
    P, M = 4, 8
    cm = measured_profile("eager", P)
    skel = skeleton("x", P, M, split_w=True)
    prog = list_schedule(skel, cm, _fits_policy(skel, cm, math.inf, mode="drain"))
    for order in prog.orders:
        last_p1 = max(i for i, a in enumerate(order) if a.kind is Kind.P1)
        for i, a in enumerate(order):
            if a.kind in (Kind.P3, Kind.P4) and a not in prog.unsplit:
                assert i > last_p1, a
    assert prog.unsplit and any(a.kind is Kind.W3 for o in prog.orders for a in o)


def test_wavek_gains_from_splitting_where_memory_allows():
    """The 10M CPU profile (W queues 1.06–1.48 |A|): at symfold's memory no uniformly
    split schedule fits at (8, 8), but splitting where the queue fits beats every
    all-or-nothing candidate, and so does the list schedule that decides it as it goes
    (the "fits" candidates)."""
    P = M = 8
    cm = measured_profile("eager", P)
    prog = wavek(P, M, cm)
    assert prog.meta["chosen"]["split_mode"] in ("fits", "fitted") and prog.unsplit
    uniform_best = min(c["makespan"] for c in prog.meta["candidates"]
                       if c.get("fits") and c.get("split_mode", "all") == "all")
    span = simulate(prog, cm).makespan
    assert span < 0.97 * uniform_best
    fits_best = min(c["makespan"] for c in prog.meta["candidates"]
                    if c.get("fits") and c.get("split_mode") == "fits")
    assert fits_best < 0.97 * uniform_best
    assert max(simulate(prog, cm).peak_mem) <= prog.meta["mem_cap"][0] + 1e-9


def random_costs(P: int, seed: int) -> CostModel:
    rng = random.Random(seed)
    return CostModel(stage_times=tuple(tuple(rng.uniform(0.5, 4) for _ in range(4))
                                       for _ in range(P)),
                     w_frac={"P3": rng.uniform(0, 0.6), "P4": rng.uniform(0, 0.6)},
                     split_factor={"P3": rng.uniform(1, 1.3), "P4": rng.uniform(1, 1.3)},
                     alpha=rng.choice([0.0, 0.2]),
                     mem_q3=tuple(rng.uniform(0, 2) for _ in range(P)),
                     mem_q4=tuple(rng.uniform(0, 2) for _ in range(P)))


@pytest.mark.parametrize("seed", range(8))
def test_relaxed_bound_holds_for_every_split_choice(seed):
    rng = random.Random(100 + seed)
    P, M = 2 + seed % 3, 3 + seed
    cm = random_costs(P, seed)
    for name in ("symfold", "1f1b4", "gpipe4", "hanayo4"):
        full = make_schedule(name, P, M, cm, split_w=True)
        prog = validate(full.run_whole(a for a in full.split_phases() if rng.random() < 0.5))
        r = simulate(prog, cm)
        assert r.makespan >= lower_bound(prog, cm) - 1e-9
        assert r.makespan >= lower_bound(prog, cm, mem_cap=r.peak_mem) - 1e-9
    prog = wavek(P, M, cm, split_w=True, mem_cap=default_mem_cap(P, M, cm, 0))
    r = simulate(prog, cm)
    assert r.makespan >= lower_bound(prog, cm, mem_cap=r.peak_mem) - 1e-9


def test_the_uniform_split_bound_would_be_wrong_for_mixed_programs():
    """Splitting costs extra work (split factor > 1): the bound of the fully split
    skeleton exceeds a mostly-whole program's makespan; the relaxation does not."""
    P, M = 2, 8
    cm = uniform(P, (1, 1, 4, 2), w_frac={"P3": 0.2, "P4": 0.2},
                 split_factor={"P3": 1.5, "P4": 1.5})
    full = make_schedule("symfold", P, M, cm, split_w=True)
    prog = validate(full.run_whole(a for a in full.expected_actions()
                                   if a.kind in (Kind.P3, Kind.P4) and a.microbatch > 0))
    span = simulate(prog, cm).makespan
    assert lower_bound(full, cm) > span
    assert lower_bound(prog, cm) <= span + 1e-9


def test_fit_splits_keeps_the_order_and_meets_the_cap():
    """ZBV-4's order at symfold's memory (10M CPU profile, P = 8, M = 16): run whole
    where the queues overflow; faster than symfold without W, within the same memory."""
    P, M = 8, 16
    cm = measured_profile("eager", P)
    cap = default_mem_cap(P, M, cm, 0)
    full = make_schedule("symfold", P, M, cm, split_w=True)
    assert max(simulate(full, cm).peak_mem) > cap
    fitted = validate(fit_splits(full, cm, cap))
    r = simulate(fitted, cm)
    assert max(r.peak_mem) <= cap + 1e-9
    assert fitted.unsplit and fitted.split_phases(), "some phases keep their W part"
    for d, order in enumerate(fitted.orders):  # the order is ZBV-4's, minus W parts
        assert list(order) == [a for a in full.orders[d] if a in set(order)]
    plain = simulate(make_schedule("symfold", P, M, cm), cm).makespan
    assert r.makespan < 0.98 * plain
    chosen = wavek(P, M, cm).meta["chosen"]
    assert chosen["split_mode"] == "fitted"
    # Below the peak of the sets that are not queues nothing can help.
    assert fit_splits(full, cm, 0.5 * cap) is None


def test_hanayo4_fitted_under_a_cap():
    P, M = 4, 8
    cm = measured_profile("eager", P)
    cap = default_mem_cap(P, M, cm, 0)
    prog = make_schedule("hanayo4", P, M, cm, split_w=True, mem_cap=cap, split_mode="fitted")
    assert max(simulate(prog, cm).peak_mem) <= cap + 1e-9
    assert prog.unsplit and prog.split_phases()
    tight = make_schedule("hanayo4", P, M, cm, split_w=True, mem_cap=0.3 * cap,
                          split_mode="fitted")
    assert max(simulate(tight, cm).peak_mem) <= 0.3 * cap + 1e-9
    assert len(tight.unsplit) > len(prog.unsplit)


@pytest.mark.parametrize("split_w, mode", [(False, "all"), (True, "all"), (True, "fits"),
                                           (True, "fitted")])
def test_hanayo4_under_a_cap_fits_it_in_the_cost_models_units(split_w, mode):
    """The cost-oblivious replay (unit times) must count memory in the cost model's
    sizes, or a cap in those units means something else there."""
    P, M = 8, 8
    cm = measured_profile("eager", P)
    cm = replace(cm, mem_a=tuple(3e8 for _ in cm.mem_a),
                 **{f: tuple(3e8 * x for x in getattr(cm, f))
                    for f in ("mem_ap", "mem_q3", "mem_q4")})  # bytes, not |A| units
    cap = default_mem_cap(P, M, cm, 0)
    prog = make_schedule("hanayo4", P, M, cm, split_w=split_w, mem_cap=cap,
                         split_mode=mode, cost_aware=False)
    assert max(simulate(prog, cm).peak_mem) <= cap * (1 + 1e-9)
