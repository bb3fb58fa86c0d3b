"""The exchange seam for graph parallelism.

Interaction blocks call an exchange object at a few explicit points. The serial model
uses `LOCAL` (the identity); the graph-parallel trainer passes an object with the same
three methods and `owned` attribute that communicates between the parts of a graph.

Semantics for one part of a partitioned graph:

- atom rows ``[0, owned)`` are owned, the rest are halo copies of atoms owned elsewhere;
- edges and angles belong to the part that owns their centre atom, and a part holds
  *both* directed edges of each of its bonds (the reverse edge of a cut bond is centred
  on a halo atom); bond features are replicated on the parts sharing a bond;
- ``atoms(x)`` (N, ·) refreshes the halo rows of an atom tensor from their owners; the
  blocks call it right before each consumer of neighbour atom features (atom attention
  and atom refinement);
- ``bonds(x)`` (U, ·) sums per-bond partial sums over the parts sharing a bond; every
  per-bond aggregate over angles (attention numerators *and* denominators, refinement
  sums) goes through it before any nonlinearity;
- ``structures(e)`` (B,) sums per-structure partial energies; the readout sums owned
  atoms only.

Each method must be differentiable twice (the force loss differentiates through it).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Exchange(Protocol):
    """What the blocks need from an exchange (see the module docstring)."""

    owned: int | None

    def atoms(self, x: Tensor) -> Tensor: ...

    def bonds(self, x: Tensor) -> Tensor: ...

    def structures(self, e: Tensor) -> Tensor: ...


class LocalExchange:
    """Identity exchange: the whole graph is local and every atom is owned."""

    owned: int | None = None

    def atoms(self, x: Tensor) -> Tensor:
        return x

    def bonds(self, x: Tensor) -> Tensor:
        return x

    def structures(self, e: Tensor) -> Tensor:
        return e

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL = LocalExchange()
