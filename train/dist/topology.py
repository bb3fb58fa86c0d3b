"""World = DP × PP × GP: rank ↔ coordinates and per-dimension rank groups.

Order, outermost first: DP, PP, GP. So ``rank = (dp * PP + pp) * GP + gp``: the ranks of a
graph-parallel group are consecutive (same node under the usual block placement, where the
halo exchange is the chattiest traffic), the stages of one pipeline are next, and data-parallel
replicas are farthest apart (one gradient all-reduce per step).

Pure: no MPI, no torch.distributed; :func:`matris.train.dist.comm.build_groups` turns the
rank lists into process groups.
"""

from __future__ import annotations

from dataclasses import dataclass

DIMS = ("dp", "pp", "gp")


class TopologyError(ValueError):
    """The parallel degrees don't fit the world."""


@dataclass(frozen=True)
class Coord:
    """A rank's position in the grid."""

    dp: int
    pp: int
    gp: int


@dataclass(frozen=True)
class Topology:
    """Degrees of parallelism; ``pp * dp * gp`` must equal ``world_size``."""

    pp: int
    dp: int
    gp: int
    world_size: int

    def __post_init__(self) -> None:
        for name in ("pp", "dp", "gp", "world_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TopologyError(f"parallel.{name} must be an integer >= 1, got {value!r}")
        product = self.pp * self.dp * self.gp
        if product != self.world_size:
            raise TopologyError(
                f"parallel.pp × parallel.dp × parallel.gp = {self.pp} × {self.dp} × {self.gp} "
                f"= {product}, but the job has {self.world_size} ranks (mpirun -n); "
                f"make the product equal the number of ranks")

    def size(self, dim: str) -> int:
        """Degree of ``dim`` ∈ {dp, pp, gp}."""
        if dim not in DIMS:
            raise KeyError(f"unknown dimension {dim!r}; one of {DIMS}")
        return getattr(self, dim)

    def coord(self, rank: int) -> Coord:
        """Coordinates of ``rank`` (GP innermost, then PP, DP outermost)."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside [0, {self.world_size})")
        gp = rank % self.gp
        pp = (rank // self.gp) % self.pp
        dp = rank // (self.gp * self.pp)
        return Coord(dp=dp, pp=pp, gp=gp)

    def rank(self, dp: int, pp: int, gp: int) -> int:
        """Inverse of :meth:`coord`."""
        for name, value in (("dp", dp), ("pp", pp), ("gp", gp)):
            if not 0 <= value < getattr(self, name):
                raise ValueError(f"{name}={value} outside [0, {getattr(self, name)})")
        return (dp * self.pp + pp) * self.gp + gp

    def groups(self, dim: str) -> list[list[int]]:
        """All rank groups along ``dim``: ranks that differ only in that coordinate.

        Every rank gets the same list in the same order (torch.distributed requires all
        ranks to create every group in one order).
        """
        self.size(dim)
        others = [d for d in DIMS if d != dim]
        out: list[list[int]] = []
        for a in range(self.size(others[0])):
            for b in range(self.size(others[1])):
                fixed = {others[0]: a, others[1]: b}
                out.append([self.rank(**fixed, **{dim: i}) for i in range(self.size(dim))])
        return out

    def group_of(self, rank: int, dim: str) -> list[int]:
        """The group along ``dim`` that contains ``rank``."""
        for members in self.groups(dim):
            if rank in members:
                return members
        raise AssertionError("unreachable: every rank is in one group per dimension")

    def stage_replicas(self) -> list[list[int]]:
        """Groups of ranks holding the same pipeline stage: same ``pp``, any ``dp`` and ``gp``.

        Gradients of a stage's parameters are reduced over such a group.
        """
        return [[self.rank(d, p, g) for d in range(self.dp) for g in range(self.gp)]
                for p in range(self.pp)]
