"""The simulator against closed forms (research note sections 3 and 4)."""

from __future__ import annotations

import random

import pytest

from matris.train.pipeline.costs import CostModel, measured_profile, toy_profile, uniform
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.simulate import simulate

GRID = [(P, M) for P in (1, 2, 3, 5) for M in (1, 2, 4, 7, 10)]


@pytest.mark.parametrize("P, M", GRID)
@pytest.mark.parametrize("f, b", [(1, 1), (1, 2), (3, 1)])
def test_two_phase_1f1b_bubble(P, M, f, b):
    """Energy-only training: classic 1F1B has bubble (P−1)/(M+P−1) for any f, b."""
    cm = uniform(P, (f, 0, 0, b))
    for prog in (make_schedule("1f1b4", P, M, phases=2, warmup="classic"),
                 make_schedule("symfold", P, M, phases=2)):
        r = simulate(prog, cm)
        assert r.bubble == pytest.approx((P - 1) / (M + P - 1)), prog.name
        assert r.peak_a == [min(M, P - s) for s in range(P)]  # 1F1B memory


@pytest.mark.parametrize("P, M", GRID)
@pytest.mark.parametrize("ratios", [(1, 1, 1, 1), (1, 1, 7, 3), (1, 1.2, 1.4, 7), (3, 1, 2, 5)])
def test_gpipe4_bubble_any_costs(P, M, ratios):
    r = simulate(make_schedule("gpipe4", P, M), uniform(P, ratios))
    assert r.bubble == pytest.approx((P - 1) / (M + P - 1))


@pytest.mark.parametrize("P, M", [(P, M) for P in (1, 2, 3, 4, 6) for M in range(P, 3 * P + 1)])
def test_symfold_equal_costs_halves_the_bubble(P, M):
    """Equal costs, M ≥ P: (P−1)/(2M+P−1); with M ≥ 2P rank i holds 2P−i P1 graphs and
    i+1 P2 graphs (research note section 4)."""
    r = simulate(make_schedule("symfold", P, M), uniform(P))
    assert r.bubble == pytest.approx((P - 1) / (2 * M + P - 1))
    assert r.peak_ap == [min(M, i + 1) for i in range(P)]
    if M >= 2 * P:
        assert r.peak_a == [2 * P - i for i in range(P)]


@pytest.mark.parametrize("variant", ["eager", "lazy"])
@pytest.mark.parametrize("P, M", [(2, 4), (4, 4), (4, 9), (6, 12)])
def test_symfold_measured_profiles(variant, P, M):
    """The note's SymFold-1F1B formula (P−1)(t3+t4) / (M·T + (P−1)(t3+t4))."""
    cm = toy_profile(variant, P)
    t1, t2, t3, t4 = cm.stage_times[0]
    tail = (P - 1) * (t3 + t4)
    r = simulate(make_schedule("symfold", P, M, cm), cm)
    assert r.bubble == pytest.approx(tail / (M * (t1 + t2 + t3 + t4) + tail))


@pytest.mark.parametrize("P, M", [(2, 4), (4, 8), (6, 12), (8, 16)])
def test_symfold_p4_first_cycle_frees_before_it_allocates(P, M):
    """The cycle's P4 before its P1: the same bubble at equal costs, one P1 graph fewer
    on every rank (2P−1−i), so with lazy P3 every rank's peak drops by one |A|."""
    cm = uniform(P, lazy_p3=True)
    classic = simulate(make_schedule("symfold", P, M, cm, cycle="p1-first"), cm)
    first = simulate(make_schedule("symfold", P, M, cm), cm)  # lazy default
    assert first.program.orders != classic.program.orders
    assert first.bubble == pytest.approx((P - 1) / (2 * M + P - 1)) == classic.bubble
    assert first.peak_a == [2 * P - 1 - i for i in range(P)]
    assert classic.peak_a == [2 * P - i for i in range(P)]
    assert first.peak_mem == pytest.approx([m - cm.mem_a[0] for m in classic.peak_mem])
    eager = uniform(P)
    assert make_schedule("symfold", P, M, eager).orders == \
        make_schedule("symfold", P, M, eager, cycle="p1-first").orders
    with pytest.raises(ValueError, match="cycle"):
        make_schedule("symfold", P, M, cycle="p3-first")


@pytest.mark.parametrize("P, M", [(4, 8), (8, 16), (8, 32)])
def test_lazy_symfold_holds_no_more_than_1f1b4_on_any_rank(P, M):
    """10M CPU profile, lazy P3: rank by rank (not only the largest rank) symfold's
    peak is at most 1f1b4's, and it is faster."""
    cm = measured_profile("lazy", P)
    sym = simulate(make_schedule("symfold", P, M, cm), cm)
    base = simulate(make_schedule("1f1b4", P, M, cm), cm)
    assert all(s <= b + 1e-9 for s, b in zip(sym.peak_mem, base.peak_mem, strict=True))
    assert sym.makespan < base.makespan
    classic = simulate(make_schedule("symfold", P, M, cm, cycle="p1-first"), cm)
    assert not all(s <= b + 1e-9 for s, b in zip(classic.peak_mem, base.peak_mem,
                                                 strict=True))


def test_p4_first_never_holds_more_with_random_costs():
    """Lazy P3, random unequal costs, W split or fused turn: every rank's peak with P4
    first is at most the classic order's; the makespan moves by less than 2 %."""
    rng = random.Random(3)
    for _ in range(60):
        P, M = rng.choice([2, 3, 4, 6]), rng.randint(1, 20)
        cm = CostModel(stage_times=tuple(tuple(rng.uniform(0.3, 5) for _ in range(4))
                                         for _ in range(P)),
                       w_frac={"P3": 0.0, "P4": rng.uniform(0, 0.6)},
                       mem_a=tuple(rng.uniform(0.5, 2) for _ in range(P)),
                       mem_ap=tuple(rng.uniform(0.5, 2) for _ in range(P)),
                       mem_q4=tuple(rng.uniform(0, 2) for _ in range(P)), lazy_p3=True)
        opts = rng.choice([{}, {"split_w": True}, {"fused_turn": True}])
        first = simulate(make_schedule("symfold", P, M, cm, **opts), cm)
        classic = simulate(make_schedule("symfold", P, M, cm, cycle="p1-first", **opts), cm)
        assert all(f <= c + 1e-9 for f, c in zip(first.peak_mem, classic.peak_mem,
                                                 strict=True))
        assert first.makespan < 1.02 * classic.makespan
