"""Every generator produces valid, lowerable programs; schedule-specific properties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from matris.train.pipeline.actions import Kind
from matris.train.pipeline.costs import toy_profile, uniform
from matris.train.pipeline.lower import lower
from matris.train.pipeline.schedules import SCHEDULES, make_schedule
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.validate import validate

VARIANTS = [{}, {"lazy_p3": True}, {"split_w": True}, {"fused_turn": True},
            {"lazy_p3": True, "split_w": True, "fused_turn": True}]


def test_registry_matches_config_names():
    assert set(SCHEDULES) == {"gpipe4", "1f1b4", "hanayo4", "symfold", "wavek"}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("P, M", [(1, 1), (2, 3), (3, 6), (4, 4)])
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_generators_are_valid_and_lowerable(name, P, M, variant):
    opts = dict(VARIANTS[variant])
    cm = toy_profile("lazy" if opts.get("lazy_p3") else "eager", P)
    prog = make_schedule(name, P, M, cm, **opts)
    validate(prog)
    low = lower(prog, reduce_grad=True)
    validate(low)
    assert simulate(low, cm).makespan == pytest.approx(simulate(prog, cm).makespan)


def test_cost_model_variant_must_match():
    with pytest.raises(ValueError, match="lazy"):
        make_schedule("symfold", 2, 2, toy_profile("lazy", 2), lazy_p3=False)


def test_1f1b4_starts_units_in_1f1b_order():
    """Each rank starts forward units (P1) and backward units (P3) in the classic 1F1B
    sequence: ``warmup`` forwards, then alternately one backward and one forward."""
    P, M = 3, 8
    for warmup, w in (("classic", [3, 2, 1]), ("full", [3, 3, 3]), (2, [2, 2, 2])):
        prog = make_schedule("1f1b4", P, M, warmup=warmup)
        for s, order in enumerate(prog.orders):
            starts = [("F" if a.kind is Kind.P1 else "B", a.microbatch) for a in order
                      if a.kind in (Kind.P1, Kind.P3)]
            expect = [("F", m) for m in range(w[s])]
            for j in range(M):
                expect.append(("B", j))
                if w[s] + j < M:
                    expect.append(("F", w[s] + j))
            assert starts == expect, (warmup, s)


def test_1f1b4_classic_depth_serialises_the_turn():
    """Copied verbatim, Megatron's depth P−s lets the last stage hold one micro-batch,
    so each waits for its whole round trip: far worse than the full-depth port."""
    cm = uniform(4)
    classic = simulate(make_schedule("1f1b4", 4, 8, cm, warmup="classic"), cm)
    full = simulate(make_schedule("1f1b4", 4, 8, cm), cm)
    assert classic.bubble > 0.6 > 0.2 > full.bubble


def test_1f1b4_cost_aware_best_is_no_slower():
    cm = toy_profile("eager", 4)
    fixed = simulate(make_schedule("1f1b4", 4, 8, cm, cost_aware=False), cm)
    best = simulate(make_schedule("1f1b4", 4, 8, cm), cm)
    assert best.makespan <= fixed.makespan


def test_hanayo4_wave_placement():
    prog = make_schedule("hanayo4", 3, 4, waves=2)
    assert prog.num_stages == 12
    assert all(len(prog.stages_of(d)) == 4 for d in range(3))
    assert prog.device_of(prog.last_stage) == 0  # every sweep ends back on rank 0


@pytest.mark.parametrize("P, k", [(2, 1), (2, 3), (3, 2), (4, 2), (6, 2)])
def test_hanayo4_halves_symfold_bubble_at_equal_costs(P, k):
    """M a multiple of P: (P−1)/(4M+P−1), half of symfold's (P−1)/(2M+P−1)."""
    M = k * P
    cm = uniform(P)
    h = simulate(make_schedule("hanayo4", P, M, cm), cm)
    assert h.bubble == pytest.approx((P - 1) / (4 * M + P - 1))


def test_symfold_split_places_w_after_critical_work():
    prog = make_schedule("symfold", 3, 4, split_w=True)
    order = prog.orders[1]
    assert order.index(prog.resolve(Kind.P3, 1, 0)) < order.index(prog.resolve(Kind.W3, 1, 0))


@pytest.mark.parametrize("variant", ["eager", "lazy"])
def test_wavek_respects_memory_and_beats_symfold(variant):
    P, M = 4, 8
    cm = toy_profile(variant, P)
    sym = simulate(make_schedule("symfold", P, M, cm), cm)
    prog = make_schedule("wavek", P, M, cm)
    r = simulate(prog, cm)
    assert max(r.peak_mem) <= max(sym.peak_mem) + 1e-9   # K = 0: symfold's memory
    assert r.makespan <= sym.makespan
    assert prog.meta["chosen"]["waves"] in (0, 1)
    assert any(c.get("makespan") for c in prog.meta["candidates"])


@pytest.mark.parametrize("variant", ["eager", "lazy"])
def test_wavek_counts_w_queues_against_its_cap(variant):
    """With W queues as large as the graphs, a W split must still fit symfold's memory
    (symfold has no W: its peak holds no queue)."""
    P, M = 4, 8
    cm = replace(toy_profile(variant, P), mem_q3=(1.5,) * P, mem_q4=(2.0,) * P)
    sym = simulate(make_schedule("symfold", P, M, cm), cm)
    prog = make_schedule("wavek", P, M, cm)
    r = simulate(prog, cm)
    assert max(r.peak_mem) <= max(sym.peak_mem) + 1e-9
    w = simulate(make_schedule("symfold", P, M, cm, split_w=True), cm)
    assert max(w.peak_mem) > max(sym.peak_mem)  # the queues are counted


def test_wavek_k_and_cap():
    cm = toy_profile("eager", 4)
    k0 = simulate(make_schedule("wavek", 4, 16, cm, K=0), cm)
    k2 = simulate(make_schedule("wavek", 4, 16, cm, K=2), cm)
    free = simulate(make_schedule("wavek", 4, 16, cm, mem_cap=math.inf), cm)
    assert free.makespan <= k2.makespan <= k0.makespan
    assert max(k0.peak_mem) <= max(k2.peak_mem)
    with pytest.raises(ValueError):
        make_schedule("wavek", 4, 16, cm, K=-1)


def test_wavek_without_costs_uses_equal_phases():
    prog = make_schedule("wavek", 3, 3)
    assert prog.name == "wavek"
    validate(prog)


def test_config_mapping_and_typos():
    cm = toy_profile("eager", 3)
    prog = make_schedule("wavek", 3, 3, cm, wavek_k=1)
    assert prog.meta["K"] == 1
    make_schedule("symfold", 3, 3, cm, wavek_k=1)      # ignored by the others
    with pytest.raises(TypeError, match="unknown option"):
        make_schedule("symfold", 3, 3, cm, split=True)
