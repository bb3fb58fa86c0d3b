"""Deferred weight gradients: the exact, recomputation-free W split of a backward pass.

Zero-Bubble pipeline schedules split a backward pass into its critical part B (gradients
that other stages wait for) and its weight part W (parameter gradients, needed only at
the optimizer step), and run W later to fill pipeline bubbles. PyTorch's engine computes
a node's weight gradient in the same call as its input gradient, so splitting by calling
``backward`` twice walks the graph twice (measured 1.36–1.86× the unsplit cost on the
10M preset). This module splits at the source instead, for every linear map of the model:

* :func:`linear` is ``F.linear`` recorded as :class:`_Linear` while :func:`deferrable`
  is active (the pipeline executor turns it on in P1 when its program has W actions;
  everywhere else the native op is used and nothing changes);
* its backward (the force pass P2, run with ``create_graph``) yields
  :class:`_LinearGradInput`, ``gx = gy @ W``, whose own backward (P3) holds the weight's
  second-order term ``gyᵀ ggx``;
* inside :func:`collect_weight_grads` both backwards push the two factors of every
  weight gradient onto a :class:`WeightGradQueue` instead of multiplying them;
  :meth:`WeightGradQueue.flush` (the W action) performs the GEMMs and accumulates into
  ``.grad``, exactly what the engine would have added.

Parameters that are not weights of a deferrable linear (norms, biases, embeddings) keep
their gradients in B: correctness never depends on how much is deferred. Memory: the
queue holds each deferred product's gradient factor (the size of the layer's output)
until W runs, as in Zero Bubble.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

_STATE = threading.local()


def outer_sum(a: Tensor, b: Tensor) -> Tensor:
    """Σ over rows of a (…, O) ⊗ b (…, I): the (O, I) weight gradient aᵀ @ b."""
    return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])


class WeightGradQueue:
    """Pending weight gradients ``weight.grad += aᵀ @ b``, grouped per weight at flush.

    Entries: (weight (O, I), a (R, O), b (R, I)); the weight may be a non-leaf tensor
    (e.g. a product of two parameter matrices): its gradient is then pushed through
    its own graph by one ``autograd.backward`` call.
    """

    def __init__(self) -> None:
        self.items: list[tuple[Tensor, Tensor, Tensor]] = []
        # Memory accounting (see observe_queues): told what the queue holds and drops.
        self.observer = getattr(_STATE, "observer", None)

    def push(self, weight: Tensor, a: Tensor, b: Tensor) -> None:
        # A backward without create_graph (grad mode off: every P3 / P4) wants constants,
        # but factors unpacked from saved tensors still carry their graphs: queued as they
        # are, the flush's product would be recorded and land in ``weight.grad`` with a
        # grad_fn, keeping the micro-batch's graphs alive until the next flush of that
        # weight. Keep values only.
        if not torch.is_grad_enabled():
            a, b = a.detach(), b.detach()
        self.items.append((weight, a, b))
        if self.observer is not None:
            self.observer.hold((a, b))

    def tensors(self) -> list[Tensor]:
        """The queued gradient factors (what the queue keeps alive until flushed)."""
        return [t for _, a, b in self.items for t in (a, b)]

    def __len__(self) -> int:
        return len(self.items)

    def flush(self) -> None:
        """Run the deferred GEMMs; accumulate into the leaves' ``.grad`` (W action)."""
        sums: dict[int, tuple[Tensor, Tensor]] = {}
        for weight, a, b in self.items:
            g = outer_sum(a, b)
            key = id(weight)
            sums[key] = (weight, g if key not in sums else sums[key][1].add_(g))
        if self.observer is not None:
            self.observer.release(self.tensors())
        self.items.clear()
        inner_w, inner_g = [], []
        with torch.no_grad():
            for weight, g in sums.values():
                if weight.grad_fn is None:  # a parameter: what AccumulateGrad would do
                    weight.grad = g if weight.grad is None else weight.grad + g
                else:
                    inner_w.append(weight)
                    inner_g.append(g)
        if inner_w:
            torch.autograd.backward(inner_w, inner_g, retain_graph=True)


@contextlib.contextmanager
def thread_setting(state: threading.local, name: str, value, default=None):
    """Set ``state.<name> = value`` for the block (this thread only), then restore it."""
    old = getattr(state, name, default)
    setattr(state, name, value)
    try:
        yield value
    finally:
        setattr(state, name, old)


def deferrable(enabled: bool = True):
    """Record :func:`linear` as a deferrable op inside (used around the forward pass)."""
    return thread_setting(_STATE, "build", enabled, False)


def collect_weight_grads(queue: WeightGradQueue):
    """Inside, backward passes push deferrable weight gradients onto ``queue``."""
    return thread_setting(_STATE, "queue", queue)


def observe_queues(observer):
    """Queues created inside call ``observer.hold(tensors)`` when they take gradient
    factors and ``observer.release(tensors)`` when a flush drops them (memory
    accounting, e.g. ``matris.train.pipeline.memory.LiveSaved``)."""
    return thread_setting(_STATE, "observer", observer)


def pending_queue() -> WeightGradQueue | None:
    """The queue of the enclosing :func:`collect_weight_grads`, or None."""
    return getattr(_STATE, "queue", None)


def record_edges(ctx, args) -> None:
    """Remember which forward arguments are tensors (call in ``forward``).

    ``ctx.next_functions`` has one entry per *tensor* argument only; this maps forward
    argument positions onto it for :func:`engine_wants`.
    """
    edges, k = [], 0
    for arg in args:
        edges.append(k if isinstance(arg, Tensor) else None)
        k += isinstance(arg, Tensor)
    ctx.edge_of = tuple(edges)


def engine_wants(ctx, index: int) -> bool:
    """Whether the running backward needs the gradient of forward argument ``index``.

    ``ctx.needs_input_grad`` is fixed when the forward runs; this asks the engine about
    the current pass (a critical-only backward skips weight edges, as native ops do).
    Falls back to True where the engine cannot tell (``autograd.grad`` on a leaf).
    The Function's forward must have called :func:`record_edges`.
    """
    edge = ctx.edge_of[index]
    if edge is None:
        return False
    node = ctx.next_functions[edge][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (RuntimeError, AttributeError):
        return True


def weight_wanted(ctx, index: int) -> bool:
    """Whether this pass needs the gradient of parameter input ``index`` of ``ctx``."""
    from matris.nn.ops import param_grads_wanted  # ops imports this module

    return bool(ctx.needs_input_grad[index]) and param_grads_wanted() \
        and engine_wants(ctx, index)


def weight_grad(ctx, index: int, weight: Tensor, a: Tensor, b: Tensor) -> Tensor | None:
    """``aᵀ @ b`` for input ``index`` (a weight), pushed to the pending queue if any.

    Returns None when the gradient is not wanted in this pass or was deferred.
    """
    if not weight_wanted(ctx, index):
        return None
    queue = pending_queue()
    if queue is not None:
        queue.push(weight, a, b)
        return None
    return outer_sum(a, b)


# Why the deferrable Functions keep their weights as ctx attributes, not saved tensors:
# a queued gradient lands in ``weight.grad`` of the very object it is pushed with. Under
# ``saved_tensors_hooks`` (memory accounting, offloading) a saved tensor unpacks as a new
# alias, whose ``.grad`` nobody reads. Weights are inputs, never outputs, of these
# Functions, so holding them on ctx creates no reference cycle.


class _Linear(Function):
    """y (…, O) = x (…, I) @ Wᵀ (O, I) + b (O,)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        record_edges(ctx, (x, weight, bias))
        ctx.save_for_backward(x)
        ctx.weight = weight  # not saved: see the note above _Linear
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, gy):
        (x,), weight = ctx.saved_tensors, ctx.weight
        gx = _LinearGradInput.apply(gy, weight) if ctx.needs_input_grad[0] else None
        gw = weight_grad(ctx, 1, weight, gy, x)
        gb = None
        if ctx.needs_input_grad[2] and engine_wants(ctx, 2):  # False without a bias
            gb = gy.reshape(-1, gy.shape[-1]).sum(0)
        return gx, gw, gb


class _LinearGradInput(Function):
    """gx (…, I) = gy (…, O) @ W (O, I): the input gradient of :class:`_Linear`."""

    @staticmethod
    def forward(ctx, gy, weight):
        record_edges(ctx, (gy, weight))
        ctx.save_for_backward(gy)
        ctx.weight = weight  # not saved: see the note above _Linear
        return gy @ weight

    @staticmethod
    def backward(ctx, ggx):
        (gy,), weight = ctx.saved_tensors, ctx.weight
        g_gy = ggx @ weight.t() if ctx.needs_input_grad[0] else None
        return g_gy, weight_grad(ctx, 1, weight, gy, ggx)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``; inside :func:`deferrable`, with deferrable weight gradients.

    Third derivatives are not supported on the deferrable path (none are taken).
    """
    if getattr(_STATE, "build", False) and torch.is_grad_enabled() \
            and not torch.is_autocast_enabled(x.device.type):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
