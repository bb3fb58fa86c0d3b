"""Process launch: mpi4py for ranks, torch.distributed for tensors.

``mpirun -n N matris-train ...`` (or ``srun``, or a plain single process) starts N copies.
mpi4py gives the world rank/size and, through ``Split_type(COMM_TYPE_SHARED)``, the ranks
that share this node. Rank 0 starts the torch ``TCPStore`` on a port the OS picks (port 0, so
no fixed port and no bind/close/reuse race), broadcasts address and port over MPI, and every
rank joins the process group (gloo on CPU, NCCL on GPU) with a timeout. Nothing here reads
SLURM/PBS variables.

Rendezvous address (rank 0's):
- ``MATRIS_MASTER_ADDR`` if set (use it on clusters whose hostname resolves to the wrong
  interface, e.g. pick the InfiniBand/ethernet address routable from the other nodes);
- ``127.0.0.1`` when every rank is on one node;
- otherwise the address rank 0's hostname resolves to, skipping loopback addresses (Debian
  maps the hostname to 127.0.1.1); an error asks for ``MATRIS_MASTER_ADDR`` if none is left.
``MATRIS_MASTER_PORT`` pins the port (default: the OS picks a free one).

Threads per rank: torch under mpirun defaults to 1 intra-op thread per rank; we set
``max(1, cores_on_node // local_ranks)`` where ``cores_on_node`` is the union of the CPU
affinity masks of the node's ranks. An explicit request (argument, ``MATRIS_NUM_THREADS`` or
``OMP_NUM_THREADS``) is honoured but clamped to that bound: oversubscribed OpenMP threads
are catastrophically slow (40x measured on a 2-core VM).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import warnings
from dataclasses import dataclass

import torch

from .abort import install_abort_hook, set_rank


@dataclass(frozen=True)
class DistEnv:
    """What this process learned at launch.

    ``backend`` is ``None`` when no torch process group was created (a single process
    without ``force_group``); the comm wrappers treat that as a world of one.
    """

    rank: int
    world_size: int
    local_rank: int
    local_size: int
    threads: int
    device: torch.device
    backend: str | None
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_ENV: DistEnv | None = None


def threads_per_rank(node_cores: int, local_size: int, requested: int | None) -> int:
    """Threads for one rank: ``requested`` if given, clamped to ``node_cores // local_size``.

    Never returns less than 1, never more than the fair share of the node's cores.
    """
    if node_cores < 1 or local_size < 1:
        raise ValueError(f"node_cores={node_cores} and local_size={local_size} must be >= 1")
    share = max(1, node_cores // local_size)
    if requested is None:
        return share
    if requested < 1:
        raise ValueError(f"requested threads must be >= 1, got {requested}")
    return min(requested, share)


def _requested_threads(explicit: int | None) -> int | None:
    if explicit is not None:
        return explicit
    for var in ("MATRIS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var)
        if value:
            try:
                return int(value)
            except ValueError as err:
                raise ValueError(f"environment variable {var}={value!r} is not an integer") from err
    return None


def _routable_address() -> str:
    """Rank 0's address for a multi-node rendezvous (see module docstring)."""
    host = socket.gethostname()
    try:
        infos = socket.getaddrinfo(host, None, family=socket.AF_INET)
    except socket.gaierror as err:
        raise RuntimeError(
            f"cannot resolve this host's name {host!r} for the multi-node rendezvous; "
            "set MATRIS_MASTER_ADDR to an address of rank 0 reachable from every node") from err
    for info in infos:
        addr = info[4][0]
        if not addr.startswith("127."):
            return addr
    raise RuntimeError(
        f"hostname {host!r} resolves only to loopback addresses; for a multi-node run set "
        "MATRIS_MASTER_ADDR to an address of rank 0 reachable from every node")


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``train.device`` (auto, cpu, cuda) → this rank's torch device; CUDA: GPU
    ``local_rank`` mod the visible count, made the current device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but torch.cuda.is_available() is False")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if device != "cpu":
        raise ValueError(f"device must be one of auto, cpu, cuda; got {device!r}")
    return torch.device("cpu")


def _start_group(comm, rank: int, world: int, local_size: int, backend: str,
                 timeout_s: float) -> tuple[str, int]:
    """Rendezvous through a TCPStore that rank 0 hosts; returns (address, port)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = None
    info: tuple[str, int] | None = None
    if rank == 0:
        addr = os.environ.get("MATRIS_MASTER_ADDR")
        if not addr:
            addr = "127.0.0.1" if local_size == world else _routable_address()
        port = int(os.environ.get("MATRIS_MASTER_PORT", "0"))
        store = dist.TCPStore(addr, port, world, True, timeout=timeout, wait_for_workers=False)
        info = (addr, store.port)
    addr, port = comm.bcast(info, root=0)
    if store is None:
        store = dist.TCPStore(addr, port, world, False, timeout=timeout)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return addr, port


def init_distributed(*, device: str = "auto", timeout_s: float = 300.0,
                     threads: int | None = None, force_group: bool = False,
                     abort_hook: bool = True) -> DistEnv:
    """Start MPI, set threads, pick the device and join the torch process group.

    Args:
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda`` (GPU = local rank mod count).
        timeout_s: rendezvous and collective timeout, seconds.
        threads: requested intra-op threads per rank (clamped, see module docstring).
        force_group: also create a 1-rank gloo group when running as a single process.
        abort_hook: install the abort-all-ranks exception hook.
    Returns the :class:`DistEnv`; calling again returns the same object.
    """
    global _ENV
    if _ENV is not None:
        return _ENV
    if abort_hook:
        install_abort_hook()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    set_rank(rank)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    cores = set().union(*node.allgather(sorted(os.sched_getaffinity(0))))
    node.Free()
    requested = _requested_threads(threads)
    n_threads = threads_per_rank(len(cores), local_size, requested)
    if requested is not None and requested > n_threads and rank == 0:
        warnings.warn(f"{requested} threads per rank requested but {len(cores)} cores are shared "
                      f"by {local_size} ranks on this node; using {n_threads}", stacklevel=2)
    torch.set_num_threads(n_threads)
    dev = pick_device(device, local_rank)
    backend, addr, port = None, None, None
    if world > 1 or force_group:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        addr, port = _start_group(comm, rank, world, local_size, backend, timeout_s)
    if abort_hook:
        install_abort_hook()  # again: init_process_group wrapped sys.excepthook
    _ENV = DistEnv(rank, world, local_rank, local_size, n_threads, dev, backend, addr, port)
    return _ENV


def get_env() -> DistEnv:
    """The :class:`DistEnv` of :func:`init_distributed`; raises if it was not called."""
    if _ENV is None:
        raise RuntimeError("matris.train.dist.init_distributed() has not been called")
    return _ENV


def shutdown() -> None:
    """Destroy the torch process group (MPI finalises itself at exit)."""
    global _ENV
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        comm.Barrier()  # no rank tears down its gloo pairs while a peer still uses them
        dist.destroy_process_group()
        # Rank 0 hosts the TCPStore: keep it up until every rank has torn down (a peer
        # losing the store mid-teardown died with "terminate called without an active
        # exception" in a CI run).
        comm.Barrier()
    _ENV = None
    sys.stdout.flush()
