"""Stage cuts as pure data: validation and cost-balanced placement (no torch).

A model is the unit list embedding, L interaction blocks, readout. A cut c (0 <= c <= L)
starts a new stage at interaction block c (see `matris.stages`). `balance` chooses cuts
from per-unit costs; the pipeline's cost model (`matris.train.pipeline.costs`) uses it on
measured per-stage costs, so that the cuts it prices are the cuts the runner makes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def validate_cuts(cuts: Sequence[int], num_blocks: int) -> list[int]:
    cuts = [int(c) for c in cuts]
    if any(c < 0 or c > num_blocks for c in cuts) or any(
            b <= a for a, b in itertools.pairwise(cuts)):
        raise ValueError(f"cuts must be strictly increasing interaction-block indices in "
                         f"[0, {num_blocks}], got {cuts}")
    return cuts


#: A stage may cost this much more than the min-max optimum when that balances the
#: stages' mirror pairs (see :func:`balance`): about the noise of a measured unit cost.
MIRROR_TOLERANCE = 0.02
#: Partial cut lists :func:`balance` explores before keeping the plain min-max cuts.
_SEARCH_LIMIT = 200_000


def balance(costs: Sequence[float], num_stages: int,
            tolerance: float = MIRROR_TOLERANCE) -> list[int]:
    """Contiguous split of unit costs (embedding, blocks..., readout) into `num_stages`
    non-empty groups; returns the cuts (block indices).

    First the largest group cost is minimised (value V*). Among the splits whose groups
    all cost at most V* (1 + `tolerance`), the one whose largest *mirror pair* (group s
    with group S − 1 − s) costs least is kept: the wave placement (S = 2·waves·P,
    ``program.wave_placement``) puts stage s and stage 2P − 1 − s on one device (two
    waves: d, 2P − 1 − d, 2P + d, 4P − 1 − d, again mirror pairs), so a min-max split
    that happens to pair two heavy stages (10 equal blocks in 4 stages as 2 | 3 | 3 | 2:
    devices of 4 and 6 blocks) loads one device 20 % more than 2 | 2 | 3 | 3 does. Ties
    go to the smaller largest group, then to the plain min-max split's order. A linear
    placement (one stage per device, symfold's V included) loses at most `tolerance` on
    its largest stage.
    """
    n = len(costs)
    if not 1 <= num_stages <= n:
        raise ValueError(f"num_stages must be in [1, {n}] for this model, got {num_stages}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    plain = _min_max_bounds(prefix, num_stages)
    best_max = max(prefix[b] - prefix[a] for a, b in itertools.pairwise(plain))
    bounds = _mirror_balanced_bounds(prefix, num_stages, best_max * (1 + tolerance) + 1e-12,
                                     plain)
    return [b - 1 for b in bounds[1:-1]]  # unit boundary b ↔ block cut b − 1


def _min_max_bounds(prefix: list[float], num_stages: int) -> list[int]:
    """Unit boundaries [0, ..., n] of the split minimising the largest group (DP)."""
    n = len(prefix) - 1
    inf = float("inf")
    # best[s][j]: minimal max-cost splitting units [0, j) into s groups.
    best = [[inf] * (n + 1) for _ in range(num_stages + 1)]
    arg = [[0] * (n + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, num_stages + 1):
        for j in range(s, n + 1):
            for i in range(s - 1, j):
                v = max(best[s - 1][i], prefix[j] - prefix[i])
                if v < best[s][j]:
                    best[s][j], arg[s][j] = v, i
    bounds, j = [n], n
    for s in range(num_stages, 0, -1):
        j = arg[s][j]
        bounds.append(j)
    return sorted(bounds)


def _mirror_balanced_bounds(prefix: list[float], num_stages: int, cap: float,
                            plain: list[int]) -> list[int]:
    """Among splits with every group <= `cap`, the boundaries minimising (largest mirror
    pair, largest group); `plain` if none beats it or the search exceeds its limit."""
    n = len(prefix) - 1

    def key(bounds):
        g = [prefix[b] - prefix[a] for a, b in itertools.pairwise(bounds)]
        pairs = [g[s] + g[num_stages - 1 - s] if s != num_stages - 1 - s else g[s]
                 for s in range(num_stages)]
        return (max(pairs), max(g))

    best = [key(plain), plain]
    visited = 0

    def extend(bounds):
        nonlocal visited
        visited += 1
        if visited > _SEARCH_LIMIT:
            raise _SearchTooLarge
        i, left = bounds[-1], num_stages - (len(bounds) - 1)
        if left == 1:
            if prefix[n] - prefix[i] <= cap:
                k = key([*bounds, n])
                if k < best[0]:
                    best[:] = [k, [*bounds, n]]
            return
        for j in range(i + 1, n - left + 2):
            if prefix[j] - prefix[i] > cap:
                break
            extend([*bounds, j])

    try:
        extend([0])
    except _SearchTooLarge:
        return plain
    return best[1]


class _SearchTooLarge(Exception):
    """Raised inside :func:`_mirror_balanced_bounds` past ``_SEARCH_LIMIT`` partial splits."""
