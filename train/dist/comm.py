"""Process groups and the collective / point-to-point wrappers the trainer uses.

Every helper accepts a :class:`Group`; a group of one rank (or a run without a torch
process group) short-circuits to a no-op, so single-process code paths are the same code.
Ranks passed to point-to-point calls are *global* ranks, as in torch.distributed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .topology import DIMS, Coord, Topology


@dataclass(frozen=True)
class Group:
    """A set of global ranks and its torch process group (``None`` for a group of one)."""

    ranks: tuple[int, ...]
    handle: object | None = None

    @property
    def size(self) -> int:
        return len(self.ranks)


SELF = Group(ranks=(0,))


@dataclass(frozen=True)
class ProcessGroups:
    """This rank's groups: ``dp``, ``pp``, ``gp``, ``stage`` (same pp: dp × gp) and ``world``."""

    topology: Topology
    rank: int
    coord: Coord
    groups: dict[str, Group] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Group:
        return self.groups[name]

    @property
    def dp(self) -> Group:
        return self.groups["dp"]

    @property
    def pp(self) -> Group:
        return self.groups["pp"]

    @property
    def gp(self) -> Group:
        return self.groups["gp"]

    @property
    def stage(self) -> Group:
        return self.groups["stage"]

    @property
    def world(self) -> Group:
        return self.groups["world"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def build_groups(topology: Topology, rank: int) -> ProcessGroups:
    """Create every group of every dimension on every rank (same order everywhere).

    Groups of size one get no torch handle. Must be called collectively after
    :func:`matris.train.dist.init_distributed`.
    """
    if topology.world_size > 1 and not _initialized():
        raise RuntimeError("build_groups: world_size > 1 but no torch process group exists")
    plans: dict[str, list[list[int]]] = {dim: topology.groups(dim) for dim in DIMS}
    plans["stage"] = topology.stage_replicas()
    mine: dict[str, Group] = {}
    for name, rank_lists in plans.items():
        for members in rank_lists:
            handle = dist.new_group(members) if len(members) > 1 else None
            if rank in members:
                mine[name] = Group(tuple(members), handle)
    world_handle = dist.group.WORLD if topology.world_size > 1 else None
    mine["world"] = Group(tuple(range(topology.world_size)), world_handle)
    return ProcessGroups(topology=topology, rank=rank, coord=topology.coord(rank), groups=mine)


# --------------------------------------------------------------------------- collectives

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def all_reduce_(tensor: torch.Tensor, group: Group, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce; ``op`` ∈ {sum, mean, max, min}. Returns ``tensor``."""
    if op not in (*_OPS, "mean"):
        raise ValueError(f"op must be one of sum, mean, max, min; got {op!r}")
    if group.size == 1:
        return tensor
    work = tensor
    if not tensor.is_cuda and dist.get_backend(group.handle) == "nccl":
        # NCCL reduces CUDA tensors only; small CPU values (counts, norms) take a detour.
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=_OPS["sum" if op == "mean" else op], group=group.handle)
    if op == "mean":
        work.div_(group.size)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def all_reduce_dict(values: dict[str, float], group: Group, op: str = "sum") -> dict[str, float]:
    """All-reduce a dict of floats (same keys on every rank) in one float64 collective."""
    keys = sorted(values)
    buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    all_reduce_(buf, group, op)
    return dict(zip(keys, buf.tolist()))


def barrier(group: Group | None = None) -> None:
    """Block until every rank of ``group`` (default: world) arrives."""
    if group is not None and group.size == 1:
        return
    if _initialized():
        dist.barrier(group=None if group is None else group.handle)
        return
    from mpi4py import MPI

    MPI.COMM_WORLD.Barrier()


def broadcast_object(obj, root: int = 0):
    """Broadcast a picklable control-plane object from world rank ``root`` (via MPI).

    For small metadata only (paths, step numbers), never for data read from disk.
    """
    from mpi4py import MPI

    return MPI.COMM_WORLD.bcast(obj, root=root)


def allgather_object(obj) -> list:
    """Gather a small picklable object from every world rank (via MPI)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.allgather(obj)


# ------------------------------------------------------------------ gradient all-reduce

def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[int]]:
    """Consecutive index buckets of same dtype/device, each ≤ ``bucket_bytes`` (or one tensor)."""
    out: list[list[int]] = []
    size, key = 0, None
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        k = (t.dtype, t.device)
        if out and k == key and size + nbytes <= bucket_bytes:
            out[-1].append(i)
            size += nbytes
        else:
            out.append([i])
            size, key = nbytes, k
    return out


def allreduce_gradients(params: Iterable[torch.nn.Parameter], group: Group, op: str = "sum",
                        bucket_mb: float = 25.0) -> None:
    """All-reduce ``.grad`` of ``params`` over ``group`` in flat buckets of ~``bucket_mb`` MB.

    A parameter that has a gradient on some rank of the group but not on this one (e.g.
    an element embedding row block or an MoE expert this rank's batches did not touch)
    gets a zero gradient first, so the bucket layout is identical on every rank. A
    parameter that has no gradient on *any* rank keeps ``grad = None``, exactly as in a
    single process: the optimizer then skips it and keeps no state for it (for
    MatRIS-MoE, AdamW state only for the experts a step routed to, docs/moe.md).
    ``op`` is ``sum`` (losses already normalised by global counts, the trainer's
    convention) or ``mean``.
    """
    params = [p for p in params if p.requires_grad]
    touched = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    all_reduce_(touched, group, "max")  # touched on any rank of the group
    params = [p for p, t in zip(params, touched.tolist(), strict=True) if t > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if group.size == 1:
        return
    grads = [p.grad for p in params]
    for bucket in _buckets(grads, int(bucket_mb * 2**20)):
        flat = torch.cat([grads[i].reshape(-1) for i in bucket])
        all_reduce_(flat, group, op)
        offset = 0
        for i in bucket:
            n = grads[i].numel()
            grads[i].copy_(flat[offset:offset + n].view_as(grads[i]))
            offset += n


# ------------------------------------------------------------------------ point to point

_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64,
           torch.int32, torch.uint8, torch.bool]
_CODE = {dt: i for i, dt in enumerate(_DTYPES)}


def encode_meta(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Shapes and dtypes as int64 ``[n, (code, ndim, *dims) * n]``."""
    values = [len(tensors)]
    for t in tensors:
        if t.dtype not in _CODE:
            raise TypeError(f"cannot send dtype {t.dtype}; supported: {_DTYPES}")
        values += [_CODE[t.dtype], t.dim(), *t.shape]
    return torch.tensor(values, dtype=torch.int64)


def decode_meta(meta: torch.Tensor) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """Inverse of :func:`encode_meta`."""
    values = meta.tolist()
    out, pos = [], 1
    for _ in range(values[0]):
        code, ndim = values[pos], values[pos + 1]
        out.append((tuple(values[pos + 2:pos + 2 + ndim]), _DTYPES[code]))
        pos += 2 + ndim
    return out


def send(tensor: torch.Tensor, dst: int) -> None:
    """Blocking send of a contiguous tensor to global rank ``dst``."""
    dist.send(tensor.contiguous(), dst)


def recv(shape: Sequence[int], dtype: torch.dtype, src: int,
         device: torch.device | str = "cpu") -> torch.Tensor:
    """Blocking receive of a tensor of known shape/dtype from global rank ``src``."""
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    dist.recv(out, src)
    return out


def isend(tensor: torch.Tensor, dst: int):
    """Non-blocking send; returns the work handle (call ``.wait()``)."""
    return dist.isend(tensor.contiguous(), dst)


def irecv(out: torch.Tensor, src: int):
    """Non-blocking receive into ``out``; returns the work handle."""
    return dist.irecv(out, src)


def send_tensors(tensors: Sequence[torch.Tensor], dst: int,
                 device: torch.device | str | None = None) -> None:
    """Send a list of tensors of shapes unknown to the receiver: meta length, meta, payloads.

    ``device`` carries the two metadata messages (default: the first tensor's device, else
    CPU); with NCCL it must be the CUDA device.
    """
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    meta = encode_meta(tensors).to(device)
    send(torch.tensor([meta.numel()], dtype=torch.int64, device=device), dst)
    send(meta, dst)
    for t in tensors:
        send(t.detach(), dst)


def recv_tensors(src: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Receive what :func:`send_tensors` sent, onto ``device`` (the CUDA device with NCCL)."""
    n = recv((1,), torch.int64, src, device)
    meta = recv((int(n.item()),), torch.int64, src, device)
    return [recv(shape, dtype, src, device) for shape, dtype in decode_meta(meta.cpu())]
