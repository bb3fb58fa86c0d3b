"""Lower bounds hold for every schedule, match the note's formulas, and are tight."""

from __future__ import annotations

import random

import pytest

from matris.train.pipeline.bounds import bubble_lower_bound, ceiling, lower_bound, total_work
from matris.train.pipeline.costs import CostModel, toy_profile, uniform
from matris.train.pipeline.schedules import SCHEDULES, make_schedule, skeleton
from matris.train.pipeline.simulate import simulate


def random_costs(P: int, seed: int) -> CostModel:
    rng = random.Random(seed)
    return CostModel(stage_times=tuple(tuple(rng.uniform(0.5, 4) for _ in range(4))
                                       for _ in range(P)),
                     w_frac={"P3": rng.uniform(0, 0.6), "P4": rng.uniform(0, 0.6)},
                     alpha=rng.choice([0.0, 0.2]),
                     # W queues (split runs): sometimes none, sometimes larger than A.
                     mem_q3=tuple(rng.choice([0.0, 2.0]) for _ in range(P)),
                     mem_q4=tuple(rng.uniform(0, 1.5) for _ in range(P)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_no_schedule_beats_its_bound(name, seed):
    P, M = 2 + seed % 3, 3 + seed
    cm = random_costs(P, seed)
    for opts in ({}, {"split_w": True}):
        prog = make_schedule(name, P, M, cm, **opts)
        r = simulate(prog, cm)
        assert r.makespan >= lower_bound(prog, cm) - 1e-9
        assert r.makespan >= lower_bound(prog, cm, mem_cap=r.peak_mem) - 1e-9


@pytest.mark.parametrize("P, M", [(2, 3), (4, 8), (8, 8), (8, 16)])
@pytest.mark.parametrize("ratios", [(1, 1, 1, 1), (1, 1, 7, 3), (1, 1.2, 1.4, 7)])
def test_linear_bound_contains_the_note_formula(P, M, ratios):
    t1, t2, t3, t4 = ratios
    T = sum(ratios)
    note = max(max(i * t1 + M * T, P * (t1 + t2) + i * t3 + M * (t3 + t4)) + i * t4
               for i in range(P))
    lb = lower_bound(skeleton("x", P, M), uniform(P, ratios))
    assert lb >= note - 1e-9


def test_bound_is_tight_for_symfold_at_equal_costs():
    for P, M in ((2, 2), (4, 8), (6, 9)):
        cm = uniform(P)
        r = simulate(make_schedule("symfold", P, M), cm)
        assert r.makespan == pytest.approx(lower_bound(r.program, cm))


def test_lazy_p4_round_trip_term():
    """With lazy P3 the heavy P4 of rank 0 cannot start before the whole path has been
    walked: the bound sees it (the note's section-4.5 formula does not)."""
    P, M = 8, 8
    cm = toy_profile("lazy", P)
    sk = skeleton("x", P, M, lazy_p3=True, split_w=True)
    assert bubble_lower_bound(sk, cm) > 0.2


def test_memory_cap_raises_the_bound():
    P, M = 8, 32
    cm = toy_profile("eager", P)
    sk = skeleton("x", P, M, split_w=True)
    assert lower_bound(sk, cm, mem_cap=18.8) > lower_bound(sk, cm)
    assert lower_bound(sk, cm, mem_cap=1e9) == pytest.approx(lower_bound(sk, cm))


def test_total_work_and_ceiling():
    cm = uniform(3, (1, 2, 3, 4))
    assert total_work(skeleton("x", 3, 5), cm) == 3 * 5 * 10
    assert ceiling(0.5) == 2.0 and ceiling(0.0) == 1.0
