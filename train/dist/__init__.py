"""Launch, topology, abort hook and communication: the only part of ``matris.train`` that
imports mpi4py (lazily, inside functions, so data-loader workers never initialise MPI) and
torch.distributed."""

from .abort import install_abort_hook
from .comm import (
    Group,
    ProcessGroups,
    all_reduce_,
    all_reduce_dict,
    allgather_object,
    allreduce_gradients,
    barrier,
    broadcast_object,
    build_groups,
    decode_meta,
    encode_meta,
    irecv,
    isend,
    recv,
    recv_tensors,
    send,
    send_tensors,
)
from .launch import DistEnv, get_env, init_distributed, shutdown, threads_per_rank
from .topology import Coord, Topology, TopologyError

__all__ = [
    "Coord", "DistEnv", "Group", "ProcessGroups", "Topology", "TopologyError",
    "all_reduce_", "all_reduce_dict", "allgather_object", "allreduce_gradients", "barrier",
    "broadcast_object", "build_groups", "decode_meta", "encode_meta", "get_env",
    "init_distributed", "install_abort_hook", "irecv", "isend", "recv", "recv_tensors", "send",
    "send_tensors", "shutdown", "threads_per_rank",
]
