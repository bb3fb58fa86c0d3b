"""``matris.cuts.balance``: min-max stage cuts that also balance mirror pairs of stages
(stage s and S − 1 − s share a device under the wave placement)."""

from __future__ import annotations

import itertools
import random

import pytest

from matris import cuts as mcuts
from matris.cuts import balance

EQUAL_10 = [0.01] + [1.0] * 10 + [0.01]  # embedding, 10 equal blocks, readout


def groups(costs, cut_list):
    bounds = [0, *[c + 1 for c in cut_list], len(costs)]
    return [sum(costs[a:b]) for a, b in itertools.pairwise(bounds)]


def pair_max(g):
    S = len(g)
    return max(g[s] + g[S - 1 - s] if s != S - 1 - s else g[s] for s in range(S))


def brute_force(costs, S):
    """(min largest group, min largest mirror pair among those) over every split."""
    n, out = len(costs), []
    for inner in itertools.combinations(range(1, n), S - 1):
        g = [sum(costs[a:b]) for a, b in itertools.pairwise((0, *inner, n))]
        out.append((max(g), pair_max(g)))
    best = min(m for m, _ in out)
    return best, min(p for m, p in out if m <= best * (1 + 1e-9))


def test_ten_equal_blocks_in_four_stages_pair_five_and_five():
    g = groups(EQUAL_10, balance(EQUAL_10, 4))
    assert max(g) == pytest.approx(3.01)          # min-max: some stage holds 3 blocks
    assert pair_max(g) == pytest.approx(5.02)     # devices 5 | 5 blocks, not 4 | 6


@pytest.mark.parametrize("seed", range(12))
def test_min_max_kept_and_mirror_pairs_optimal_among_min_max_splits(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 11)
    costs = [rng.choice([0.01, 1.0, 1.0, 2.0, rng.uniform(0.5, 2)]) for _ in range(n)]
    for S in range(1, n + 1):
        g = groups(costs, balance(costs, S, tolerance=0.0))
        best_max, best_pair = brute_force(costs, S)
        assert max(g) == pytest.approx(best_max)
        assert pair_max(g) == pytest.approx(best_pair)


def test_tolerance_trades_a_noisy_stage_max_for_device_balance():
    # Measured block costs with ~1 % noise: the plain min-max split pairs the two heavy
    # stages; within 2 % of its stage max a split balances the devices.
    noisy = [0.03, 0.1953, 0.195, 0.1937, 0.1931, 0.194, 0.1936, 0.1951, 0.1932, 0.1939,
             0.1943, 0.002]
    strict = groups(noisy, balance(noisy, 4, tolerance=0.0))
    tolerant = groups(noisy, balance(noisy, 4))
    assert max(tolerant) <= max(strict) * (1 + mcuts.MIRROR_TOLERANCE)
    assert pair_max(strict) > 1.15 * pair_max(tolerant)  # devices 6 | 4 blocks vs 5 | 5


def test_search_limit_falls_back_to_the_min_max_split(monkeypatch):
    monkeypatch.setattr(mcuts, "_SEARCH_LIMIT", 3)
    g = groups(EQUAL_10, balance(EQUAL_10, 4))
    assert max(g) == pytest.approx(brute_force(EQUAL_10, 4)[0])
    assert pair_max(g) > pair_max(groups(EQUAL_10, [2, 4, 7]))  # the search was cut short
