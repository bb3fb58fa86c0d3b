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


def balance(costs: Sequence[float], num_stages: int) -> list[int]:
    """Contiguous split of unit costs (embedding, blocks..., readout) into `num_stages`
    non-empty groups minimising the largest group cost; returns the cuts (block indices)."""
    n = len(costs)
    if not 1 <= num_stages <= n:
        raise ValueError(f"num_stages must be in [1, {n}] for this model, got {num_stages}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
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
    bounds, j = [], n
    for s in range(num_stages, 0, -1):
        j = arg[s][j]
        bounds.append(j)
    bounds = sorted(bounds)[1:]  # drop the leading 0; unit boundary b ↔ block cut b − 1
    return [b - 1 for b in bounds]
