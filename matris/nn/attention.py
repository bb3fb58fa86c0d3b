"""Smooth attention sums with lean, closed-form first and second derivatives.

Per channel, for message rows a with weights w_a = env_a·exp(c·tanh(raw_a/c)):
[Σ_t w_T⊙m, Σ_t w_T, Σ_s w_S⊙m, Σ_s w_S] grouped by the target and source index. The
autograd pattern (forward / first-derivative Function / closed-form double backward,
all on row chunks) is the one described in `matris.nn.fused`; checked with gradcheck
and gradgradcheck in tests/unit/model/test_fused.py.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from matris.nn.ops import row_chunks


def _weights(raw: Tensor, env: Tensor | None, bound: float) -> Tensor:
    w = torch.exp(torch.tanh(raw * (1.0 / bound)) * bound)
    return w.mul_(env) if env is not None else w


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
        out = m.new_zeros(n_out, 4 * d)
        w_src = _weights(raw, env, bound) if src is not None else None
        for sl in row_chunks(m.shape[0]):
            if src is None:
                w = _weights(raw[sl], None if env is None else env[sl], bound)
            else:
                w = w_src.index_select(0, src[sl])
            it, is_, ms = idx_t[sl], idx_s[sl], m[sl]
            out[:, d:2 * d].index_add_(0, it, w[:, :d])
            out[:, 3 * d:].index_add_(0, is_, w[:, d:])
            w[:, :d].mul_(ms)
            w[:, d:].mul_(ms)
            out[:, :d].index_add_(0, it, w[:, :d])
            out[:, 2 * d:3 * d].index_add_(0, is_, w[:, d:])
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
        gn_t, gd_t, gn_s, gd_s = gout.split(d, dim=1)
        g_m = torch.empty_like(m)
        if src is None:
            g_raw = torch.empty_like(raw)
            g_env = torch.empty_like(env) if env is not None else None
        else:
            th_src = torch.tanh(raw * (1.0 / bound))
            e_src = torch.exp(th_src * bound)
            w_src = e_src * env if env is not None else e_src
            g_w_src = torch.zeros_like(raw)
        for sl in row_chunks(m.shape[0]):
            it, is_, ms = idx_t[sl], idx_s[sl], m[sl]
            nt, ns = gn_t.index_select(0, it), gn_s.index_select(0, is_)
            # Per-row cotangents of the weights (rows of m).
            g_w = torch.cat([torch.addcmul(gd_t.index_select(0, it), ms, nt),
                             torch.addcmul(gd_s.index_select(0, is_), ms, ns)], dim=1)
            if src is None:
                th = torch.tanh(raw[sl] * (1.0 / bound))
                e = torch.exp(th * bound)
                w = e * env[sl] if env is not None else e
                if env is not None:
                    g_env[sl] = (g_w * e).sum(1, keepdim=True)
                # ∂w/∂raw = w·(1 − th²)
                torch.mul(g_w * w, 1.0 - th * th, out=g_raw[sl])
            else:
                w = w_src.index_select(0, src[sl])
                g_w_src.index_add_(0, src[sl], g_w)
            torch.mul(w[:, :d], nt, out=g_m[sl])
            g_m[sl].addcmul_(w[:, d:], ns)
        if src is not None:
            g_env = (g_w_src * e_src).sum(1, keepdim=True) if env is not None else None
            g_raw = g_w_src * w_src * (1.0 - th_src * th_src)
        return g_raw, g_env, g_m

    @staticmethod
    def backward(ctx, gg_raw, gg_env, gg_m):
        gout, raw, env, m = ctx.saved_tensors
        src, idx_t, idx_s, n_out, bound = ctx.meta
        if src is not None:  # edge rows gathering bond rows: one piece (E ≪ A)
            res = _smooth_attention_double(gout, raw, env, m, src, idx_t, idx_s, n_out, bound,
                                           gg_raw, gg_env, gg_m)
            return (*res, None, None, None, None, None)
        # Angle rows are independent given gout: run on row chunks (small temporaries).
        d_gout = torch.zeros_like(gout)
        d_raw, d_m = torch.zeros_like(raw), torch.zeros_like(m)
        d_env = torch.zeros_like(env) if env is not None else None
        for sl in row_chunks(m.shape[0]):
            part = _smooth_attention_double(
                gout, raw[sl], None if env is None else env[sl], m[sl], None, idx_t[sl],
                idx_s[sl], n_out, bound, *(None if x is None else x[sl]
                                           for x in (gg_raw, gg_env, gg_m)))
            d_gout += part[0]
            for out, val in ((d_raw, part[1]), (d_env, part[2]), (d_m, part[3])):
                if out is not None and val is not None:
                    out[sl] = val
        return d_gout, d_raw, d_env, d_m, None, None, None, None, None


def _smooth_attention_double(gout, raw, env, m, src, idx_t, idx_s, n_out, bound,
                             gg_raw, gg_env, gg_m):
    """Analytic VJP of (gout, raw, env, m) ↦ (g_raw, g_env, g_m) (see _SmoothAttentionGrad).

    Notation: e = exp(c·th), th = tanh(raw/c), w = env·e, h = ∂w/∂raw = w(1 − th²);
    G_w (source rows) = Σ over message rows of [m·Gn + Gd] (T | S halves);
    g_raw = G_w·h, g_env = Σ_ch G_w·e, g_m = w_T·Gn_T + w_S·Gn_S.
    """
    d = m.shape[1]
    th = torch.tanh(raw * (1.0 / bound))
    e = torch.exp(th * bound)
    sech2 = 1.0 - th * th
    w = e * env if env is not None else e
    h = w * sech2
    gn_t, gd_t, gn_s, gd_s = (x.index_select(0, i) for x, i in zip(
        gout.split(d, dim=1), (idx_t, idx_t, idx_s, idx_s)))
    d_gn_t = d_gd_t = d_gn_s = d_gd_s = None
    d_m = d_raw = d_env = None
    need_gw = gg_raw is not None or gg_env is not None
    if need_gw:
        g_w = torch.cat([torch.addcmul(gd_t, m, gn_t), torch.addcmul(gd_s, m, gn_s)], dim=1)
        if src is not None:
            g_w = g_w.new_zeros(w.shape).index_add_(0, src, g_w)
        # Cotangent of G_w, then of the per-row weight cotangents.
        gam = torch.zeros_like(w)
        d_raw = torch.zeros_like(raw)
        if gg_raw is not None:
            gam = gam + gg_raw * h
            d_raw = d_raw + gg_raw * g_w * (h * (sech2 - (2.0 / bound) * th))
        if gg_env is not None:
            gam = gam + gg_env * e
            d_raw = d_raw + gg_env * g_w * (e * sech2)
        if env is not None and gg_raw is not None:
            d_env = (gg_raw * g_w * e * sech2).sum(1, keepdim=True)
        rows = gam.index_select(0, src) if src is not None else gam
        gam_t, gam_s = rows[:, :d], rows[:, d:]
        d_gn_t, d_gd_t = gam_t * m, gam_t
        d_gn_s, d_gd_s = gam_s * m, gam_s
        d_m = gam_t * gn_t + gam_s * gn_s
    if gg_m is not None:
        wr = w.index_select(0, src) if src is not None else w
        d_gn_t = gg_m * wr[:, :d] if d_gn_t is None else d_gn_t + gg_m * wr[:, :d]
        d_gn_s = gg_m * wr[:, d:] if d_gn_s is None else d_gn_s + gg_m * wr[:, d:]
        d_wr = torch.cat([gg_m * gn_t, gg_m * gn_s], dim=1)
        d_w = d_wr.new_zeros(w.shape).index_add_(0, src, d_wr) if src is not None else d_wr
        d_raw = d_w * h if d_raw is None else d_raw + d_w * h
        if env is not None:
            d_env_w = (d_w * e).sum(1, keepdim=True)
            d_env = d_env_w if d_env is None else d_env + d_env_w
    d_gout = gout.new_zeros(gout.shape)
    for k, (val, idx) in enumerate(((d_gn_t, idx_t), (d_gd_t, idx_t), (d_gn_s, idx_s),
                                    (d_gd_s, idx_s))):
        if val is not None:
            d_gout[:, k * d:(k + 1) * d].index_add_(0, idx, val)
    if env is None:
        d_env = None
    return d_gout, d_raw, d_env, d_m


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
