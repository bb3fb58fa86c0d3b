"""Simulator: exact makespans on tiny hand-made programs, comm model, memory, deadlocks."""

from __future__ import annotations

import pytest

from matris.train.pipeline.actions import Action, Kind, ScheduleError, parse_actions
from matris.train.pipeline.costs import uniform
from matris.train.pipeline.lower import lower
from matris.train.pipeline.program import Program
from matris.train.pipeline.schedules import make_schedule
from matris.train.pipeline.simulate import simulate


def prog(*ranks: str, M: int = 1, placement=None, **kw) -> Program:
    placement = placement or tuple(range(len(ranks)))
    return Program("hand", len(ranks), M, placement,
                   tuple(tuple(parse_actions(r)) for r in ranks), **kw)


def test_single_stage_is_the_sum_of_its_phases():
    r = simulate(prog("0F1.0 0F2.0 0F3.0 0F4.0"), uniform(1, (1, 2, 3, 4)))
    assert r.makespan == 10 and r.bubble == 0
    assert r.times[Action(Kind.P3, 0, 0)] == (3, 6)


def test_two_stages_one_microbatch_is_the_chain():
    # 0→1→1→0→0→1→1→0: P1 1+1, P2 2+2, P3 3+3, P4 4+4.
    p = prog("0F1.0 0F2.0 0F3.0 0F4.0", "1F1.0 1F2.0 1F3.0 1F4.0")
    r = simulate(p, uniform(2, (1, 2, 3, 4)))
    assert r.makespan == 20
    assert r.bubble == pytest.approx(0.5)
    assert r.busy == [10, 10]


def test_alpha_beta_latency_on_every_cross_rank_hand_off():
    p = prog("0F1.0 0F2.0 0F3.0 0F4.0", "1F1.0 1F2.0 1F3.0 1F4.0")
    cm = uniform(2, (1, 2, 3, 4), alpha=0.5, beta=100.0,
                 tensor_bytes={"h": 100, "a": 50, "f_acc": 50, "abar": 0, "hbar": 0})
    # Four hand-offs (h, a+F, ā+∂L/∂F, h̄) of 0.5 + bytes/100: 1.5, 1.5, 0.5, 0.5.
    assert simulate(p, cm).makespan == pytest.approx(24.0)


def test_rank_order_forces_idle_time():
    # Energy-only, f = b = 1. Rank 1 insists on micro-batch 1 first: it waits for 0F1.1
    # (ends at 2); rank 0 insists on 0F4.0 before 0F4.1 and waits for 1F4.0 (ends at 6).
    p = Program("hand", 2, 2, (0, 1), (
        tuple(parse_actions("0F1.0 0F1.1 0F4.0 0F4.1")),
        tuple(parse_actions("1F1.1 1F4.1 1F1.0 1F4.0"))), phases=(Kind.P1, Kind.P4))
    r = simulate(p, uniform(2, (1, 0, 0, 1)))
    assert r.times[Action(Kind.P1, 1, 1)] == (2, 3)
    assert r.times[Action(Kind.P1, 1, 0)] == (4, 5)
    assert r.times[Action(Kind.P4, 0, 0)] == (6, 7)
    assert r.makespan == 8


def test_w_split_and_fused_durations():
    cm = uniform(2, (1, 1, 4, 2), w_frac={"P3": 0.25, "P4": 0.5})
    p = make_schedule("gpipe4", 2, 1, split_w=True, fused_turn=True)
    r = simulate(p, cm)
    dur = {a: e - s for a, (s, e) in r.times.items()}
    assert dur[Action(Kind.P3, 0, 0)] == 3 and dur[Action(Kind.W3, 0, 0)] == 1
    assert dur[Action(Kind.P4, 0, 0)] == 1 and dur[Action(Kind.W4, 0, 0)] == 1
    assert dur[Action(Kind.P34, 1, 0)] == pytest.approx(0.7 * 6)


def test_gpipe_memory_peaks_at_m_sets():
    r = simulate(make_schedule("gpipe4", 2, 3), uniform(2))
    assert r.peak_a == [3, 3] and r.peak_ap == [3, 3]
    assert r.peak_mem == [pytest.approx(3 * 2.35)] * 2


def test_lazy_p3_keeps_p2_graphs_until_p4():
    eager = simulate(make_schedule("gpipe4", 2, 3), uniform(2))
    lazy = simulate(make_schedule("gpipe4", 2, 3, lazy_p3=True), uniform(2))
    assert eager.peak_ap == lazy.peak_ap == [3, 3]
    # Single micro-batch: eager frees A' at P3, lazy holds it through P4.
    p1 = prog("0F1.0 0F2.0 0F3.0 0F4.0")
    one = Program("m", 1, 2, (0,), (tuple(parse_actions(
        "0F1.0 0F2.0 0F3.0 0F1.1 0F2.1 0F3.1 0F4.0 0F4.1")),))
    assert simulate(one, uniform(1)).peak_ap == [1]
    assert simulate(one.with_orders(one.orders, lazy_p3=True), uniform(1)).peak_ap == [2]
    assert simulate(p1, uniform(1)).peak_a == [1]


def test_w_queues_live_from_critical_part_to_w():
    """A split P3 (P4) holds its queue Q3 (Q4) until W3 (W4); A' stays until W3, A
    until W4 (the executor's lifetimes)."""
    cm = uniform(1, mem_a=(1.0,), mem_ap=(1.5,), mem_q3=(2.0,), mem_q4=(4.0,))
    one = Program("w", 1, 1, (0,), (tuple(parse_actions(
        "0F1.0 0F2.0 0F3.0 0W3.0 0F4.0 0W4.0")),), split_w=frozenset({Kind.P3, Kind.P4}))
    # P3..W3: A + A' + Q3 = 4.5; P4..W4: A + Q4 = 5.
    assert simulate(one, cm).peak_mem == [pytest.approx(5.0)]
    late = one.with_orders((tuple(parse_actions("0F1.0 0F2.0 0F3.0 0F4.0 0W3.0 0W4.0")),))
    assert simulate(late, cm).peak_mem == [pytest.approx(1 + 1.5 + 2 + 4)]
    unsplit = prog("0F1.0 0F2.0 0F3.0 0F4.0")
    assert simulate(unsplit, cm).peak_mem == [pytest.approx(2.5)]  # no queue without W


def test_deadlock_is_reported_with_the_grid():
    p = prog("0F1.0 0F2.1 0F3.1 0F4.1 0F1.1 0F2.0 0F3.0 0F4.0",
             "1F1.1 1F2.1 1F3.1 1F4.1 1F1.0 1F2.0 1F3.0 1F4.0", M=2)
    with pytest.raises(ScheduleError, match="deadlock") as err:
        simulate(p, uniform(2))
    assert "<<0F2.1>>" in str(err.value)


def test_lowered_program_has_the_same_timing():
    cm = uniform(3, (1, 1, 3, 2), alpha=0.3)
    p = make_schedule("symfold", 3, 5)
    plain, low = simulate(p, cm), simulate(lower(p), cm)
    assert low.makespan == pytest.approx(plain.makespan)
    for a, t in plain.times.items():
        assert low.times[a] == pytest.approx(t)


def test_duplicate_action_is_refused():
    with pytest.raises(ScheduleError, match="twice"):
        simulate(prog("0F1.0 0F1.0 0F2.0 0F3.0 0F4.0"), uniform(1))
