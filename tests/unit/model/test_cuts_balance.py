"""``matris.cuts.balance``: min-max stage cuts for one stage per device; for a wave
placement (2·waves·P stages on P devices) the busiest device's load comes first."""

from __future__ import annotations

import itertools
import random

import pytest

from matris import cuts as mcuts
from matris.cuts import balance, wave_devices
from matris.train.pipeline.program import wave_placement

EQUAL_10 = [0.01] + [1.0] * 10 + [0.01]  # embedding, 10 equal blocks, readout


def groups(costs, cut_list):
    bounds = [0, *[c + 1 for c in cut_list], len(costs)]
    return [sum(costs[a:b]) for a, b in itertools.pairwise(bounds)]


def device_max(g, devices):
    load = {}
    for s, x in enumerate(g):
        load[devices[s]] = load.get(devices[s], 0.0) + x
    return max(load.values())


def brute_force(costs, S, devices=None):
    """(min largest group; with ``devices``, min (busiest device, largest group) among the
    splits within the search's stage cap) over every split."""
    n, splits = len(costs), []
    for inner in itertools.combinations(range(1, n), S - 1):
        splits.append([sum(costs[a:b]) for a, b in itertools.pairwise((0, *inner, n))])
    best = min(max(g) for g in splits)
    if devices is None:
        return best
    cap = best * (1 + mcuts.WAVE_STAGE_SLACK) + 1e-12
    return min((float(f"{device_max(g, devices):.12g}"), float(f"{max(g):.12g}"))
               for g in splits if max(g) <= cap)


def test_wave_devices_is_the_programs_wave_placement():
    for P, waves in ((1, 1), (2, 1), (2, 2), (3, 2), (4, 1)):
        assert tuple(wave_devices(2 * waves * P, P)) == wave_placement(P, waves)
    assert wave_devices(4, 4) is None and wave_devices(6, 4) is None  # linear / no wave


def test_ten_equal_blocks_in_four_stages_on_two_devices_five_and_five():
    plain = groups(EQUAL_10, balance(EQUAL_10, 4))
    wave = groups(EQUAL_10, balance(EQUAL_10, 4, num_devices=2))
    devices = wave_devices(4, 2)
    assert max(plain) == pytest.approx(3.0)
    assert device_max(plain, devices) == pytest.approx(6.0)  # the DP's 2 | 3 | 3 | 2
    assert device_max(wave, devices) == pytest.approx(5.02)  # 5 blocks each (+ ends)
    assert balance(EQUAL_10, 4, num_devices=4) == balance(EQUAL_10, 4)  # linear: min-max


@pytest.mark.parametrize("seed", range(12))
def test_min_max_and_device_balance_match_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 11)
    costs = [rng.choice([0.01, 1.0, 1.0, 2.0, rng.uniform(0.5, 2)]) for _ in range(n)]
    for S in range(1, n + 1):
        assert max(groups(costs, balance(costs, S))) == pytest.approx(brute_force(costs, S))
        for P in range(1, S // 2 + 1):
            devices = wave_devices(S, P)
            if devices is None:
                continue
            g = groups(costs, balance(costs, S, num_devices=P))
            want = brute_force(costs, S, devices)
            assert (device_max(g, devices), max(g)) == pytest.approx(want)


def test_noisy_measured_blocks_still_balance_the_devices():
    # Blocks measured 1.93-2.29 s (a pooled 10M cost file): the min-max stage pairs 3-block
    # stages on one device; the wave cut evens the devices out.
    pooled = [0.034, 1.998, 2.061, 2.001, 2.176, 2.179, 2.29, 2.164, 2.168, 2.092, 1.925,
              0.004]
    devices = wave_devices(4, 2)
    plain = groups(pooled, balance(pooled, 4))
    wave = groups(pooled, balance(pooled, 4, num_devices=2))
    assert device_max(plain, devices) > 1.1 * device_max(wave, devices)
    assert device_max(wave, devices) < 0.52 * sum(pooled)  # plain: 0.58


def test_search_limit_falls_back_to_the_min_max_split(monkeypatch):
    monkeypatch.setattr(mcuts, "_SEARCH_LIMIT", 3)
    mcuts._balance.cache_clear()  # a memoised full search would hide the limit
    try:
        assert balance(EQUAL_10, 4, num_devices=2) == balance(EQUAL_10, 4)
    finally:
        mcuts._balance.cache_clear()


def test_results_are_memoised_and_not_shared_mutably():
    mcuts._balance.cache_clear()
    first = balance(EQUAL_10, 4, num_devices=2)
    first.append(99)  # a caller changing its list must not change the next answer
    assert balance(EQUAL_10, 4, num_devices=2) == [2, 4, 7]
    assert mcuts._balance.cache_info().hits == 1
