"""Stage cuts as pure data: validation and cost-balanced placement (no torch).

A model is the unit list embedding, L interaction blocks, readout. A cut c (0 <= c <= L)
starts a new stage at interaction block c (see `matris.stages`). `balance` chooses cuts
from per-unit costs; the pipeline's cost model (`matris.train.pipeline.costs`) uses it on
measured per-stage costs, so that the cuts it prices are the cuts the runner makes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence


def validate_cuts(cuts: Sequence[int], num_blocks: int) -> list[int]:
    cuts = [int(c) for c in cuts]
    if any(c < 0 or c > num_blocks for c in cuts) or any(
            b <= a for a, b in itertools.pairwise(cuts)):
        raise ValueError(f"cuts must be strictly increasing interaction-block indices in "
                         f"[0, {num_blocks}], got {cuts}")
    return cuts


#: With a wave placement a stage may cost this much more than the min-max optimum when
#: that lowers the busiest device's load (bounds the search, see :func:`balance`).
WAVE_STAGE_SLACK = 0.25
#: Partial cut lists :func:`balance` explores before keeping the plain min-max cuts.
_SEARCH_LIMIT = 200_000


def wave_devices(num_stages: int, num_devices: int) -> list[int] | None:
    """Device of each stage under the wave placement (zigzag over 2P positions; the V of
    one wave: stage s and 2P − 1 − s share device s), or None when ``num_stages`` is not a
    multiple of 2·``num_devices`` (one stage per device, or no wave)."""
    P = num_devices
    if P < 1 or num_stages < 2 * P or num_stages % (2 * P):
        return None
    return [r if r < P else 2 * P - 1 - r for r in (s % (2 * P) for s in range(num_stages))]


def balance(costs: Sequence[float], num_stages: int,
            num_devices: int | None = None) -> list[int]:
    """Contiguous split of unit costs (embedding, blocks..., readout) into `num_stages`
    non-empty groups; returns the cuts (block indices).

    One stage per device (``num_devices`` None or equal to `num_stages`): the largest
    group cost is minimised (a DP). A wave placement (`num_stages` = 2·waves·P for P =
    `num_devices`, :func:`wave_devices`) hosts 2·waves stages per device, so what counts
    is each device's total: the split minimising the busiest device's load, then the
    largest stage, among splits whose stages cost at most (1 + WAVE_STAGE_SLACK) times the
    min-max optimum. (10 equal blocks in 4 stages: the min-max DP's 2 | 3 | 3 | 2 gives
    the two devices 4 and 6 blocks; 2 | 2 | 3 | 3 gives 5 and 5.) Past _SEARCH_LIMIT
    partial splits the search keeps the min-max split.
    """
    n = len(costs)
    if not 1 <= num_stages <= n:
        raise ValueError(f"num_stages must be in [1, {n}] for this model, got {num_stages}")
    # Planners price the same cut hundreds of times (every simulated candidate): memoised.
    return list(_balance(tuple(float(c) for c in costs), num_stages, num_devices or 0))


@functools.lru_cache(maxsize=256)
def _balance(costs: tuple[float, ...], num_stages: int, num_devices: int) -> tuple[int, ...]:
    """:func:`balance` on hashable arguments (``num_devices`` 0: one stage per device)."""
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    bounds = _min_max_bounds(prefix, num_stages)
    devices = wave_devices(num_stages, num_devices) if num_devices else None
    if devices is not None:
        best_max = max(prefix[b] - prefix[a] for a, b in itertools.pairwise(bounds))
        bounds = _device_balanced_bounds(prefix, devices,
                                         best_max * (1 + WAVE_STAGE_SLACK) + 1e-12, bounds)
    return tuple(b - 1 for b in bounds[1:-1])  # unit boundary b ↔ block cut b − 1


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


def _device_balanced_bounds(prefix: list[float], devices: list[int], cap: float,
                            plain: list[int]) -> list[int]:
    """Among splits with every group <= `cap`, the boundaries minimising (busiest device's
    load, largest group) with group s on ``devices[s]``; `plain` if none beats it or the
    search exceeds its limit."""
    n, S = len(prefix) - 1, len(devices)

    def key(bounds):
        g = [prefix[b] - prefix[a] for a, b in itertools.pairwise(bounds)]
        load = [0.0] * (max(devices) + 1)
        for s, x in enumerate(g):
            load[devices[s]] += x
        # 12 significant digits: sums taken in another order must still tie exactly.
        return (float(f"{max(load):.12g}"), float(f"{max(g):.12g}"))

    best = [key(plain), plain]
    visited = 0

    def extend(bounds):
        nonlocal visited
        visited += 1
        if visited > _SEARCH_LIMIT:
            raise _SearchTooLarge
        i, left = bounds[-1], S - (len(bounds) - 1)
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
    """Raised inside :func:`_device_balanced_bounds` past ``_SEARCH_LIMIT`` partial splits."""
