"""Data into the model: frames → graphs (in loader workers) → micro-batches → steps.

``StepLoader`` pairs the :class:`~matris.train.sampler.StepSampler` plan with a torch
``DataLoader`` whose workers read frames from a ``matris.datasets.ShardedDataset`` and build
their graphs with ``matris.graph.build_graph`` + ``collate``. Workers start with
``forkserver`` (or ``spawn``) by default: forking an MPI process is unsafe, and a fresh
worker must not initialise MPI (nothing imported here touches mpi4py).

The loader yields ``(StepPlan, [Batch] * microbatches)``; the trainer records the plan's
(epoch, step) of the last *consumed* step as the resume position, since the workers run
ahead of the training loop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset

from .batch import LABELS, Batch, collate_labels
from .sampler import StepPlan, StepSampler

_FRAME_KEYS = ("numbers", *LABELS)


class GraphDataset(Dataset):
    """``ds[i]`` → (i, AtomGraph, label dict) for frames ``indices`` of a split.

    Args:
        ds: a ``ShardedDataset`` (or any sequence of frame dicts).
        cutoff, three_body_cutoff: graph radii in Å (from the model config).
        indices: the split's frames to expose (default: all); item ``i`` is ``ds[indices[i]]``.
    """

    def __init__(self, ds, cutoff: float, three_body_cutoff: float,
                 indices: Sequence[int] | None = None) -> None:
        self.ds, self.cutoff, self.three_body_cutoff = ds, cutoff, three_body_cutoff
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ds) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int):
        from matris.graph import build_graph  # lazily: being written alongside the trainer

        frame = self.ds[int(i) if self.indices is None else int(self.indices[i])]
        graph = build_graph(frame["numbers"], frame["positions"], frame["cell"], frame["pbc"],
                            self.cutoff, self.three_body_cutoff)
        return int(i), graph, {k: frame[k] for k in _FRAME_KEYS if k in frame}


def collate_batch(items: list) -> Batch:
    """Items of :class:`GraphDataset` → one :class:`Batch` (runs in the worker)."""
    from matris.graph import collate

    return Batch(graph=collate([g for _, g, _ in items]),
                 labels=collate_labels([f for _, _, f in items]),
                 frames=tuple(i for i, _, _ in items))


class _MicroBatchIndices:
    """The flattened micro-batch index lists of a sampler, from its current position."""

    def __init__(self, sampler: StepSampler, max_steps: int | None) -> None:
        self.sampler, self.max_steps = sampler, max_steps

    def __iter__(self) -> Iterator[list[int]]:
        for n, plan in enumerate(self.sampler):
            if self.max_steps is not None and n >= self.max_steps:
                return
            for mb in plan.microbatches:
                yield list(mb)


class StepLoader:
    """Steps of collated micro-batches for this DP rank, starting at the sampler's position.

    Args:
        dataset: a :class:`GraphDataset`.
        sampler: the rank's :class:`StepSampler` (its position is where iteration starts;
            the loader works on copies and never advances it).
        max_steps: stop after this many steps (``None``: forever, across epochs).
        num_workers, worker_start, prefetch_factor: torch DataLoader settings.
    """

    def __init__(self, dataset: GraphDataset, sampler: StepSampler, *,
                 max_steps: int | None = None, num_workers: int = 0,
                 worker_start: str = "forkserver", prefetch_factor: int = 2) -> None:
        self.dataset, self.sampler, self.max_steps = dataset, sampler, max_steps
        self.num_workers, self.worker_start = num_workers, worker_start
        self.prefetch_factor = prefetch_factor

    def _dataloader(self) -> DataLoader:
        kwargs = {}
        if self.num_workers > 0:
            kwargs = {"multiprocessing_context": self.worker_start,
                      "prefetch_factor": self.prefetch_factor}
        return DataLoader(self.dataset,
                          batch_sampler=_MicroBatchIndices(copy.copy(self.sampler),
                                                           self.max_steps),
                          collate_fn=collate_batch, num_workers=self.num_workers, **kwargs)

    def __iter__(self) -> Iterator[tuple[StepPlan, list[Batch]]]:
        batches = iter(self._dataloader())
        plans = copy.copy(self.sampler)
        for n, plan in enumerate(plans):
            if self.max_steps is not None and n >= self.max_steps:
                return
            mbs = [next(batches) for _ in plan.microbatches]
            for mb, idx in zip(mbs, plan.microbatches):
                if mb.frames != idx:  # the workers and the plan must walk the same sequence
                    raise RuntimeError(f"loader out of step with the sampler at epoch "
                                       f"{plan.epoch} step {plan.step}")
            yield plan, mbs
