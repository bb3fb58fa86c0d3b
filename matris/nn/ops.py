"""Basic ops with lean double backward: row gather/scatter and SiLU.

PyTorch's own versions keep more than they need once a backward is recorded with
create_graph: the backward of ``index_select`` is an ``index_add`` that saves its whole
source tensor, and SiLU's create_graph backward is a chain of ~6 elementwise ops that
each save an input. These replacements save only indices (gather/scatter, mutually
each other's backward, so differentiable to any order) or the input and incoming
gradient (SiLU, with an analytic second derivative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


class _Gather(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return _Scatter.apply(g, index, ctx.rows), None


class _Scatter(Function):
    @staticmethod
    def forward(ctx, x, index, rows):
        ctx.save_for_backward(index)
        return x.new_zeros((rows, *x.shape[1:])).index_add_(0, index, x)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return _Gather.apply(g, index), None, None


def gather(x: Tensor, index: Tensor) -> Tensor:
    """x[index] along rows: (S, ...) → (R, ...)."""
    return _Gather.apply(x, index)


def scatter_sum(x: Tensor, index: Tensor, rows: int) -> Tensor:
    """Row sums of x (R, ...) into `rows` output rows by index: → (rows, ...)."""
    return _Scatter.apply(x, index, rows)


def _silu_d1(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return s, s * (1.0 + x * (1.0 - s))


class _Silu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _SiluGrad.apply(g, x)


class _SiluGrad(Function):
    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def backward(ctx, gg):
        g, x = ctx.saved_tensors
        s, d1 = _silu_d1(x)
        d2 = s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
        return gg * d1, gg * g * d2


def silu(x: Tensor) -> Tensor:
    """SiLU x·σ(x) saving only x (and, under create_graph, the incoming gradient)."""
    return _Silu.apply(x)


class _SiluSplit(Function):
    @staticmethod
    def forward(ctx, x, split):
        ctx.save_for_backward(x)
        ctx.split = split
        return F.silu(x[:, :split]), F.silu(x[:, split:])

    @staticmethod
    def backward(ctx, g1, g2):
        (x,) = ctx.saved_tensors
        if g1 is None:
            g1 = x.new_zeros(x.shape[0], ctx.split)
        if g2 is None:
            g2 = x.new_zeros(x.shape[0], x.shape[1] - ctx.split)
        return _SiluGrad.apply(torch.cat([g1, g2], dim=1), x), None


def silu_split(x: Tensor, split: int) -> tuple[Tensor, Tensor]:
    """(silu(x[:, :split]), silu(x[:, split:])) as contiguous tensors.

    Splitting after the activation (rather than slicing its output) avoids the
    zero-filled full-width gradients that slice backward creates.
    """
    return _SiluSplit.apply(x, split)
