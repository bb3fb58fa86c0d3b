"""Per-frame edge counts of a dataset root, for the sampler's ``train.max_edges`` cap.

The count of a frame is the number of *directed* edges of its two-body graph, exactly as
``matris.graph.build_graph`` makes them: every pair within the cutoff r_c from
``matris.graph.neighbors.neighbor_pairs`` (image pairs and self-images included) gives two
edges. The sampler needs these for every frame before the first step, and a neighbour
search over the whole dataset costs far more than reading ``index/natoms``, so the counts
are computed once per (root, r_c) and cached next to the other per-frame indices::

    <root>/index/edges_rc<r_c>.int64.npy    (n_frames,) int64, global frame order

written atomically (unique temp file + rename), so concurrent ranks writing the same
counts cannot leave a torn file. A rebuild of the root deletes ``index/`` and with it the
cache. When the root is read-only the counts stay in this process's memory (with a
warning) and are recomputed by the next process.

Under data parallelism the work is split: rank r counts frames ``r::world`` and the parts
are exchanged with an ``allgather`` passed in by the caller (this module never imports MPI
or torch.distributed), so every rank ends with the same array.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from matris.graph.neighbors import neighbor_pairs

from .checkpointing import atomic_write_bytes

INDEX = "index"  # = matris.datasets.layout.INDEX (not imported: keeps this module light)

# Counts of read-only roots, by (resolved root, cutoff, n_frames): reused within a process.
_MEMORY: dict[tuple[str, float, int], np.ndarray] = {}


def cache_path(root: str | Path, cutoff: float) -> Path:
    """``<root>/index/edges_rc<cutoff>.int64.npy``; ``repr`` keeps 6.0 and 6.0000001 apart."""
    return Path(root) / INDEX / f"edges_rc{float(cutoff)!r}.int64.npy"


def frame_edges(frame: dict, cutoff: float) -> int:
    """Directed edges of one frame's graph within ``cutoff`` (Å): 2 × undirected pairs.

    ``frame`` holds ``positions`` (N, 3) Å, ``cell`` (3, 3) Å or None, ``pbc`` (3,) or a
    bool; they are normalised as ``build_graph`` does before its neighbour search.
    """
    positions = np.asarray(frame["positions"], dtype=np.float64)
    cell = frame.get("cell")
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(frame["pbc"], dtype=bool), (3,)).copy()
    i, _, _, _ = neighbor_pairs(positions, cell, pbc, cutoff)
    return 2 * len(i)


def count_edges(ds, cutoff: float, frames: np.ndarray) -> np.ndarray:
    """(len(frames),) int64 edge counts of ``ds[f]`` for ``f`` in ``frames``."""
    return np.array([frame_edges(ds[int(f)], cutoff) for f in frames], dtype=np.int64)


def _load(path: Path, n_frames: int) -> np.ndarray | None:
    """The cached counts, or None when absent or not a valid (n_frames,) count array."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.shape != (n_frames,) or arr.dtype != np.int64 or (arr < 0).any() or (arr % 2).any():
        warnings.warn(f"{path}: not a valid edge-count cache for {n_frames} frames; "
                      "recounting", stacklevel=3)
        return None
    return arr


def _write_atomic(path: Path, counts: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (unique temp file, fsync, rename)."""
    buf = io.BytesIO()
    np.save(buf, counts, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def edge_counts(root: str | Path, cutoff: float, *, rank: int = 0, world: int = 1,
                allgather: Callable[[object], list] | None = None,
                log: Callable[[str], None] | None = None) -> np.ndarray:
    """(n_frames,) int64 directed-edge counts of every frame of ``root``, global order.

    Args:
        root: a built dataset root (``matris-data build``).
        cutoff: the model's two-body cutoff r_c, Å.
        rank, world, allgather: this process's rank among ``world`` processes that call
            this together, and a collective ``allgather(obj) -> [obj of rank 0, ...]``
            over them; with ``world > 1`` the count is split between them. Every rank must
            call with the same root and cutoff.
        log: called with one progress line when counting starts and ends (e.g. rank 0's
            ``print``).
    """
    from matris.datasets import ShardedDataset

    root = Path(root)
    ds = ShardedDataset(root)  # all frames, global order
    n = len(ds)
    key = (str(root.resolve()), float(cutoff), n)
    path = cache_path(root, cutoff)
    counts = _MEMORY.get(key)
    on_disk = False
    if counts is None:
        counts = _load(path, n)
        on_disk = counts is not None
    if world > 1 and allgather is not None:
        # Collective decision: one rank without the cache (another node's disk) means all
        # count together, so nobody waits in a collective while the others count alone.
        if all(allgather(counts is not None)):
            return counts
        counts = None
    if counts is not None:
        return counts

    t0 = time.perf_counter()
    if log:
        log(f"counting graph edges within {cutoff} Å of {n} frames of {root} (once; cached "
            f"in {path})")
    if world > 1 and allgather is not None:
        parts = allgather(count_edges(ds, cutoff, np.arange(rank, n, world)))
        counts = np.empty(n, dtype=np.int64)
        for r, part in enumerate(parts):
            counts[r::world] = part
    else:
        counts = count_edges(ds, cutoff, np.arange(n))
    ds.close()
    if log:
        log(f"counted {int(counts.sum())} edges in {time.perf_counter() - t0:.1f} s")
    if not on_disk:
        try:
            _write_atomic(path, counts)
        except OSError as err:  # read-only root: keep them for this process only
            warnings.warn(f"cannot cache edge counts in {path} ({err}); keeping them in "
                          "memory, so the next run counts again", stacklevel=2)
            _MEMORY[key] = counts
    return counts
