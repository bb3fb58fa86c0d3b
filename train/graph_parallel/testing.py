"""Structures, labelled micro-batches and comparisons for the graph-parallel tests.

Shared by the unit tests (in-process threads) and the mpirun scripts, so both check the
same cases: a sheared (non-orthogonal) periodic cell, a molecule without periodicity, a
batch of several cells, and a 3-atom cell whose parts include empty ones (G = 4) and
whose atoms bond to their own periodic images.
"""

from __future__ import annotations

import numpy as np
import torch

from matris.graph import AtomGraph, build_graph, collate
from matris.train.batch import Batch, Labels
from matris.train.config import LossConfig, LossWeights

CUTOFF, THREE_BODY = 5.0, 3.5  # the `tiny` preset's cutoffs


def lattice(reps: tuple[int, int, int], spacing: float, shear: float, rattle: float,
            seed: int, pbc: bool = True) -> AtomGraph:
    """A rattled simple-cubic block of ``prod(reps)`` atoms (random elements 1–30).

    ``shear`` tilts the cell (non-orthogonal for shear ≠ 0); with ``pbc=False`` the cell
    is dropped (a molecule).
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1)
    frac = (grid.reshape(-1, 3) + 0.5) / np.array(reps)
    cell = np.diag(np.array(reps, dtype=float) * spacing)
    cell[1, 0] += shear * cell[1, 1]
    cell[2, 0] -= 0.5 * shear * cell[2, 2]
    cell[2, 1] += 0.7 * shear * cell[2, 2]
    pos = frac @ cell + rng.normal(scale=rattle, size=(len(frac), 3))
    numbers = rng.integers(1, 31, len(frac))
    return build_graph(numbers, pos, cell if pbc else np.zeros((3, 3)), pbc, CUTOFF, THREE_BODY)


def case_graphs(name: str) -> list[AtomGraph]:
    """The structures of a named case (see the module docstring)."""
    if name == "triclinic":
        return [lattice((4, 4, 5), 2.6, 0.25, 0.25, seed=1)]
    if name == "molecule":
        return [lattice((3, 3, 3), 2.5, 0.0, 0.3, seed=2, pbc=False)]
    if name == "batch":
        return [lattice((3, 3, 4), 2.7, 0.1, 0.2, seed=3),
                lattice((2, 3, 3), 2.6, -0.2, 0.2, seed=4),
                lattice((2, 2, 3), 2.8, 0.0, 0.2, seed=5)]
    if name == "tiny":  # 3 atoms, cell smaller than the cutoff: self-image bonds, empty parts
        return [lattice((1, 1, 3), 2.9, 0.15, 0.2, seed=6)]
    raise KeyError(f"unknown case {name!r}")


CASES = ("triclinic", "molecule", "batch", "tiny")


def labelled_batch(graphs: list[AtomGraph], seed: int, dtype=torch.float64) -> Batch:
    """A collated micro-batch with random labels, some missing.

    Stress labels only when every structure is periodic (the serial ``compute_outputs``
    gives NaN gradients for a batch mixing molecules with stress-labelled cells).
    """
    g = collate(graphs).to(dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    b, n = g.num_structures, g.n_atoms
    periodic = bool(g.pbc.all())
    energy_mask = torch.ones(b, dtype=torch.bool)
    if b > 1:
        energy_mask[1] = False
    labels = Labels(
        energy=g.num_atoms.to(dtype) * -3.0 + torch.randn(b, generator=gen, dtype=dtype),
        energy_mask=energy_mask,
        forces=torch.randn(n, 3, generator=gen, dtype=dtype),
        forces_mask=torch.rand(n, generator=gen) > 0.15,
        stress=0.01 * torch.randn(b, 3, 3, generator=gen, dtype=dtype),
        stress_mask=torch.full((b,), periodic),
        magmoms=torch.rand(n, generator=gen, dtype=dtype),
        magmoms_mask=torch.rand(n, generator=gen) > 0.5,
        natoms=g.num_atoms.clone())
    return Batch(g, labels, tuple(range(b)))


def loss_config() -> LossConfig:
    """Every term weighted (E + F + σ + magmoms), Huber so that no term is quadratic."""
    return LossConfig(kind="huber", huber_delta=0.5,
                      weights=LossWeights(energy=1.0, forces=1.0, stress=0.3, magmoms=0.2))


def counts_of(batches: list[Batch]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in batches:
        for k, v in b.labels.counts().items():
            out[k] = out.get(k, 0.0) + v
    return out


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients by name (zeros where a parameter got none)."""
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for n, p in model.named_parameters()}


def relative_error(a, b) -> float:
    """max |a − b| / max |b| over tensors or dicts of tensors (per entry, the worst)."""
    if isinstance(b, dict):
        if set(a) != set(b):
            raise AssertionError(f"different keys: {sorted(set(a) ^ set(b))}")
        return max((relative_error(a[k], b[k]) for k in b), default=0.0)
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if b.numel() == 0:
        return 0.0
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where(both_nan, torch.zeros_like(a), a - b).abs().max()
    scale = torch.where(torch.isnan(b), torch.zeros_like(b), b).abs().max()
    return float(diff / scale) if float(scale) > 0 else float(diff)
