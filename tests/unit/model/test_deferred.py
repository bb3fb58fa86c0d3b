"""Deferred weight gradients (matris.nn.deferred): the deferrable linear is exact to second
order, and a backward run inside ``collect_weight_grads`` followed by ``flush`` equals the
plain backward, first order (P4-like) and second order (P3-like), through ``linear`` and
the fused ``silu_linear`` alike, while the critical pass really leaves the weight GEMMs
to the queue."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from matris.nn import ops
from matris.nn.deferred import (
    WeightGradQueue,
    collect_weight_grads,
    deferrable,
    linear,
    observe_queues,
)


def _rand(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_linear_matches_native_to_second_order():
    gen = torch.Generator().manual_seed(0)
    x, w, b = (_rand(6, 4, gen=gen), _rand(3, 4, gen=gen), _rand(3, gen=gen))
    args = tuple(t.requires_grad_(True) for t in (x, w, b))
    with deferrable():
        y = linear(*args)
        assert type(y.grad_fn).__name__ == "_LinearBackward"
        torch.testing.assert_close(y, torch.nn.functional.linear(*args))
        assert gradcheck(lambda *a: linear(*a), args)
        assert gradgradcheck(lambda *a: linear(*a), args)
    assert linear(*args).grad_fn.name() == "AddmmBackward0", "native outside deferrable()"


class _Net(torch.nn.Module):
    """x → linear → silu_linear (two heads, bias on one) → energy; forces by autograd."""

    def __init__(self, gen):
        super().__init__()
        self.w1 = torch.nn.Parameter(_rand(8, 3, gen=gen))
        self.b1 = torch.nn.Parameter(_rand(8, gen=gen))
        self.w2 = torch.nn.Parameter(_rand(2, 4, gen=gen))
        self.w3 = torch.nn.Parameter(_rand(2, 4, gen=gen))
        self.b2 = torch.nn.Parameter(_rand(2, gen=gen))

    def forward(self, pos):
        h = linear(pos, self.w1, self.b1)
        a, c = ops.silu_linear(h, [self.w2, self.w3], [self.b2, None])
        return (a * c).sum()


def _force_loss_grads(net, pos, mode):
    """Parameter gradients of E + |F|² with the force backward under create_graph.

    mode: "plain" (one backward), "deferred" (collect + flush), "unflushed" (collect,
    never flush: must differ, so the comparison can fail).
    """
    net.zero_grad(set_to_none=True)
    pos = pos.detach().requires_grad_(True)
    with deferrable(mode != "plain"):
        energy = net(pos)
    with ops.no_param_grads():
        (grad_pos,) = torch.autograd.grad(energy, pos, create_graph=True)
    loss = energy + grad_pos.square().sum()
    params = list(net.parameters())
    queue = WeightGradQueue()
    if mode == "plain":
        torch.autograd.backward(loss, inputs=[*params, pos])
    else:
        with collect_weight_grads(queue):
            torch.autograd.backward(loss, inputs=[*params, pos])
        assert len(queue) > 0, "the critical pass left weight GEMMs to W"
        if mode == "deferred":
            queue.flush()
    return {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}, \
        pos.grad.clone()


@pytest.mark.parametrize("rows", [4096, 2], ids=["one_chunk", "chunks_of_2"])
def test_deferred_split_equals_plain_backward(monkeypatch, rows):
    monkeypatch.setattr(ops, "CHUNK_ROWS", rows)
    gen = torch.Generator().manual_seed(1)
    net, pos = _Net(gen), _rand(5, 3, gen=gen)
    ref, ref_pos = _force_loss_grads(net, pos, "plain")
    got, got_pos = _force_loss_grads(net, pos, "deferred")
    torch.testing.assert_close(got_pos, ref_pos, rtol=1e-12, atol=0)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=0)
    partial, _ = _force_loss_grads(net, pos, "unflushed")
    assert any(partial[n] is None or not torch.allclose(partial[n], ref[n])
               for n in ("w1", "w2", "w3")), "without flush the weight gradients are incomplete"
    torch.testing.assert_close(partial["b1"], ref["b1"])  # biases are never deferred


def test_flushed_gradients_are_constants():
    """P3 / P4 are backward passes without create_graph: a deferred weight gradient must
    be a plain tensor, like the engine's. The queued factors are unpacked saved
    activations that carry their graphs; a recorded product in ``.grad`` would keep the
    micro-batch's graphs alive (until the next flush of that weight)."""
    gen = torch.Generator().manual_seed(4)
    net, pos = _Net(gen), _rand(5, 3, gen=gen)
    _force_loss_grads(net, pos, "deferred")
    for name, p in net.named_parameters():
        assert p.grad.grad_fn is None and not p.grad.requires_grad, name


def test_critical_only_pass_computes_no_weight_gradients():
    """A backward w.r.t. inputs only (P2, lazy P3) asks nothing of the weights."""
    gen = torch.Generator().manual_seed(2)
    net, pos = _Net(gen), _rand(5, 3, gen=gen).requires_grad_(True)
    queue = WeightGradQueue()
    with deferrable():
        energy = net(pos)
    with collect_weight_grads(queue):
        torch.autograd.backward(energy, inputs=[pos])
    assert len(queue) == 0
    assert all(p.grad is None for p in net.parameters())


def test_flush_routes_non_leaf_weights_through_their_graph():
    gen = torch.Generator().manual_seed(3)
    a, b = _rand(3, 4, gen=gen).requires_grad_(True), _rand(4, 2, gen=gen).requires_grad_(True)
    x = _rand(5, 2, gen=gen)
    with deferrable():
        y = linear(x, a @ b)
    ref = torch.autograd.grad(y.square().sum(), [a, b], retain_graph=True)
    with collect_weight_grads(WeightGradQueue()) as queue:
        torch.autograd.backward(y.square().sum(), inputs=[a, b], retain_graph=True)
    assert a.grad is None and len(queue) == 1
    queue.flush()
    torch.testing.assert_close(a.grad, ref[0])
    torch.testing.assert_close(b.grad, ref[1])


def test_queue_observer_sees_every_factor_until_the_flush():
    """``observe_queues``: what a memory tracker is told (LiveSaved counts queues)."""
    class Tally:
        def __init__(self):
            self.held = 0

        def hold(self, tensors):
            self.held += sum(t.numel() for t in tensors)

        def release(self, tensors):
            self.held -= sum(t.numel() for t in tensors)

    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    tally = Tally()
    with deferrable():
        y = linear(x, w)
    with observe_queues(tally):
        queue = WeightGradQueue()
    with collect_weight_grads(queue):
        y.sum().backward()
    assert w.grad is None and tally.held == 5 * 4 + 5 * 3   # gy (5, 4) and x (5, 3)
    queue.flush()
    assert tally.held == 0
    torch.testing.assert_close(w.grad, torch.ones(5, 4, dtype=torch.float64).t() @ x)
