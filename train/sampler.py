"""Deterministic, size-balanced, DP-aware micro-batch sampler (pure numpy).

One optimizer step consumes ``S = dp × microbatches`` micro-batches: DP rank ``d`` takes
micro-batches ``d·M … d·M + M − 1`` of the step. Per epoch:

1. the frames are permuted with ``np.random.default_rng([seed, epoch])`` (or kept in index
   order when ``shuffle`` is off);
2. each frame gets a cost ``w = max(natoms / max_atoms, nedges / max_edges)`` (1.0 fills a
   micro-batch);
3. the permuted sequence is cut into ``K`` contiguous micro-batches of near-equal cost, where
   ``K`` is the smallest multiple of ``S`` whose cut keeps every micro-batch within the caps
   (a single frame above the cap forms a micro-batch on its own).

Because ``K`` is a multiple of ``S``, every step has exactly ``M`` micro-batches on every DP
rank and every frame of the split is used exactly once per epoch: nothing is dropped and
nothing is padded by duplication (which would skew metrics). The price is that micro-batches
are somewhat smaller than the cap when the frame count does not divide evenly. A split with
fewer frames than ``S`` raises an error that names the fix.

The plan of an epoch depends only on (sizes, caps, seed, epoch, S), never on the DP rank, so
every rank computes the same plan and takes its own slice; all stages of a pipeline and all
ranks of a graph-parallel group use the same DP coordinate and therefore the same batches.
Resume is exact: the position is ``(epoch, step)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class SamplerError(ValueError):
    """The split cannot be arranged into steps of the requested shape."""


@dataclass(frozen=True)
class StepPlan:
    """One step for one DP rank: ``microbatches[m]`` lists frame indices of the split."""

    epoch: int
    step: int
    microbatches: tuple[tuple[int, ...], ...]


def _cut(cost: np.ndarray, k: int) -> np.ndarray:
    """Start indices of ``k`` contiguous non-empty parts of near-equal total ``cost``."""
    n = len(cost)
    mid = np.cumsum(cost) - cost / 2  # a frame goes where its cost's midpoint falls
    starts = np.searchsorted(mid, np.arange(k) * (mid[-1] + cost[-1] / 2) / k)
    starts[0] = 0
    j = np.arange(k)
    starts = np.maximum.accumulate(starts - j) + j       # strictly increasing
    return np.minimum(starts, n - k + j)                  # room left for the last parts


def partition(natoms: np.ndarray, order: np.ndarray, *, max_atoms: int, multiple: int,
              nedges: np.ndarray | None = None, max_edges: int | None = None,
              ) -> list[np.ndarray]:
    """Cut ``order`` (frame indices) into a multiple of ``multiple`` capped micro-batches.

    Returns a list of index arrays (each in the order of ``order``). Raises
    :class:`SamplerError` when fewer frames than ``multiple`` exist.
    """
    n = len(order)
    if n < multiple:
        raise SamplerError(
            f"{n} frames cannot fill one step of {multiple} micro-batches "
            "(parallel.dp × parallel.microbatches); use fewer DP ranks or micro-batches, or "
            "more data")
    atoms = natoms[order].astype(np.float64)
    cost = atoms / max_atoms
    edges = None
    if max_edges is not None:
        if nedges is None:
            raise SamplerError("train.max_edges is set but the dataset provides no edge counts")
        edges = nedges[order].astype(np.float64)
        cost = np.maximum(cost, edges / max_edges)
    cost = np.maximum(cost, 1e-12)
    max_k = (n // multiple) * multiple

    def over_caps(k: int) -> tuple[np.ndarray, np.ndarray]:
        starts = _cut(cost, k)
        counts = np.diff(np.append(starts, n))
        over = (np.add.reduceat(atoms, starts) > max_atoms) & (counts > 1)
        if edges is not None:
            over |= (np.add.reduceat(edges, starts) > max_edges) & (counts > 1)
        return starts, over

    # Smallest feasible multiple of `multiple`: exponential search up, then bisection
    # (feasibility is monotone up to one frame's granularity; bisection keeps it cheap).
    lo = max(1, int(np.ceil(cost.sum() / multiple)))  # in units of `multiple`; infeasible below
    hi = lo
    while hi * multiple < max_k and over_caps(hi * multiple)[1].any():
        lo, hi = hi + 1, min(max_k // multiple, hi * 2)
    hi = min(hi, max_k // multiple)
    while lo < hi:
        mid = (lo + hi) // 2
        if over_caps(mid * multiple)[1].any():
            lo = mid + 1
        else:
            hi = mid
    starts, over = over_caps(hi * multiple)
    if over.any():
        raise SamplerError(
            f"cannot cut {n} frames into a multiple of {multiple} micro-batches within "
            f"train.max_atoms={max_atoms}" + (f", train.max_edges={max_edges}" if edges is not None
                                              else "")
            + "; raise the caps or lower parallel.dp × parallel.microbatches")
    return np.split(order, starts[1:])


class StepSampler:
    """Steps of micro-batches for one DP rank, over epochs, from a resumable position.

    Args:
        natoms: (n,) atoms per frame of the split.
        nedges: (n,) directed graph edges per frame of the split, aligned with ``natoms``
            (:mod:`matris.train.edge_counts`); only read when ``max_edges`` is set.
        max_atoms / max_edges: micro-batch caps (``max_edges`` needs ``nedges``); a frame
            above either cap forms a micro-batch on its own.
        dp_size, dp_rank: data-parallel degree and this rank's DP coordinate.
        microbatches: micro-batches per DP rank per step (M).
        seed: base seed; epoch ``e`` uses ``default_rng([seed, e])``.
        shuffle: permute each epoch (off for validation).
    """

    def __init__(self, natoms, *, max_atoms: int, dp_size: int = 1, dp_rank: int = 0,
                 microbatches: int = 1, seed: int = 0, shuffle: bool = True,
                 nedges=None, max_edges: int | None = None) -> None:
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
        self.natoms = np.asarray(natoms, dtype=np.int64)
        self.nedges = None if nedges is None else np.asarray(nedges, dtype=np.int64)
        if self.nedges is not None and self.nedges.shape != self.natoms.shape:
            raise ValueError(f"nedges has shape {self.nedges.shape}, natoms {self.natoms.shape}:"
                             " both must list the same frames")
        self.max_atoms, self.max_edges = max_atoms, max_edges
        self.dp_size, self.dp_rank, self.microbatches = dp_size, dp_rank, microbatches
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.step = 0, 0  # position of the next step to yield
        self._cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def per_step(self) -> int:
        """Micro-batches per step over all DP ranks (S)."""
        return self.dp_size * self.microbatches

    def order(self, epoch: int) -> np.ndarray:
        """Frame order of ``epoch``."""
        n = len(self.natoms)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """All micro-batches of ``epoch`` (every DP rank), in step-major order."""
        if self._cache is None or self._cache[0] != epoch:
            parts = partition(self.natoms, self.order(epoch), max_atoms=self.max_atoms,
                              multiple=self.per_step, nedges=self.nedges,
                              max_edges=self.max_edges)
            self._cache = (epoch, parts)
        return self._cache[1]

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self.epoch_plan(epoch)) // self.per_step

    def plan(self, epoch: int, step: int, dp_rank: int | None = None) -> StepPlan:
        """The micro-batches of ``step`` of ``epoch`` for ``dp_rank`` (default: ours)."""
        d = self.dp_rank if dp_rank is None else dp_rank
        parts = self.epoch_plan(epoch)
        first = step * self.per_step + d * self.microbatches
        mbs = tuple(tuple(int(i) for i in parts[first + m]) for m in range(self.microbatches))
        return StepPlan(epoch, step, mbs)

    def __iter__(self) -> Iterator[StepPlan]:
        """Yield steps forever from the current position, advancing it."""
        while True:
            if self.step >= self.steps_in_epoch(self.epoch):
                self.epoch, self.step = self.epoch + 1, 0
                continue
            plan = self.plan(self.epoch, self.step)
            self.step += 1
            yield plan

    def state_dict(self) -> dict:
        """Position of the next step (plain ints; safe for ``torch.load(weights_only=True)``)."""
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} != train.seed {self.seed}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
