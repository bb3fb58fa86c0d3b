"""Grouped expert compute equals a naive per-row reference (float64), including
gradients and double backward; capacity overflow goes to the shared expert or raises."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from matris.config import preset
from matris.nn.moe import MoELayer

D = 6


def _layer(kind="gated", in_dims=(D, D, D), max_z=94, **moe):
    cfg = preset("tiny", width=D, max_z=max_z, moe={"num_experts": 5, "top_k": 2, **moe})
    torch.manual_seed(0)
    layer = MoELayer(kind, list(in_dims), D, D, cfg, "line_attention.message").double()
    with torch.no_grad():  # perturb norms and biases away from 1 / 0
        for p in layer.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return layer


def _inputs(rows=11, src=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, D, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(src, D, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randint(0, src, (rows,), generator=g)
    q = torch.randint(0, src, (rows,), generator=g)
    z = torch.tensor([1, 8, 26, 8, 1, 14, 26, 26, 79, 1, 8][:rows])
    return t, e, p, q, z


def _ref_gated(mlp, x):
    """One GatedMLP on a single concatenated input row, in plain torch."""
    w = torch.cat([lin.weight for lin in mlp.first], dim=1)
    a = F.silu(x @ w.t() + mlp.first[0].bias)
    h = mlp.hidden
    core = a[:h] @ mlp.core.weight.t() + mlp.core.bias
    gate = a[h:] @ mlp.gate.weight.t() + mlp.gate.bias
    nc, ng = mlp.norm_core, mlp.norm_gate
    return F.silu(F.layer_norm(core, (D,), nc.weight, nc.bias, nc.eps)) * torch.sigmoid(
        F.layer_norm(gate, (D,), ng.weight, ng.bias, ng.eps))


def _ref_layer(layer, t, e, p, q, z):
    """Loop over rows: route from the logit table, k experts + shared, weighted sum."""
    rows = []
    for r in range(t.shape[0]):
        x = torch.cat([t[r], e[p[r]], e[q[r]]])
        logits = layer.router.logits[int(z[r]) - 1]
        val, idx = logits.topk(layer.top_k)
        gates = torch.softmax(val, 0)
        y = sum(g * _ref_gated(layer.experts[int(j)], x) for g, j in zip(gates, idx))
        if layer.shared is not None:
            y = y + _ref_gated(layer.shared, x)
        rows.append(y)
    return torch.stack(rows)


def _grouped(layer, t, e, p, q, z):
    return layer([(t, None), (e, p), (e, q)], z)


def test_grouped_equals_per_row_reference_with_first_and_second_derivatives():
    layer = _layer()
    t, e, p, q, z = _inputs()
    w = torch.randn(t.shape[0], D, dtype=torch.float64)
    results = []
    for fn in (_grouped, _ref_layer):
        layer.zero_grad(set_to_none=True)
        out = fn(layer, t, e, p, q, z)
        # "Force" = gradient w.r.t. the inputs (create_graph), then a loss on it.
        gt, ge = torch.autograd.grad((out * w).sum(), [t, e], create_graph=True)
        loss = (gt.square().sum() + (ge * ge.roll(1, 0)).sum())
        loss.backward()
        grads = {n: prm.grad.clone() for n, prm in layer.named_parameters()
                 if prm.grad is not None}
        results.append((out.detach(), gt.detach(), ge.detach(), grads))
    (o1, t1, e1, g1), (o2, t2, e2, g2) = results
    torch.testing.assert_close(o1, o2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(t1, t2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(e1, e2, rtol=1e-12, atol=1e-13)
    assert g1.keys() == g2.keys() and "router.logits" in g1
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-10, atol=1e-12, msg=k)
    # Only the experts some row routes to (+ shared, router) received gradients.
    used = {int(j) for j in layer.last_experts.reshape(-1)}
    got = {int(k.split(".")[1]) for k in g1 if k.startswith("experts.")}
    assert got == used and len(used) < layer.num_experts + 1


def test_gradgradcheck_small():
    """gradcheck + gradgradcheck w.r.t. features and the router table (second
    derivatives through the gates); expert weights are covered by the reference test."""
    layer = _layer(max_z=8)
    t, e, p, q, _ = _inputs(rows=4, src=3)
    z = torch.tensor([1, 8, 6, 8])
    names = ["router.logits"]
    params = [dict(layer.named_parameters())[n].detach().clone().requires_grad_(True)
              for n in names]

    def fn(t_, e_, lg):
        args = ([(t_, None), (e_, p), (e_, q)], z)
        return torch.func.functional_call(layer, dict(zip(names, (lg,))), args)

    assert torch.autograd.gradcheck(fn, (t, e, *params))
    assert torch.autograd.gradgradcheck(fn, (t, e, *params))


def test_ffn_experts_equal_reference_and_map_zero_to_zero():
    layer = _layer(kind="ffn", in_dims=(D,), shared_expert=False)
    x = torch.randn(9, D, dtype=torch.float64, requires_grad=True)
    z = torch.tensor([1, 8, 8, 26, 1, 14, 14, 79, 6])
    out = layer(x, z)
    ref = []
    for r in range(9):
        val, idx = layer.router.logits[int(z[r]) - 1].topk(2)
        ref.append(sum(g * (F.silu(x[r] @ layer.experts[int(j)].lin1.weight.t())
                            @ layer.experts[int(j)].lin2.weight.t())
                       for g, j in zip(torch.softmax(val, 0), idx)))
    torch.testing.assert_close(out, torch.stack(ref), rtol=1e-12, atol=1e-13)
    assert torch.autograd.gradgradcheck(lambda a: layer(a, z), (x,))
    with torch.no_grad():
        assert float(layer(torch.zeros(3, D, dtype=torch.float64), z[:3]).abs().max()) == 0


def test_bond_pairs_route_symmetrically():
    layer = _layer()
    pairs = torch.tensor([[1, 8], [8, 1], [26, 26], [14, 79], [79, 14]])
    route = layer.router(pairs)
    assert torch.equal(route.experts[0], route.experts[1])
    assert torch.equal(route.experts[3], route.experts[4])
    assert torch.equal(route.gates[0], route.gates[1])
    single = layer.router(torch.tensor([26]))  # (L[a] + L[a]) / 2 is exactly L[a]
    assert torch.equal(single.experts[0], route.experts[2])
    assert torch.equal(single.gates[0], route.gates[2])


def test_no_rows():
    layer = _layer()
    t = torch.zeros(0, D, dtype=torch.float64)
    e = torch.randn(3, D, dtype=torch.float64)
    idx = torch.zeros(0, dtype=torch.long)
    out = layer([(t, None), (e, idx), (e, idx)], torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, D)


def test_capacity_overflow_goes_to_shared_expert():
    layer = _layer(capacity_factor=0.5, overflow="shared")
    t, e, p, q, z = _inputs()
    z = torch.full_like(z, 8)  # every row to the same two experts: overflow
    out = _grouped(layer, t, e, p, q, z)
    route = layer.router(z)
    rows = t.shape[0]
    cap = -(-0.5 * 2 * rows // 5)
    keep = torch.arange(rows)[:, None].expand(rows, 2) < cap  # row order, per expert
    ref = []
    for r in range(rows):
        x = torch.cat([t[r], e[p[r]], e[q[r]]])
        y = _ref_gated(layer.shared, x) * (1 + sum(
            route.gates[r, s] for s in range(2) if not keep[r, s]))
        for s in range(2):
            if keep[r, s]:
                y = y + route.gates[r, s] * _ref_gated(layer.experts[int(route.experts[r, s])], x)
        ref.append(y)
    torch.testing.assert_close(out, torch.stack(ref), rtol=1e-12, atol=1e-13)
    # The same call without capacity differs (nothing is silently equal) ...
    layer.capacity_factor = None
    assert (out - _grouped(layer, t, e, p, q, z)).abs().max() > 1e-6
    # ... and "raise" refuses to run over capacity.
    layer.capacity_factor, layer.overflow = 0.5, "raise"
    with pytest.raises(RuntimeError, match="capacity"):
        _grouped(layer, t, e, p, q, z)
