"""Memory-lean, twice-differentiable ops for the hot per-angle and per-edge paths.

Plain autograd keeps every intermediate of an elementwise chain alive twice: once for
the backward of the energy (forces) and again, with create_graph, for the backward of
that backward (force loss). On [A, 128] angle tensors this dominates memory. Each op
here is a pair of autograd Functions:

- ``_Op.forward`` computes the result without recording intermediates and saves only
  its inputs;
- ``_Op.backward`` applies ``_OpGrad``, whose forward evaluates analytic first
  derivatives (again saving only inputs and the incoming gradient);
- ``_OpGrad.backward`` (the double backward) recomputes the op from its inputs with
  the plain differentiable reference implementation and differentiates it twice with
  autograd. It runs once per op in the final backward and its memory is transient.

GEMMs stay outside these ops, so nothing expensive is recomputed. Every op is checked
against its reference with gradcheck and gradgradcheck (tests/unit/model/test_fused.py).
Third derivatives are not supported (as in the official fused kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

# --------------------------------------------------------------------------- helpers


def _leaves(tensors):
    """Detached copies that require grad where the original is floating point."""
    out = []
    for t in tensors:
        if isinstance(t, Tensor) and t.is_floating_point():
            out.append(t.detach().requires_grad_(True))
        else:
            out.append(t)
    return out


def _double_backward(reference, inputs, grad_out, grad_grads, extra):
    """VJP of (grad_out, inputs) ↦ ∂⟨reference(inputs), grad_out⟩/∂inputs against
    `grad_grads` (one entry per input, None where absent); returns gradients for each
    grad_out tensor followed by one per input."""
    with torch.enable_grad():
        leaves = _leaves(inputs)
        g_out = [g.detach().requires_grad_(True) for g in grad_out]
        outs = reference(*leaves, *extra)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pos = [k for k, x in enumerate(leaves) if isinstance(x, Tensor) and x.requires_grad]
        firsts = torch.autograd.grad(outs, [leaves[k] for k in pos], g_out,
                                     create_graph=True, allow_unused=True)
        pairs = [(f, grad_grads[k]) for f, k in zip(firsts, pos)
                 if f is not None and grad_grads[k] is not None]
        if not pairs:
            return [None] * (len(g_out) + len(leaves))
        wrt = g_out + [leaves[k] for k in pos]
        res = torch.autograd.grad([p[0] for p in pairs], wrt, [p[1] for p in pairs],
                                  allow_unused=True)
    out = list(res[:len(g_out)]) + [None] * len(leaves)
    for j, k in enumerate(pos):
        out[len(g_out) + k] = res[len(g_out) + j]
    return out


# --------------------------------------------------------------------------- gated tail


def gated_tail_reference(c: Tensor, g: Tensor, wc: Tensor, bc: Tensor | None, wg: Tensor,
                         bg: Tensor | None, eps: float) -> Tensor:
    """silu(Norm(c)) ⊙ sigmoid(Norm(g)); LayerNorm when biases are given, else RMSNorm."""
    d = c.shape[-1]
    if bc is not None:
        nc = F.layer_norm(c, (d,), wc, bc, eps)
        ng = F.layer_norm(g, (d,), wg, bg, eps)
    else:
        nc = c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + eps) * wc
        ng = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps) * wg
    return F.silu(nc) * torch.sigmoid(ng)


def _norm_fwd(x, w, b, eps):
    """(output, normalised x̂, rstd) of LayerNorm (b given) or RMSNorm."""
    if b is not None:
        out, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), w, b, eps)
        return out, mean, rstd
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * rstd * w, None, rstd


def _norm_bwd(gout, x, w, b, mean, rstd):
    """(grad_x, grad_w, grad_b) of LayerNorm/RMSNorm, not recorded."""
    if b is not None:
        gx, gw, gb = torch.ops.aten.native_layer_norm_backward(
            gout, x, (x.shape[-1],), mean, rstd, w, b, [True, True, True])
        return gx, gw, gb
    xhat = x * rstd
    gw = (gout * xhat).sum(0)
    gxhat = gout * w
    gx = rstd * (gxhat - xhat * (gxhat * xhat).mean(-1, keepdim=True))
    return gx, gw, None


class _GatedTail(Function):
    @staticmethod
    def forward(ctx, c, g, wc, bc, wg, bg, eps):
        ctx.eps = eps
        ctx.save_for_backward(c, g, wc, bc, wg, bg)
        nc, _, _ = _norm_fwd(c, wc, bc, eps)
        ng, _, _ = _norm_fwd(g, wg, bg, eps)
        return F.silu(nc).mul_(torch.sigmoid(ng))

    @staticmethod
    def backward(ctx, gy):
        c, g, wc, bc, wg, bg = ctx.saved_tensors
        grads = _GatedTailGrad.apply(gy, c, g, wc, bc, wg, bg, ctx.eps)
        return (*grads, None)


class _GatedTailGrad(Function):
    @staticmethod
    def forward(ctx, gy, c, g, wc, bc, wg, bg, eps):
        ctx.eps = eps
        ctx.save_for_backward(gy, c, g, wc, bc, wg, bg)
        nc, mean_c, rstd_c = _norm_fwd(c, wc, bc, eps)
        ng, mean_g, rstd_g = _norm_fwd(g, wg, bg, eps)
        s2 = torch.sigmoid(ng)
        s1 = F.silu(nc)
        g_nc = torch.ops.aten.silu_backward(gy * s2, nc)
        g_ng = torch.ops.aten.sigmoid_backward(gy * s1, s2)
        gc, gwc, gbc = _norm_bwd(g_nc, c, wc, bc, mean_c, rstd_c)
        gg, gwg, gbg = _norm_bwd(g_ng, g, wg, bg, mean_g, rstd_g)
        return gc, gg, gwc, gbc, gwg, gbg

    @staticmethod
    def backward(ctx, ggc, ggg, ggwc, ggbc, ggwg, ggbg):
        gy, c, g, wc, bc, wg, bg = ctx.saved_tensors
        res = _double_backward(gated_tail_reference, (c, g, wc, bc, wg, bg), (gy,),
                               (ggc, ggg, ggwc, ggbc, ggwg, ggbg), (ctx.eps,))
        return (*res, None)


def gated_tail(c: Tensor, g: Tensor, norm_c, norm_g) -> Tensor:
    """silu(norm_c(c)) ⊙ sigmoid(norm_g(g)) for (R, D) core/gate pre-activations.

    `norm_c`/`norm_g` are `torch.nn.LayerNorm` or `matris.nn.mlp.RMSNorm` modules.
    Saves only c and g (and, with create_graph, the incoming gradient).
    """
    bc = getattr(norm_c, "bias", None)
    bg = getattr(norm_g, "bias", None)
    return _GatedTail.apply(c, g, norm_c.weight, bc, norm_g.weight, bg, norm_c.eps)


# --------------------------------------------------------------------------- attention


def smooth_attention_reference(raw, env, m, src, idx_t, idx_s, n_out: int, bound: float):
    """[Σ_t w_T⊙m, Σ_t w_T, Σ_s w_S⊙m, Σ_s w_S] (n_out, 4D) with
    w = env·exp(c·tanh(raw/c)) gathered from `src` rows (src None: row-aligned)."""
    d = m.shape[1]
    w = torch.exp(torch.tanh(raw * (1.0 / bound)) * bound)
    if env is not None:
        w = w * env
    if src is not None:
        w = w.index_select(0, src)
    w_t, w_s = w[:, :d], w[:, d:]
    z = m.new_zeros(n_out, d)
    return torch.cat([z.index_add(0, idx_t, w_t * m), z.index_add(0, idx_t, w_t),
                      z.index_add(0, idx_s, w_s * m), z.index_add(0, idx_s, w_s)], dim=1)


class _SmoothAttention(Function):
    @staticmethod
    def forward(ctx, raw, env, m, src, idx_t, idx_s, n_out, bound):
        ctx.meta = (src, idx_t, idx_s, n_out, bound)
        ctx.save_for_backward(raw, env, m)
        d = m.shape[1]
        w = torch.exp(torch.tanh(raw * (1.0 / bound)) * bound)
        if env is not None:
            w.mul_(env)
        if src is not None:
            w = w.index_select(0, src)
        out = m.new_zeros(n_out, 4 * d)
        out[:, d:2 * d].index_add_(0, idx_t, w[:, :d])
        out[:, 3 * d:].index_add_(0, idx_s, w[:, d:])
        w[:, :d].mul_(m)
        w[:, d:].mul_(m)
        out[:, :d].index_add_(0, idx_t, w[:, :d])
        out[:, 2 * d:3 * d].index_add_(0, idx_s, w[:, d:])
        return out

    @staticmethod
    def backward(ctx, gout):
        raw, env, m = ctx.saved_tensors
        g_raw, g_env, g_m = _SmoothAttentionGrad.apply(gout, raw, env, m, *ctx.meta)
        return g_raw, g_env, g_m, None, None, None, None, None


class _SmoothAttentionGrad(Function):
    @staticmethod
    def forward(ctx, gout, raw, env, m, src, idx_t, idx_s, n_out, bound):
        ctx.meta = (src, idx_t, idx_s, n_out, bound)
        ctx.save_for_backward(gout, raw, env, m)
        d = m.shape[1]
        th = torch.tanh(raw * (1.0 / bound))
        e = torch.exp(th * bound)  # (S, 2D)
        w = e * env if env is not None else e
        gn_t, gd_t, gn_s, gd_s = gout.split(d, dim=1)
        # Per-row cotangents of the weights (rows of m), then reduce to source rows.
        g_wt = torch.addcmul(gd_t.index_select(0, idx_t), m, gn_t.index_select(0, idx_t))
        g_ws = torch.addcmul(gd_s.index_select(0, idx_s), m, gn_s.index_select(0, idx_s))
        g_w = torch.cat([g_wt, g_ws], dim=1)
        wr = w.index_select(0, src) if src is not None else w
        g_m = wr[:, :d] * gn_t.index_select(0, idx_t)
        g_m.addcmul_(wr[:, d:], gn_s.index_select(0, idx_s))
        if src is not None:
            g_w = g_w.new_zeros(w.shape).index_add_(0, src, g_w)
        g_e = g_w * env if env is not None else g_w  # ∂/∂e of w = env·e
        g_env = (g_w * e).sum(1, keepdim=True) if env is not None else None
        g_raw = g_e * e * (1.0 - th * th)
        return g_raw, g_env, g_m

    @staticmethod
    def backward(ctx, gg_raw, gg_env, gg_m):
        gout, raw, env, m = ctx.saved_tensors
        res = _double_backward(smooth_attention_reference, (raw, env, m), (gout,),
                               (gg_raw, gg_env, gg_m), ctx.meta)
        return (*res, None, None, None, None, None)


def smooth_attention(raw: Tensor, env: Tensor | None, m: Tensor, src: Tensor | None,
                     idx_t: Tensor, idx_s: Tensor, n_out: int, bound: float) -> Tensor:
    """Smooth attention sums of messages m (R, D) into n_out rows.

    Args:
        raw: (S, 2D) raw logits (target | source halves) on source rows.
        env: (S, 1) cutoff envelope of each source row, or None (no envelope).
        m: (R, D) messages.
        src: (R,) source row of each message row, or None when S = R.
        idx_t, idx_s: (R,) target-grouping and source-grouping output rows.
        n_out: number of output rows.
        bound: logit bound c.

    Returns:
        (n_out, 4D): numerator and denominator of the target grouping, then of the
        source grouping (plain sums: a graph-parallel part can add its partials).
    """
    return _SmoothAttention.apply(raw, env, m, src, idx_t, idx_s, n_out, bound)


# --------------------------------------------------------------------------- envelope sum


def gather_mul_scatter_reference(r, eps, idx_in, idx_out, n_out: int):
    """out[idx_out[a]] += r_a ⊙ eps[idx_in[a]]."""
    return r.new_zeros(n_out, r.shape[1]).index_add(0, idx_out, r * eps.index_select(0, idx_in))


class _GatherMulScatter(Function):
    @staticmethod
    def forward(ctx, r, eps, idx_in, idx_out, n_out):
        ctx.meta = (idx_in, idx_out, n_out)
        ctx.save_for_backward(r, eps)
        prod = eps.index_select(0, idx_in).mul_(r)
        return r.new_zeros(n_out, r.shape[1]).index_add_(0, idx_out, prod)

    @staticmethod
    def backward(ctx, gout):
        r, eps = ctx.saved_tensors
        g_r, g_eps = _GatherMulScatterGrad.apply(gout, r, eps, *ctx.meta)
        return g_r, g_eps, None, None, None


class _GatherMulScatterGrad(Function):
    @staticmethod
    def forward(ctx, gout, r, eps, idx_in, idx_out, n_out):
        ctx.meta = (idx_in, idx_out, n_out)
        ctx.save_for_backward(gout, r, eps)
        g_rows = gout.index_select(0, idx_out)
        g_r = eps.index_select(0, idx_in).mul_(g_rows)
        g_eps = eps.new_zeros(eps.shape).index_add_(0, idx_in, g_rows.mul_(r))
        return g_r, g_eps

    @staticmethod
    def backward(ctx, gg_r, gg_eps):
        gout, r, eps = ctx.saved_tensors
        res = _double_backward(gather_mul_scatter_reference, (r, eps), (gout,),
                               (gg_r, gg_eps), ctx.meta)
        return (*res, None, None, None)


def gather_mul_scatter(r: Tensor, eps: Tensor, idx_in: Tensor, idx_out: Tensor,
                       n_out: int) -> Tensor:
    """(n_out, D) sums of r_a ⊙ eps[idx_in[a]] into rows idx_out[a], without
    materialising the per-row envelope products for autograd."""
    return _GatherMulScatter.apply(r, eps, idx_in, idx_out, n_out)
