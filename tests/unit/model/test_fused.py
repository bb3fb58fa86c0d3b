"""Fused ops equal their plain references, with gradcheck and gradgradcheck."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from matris.nn import attention, fused, ops


@pytest.fixture(autouse=True, params=[4096, 3], ids=["one_chunk", "chunks_of_3"])
def chunk_rows(request, monkeypatch):
    """Run every check with one row chunk and with many (double backward chunking)."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", request.param)


def _rand(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("layernorm", [True, False])
def test_gated_tail(layernorm):
    gen = torch.Generator().manual_seed(0)
    c, g = _rand(7, 5, gen=gen), _rand(7, 5, gen=gen)
    wc, wg = 1 + 0.3 * _rand(5, gen=gen), 1 + 0.3 * _rand(5, gen=gen)
    bc, bg = (0.2 * _rand(5, gen=gen), 0.2 * _rand(5, gen=gen)) if layernorm else (None, None)
    args = [x.requires_grad_(True) for x in (c, g, wc, wg)]
    if layernorm:
        bc.requires_grad_(True)
        bg.requires_grad_(True)

    def op(c, g, wc, wg, bc=bc, bg=bg):
        return fused._GatedTail.apply(c, g, wc, bc, wg, bg, 1e-5)

    def ref(c, g, wc, wg, bc=bc, bg=bg):
        return fused.gated_tail_reference(c, g, wc, bc, wg, bg, 1e-5)

    torch.testing.assert_close(op(*args), ref(*args))
    inputs = (*args, bc, bg) if layernorm else tuple(args)
    assert gradcheck(op, inputs)
    assert gradgradcheck(op, inputs)


@pytest.mark.parametrize(("with_src", "with_env"), [(False, True), (True, True), (True, False)])
def test_smooth_attention(with_src, with_env):
    gen = torch.Generator().manual_seed(1)
    rows, src_rows, d, n_out = 9, 4, 3, 5
    m = _rand(rows, d, gen=gen).requires_grad_(True)
    s = src_rows if with_src else rows
    raw = (3 * _rand(s, 2 * d, gen=gen)).requires_grad_(True)
    env = torch.rand(s, 1, generator=gen, dtype=torch.float64).requires_grad_(True)
    src = torch.randint(0, src_rows, (rows,), generator=gen) if with_src else None
    idx_t = torch.randint(0, n_out, (rows,), generator=gen)
    idx_s = torch.randint(0, n_out, (rows,), generator=gen)

    def op(raw, env, m):
        return attention.smooth_attention(raw, env if with_env else None, m, src, idx_t, idx_s,
                                      n_out, 2.0)

    def ref(raw, env, m):
        return attention.smooth_attention_reference(raw, env if with_env else None, m, src, idx_t,
                                                idx_s, n_out, 2.0)

    torch.testing.assert_close(op(raw, env, m), ref(raw, env, m))
    assert gradcheck(op, (raw, env, m))
    assert gradgradcheck(op, (raw, env, m))


def test_gather_mul_scatter():
    gen = torch.Generator().manual_seed(2)
    r = _rand(8, 3, gen=gen).requires_grad_(True)
    eps = _rand(4, 3, gen=gen).requires_grad_(True)
    idx_in = torch.randint(0, 4, (8,), generator=gen)
    idx_out = torch.randint(0, 5, (8,), generator=gen)

    def op(r, eps):
        return fused.gather_mul_scatter(r, eps, idx_in, idx_out, 5)

    torch.testing.assert_close(op(r, eps),
                               fused.gather_mul_scatter_reference(r, eps, idx_in, idx_out, 5))
    assert gradcheck(op, (r, eps))
    assert gradgradcheck(op, (r, eps))


def test_basic_ops_second_order():


    gen = torch.Generator().manual_seed(3)
    x = _rand(6, 4, gen=gen).requires_grad_(True)
    idx = torch.tensor([0, 2, 2, 5, 1])
    assert gradgradcheck(lambda x: ops.gather(x, idx), (x,))
    assert gradgradcheck(lambda x: ops.scatter_sum(x, torch.tensor([1, 0, 1, 3, 3, 0]), 4), (x,))
    assert gradgradcheck(ops.silu, (x,))
    torch.testing.assert_close(ops.silu(x), torch.nn.functional.silu(x))


@pytest.mark.parametrize("halves", [1, 2])
def test_silu_linear(halves):


    gen = torch.Generator().manual_seed(4)
    h, d = 3, 2
    x = _rand(5, halves * h, gen=gen).requires_grad_(True)
    ws = [_rand(d, h, gen=gen).requires_grad_(True) for _ in range(halves)]
    bs = [_rand(d, gen=gen).requires_grad_(True) if k == 0 else None for k in range(halves)]

    def op(x, *ws):
        return ops.silu_linear(x, list(ws), bs)

    def ref(x, *ws):
        a = torch.nn.functional.silu(x)
        return tuple(torch.nn.functional.linear(a[:, k * h:(k + 1) * h], w, b)
                     for k, (w, b) in enumerate(zip(ws, bs)))

    for a, b in zip(op(x, *ws), ref(x, *ws)):
        torch.testing.assert_close(a, b)
    inputs = (x, *ws, *[b for b in bs if b is not None])

    def op_all(x, *rest):
        return ops.silu_linear(x, list(rest[:halves]), [rest[halves]] + [None] * (halves - 1))

    assert gradcheck(op_all, inputs)
    assert gradgradcheck(op_all, inputs)
    # Skipping parameter gradients in the first backward keeps input gradients and the
    # second-order parameter gradients exact.
    with ops.no_param_grads():
        gx = torch.autograd.grad(sum(o.sum() for o in op_all(*inputs)), x, create_graph=True)[0]
    gx_ref = torch.autograd.grad(sum(o.sum() for o in ref(x, *ws)), x, create_graph=True)[0]
    torch.testing.assert_close(gx, gx_ref)
    g2 = torch.autograd.grad(gx.square().sum(), ws)
    g2_ref = torch.autograd.grad(gx_ref.square().sum(), ws)
    for a, b in zip(g2, g2_ref):
        torch.testing.assert_close(a, b)
