"""Tagged point-to-point hand-offs between pipeline ranks (torch.distributed).

A hand-off is a list of tensors whose shapes the receiver does not know: a fixed-size
int64 header (count, then dtype code, ndim and dims per tensor; ``comm.encode_meta``)
followed by one message per tensor, all under the hand-off's tag. Messages between one
pair of ranks with one tag are matched in order, different tags independently, so any
number of hand-offs may be in flight between two ranks and be received in any order.

Sends are non-blocking (the buffers are kept until :meth:`PeerLinks.finish`); receives
block. Ranks are given as pipeline ranks and mapped to global ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from .comm import decode_meta, encode_meta

HEADER_LEN = 64  # int64 slots: room for 20 tensors of up to 1 dimension or 12 of 3


class PeerLinks:
    """Hand-offs between the ranks of one pipeline.

    Args:
        ranks: global rank of each pipeline rank (``groups.pp.ranks``).
        device: where received tensors live (the CUDA device under NCCL).
    """

    def __init__(self, ranks: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.ranks, self.device = tuple(ranks), torch.device(device)
        self.pending: list[tuple[object, torch.Tensor]] = []
        self.sent_bytes = 0

    def _header(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        meta = encode_meta(tensors)
        if meta.numel() > HEADER_LEN:
            raise ValueError(f"hand-off of {len(tensors)} tensors does not fit the header")
        header = torch.zeros(HEADER_LEN, dtype=torch.int64)
        header[: meta.numel()] = meta
        return header.to(self.device)

    def send(self, tensors: Sequence[torch.Tensor], peer: int, tag: int) -> None:
        """Post non-blocking sends of ``tensors`` to pipeline rank ``peer``."""
        dst = self.ranks[peer]
        for t in [self._header(tensors), *tensors]:
            t = t.detach().contiguous()
            self.pending.append((dist.isend(t, dst, tag=tag), t))
            self.sent_bytes += t.numel() * t.element_size()

    def ready(self, peer: int, tag: int) -> bool:
        """Blocking links are always 'ready' (the receive waits)."""
        return True

    def recv(self, peer: int, tag: int) -> list[torch.Tensor]:
        """Receive one hand-off from pipeline rank ``peer`` (blocks)."""
        src = self.ranks[peer]
        header = torch.empty(HEADER_LEN, dtype=torch.int64, device=self.device)
        dist.recv(header, src, tag=tag)
        out = []
        for shape, dtype in decode_meta(header.cpu()):
            t = torch.empty(shape, dtype=dtype, device=self.device)
            dist.recv(t, src, tag=tag)
            out.append(t)
        return out

    def finish(self) -> None:
        """Wait for every posted send (their buffers may be freed afterwards)."""
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()
