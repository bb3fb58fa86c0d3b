"""Leak-free train/val/test splits by ``group_id`` (e.g. the material id).

Groups (not frames) are shuffled with ``numpy.random.default_rng(seed)`` in sorted-id order
and assigned by where the midpoint of their frames falls on the cumulative fractions, so each
split gets about its fraction of *frames*; all frames
of one group land in one split. The result depends only on the multiset of (group_id,
frame) pairs and the seed, not on shard order or rank count.
"""

from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def parse_fractions(text: str | tuple | list) -> tuple[float, ...]:
    """'0.9,0.05,0.05' -> (0.9, 0.05, 0.05); must be 1..3 non-negative values summing to 1."""
    values = tuple(float(x) for x in (text.split(",") if isinstance(text, str) else text))
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values):
        raise ValueError(f"split fractions {text!r}: need 1 to 3 non-negative numbers")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {text!r} sum to {sum(values)}, not 1")
    return values + (0.0,) * (3 - len(values))


def split_by_group(groups: list[str] | np.ndarray, fractions, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Global frame indices (sorted int64) per split name."""
    fractions = parse_fractions(fractions)
    groups = np.asarray(groups, dtype=object)
    n = len(groups)
    if n == 0:
        return {name: np.zeros(0, np.int64) for name in SPLIT_NAMES}
    uniq, inverse, counts = np.unique(groups.astype(str), return_inverse=True,
                                      return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    # Each group goes to the split whose fraction interval holds the *midpoint* of the
    # group's frames in the shuffled order (start points would starve the last splits).
    cum = np.cumsum(counts[order])
    start = (cum - counts[order] / 2.0) / n
    bounds = np.cumsum(fractions)
    last = max(k for k, f in enumerate(fractions) if f > 0)
    # A zero fraction has bounds[k] == bounds[k-1], so searchsorted never picks it; the clip
    # only catches midpoints rounding past the final bound.
    which = np.searchsorted(bounds, start, side="right").clip(0, last)
    split_of_group = np.empty(len(uniq), np.int64)
    split_of_group[order] = which
    frame_split = split_of_group[inverse.reshape(-1)]
    return {name: np.flatnonzero(frame_split == k).astype(np.int64)
            for k, name in enumerate(SPLIT_NAMES)}
