"""The memory-window bound (idle a memory cap forces at both ends of a step) holds for
every order of small programs, for random and list-scheduled ones, and is tight where a
closed argument says it must be."""

from __future__ import annotations

import contextlib
import itertools
import random
from dataclasses import replace

import pytest

import matris.train.pipeline.bounds as bounds
from matris.train.pipeline.actions import ScheduleError
from matris.train.pipeline.bounds import bubble_lower_bound, lower_bound
from matris.train.pipeline.costs import CostModel, measured_profile
from matris.train.pipeline.deps import predecessors
from matris.train.pipeline.fitsplit import fit_splits
from matris.train.pipeline.program import Program
from matris.train.pipeline.schedules import make_schedule, skeleton
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.wavek import default_mem_cap, wavek


def random_costs(S: int, rng: random.Random, lazy: bool = False) -> CostModel:
    """Unequal stages, W shares and split factors, and queues up to twice |A|."""
    def sizes():
        return tuple(rng.uniform(0.5, 2) for _ in range(S))
    return CostModel(stage_times=tuple(tuple(rng.uniform(0.3, 5) for _ in range(4))
                                       for _ in range(S)),
                     w_frac={"P3": rng.uniform(0, 0.7), "P4": rng.uniform(0, 0.7)},
                     split_factor={"P3": rng.uniform(1, 1.2), "P4": rng.uniform(1, 1.2)},
                     fused_factor=rng.uniform(0.6, 1.0), alpha=rng.choice([0.0, 0.3]),
                     mem_a=sizes(), mem_ap=sizes(),
                     mem_q3=tuple(rng.choice([0.0, rng.uniform(0, 2)]) for _ in range(S)),
                     mem_q4=tuple(rng.choice([0.0, rng.uniform(0, 2)]) for _ in range(S)),
                     lazy_p3=lazy)


@contextlib.contextmanager
def windows_off():
    """The bound as it was before the window term (for 'it raises the bound')."""
    keep = bounds.window_bound
    bounds.window_bound = lambda *args: 0.0
    try:
        yield
    finally:
        bounds.window_bound = keep


def without_windows(prog, costs, cap) -> float:
    with windows_off():
        return lower_bound(prog, costs, mem_cap=cap)


def every_order(sk: Program):
    """Every combination of per-rank orders that respects the dependencies (some of
    them deadlock across ranks; the simulator refuses those)."""
    acts = list(sk.expected_actions())
    preds = {a: {d.producer for d in predecessors(sk, a)} for a in acts}
    ancestors: dict = {}

    def anc(a):
        if a not in ancestors:
            ancestors[a] = set().union(*({p} | anc(p) for p in preds[a]))
        return ancestors[a]

    def orders(mine):
        out = []

        def grow(seq, rest):
            if not rest:
                out.append(tuple(seq))
            for a in sorted(rest, key=str):
                if not (anc(a) & rest):
                    grow([*seq, a], rest - {a})
        grow([], frozenset(mine))
        return out

    per_rank = [orders([a for a in acts if sk.device_of(a.stage) == d])
                for d in range(sk.num_devices)]
    for combo in itertools.product(*per_rank):
        yield sk.with_orders(combo)


@pytest.mark.parametrize("seed, P, M, flags, draws", [
    (0, 1, 2, dict(lazy_p3=True, split_w=("P4",)), 30),
    (1, 1, 2, dict(split_w=True), 1),
    (2, 2, 2, dict(), 3),
    (3, 2, 2, dict(lazy_p3=True), 3),
    (4, 2, 2, dict(fused_turn=True, split_w=("P4",)), 1),
    (5, 2, 1, dict(split_w=True, waves=1), 1),
    (6, 1, 2, dict(split_w=("P4",)), 40),
])
def test_every_order_of_small_programs_respects_the_bound(seed, P, M, flags, draws):
    """At its own peak memory (the tightest cap it meets), no order beats the bound;
    ``draws`` random cost models each."""
    sk = skeleton("all", P, M, **flags)
    programs = list(every_order(sk))
    rng = random.Random(seed)
    for _ in range(draws):
        cm = random_costs(sk.num_stages, rng, flags.get("lazy_p3", False))
        seen, bound_at = 0, {}  # the bound depends on the skeleton and the cap only
        for prog in programs:
            try:
                r = simulate(prog, cm)
            except ScheduleError:  # a deadlocking combination
                continue
            seen += 1
            for cap in (max(r.peak_mem), tuple(r.peak_mem)):
                if cap not in bound_at:
                    bound_at[cap] = lower_bound(prog, cm, mem_cap=cap)
                assert r.makespan >= bound_at[cap] - 1e-9, prog.to_text()
        assert seen > 50


def random_program(rng: random.Random) -> Program:
    """Random placement, flags, per-phase split choice and a random topological order,
    biased towards depth first (little memory) or breadth first."""
    P, M = rng.choice([1, 2, 3, 4]), rng.randint(1, 7)
    lazy = rng.random() < 0.5
    split = rng.choice([False, True, ("P4",)] + ([] if lazy else [("P3",)]))
    sk = skeleton("random", P, M, waves=rng.choice([0, 1]) if P > 1 else 0, lazy_p3=lazy,
                  split_w=split, fused_turn=rng.random() < 0.25)
    if sk.split_w and rng.random() < 0.5:
        sk = sk.run_whole(a for a in sk.split_phases() if rng.random() < 0.5)
    acts = list(sk.expected_actions())
    preds = {a: {d.producer for d in predecessors(sk, a)} for a in acts}
    depth = {k: i for i, k in enumerate(["F1", "F2", "F3", "F34", "F4", "W3", "W4"])}
    bias = rng.choice([0.0, 1.0, 5.0, 20.0])
    done, orders = set(), [[] for _ in range(P)]
    while len(done) < len(acts):
        ready = [a for a in acts if a not in done and preds[a] <= done]
        a = min(ready, key=lambda a: bias * (0.3 * a.microbatch - depth[a.kind.value])
                + 3 * rng.random())
        done.add(a)
        orders[sk.device_of(a.stage)].append(a)
    return sk.with_orders(orders)


def test_random_programs_respect_the_bound_and_it_often_binds():
    rng = random.Random(11)
    raised = 0
    for _ in range(120):
        prog = random_program(rng)
        cm = random_costs(prog.num_stages, rng, prog.lazy_p3)
        r = simulate(prog, cm)
        cap = max(r.peak_mem)
        lb = lower_bound(prog, cm, mem_cap=cap)
        assert r.makespan >= lb - 1e-9, prog.to_text()
        raised += lb > without_windows(prog, cm, cap) + 1e-9
    assert raised > 40  # the window term is the binding one in many of them


@pytest.mark.parametrize("seed", range(4))
def test_list_scheduled_programs_within_a_cap_respect_the_bound(seed):
    """wavek's and the fitted ZBV-4's programs are the ones the study measures against
    the bound: near the cap, with mixed splits."""
    rng = random.Random(seed)
    P, M, lazy = 2 + seed % 2, 6 + 2 * seed, seed % 2 == 0
    cm = random_costs(2 * P, rng, lazy)
    cap = default_mem_cap(P, M, cm, 0, lazy_p3=lazy)
    progs = [wavek(P, M, cm, restarts=0)]
    fitted = fit_splits(make_schedule("symfold", P, M, cm, split_w=True), cm, cap)
    if fitted is not None:
        progs.append(fitted)
    for prog in progs:
        r = simulate(prog, cm)
        assert r.makespan >= lower_bound(prog, cm, mem_cap=max(r.peak_mem)) - 1e-9


@pytest.mark.parametrize("P, M", [(2, 8), (4, 16), (8, 32)])
def test_symfold_without_w_is_optimal_at_its_memory_eager(P, M):
    """10M CPU profile, eager P3, no W split: the bound at symfold's own peak equals its
    makespan, so no order on the V placement does better within that memory (before
    the window term the bound left 0.2 points)."""
    cm = measured_profile("eager", P)
    prog = make_schedule("symfold", P, M, cm)
    r = simulate(prog, cm)
    cap = max(r.peak_mem)
    assert lower_bound(prog, cm, mem_cap=cap) == pytest.approx(r.makespan, rel=1e-12)
    assert without_windows(prog, cm, cap) < r.makespan * (1 - 1e-3)


def test_the_end_window_sees_the_w_queues_lazy():
    """Lazy P3, W split where it fits (symfold's order, fitted to symfold's memory): the
    last P4 sweep can only be hidden behind W4 parts whose queues, A and A' all stay
    live; the bound now sees it (10M CPU profile, P = 8, M = 32)."""
    P, M = 8, 32
    cm = measured_profile("lazy", P)
    cap = default_mem_cap(P, M, cm, 0)
    prog = fit_splits(make_schedule("symfold", P, M, cm, split_w=True), cm, cap)
    r = simulate(prog, cm)
    assert max(r.peak_mem) <= cap + 1e-9
    new = bubble_lower_bound(prog, cm, cap)
    with windows_off():
        old = bubble_lower_bound(prog, cm, cap)
    assert old < 0.04 < 0.08 < new < r.bubble
    # Without queues the same program could hide the tail: the bound falls back.
    free_queues = replace(cm.for_stages(P), mem_q4=(0.0,) * P)
    assert bubble_lower_bound(prog, free_queues, cap) < new - 0.01
