"""Basic ops with lean double backward: row gather/scatter and SiLU.

PyTorch's own versions keep more than they need once a backward is recorded with
create_graph: the backward of ``index_select`` is an ``index_add`` that saves its whole
source tensor, and SiLU's create_graph backward is a chain of ~6 elementwise ops that
each save an input. These replacements save only indices (gather/scatter, mutually
each other's backward, so differentiable to any order) or the input and incoming
gradient (SiLU, with an analytic second derivative).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from matris.nn.deferred import pending_queue, record_edges, thread_setting, weight_wanted

CHUNK_ROWS = 4096  # rows per chunk: temporaries of the fused ops stay cache-sized


def row_chunks(n: int, size: int | None = None):
    """Slices covering range(n) in pieces of `size` (default `CHUNK_ROWS`) rows."""
    size = size or CHUNK_ROWS
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


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


# --------------------------------------------------------------------------- SiLU + linear
_STATE = threading.local()


def no_param_grads():
    """Inside, backward passes of the fused ops skip parameter gradients.

    Valid when the caller differentiates only with respect to inputs (positions, strain,
    features), as the force backward of `matris.outputs` does: parameter gradients there
    are discarded anyway. Second-order parameter gradients (force loss) are unaffected.
    """
    return thread_setting(_STATE, "skip", True, False)


def param_grads_wanted() -> bool:
    return not getattr(_STATE, "skip", False)


class _SiluLinear(Function):
    @staticmethod
    def forward(ctx, x, *wb):
        record_edges(ctx, (x, *wb))
        n = len(wb) // 2
        ctx.n = n
        ctx.save_for_backward(x)
        ctx.wb = wb  # not saved tensors: see the note above matris.nn.deferred._Linear
        width = x.shape[1] // n
        outs = [x.new_empty(x.shape[0], wb[2 * k].shape[0]) for k in range(n)]
        for sl in row_chunks(x.shape[0]):
            a = F.silu(x[sl])
            for k in range(n):
                w, b = wb[2 * k], wb[2 * k + 1]
                chunk = a[:, k * width:(k + 1) * width]
                if b is not None:
                    torch.addmm(b, chunk, w.t(), out=outs[k][sl])
                else:
                    torch.mm(chunk, w.t(), out=outs[k][sl])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *gys):
        (x,), wb = ctx.saved_tensors, ctx.wb
        # Which parameter gradients this pass needs (inputs 1 + 2k: W_k, 2 + 2k: b_k;
        # never for a None bias, whose needs_input_grad is False).
        wanted = tuple(weight_wanted(ctx, 1 + j) for j in range(2 * ctx.n))
        return _SiluLinearGrad.apply(ctx.n, (wanted, pending_queue()), x, *wb, *gys)


def _pre_grad(gys, ws, sl):
    """Gradient of the activation on rows `sl`: [gy_k @ W_k]_k concatenated."""
    parts = [gy[sl] @ w for gy, w in zip(gys, ws)]
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class _SiluLinearGrad(Function):
    @staticmethod
    def forward(ctx, n, spec, x, *rest):
        wanted, queue = spec  # per weight/bias: gradient needed; deferred-W queue or None
        record_edges(ctx, (n, spec, x, *rest))
        wb, gys = rest[:2 * n], rest[2 * n:]
        ctx.n = n
        ctx.save_for_backward(x, *gys)
        ctx.wb = wb  # not saved tensors: see the note above matris.nn.deferred._Linear
        ws = wb[0::2]
        want_w = wanted[0::2]
        compute_w = [w_k and queue is None for w_k in want_w]
        width = x.shape[1] // n
        gx = torch.empty_like(x)
        g_ws = [torch.zeros_like(w) if c else None for w, c in zip(ws, compute_w)]
        for sl in row_chunks(x.shape[0]):
            xs = x[sl]
            torch.ops.aten.silu_backward.grad_input(_pre_grad(gys, ws, sl), xs, grad_input=gx[sl])
            if any(want_w):
                a = F.silu(xs)
                for k, gy in enumerate(gys):
                    cols = slice(k * width, (k + 1) * width)
                    if compute_w[k]:
                        g_ws[k].addmm_(gy[sl].t(), a[:, cols])
                    elif want_w[k]:
                        queue.push(ws[k], gy[sl], a[:, cols])
        out = [gx]
        for k, (g_w, gy) in enumerate(zip(g_ws, gys)):
            out += [g_w, gy.sum(0) if wanted[2 * k + 1] else None]
        return tuple(out)

    @staticmethod
    def backward(ctx, ggx, *gg_wb):
        n = ctx.n
        x, *gys = ctx.saved_tensors
        wb = ctx.wb
        ws, bs = wb[0::2], wb[1::2]
        width = x.shape[1] // n
        d_x = torch.zeros_like(x)
        d_gys = [torch.zeros_like(gy) for gy in gys]
        queue = pending_queue()
        want_w = [ggx is not None and weight_wanted(ctx, 3 + 2 * k) for k in range(n)]
        d_ws = [torch.zeros_like(w) if want and queue is None else None
                for w, want in zip(ws, want_w)]
        for sl in row_chunks(x.shape[0]):
            xs = x[sl]
            s = torch.sigmoid(xs)
            d1 = s * (1.0 + xs * (1.0 - s))
            a = None
            if ggx is not None:
                ggs = ggx[sl]
                gam = ggs * d1  # cotangent of the pre-activation gradient g_a
                d2 = s * (1.0 - s) * (2.0 + xs * (1.0 - 2.0 * s))
                d_x[sl] += ggs * _pre_grad(gys, ws, sl) * d2
                for k, (gy, w) in enumerate(zip(gys, ws)):
                    gam_k = gam[:, k * width:(k + 1) * width]
                    d_gys[k][sl] += gam_k @ w.t()
                    if d_ws[k] is not None:
                        d_ws[k].addmm_(gy[sl].t(), gam_k)
                    elif want_w[k]:
                        queue.push(w, gy[sl], gam_k)
            for k, (gy, b) in enumerate(zip(gys, bs)):
                gg_w, gg_b = gg_wb[2 * k], gg_wb[2 * k + 1]
                cols = slice(k * width, (k + 1) * width)
                if gg_w is not None:
                    a = F.silu(xs) if a is None else a
                    d_gys[k][sl] += a[:, cols] @ gg_w.t()
                    d_x[sl, cols] += (gy[sl] @ gg_w) * d1[:, cols]
                if gg_b is not None and b is not None:
                    d_gys[k][sl] += gg_b
        d_wb = []
        for d_w in d_ws:
            d_wb += [d_w, None]
        return (None, None, d_x, *d_wb, *d_gys)


def silu_linear(x: Tensor, weights: list[Tensor], biases: list[Tensor | None]) -> tuple:
    """Split x (R, n·h) into n column chunks and return silu(chunk_k) @ W_kᵀ + b_k.

    Saves only x (and, under create_graph, the incoming gradients): the activation is
    recomputed from x where its value is needed, so neither silu(x) nor its gradient is
    kept for the force-loss backward. Replaces SiLU followed by n Linear layers.
    """
    wb = []
    for w, b in zip(weights, biases):
        wb += [w, b]
    return _SiluLinear.apply(x, *wb)
