"""Graph-parallel exchange: the model's `Exchange` seam over a GP process group.

Semantics (global view). Think of the G parts' tensors as one long vector, one block per
rank. Every exchange is a *linear* map of that vector, and each autograd Function's
backward applies the exact adjoint map, itself an autograd Function, so any order of
differentiation is exact (the force loss needs two):

==================  ==============================================  =====================
method              forward                                         adjoint (= backward)
==================  ==============================================  =====================
``atoms(x)``        halo rows ← owner's rows (halo copy)            halo reduce
(halo reduce)       owner rows += halo rows of every copy; halo ← 0 halo copy
``bonds(x)``        cut-bond rows ← sum of both parts' rows         itself
``structures(e)``   every rank ← Σ over ranks (fixed rank order)    itself
``reduce(x)``       same as ``structures`` for any shape            itself
``positions(x)``    halo copy whose forward skips the communication halo reduce
                    (the part already holds the halo positions)
==================  ==============================================  =====================

Because ``structures`` is the true all-reduce (self-adjoint), a quantity computed from a
replicated value (the total energy, the stress) must be *seeded / weighted once* per GP
group: `matris.train.graph_parallel.forward` seeds the energy on part 0 only.

Every rank must call the same exchanges in the same order (forward and backward): all
ranks run the same model code, so their autograd graphs have the same structure and the
engine visits the communicating nodes in the same order. Empty parts take part with
zero-row tensors. Summation order is fixed (peer order, then rank order), so float64
results are reproducible and replicated values (cut-bond features, energies) are
bit-identical on the ranks holding them.

Transports: :class:`TorchTransport` over a torch.distributed group (``p2p``: irecv/isend
with the peers only; ``alltoall``: one ``all_to_all_single`` per exchange; gloo supports
both) and, for tests without MPI, ``matris.train.graph_parallel.simulate.ThreadTransport``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function

from .comm import Group


class Transport(Protocol):
    """Moves tensors between the ``size`` parts of one graph-parallel group."""

    rank: int
    size: int

    def exchange(self, send: Sequence[Tensor | None],
                 recv_shapes: Sequence[tuple[int, ...]], dtype: torch.dtype,
                 device: torch.device) -> list[Tensor | None]:
        """Send ``send[q]`` to each part q; return what each q sent here (shape
        ``recv_shapes[q]``). Entries for this rank are ignored / None."""

    def all_gather(self, x: Tensor) -> list[Tensor]:
        """Every part's ``x`` (same shape on all parts), in part order."""


class TorchTransport:
    """`Transport` over a torch.distributed group (``matris.train.dist.Group``).

    Args:
        group: the GP group (global ranks in part order).
        method: ``p2p`` (irecv/isend pairs with the peers that exchange rows; idle pairs
            don't talk) or ``alltoall`` (one collective per exchange).
    """

    def __init__(self, group: Group, method: str = "p2p"):
        if method not in ("p2p", "alltoall"):
            raise ValueError(f"method must be 'p2p' or 'alltoall', got {method!r}")
        self.group, self.method = group, method
        self.size = group.size
        me = dist.get_rank() if group.size > 1 else group.ranks[0]
        if me not in group.ranks:
            raise ValueError(f"this process (rank {me}) is not in the GP group {group.ranks}")
        self.rank = group.ranks.index(me)

    def exchange(self, send, recv_shapes, dtype, device):
        recv: list[Tensor | None] = [
            None if q == self.rank else torch.empty(recv_shapes[q], dtype=dtype, device=device)
            for q in range(self.size)]
        if self.method == "alltoall":
            return self._alltoall(send, recv, recv_shapes, dtype, device)
        works = []
        for q in range(self.size):  # post every receive first, then the sends
            if q != self.rank and recv[q].numel():
                works.append(dist.irecv(recv[q], self.group.ranks[q]))
        for q in range(self.size):
            if q != self.rank and send[q] is not None and send[q].numel():
                works.append(dist.isend(send[q].contiguous(), self.group.ranks[q]))
        for w in works:
            w.wait()
        return recv

    def _alltoall(self, send, recv, recv_shapes, dtype, device):
        tail = next(tuple(s[1:]) for s in recv_shapes)
        empty = torch.empty((0, *tail), dtype=dtype, device=device)
        chunks = [empty if q == self.rank or send[q] is None else send[q]
                  for q in range(self.size)]
        out_rows = [0 if q == self.rank else recv_shapes[q][0] for q in range(self.size)]
        flat_out = torch.empty((sum(out_rows), *tail), dtype=dtype, device=device)
        dist.all_to_all_single(flat_out, torch.cat(chunks).contiguous(), out_rows,
                               [c.shape[0] for c in chunks], group=self.group.handle)
        parts = list(flat_out.split(out_rows))
        return [None if q == self.rank else parts[q] for q in range(self.size)]

    def all_gather(self, x: Tensor) -> list[Tensor]:
        flat = x.contiguous().reshape(-1)  # gloo wants 1-D concatenation along dim 0
        out = torch.empty(self.size * flat.numel(), dtype=x.dtype, device=x.device)
        dist.all_gather_into_tensor(out, flat, group=self.group.handle)
        return [c.view(x.shape) for c in out.split(flat.numel())]


# --------------------------------------------------------------------------- kernels

def _halo_copy(x: Tensor, ex: GraphExchange) -> Tensor:
    plan, out = ex.plan, x.clone()
    me = plan.part
    send = [None if q == me else x.index_select(0, plan.send[q]) for q in range(plan.num_parts)]
    shapes = [(plan.recv_count(q), *x.shape[1:]) for q in range(plan.num_parts)]
    recv = ex._exchange("halo_copy", send, shapes, x)
    for q, rows in enumerate(recv):
        if rows is not None and rows.numel():
            out[plan.recv_offsets[q]:plan.recv_offsets[q + 1]] = rows
    return out


def _halo_reduce(g: Tensor, ex: GraphExchange) -> Tensor:
    plan, out = ex.plan, g.clone()
    me = plan.part
    send = [None if q == me else g[plan.recv_offsets[q]:plan.recv_offsets[q + 1]]
            for q in range(plan.num_parts)]
    shapes = [(plan.send[q].shape[0], *g.shape[1:]) for q in range(plan.num_parts)]
    recv = ex._exchange("halo_reduce", send, shapes, g)
    for q, rows in enumerate(recv):  # peer order: deterministic sums
        if rows is not None and rows.numel():
            out.index_add_(0, plan.send[q], rows)
    out[plan.num_owned:] = 0
    return out


def _bond_sum(x: Tensor, ex: GraphExchange) -> Tensor:
    plan, out = ex.plan, x.clone()
    me = plan.part
    send = [None if q == me else x.index_select(0, plan.shared[q])
            for q in range(plan.num_parts)]
    shapes = [(plan.shared[q].shape[0], *x.shape[1:]) for q in range(plan.num_parts)]
    recv = ex._exchange("bond_sum", send, shapes, x)
    for q, rows in enumerate(recv):  # two summands per cut bond: a + b == b + a bitwise
        if rows is not None and rows.numel():
            out.index_add_(0, plan.shared[q], rows)
    return out


def _group_sum(x: Tensor, ex: GraphExchange) -> Tensor:
    if ex.transport.size == 1:
        return x.clone()
    parts = ex.transport.all_gather(x)
    ex._count("group_sum", x.numel() * x.element_size() * (ex.transport.size - 1))
    out = parts[0].clone()
    for p in parts[1:]:  # rank order: identical bits on every rank
        out += p
    return out


# --------------------------------------------------------------------------- Functions

class _HaloCopy(Function):
    @staticmethod
    def forward(ctx, x, ex, communicate):
        ctx.ex = ex
        return _halo_copy(x, ex) if communicate else x.clone()

    @staticmethod
    def backward(ctx, g):
        return _HaloReduce.apply(g, ctx.ex), None, None


class _HaloReduce(Function):
    @staticmethod
    def forward(ctx, g, ex):
        ctx.ex = ex
        return _halo_reduce(g, ex)

    @staticmethod
    def backward(ctx, gg):
        return _HaloCopy.apply(gg, ctx.ex, True), None


class _BondSum(Function):
    @staticmethod
    def forward(ctx, x, ex):
        ctx.ex = ex
        return _bond_sum(x, ex)

    @staticmethod
    def backward(ctx, g):
        return _BondSum.apply(g, ctx.ex), None


class _GroupSum(Function):
    @staticmethod
    def forward(ctx, x, ex):
        ctx.ex = ex
        return _group_sum(x, ex)

    @staticmethod
    def backward(ctx, g):
        return _GroupSum.apply(g, ctx.ex), None


# --------------------------------------------------------------------------- the seam

class GraphExchange:
    """`matris.nn.exchange.Exchange` for one part of a partitioned graph.

    Args:
        plan: the part's ``HaloPlan`` (``matris.train.graph_parallel.part``).
        transport: a `Transport` whose ``rank`` is ``plan.part``.

    Attributes:
        owned: rows ``[0, owned)`` of atom tensors are owned.
        volume: bytes sent by this rank, per kernel (``halo_copy``, ``halo_reduce``,
            ``bond_sum``, ``group_sum``); ``calls`` counts kernel calls.
    """

    def __init__(self, plan, transport: Transport):
        if transport.size != plan.num_parts or transport.rank != plan.part:
            raise ValueError(f"transport is rank {transport.rank} of {transport.size} but the "
                             f"plan is part {plan.part} of {plan.num_parts}")
        self.plan, self.transport = plan, transport
        self.owned = plan.num_owned
        self.volume: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    @property
    def rank(self) -> int:
        """This part's index in the GP group."""
        return self.plan.part

    def _check(self, x: Tensor, rows: int, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != rows:
            raise ValueError(f"exchange.{what}: expected {rows} rows on part {self.plan.part}, "
                             f"got shape {tuple(x.shape)}")

    def _count(self, kind: str, nbytes: int) -> None:
        self.volume[kind] += nbytes
        self.calls[kind] += 1

    def _exchange(self, kind, send, shapes, like: Tensor):
        self._count(kind, sum(s.numel() * s.element_size() for s in send if s is not None))
        return self.transport.exchange(send, shapes, like.dtype, like.device)

    # -- the Exchange protocol ---------------------------------------------------------
    def atoms(self, x: Tensor) -> Tensor:
        """(n_local, ...) → the same with halo rows replaced by their owners' rows."""
        self._check(x, self.plan.num_atoms, "atoms")
        return _HaloCopy.apply(x, self, True)

    def bonds(self, x: Tensor) -> Tensor:
        """(U_local, ...) per-bond partial sums → sums over the parts sharing each bond."""
        self._check(x, self.plan.num_bonds, "bonds")
        return _BondSum.apply(x, self)

    def structures(self, e: Tensor) -> Tensor:
        """(B,) per-part partial energies → totals (the same on every part)."""
        return _GroupSum.apply(e, self)

    # -- extras used by the graph-parallel forward ---------------------------------------
    def reduce(self, x: Tensor) -> Tensor:
        """Sum of ``x`` (any shape, same on every part) over the group (self-adjoint)."""
        return _GroupSum.apply(x, self)

    def positions(self, x: Tensor) -> Tensor:
        """Local positions (n_local, 3) whose halo rows already hold the owners' values:
        the forward copies nothing, the backward reverse-sums halo gradients to owners."""
        self._check(x, self.plan.num_atoms, "positions")
        return _HaloCopy.apply(x, self, False)

    @torch.no_grad()
    def gather_owned(self, x: Tensor, owned_ids: Tensor, total: int) -> Tensor:
        """Assemble the global (total, ...) tensor from every part's owned rows ``x``
        (global ids ``owned_ids``); not differentiable (validation, diagnostics)."""
        t = self.transport
        count = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        counts = [int(c) for c in t.all_gather(count)] if t.size > 1 else [x.shape[0]]
        width = max(counts)
        pad = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
        pad[: x.shape[0]] = x
        ids = torch.full((width,), -1, dtype=torch.int64, device=x.device)
        ids[: x.shape[0]] = owned_ids
        rows = t.all_gather(pad) if t.size > 1 else [pad]
        idx = t.all_gather(ids) if t.size > 1 else [ids]
        out = torch.zeros((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for c, r, i in zip(counts, rows, idx):
            out[i[:c]] = r[:c]
        return out

    def __repr__(self) -> str:
        return (f"GraphExchange(part {self.plan.part}/{self.plan.num_parts}, "
                f"owned={self.owned}, rows={self.plan.num_atoms})")
