"""Sampler: deterministic, capped, no duplicated or dropped frames across DP ranks, resumable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from matris.train.sampler import SamplerError, StepSampler, partition


def _natoms(n=301, seed=0, high=40):
    return np.random.default_rng(seed).integers(1, high, size=n)


def _epoch_frames(natoms, dp, m, epoch, **kw):
    """All frames every DP rank sees in one epoch, and per-step per-rank micro-batches."""
    samplers = [StepSampler(natoms, dp_size=dp, dp_rank=d, microbatches=m, **kw)
                for d in range(dp)]
    steps = samplers[0].steps_in_epoch(epoch)
    assert all(s.steps_in_epoch(epoch) == steps for s in samplers)
    seen, per_step = [], []
    for k in range(steps):
        plans = [s.plan(epoch, k) for s in samplers]
        assert all(len(p.microbatches) == m for p in plans)
        per_step.append(plans)
        for p in plans:
            for mb in p.microbatches:
                assert len(mb) >= 1
                seen.extend(mb)
    return seen, per_step


@pytest.mark.parametrize(("dp", "m"), [(1, 1), (2, 1), (3, 2), (4, 3)])
def test_every_frame_exactly_once_per_epoch(dp, m):
    natoms = _natoms()
    for epoch in (0, 1):
        seen, _ = _epoch_frames(natoms, dp, m, epoch, max_atoms=80, seed=3)
        assert sorted(seen) == list(range(len(natoms)))  # no duplicates, nothing dropped


def test_caps_respected_and_batches_balanced():
    natoms = _natoms(n=2000, high=30)
    parts = partition(natoms, np.arange(2000), max_atoms=200, multiple=8)
    sums = np.array([natoms[p].sum() for p in parts])
    assert len(parts) % 8 == 0
    assert sums.max() <= 200
    assert sums.mean() > 150  # the cut fills micro-batches, it does not just split finely


def test_edge_cap():
    natoms = np.full(100, 10)
    nedges = np.where(np.arange(100) % 2 == 0, 400, 50)
    parts = partition(natoms, np.arange(100), max_atoms=1000, multiple=2, nedges=nedges,
                      max_edges=1000)
    assert max(nedges[p].sum() for p in parts) <= 1000
    with pytest.raises(SamplerError, match="max_edges"):
        partition(natoms, np.arange(100), max_atoms=1000, multiple=2, max_edges=1000)


def test_oversized_frame_forms_its_own_batch():
    natoms = np.array([5, 500, 5, 5, 5, 5])
    parts = partition(natoms, np.arange(6), max_atoms=20, multiple=2)
    big = [p for p in parts if 1 in p]
    assert len(big) == 1 and list(big[0]) == [1]


def test_deterministic_and_epoch_dependent():
    natoms = _natoms()
    a = StepSampler(natoms, max_atoms=64, seed=7)
    b = StepSampler(natoms, max_atoms=64, seed=7)
    c = StepSampler(natoms, max_atoms=64, seed=8)
    assert a.plan(0, 3) == b.plan(0, 3)
    assert a.plan(0, 3) != a.plan(1, 3)
    assert a.plan(0, 3) != c.plan(0, 3)
    ordered = StepSampler(natoms, max_atoms=64, shuffle=False)
    flat = [i for k in range(ordered.steps_in_epoch(0)) for i in ordered.plan(0, k).microbatches[0]]
    assert flat == list(range(len(natoms)))


def test_resume_mid_epoch_continues_the_same_sequence():
    natoms = _natoms(n=120)
    straight = StepSampler(natoms, max_atoms=50, dp_size=2, dp_rank=1, seed=1)
    seq = list(itertools.islice(iter(straight), 100))  # crosses epoch boundaries
    first = StepSampler(natoms, max_atoms=50, dp_size=2, dp_rank=1, seed=1)
    head = list(itertools.islice(iter(first), 57))
    state = first.state_dict()
    resumed = StepSampler(natoms, max_atoms=50, dp_size=2, dp_rank=1, seed=1)
    resumed.load_state_dict(state)
    tail = list(itertools.islice(iter(resumed), 43))
    assert head + tail == seq
    assert len({p.epoch for p in seq}) > 1


def test_too_few_frames_for_a_step():
    with pytest.raises(SamplerError, match=r"parallel\.dp × parallel\.microbatches"):
        StepSampler(np.array([3, 3, 3]), max_atoms=10, dp_size=2, microbatches=2).plan(0, 0)


def test_seed_mismatch_on_resume_is_refused():
    s = StepSampler(_natoms(), max_atoms=64, seed=1)
    with pytest.raises(ValueError, match="seed"):
        s.load_state_dict({"epoch": 0, "step": 1, "seed": 2})


def _sizes_with_edges(n=400, seed=5):
    """Atoms and edges per frame with weakly correlated sizes and a few huge-edge frames."""
    rng = np.random.default_rng(seed)
    natoms = rng.integers(1, 40, size=n)
    nedges = 2 * natoms * rng.integers(5, 60, size=n)  # dense and sparse frames mixed
    nedges[rng.choice(n, 4, replace=False)] = 50_000  # each alone exceeds the cap
    return natoms, nedges


@pytest.mark.parametrize(("dp", "m"), [(1, 1), (2, 2), (3, 2)])
def test_edge_cap_with_dp_every_frame_once_and_no_batch_over_a_cap(dp, m):
    natoms, nedges = _sizes_with_edges()
    kw = {"max_atoms": 120, "max_edges": 4000, "nedges": nedges, "seed": 11}
    for epoch in (0, 1):
        seen, per_step = _epoch_frames(natoms, dp, m, epoch, **kw)
        assert sorted(seen) == list(range(len(natoms)))
        mbs = [mb for plans in per_step for p in plans for mb in p.microbatches]
        for mb in mbs:
            idx = list(mb)
            if len(idx) > 1:  # only a frame alone may exceed a cap
                assert nedges[idx].sum() <= 4000 and natoms[idx].sum() <= 120
        alone = {mb[0] for mb in mbs if len(mb) == 1}
        assert set(np.nonzero(nedges > 4000)[0]) <= alone
    # The edge cap binds: without it the same frames pack into fewer, edge-heavier batches.
    no_cap = StepSampler(natoms, max_atoms=120, seed=11)
    capped = StepSampler(natoms, max_atoms=120, seed=11, max_edges=4000, nedges=nedges)
    assert capped.steps_in_epoch(0) > no_cap.steps_in_epoch(0)
    assert max(nedges[p].sum() for p in no_cap.epoch_plan(0) if len(p) > 1) > 4000


def test_edge_capped_sampler_resumes_mid_epoch():
    natoms, nedges = _sizes_with_edges(n=150)
    kw = {"max_atoms": 100, "max_edges": 3000, "nedges": nedges, "dp_size": 2, "dp_rank": 0,
          "microbatches": 2, "seed": 2}
    seq = list(itertools.islice(iter(StepSampler(natoms, **kw)), 40))
    first = StepSampler(natoms, **kw)
    head = list(itertools.islice(iter(first), 13))
    resumed = StepSampler(natoms, **kw)
    resumed.load_state_dict(first.state_dict())
    assert head + list(itertools.islice(iter(resumed), 27)) == seq
    assert len({p.epoch for p in seq}) > 1


def test_edge_counts_must_match_the_frames():
    with pytest.raises(ValueError, match="nedges"):
        StepSampler(np.ones(10), max_atoms=5, nedges=np.ones(9), max_edges=5)
