"""Memory-lean, twice-differentiable ops for the hot per-angle and per-edge paths.

Plain autograd keeps every intermediate of an elementwise chain alive twice: once for
the backward of the energy (forces) and again, with create_graph, for the backward of
that backward (force loss). On [A, 128] angle tensors this dominates memory. Each op
here is a pair of autograd Functions:

- ``_Op.forward`` computes the result without recording intermediates and saves only
  its inputs;
- ``_Op.backward`` applies ``_OpGrad``, whose forward evaluates analytic first
  derivatives (again saving only inputs and the incoming gradient);
- ``_OpGrad.backward`` (the double backward) is written in closed form. It runs once
  per op in the final backward and its memory is transient.

All three passes work on row chunks (`matris.nn.ops.CHUNK_ROWS`): temporaries stay
small, which keeps the heap from fragmenting and the data in cache.

GEMMs stay outside these ops, so nothing expensive is recomputed. Every op is checked
against its reference with gradcheck and gradgradcheck (tests/unit/model/test_fused.py).
Third derivatives are not supported (as in the official fused kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from matris.nn.ops import param_grads_wanted, row_chunks

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


def _tail_first_order(gy, c, g, wc, bc, wg, bg, eps, params: bool = True):
    """First derivatives (gc, gg, gwc, gbc, gwg, gbg) of the tail, as differentiable ops.

    Used without grad for the backward and, recorded, for the double backward (one
    autograd pass over these ops; LayerNorm's own backward is twice differentiable).
    """
    d = c.shape[-1]
    if bc is not None:
        nc, mean_c, rstd_c = torch.native_layer_norm(c, (d,), wc, bc, eps)
        ng, mean_g, rstd_g = torch.native_layer_norm(g, (d,), wg, bg, eps)
    else:
        rstd_c = torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + eps)
        rstd_g = torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
        nc, ng = c * rstd_c * wc, g * rstd_g * wg
    sig_c = torch.sigmoid(nc)
    s2 = torch.sigmoid(ng)
    g_nc = gy * s2 * sig_c * (1.0 + nc * (1.0 - sig_c))
    g_ng = gy * (nc * sig_c) * s2 * (1.0 - s2)
    if bc is not None:
        mask = [True, params, params]
        gc, gwc, gbc = torch.ops.aten.native_layer_norm_backward(
            g_nc, c, (d,), mean_c, rstd_c, wc, bc, mask)
        gg, gwg, gbg = torch.ops.aten.native_layer_norm_backward(
            g_ng, g, (d,), mean_g, rstd_g, wg, bg, mask)
        return gc, gg, gwc, gbc, gwg, gbg
    out = []
    for gn, x, w, rstd in ((g_nc, c, wc, rstd_c), (g_ng, g, wg, rstd_g)):
        xhat = x * rstd
        gxhat = gn * w
        out.append((rstd * (gxhat - xhat * (gxhat * xhat).mean(-1, keepdim=True)),
                    (gn * xhat).sum(0) if params else None))
    return out[0][0], out[1][0], out[0][1], None, out[1][1], None


class _GatedTail(Function):
    @staticmethod
    def forward(ctx, c, g, wc, bc, wg, bg, eps):
        ctx.eps = eps
        ctx.save_for_backward(c, g, wc, bc, wg, bg)
        d = c.shape[-1]
        out = torch.empty_like(c)
        for sl in row_chunks(c.shape[0]):
            if bc is not None:
                nc = F.layer_norm(c[sl], (d,), wc, bc, eps)
                ng = F.layer_norm(g[sl], (d,), wg, bg, eps)
            else:
                cs, gs = c[sl], g[sl]
                nc = cs * torch.rsqrt(cs.pow(2).mean(-1, keepdim=True) + eps) * wc
                ng = gs * torch.rsqrt(gs.pow(2).mean(-1, keepdim=True) + eps) * wg
            torch.mul(F.silu(nc), torch.sigmoid(ng), out=out[sl])
        return out

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
        want = param_grads_wanted()
        gc, gg = torch.empty_like(c), torch.empty_like(g)
        sums = [None] * 4
        for sl in row_chunks(c.shape[0]):
            res = _tail_first_order(gy[sl], c[sl], g[sl], wc, bc, wg, bg, eps, params=want)
            gc[sl], gg[sl] = res[0], res[1]
            sums = [a if b is None else (b if a is None else a + b)
                    for a, b in zip(sums, res[2:])]
        return (gc, gg, *sums)

    @staticmethod
    def backward(ctx, *grad_grads):
        gy, c, g, wc, bc, wg, bg = ctx.saved_tensors
        gg_rows, gg_params = grad_grads[:2], grad_grads[2:]
        d_gy, d_c, d_g = (torch.empty_like(x) for x in (gy, c, g))
        d_params = [None if p is None else torch.zeros_like(p) for p in (wc, bc, wg, bg)]
        # Rows are independent (norms act per row; parameter gradients sum over rows).
        for sl in row_chunks(c.shape[0]):
            rows = _tail_double(gy[sl], c[sl], g[sl], wc, bc, wg, bg, ctx.eps,
                                *(None if x is None else x[sl] for x in gg_rows),
                                *gg_params)
            d_gy[sl], d_c[sl], d_g[sl] = rows[:3]
            for k, val in enumerate(rows[3:]):
                if d_params[k] is not None:
                    d_params[k] += val
        return (d_gy, d_c, d_g, *d_params, None)


def _norm_stats(x: Tensor, layernorm: bool, eps: float):
    """(x̂, rstd) per row of LayerNorm (centred) or RMSNorm."""
    if layernorm:
        xc = x - x.mean(-1, keepdim=True)
        r = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
        return xc * r, r
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * r, r


def _proj(z: Tensor, xhat: Tensor, layernorm: bool) -> Tensor:
    """P(z) = z − mean(z) − x̂·mean(x̂ z) (RMSNorm: no mean term); self-adjoint, and the
    norm's Jacobian is ∂x̂/∂x = rstd·P."""
    out = z - xhat * (xhat * z).mean(-1, keepdim=True)
    return out - z.mean(-1, keepdim=True) if layernorm else out


def _tail_double(gy, c, g, wc, bc, wg, bg, eps, gg_c, gg_g, gg_wc, gg_bc, gg_wg, gg_bg):
    """Closed-form VJP of (gy, c, g, θ) ↦ (gc, gg, g_wc, g_bc, g_wg, g_bg).

    With x̂ = norm(x), u = x̂·w + b (core: silu, gate: sigmoid), gu = gy·σ(v)·silu'(u),
    gv = gy·silu(u)·σ'(v), and the norm backward gx = r·P(gu·w). Returns the gradients
    for gy, c, g, wc, bc, wg, bg (parameter ones summed over the rows given).
    """
    ln = bc is not None
    d = c.shape[-1]
    ch, rc = _norm_stats(c, ln, eps)
    gh, rg = _norm_stats(g, ln, eps)
    u = ch * wc + bc if ln else ch * wc
    v = gh * wg + bg if ln else gh * wg
    su = torch.sigmoid(u)
    s1 = u * su
    d1u = su * (1.0 + u * (1.0 - su))
    s2 = torch.sigmoid(v)
    d1v = s2 * (1.0 - s2)
    gu = gy * s2 * d1u
    gv = gy * s1 * d1v
    # Norm backward gx = r·P(gx̂), gx̂ = gu·w. Per branch: cotangent of gu (gam_q), the
    # parts of the x cotangent that do not depend on the gate (terms multiplying x̂ and
    # the argument of the final projection), and of w.
    branch = []
    for gg_x, gg_w, gg_b, xh, r, w, gq in ((gg_c, gg_wc, gg_bc, ch, rc, wc, gu),
                                           (gg_g, gg_wg, gg_bg, gh, rg, wg, gv)):
        gam_q = torch.zeros_like(gq)
        coef_xh = None  # multiplies x̂ in the x cotangent
        arg = None  # the x cotangent gets r·P(arg)
        gam_w = torch.zeros_like(w)
        if gg_x is not None:
            pg = r * _proj(gg_x, xh, ln)  # P is self-adjoint
            gam_q = gam_q + pg * w
            gam_w = gam_w + (gq * pg).sum(0)
            gxh = gq * w
            s1_ = (pg * gxh).sum(-1, keepdim=True) / r  # ⟨Γ, P(gx̂)⟩
            s2_ = (gg_x * xh).sum(-1, keepdim=True)
            bb = (gxh * xh).mean(-1, keepdim=True)
            coef_xh = -(r * r / d) * s1_
            arg = -(r / d) * s2_ * gxh - (r * bb) * gg_x
        if gg_w is not None:  # g_w = Σ gq·x̂
            gam_q = gam_q + gg_w * xh
            term = gg_w * gq
            arg = term if arg is None else arg + term
        if gg_b is not None:  # g_b = Σ gq
            gam_q = gam_q + gg_b
        branch.append((gam_q, coef_xh, arg, gam_w))
    (gam_gu, cx_c, arg_c, gam_wc), (gam_gv, cx_g, arg_g, gam_wg) = branch
    d2u = su * (1.0 - su) * (2.0 + u * (1.0 - 2.0 * su))
    d2v = d1v * (1.0 - 2.0 * s2)
    out = [gam_gu * s2 * d1u + gam_gv * s1 * d1v]  # gy
    gam_u = gy * (gam_gu * s2 * d2u + gam_gv * d1v * d1u)
    gam_v = gy * (gam_gu * d1u * d1v + gam_gv * s1 * d2v)
    # u = x̂·w + b: back to x through one projection per branch (same for v and g).
    for gam_lin, w, xh, r, cx, arg in ((gam_u, wc, ch, rc, cx_c, arg_c),
                                       (gam_v, wg, gh, rg, cx_g, arg_g)):
        total = gam_lin * w if arg is None else arg + gam_lin * w
        gx = r * _proj(total, xh, ln)
        out.append(gx if cx is None else gx + cx * xh)
    out.append(gam_wc + (gam_u * ch).sum(0))
    out.append(gam_u.sum(0) if ln else None)
    out.append(gam_wg + (gam_v * gh).sum(0))
    out.append(gam_v.sum(0) if ln else None)
    return out


def gated_tail(c: Tensor, g: Tensor, norm_c, norm_g) -> Tensor:
    """silu(norm_c(c)) ⊙ sigmoid(norm_g(g)) for (R, D) core/gate pre-activations.

    `norm_c`/`norm_g` are `torch.nn.LayerNorm` or `matris.nn.mlp.RMSNorm` modules.
    Saves only c and g (and, with create_graph, the incoming gradient).
    """
    bc = getattr(norm_c, "bias", None)
    bg = getattr(norm_g, "bias", None)
    return _GatedTail.apply(c, g, norm_c.weight, bc, norm_g.weight, bg, norm_c.eps)


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
        # Bilinear: out = Σ r ⊙ eps[in] → exact second derivatives in closed form.
        gout, r, eps = ctx.saved_tensors
        idx_in, idx_out, _ = ctx.meta
        g_rows = gout.index_select(0, idx_out)
        d_gout = d_r = d_eps = None
        rows_total = None
        if gg_r is not None:
            rows_total = gg_r * eps.index_select(0, idx_in)
            d_eps = eps.new_zeros(eps.shape).index_add_(0, idx_in, gg_r * g_rows)
        if gg_eps is not None:
            gg_in = gg_eps.index_select(0, idx_in)
            d_r = gg_in * g_rows
            term = gg_in * r
            rows_total = term if rows_total is None else rows_total + term
        if rows_total is not None:
            d_gout = gout.new_zeros(gout.shape).index_add_(0, idx_out, rows_total)
        return d_gout, d_r, d_eps, None, None, None


def gather_mul_scatter(r: Tensor, eps: Tensor, idx_in: Tensor, idx_out: Tensor,
                       n_out: int) -> Tensor:
    """(n_out, D) sums of r_a ⊙ eps[idx_in[a]] into rows idx_out[a], without
    materialising the per-row envelope products for autograd."""
    return _GatherMulScatter.apply(r, eps, idx_in, idx_out, n_out)
