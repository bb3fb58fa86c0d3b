"""Run G graph-parallel parts in one process, one thread each (tests and debugging).

`ThreadTransport` implements the exchange transport (``matris.train.dist.halo``) with a
shared mailbox and a barrier, so the real autograd Functions of the exchange run
unchanged, without MPI or torch.distributed. Each thread runs its own forward and
backward (CPU autograd runs on the calling thread), exactly as a rank would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor


class _Hub:
    def __init__(self, size: int, timeout: float):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: list[object] = [None] * size


class ThreadTransport:
    """Part ``rank`` of ``size`` parts sharing one `_Hub` (every call is collective)."""

    def __init__(self, hub: _Hub, rank: int):
        self.hub, self.rank, self.size = hub, rank, hub.size

    def _publish(self, value) -> list[object]:
        hub = self.hub
        hub.slots[self.rank] = value
        hub.barrier.wait()
        seen = list(hub.slots)
        hub.barrier.wait()  # everyone has read before any slot is reused
        return seen

    def exchange(self, send, recv_shapes, dtype, device):
        mail = [None if s is None else s.detach().clone() for s in send]
        boxes = self._publish(mail)
        out: list[Tensor | None] = []
        for q in range(self.size):
            if q == self.rank:
                out.append(None)
                continue
            got = boxes[q][self.rank]
            shape = tuple(recv_shapes[q])
            if got is None:
                got = torch.empty(shape, dtype=dtype, device=device)
            if tuple(got.shape) != shape:
                raise RuntimeError(f"part {self.rank} expected {shape} from part {q}, "
                                   f"got {tuple(got.shape)} (inconsistent plans)")
            out.append(got)
        return out

    def all_gather(self, x: Tensor) -> list[Tensor]:
        return [t.clone() for t in self._publish(x.detach().clone())]


def run_parts(fn: Callable[[int, ThreadTransport], object], size: int,
              timeout: float = 120.0) -> list[object]:
    """Call ``fn(rank, transport)`` for each of ``size`` parts in its own thread.

    Returns the results in part order. If any part raises, the barrier is broken so the
    others stop waiting, and the first exception is re-raised here.
    """
    hub = _Hub(size, timeout)
    results: list[object] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def work(rank: int) -> None:
        try:
            results[rank] = fn(rank, ThreadTransport(hub, rank))
        except BaseException as err:  # re-raised in the caller
            errors[rank] = err
            hub.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if e is not None
                  and not isinstance(e, threading.BrokenBarrierError)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results
