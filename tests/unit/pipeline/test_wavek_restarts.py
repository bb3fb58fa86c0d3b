"""wavek's randomized passes: the priority jitter is reproducible and bounded, the passes
never make the choice slower, stay within the memory cap, and find faster programs where
the deterministic rules leave gaps (lazy P3, P = M = 8, the built-in 10M profile)."""

from __future__ import annotations

import pytest

from matris.train.pipeline.costs import measured_profile
from matris.train.pipeline.policies import CappedDepthFirst
from matris.train.pipeline.schedules import skeleton
from matris.train.pipeline.simulate import simulate
from matris.train.pipeline.wavek import JITTER_HOPS, RESTART_CONFIGS, wavek


@pytest.mark.parametrize("order", ["depth", "mb"])
def test_jitter_is_seeded_and_bounded(order):
    skel = skeleton("wavek", 3, 4, waves=0, split_w=True)
    actions = list(skel.expected_actions())

    def keys(jitter):
        pol = CappedDepthFirst(skel, order=order, jitter=jitter)
        return [pol.key(a) for a in actions]

    plain, a, b, other = keys(None), keys((7, 2.0)), keys((7, 2.0)), keys((8, 2.0))
    assert a == b, "same seed, same priorities"
    assert a != other, "another seed draws other offsets"
    shifts = [ka[1] - kp[1] for ka, kp in zip(a, plain, strict=True)]
    assert all(0.0 <= s < 2.0 for s in shifts) and len(set(shifts)) > len(actions) // 2
    assert all(ka[0] == kp[0] and ka[2] == kp[2] for ka, kp in zip(a, plain, strict=True))
    assert keys((7, 0.0)) == plain


def test_restarts_find_a_faster_program_within_the_cap():
    P = M = 8
    cm = measured_profile("lazy", P)
    plain = wavek(P, M, cm, lazy_p3=True, restarts=0)
    best = wavek(P, M, cm, lazy_p3=True, restarts=8)
    sp, sb = simulate(plain, cm), simulate(best, cm)
    assert sb.makespan < 0.99 * sp.makespan, (sb.makespan, sp.makespan)
    assert best.meta["chosen"]["jitter"] is not None
    assert best.meta["restarts"] == {"passes": 8 * RESTART_CONFIGS * len(JITTER_HOPS),
                                     "best_plain": pytest.approx(sp.makespan),
                                     "best": pytest.approx(sb.makespan)}
    assert max(sb.peak_mem) <= max(best.meta["mem_cap"]) * (1 + 1e-9)
    assert best.meta["candidates"] == plain.meta["candidates"]
    again = wavek(P, M, cm, lazy_p3=True, restarts=8)
    assert again.to_text() == best.to_text(), "seeded: the same program every time"


@pytest.mark.parametrize("variant", ["eager", "lazy"])
@pytest.mark.parametrize("P,M", [(2, 4), (4, 8), (3, 12)])
def test_restarts_are_never_slower(variant, P, M):
    cm = measured_profile(variant, P)
    lazy = variant == "lazy"
    plain = simulate(wavek(P, M, cm, lazy_p3=lazy, restarts=0), cm).makespan
    best = simulate(wavek(P, M, cm, lazy_p3=lazy, restarts=4, seed=3), cm).makespan
    assert best <= plain * (1 + 1e-12)
