"""The torch side of the four phases: what one compute action does on one stage.

For stage s and micro-batch m (ARCHITECTURE.md section 3, docs/schedules.md section 2):

* **P1** h_{s+1} = f_s(h_s, x_s, ε_s): ``h_s`` arrives as detached leaves with
  ``requires_grad``, ``x_s`` (n, 3) and ``ε_s`` (B, 3, 3) are this stage's own position /
  strain leaves (every stage recomputes its geometry). The last stage also forms the
  energy (+ magmom) loss, which is first-order: its cotangent enters in P4.
* **P2** (a_s, c_s) = VJP of f_s against a_{s+1} w.r.t. (h_s, x_s, ε_s), with
  ``create_graph``; the last stage seeds a_S = ∂ΣE/∂E = 1 (on GP part 0 only).
  c_s = (∂E/∂x_s, ∂E/∂ε_s) is added to the running sum ``f_acc`` that travels down. Stage
  0 then holds Σ_s ∂E/∂x_s = −F and the virial, forms the force/stress loss and its
  cotangents ``dl = (∂L/∂Σ∂E/∂x, ∂L/∂Σ∂E/∂ε)`` (the same for every stage: the sum is
  linear) that travel up with ā in P3.
* **P3** the backward of P2's outputs (a_s, c_s) with cotangents (ā_s, dl). Eager: one
  ``backward`` into θ_s (second-order parameter gradients), the h_s leaves (second-order
  h cotangent ĥ_s, kept in ``h_s.grad``) and the a_{s+1} leaves (ā_{s+1}, sent up).
  Lazy: only ā_{s+1} (``autograd.grad`` w.r.t. the a_{s+1} leaves); the rest is folded
  into P4.
* **P4** the backward of P1's outputs with cotangent h̄_{s+1} (last stage: the energy /
  magmom loss) into θ_s and the h_s leaves; lazy: together with P2's outputs and (ā_s, dl)
  in the same call. h̄_s = h_s.grad (first + second order) is sent down.
* **P34** (last stage, fused turn): P3 and P4 as one ``backward`` call.
* **W3 / W4**: the weight-gradient part of a split P3 / P4. When the program has W
  actions, P1 records the model's linear maps as deferrable ops
  (:mod:`matris.nn.deferred`); the critical action then runs the full backward inside
  ``collect_weight_grads``, which pushes the two factors of every linear weight's
  gradient (first order in P4, second order in P3) onto the slot's queue instead of
  multiplying them, and the W action performs those GEMMs. No part of the graph is
  walked twice; parameters that are not linear weights (norms, biases, embeddings) get
  their gradients in the critical action. Costs: ``benchmarks/pipeline_phase_costs.py``.

Graphs are kept with ``retain_graph=True`` and freed by dropping the last reference
(:meth:`Slot.release_p2`, the executor deleting the slot): a P3 backward walks into the P1
graph too (P2's graph reads P1's saved tensors), so P3 must never free it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from matris.nn.deferred import WeightGradQueue, collect_weight_grads, deferrable
from matris.nn.exchange import LOCAL
from matris.nn.ops import no_param_grads

from ..loss import loss_sums, weighted_loss
from .actions import Kind

H_FIELDS = ("atom", "bond", "angle")


@dataclass
class Micro:
    """One micro-batch as this rank sees it (the same on every stage it hosts).

    graph: the (local part of the) micro-batch ``AtomGraph``; labels: this rank's share of
    the labels (GP: owned atoms; energy/stress on part 0); exchange: ``LOCAL`` or the
    micro-batch's ``GraphExchange``; owned: owned atom rows (None: all); seed: the energy
    cotangent of P2 (1, or 0 on GP parts other than 0); stress: whether strain leaves and
    the stress term exist (same decision on every rank: from the global labels);
    owned_ids: GP only, the global ids of the owned atoms (to gather predictions).
    """

    graph: object
    labels: object
    exchange: object = LOCAL
    owned: int | None = None
    seed: float = 1.0
    stress: bool = False
    owned_ids: Tensor | None = None          # GP: global ids of the owned atoms


@dataclass
class Slot:
    """State of one (stage, micro-batch) between its actions on this rank."""

    stage: int
    mb: int
    micro: Micro
    x: Tensor | None = None                  # (n, 3) positions leaf of this stage
    strain: Tensor | None = None             # (B, 3, 3) strain leaf, or None
    h_in: list[Tensor] | None = None         # received h_s leaves (None at stage 0)
    out: list[Tensor] = field(default_factory=list)   # h_{s+1} (1–3) or [energy] (last)
    loss_last: Tensor | None = None          # energy + magmom loss (last stage)
    a_in: list[Tensor] | None = None         # received a_{s+1} leaves (None at the last)
    p2_out: list[Tensor] = field(default_factory=list)  # [∂E/∂x_s, ∂E/∂ε_s?, a_s...]
    cot3: list[Tensor] | None = None         # cotangents of p2_out: [dl..., ā_s...]
    w3_queue: WeightGradQueue | None = None  # deferred weight GEMMs of a split P3
    w4_queue: WeightGradQueue | None = None  # … of a split P4
    split: frozenset | None = None           # phases split for this slot (None: FourPhase's)
    done: set = field(default_factory=set)

    @property
    def geo(self) -> list[Tensor]:
        return [self.x] + ([self.strain] if self.strain is not None else [])

    def release_p2(self) -> None:
        """Drop the references that keep the P2 graph A' alive."""
        self.p2_out, self.cot3, self.a_in = [], None, None


def in_fields(stage) -> tuple[str, ...]:
    """Feature tensors a stage receives: all three, or only ``atom`` after the model's
    final block (which computes no bond / angle outputs)."""
    return H_FIELDS if stage.block_range[0] < stage.config.num_blocks else ("atom",)


def out_tensors(io) -> list[Tensor]:
    """The non-None features of a non-last stage's output, in :data:`H_FIELDS` order."""
    return [getattr(io, f) for f in H_FIELDS if getattr(io, f) is not None]


def _zeros_for(grads, like) -> list[Tensor]:
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def _live(outs, cots):
    """Pairs whose output is part of a graph (materialised zeros are constants)."""
    pairs = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    return [o for o, _ in pairs], [c for _, c in pairs]


def _backward(outs, cots, inputs) -> None:
    outs, cots = _live(outs, cots)
    inputs = [t for t in inputs if t.requires_grad]
    if outs and inputs:
        torch.autograd.backward(outs, cots, inputs=inputs, retain_graph=True)


def _backward_deferring(outs, cots, inputs, defer: bool) -> WeightGradQueue | None:
    """:func:`_backward`; with ``defer``, the linear weights' GEMMs go to the returned
    queue (the W action flushes it) instead of being done now."""
    if not defer:
        _backward(outs, cots, inputs)
        return None
    queue = WeightGradQueue()
    with collect_weight_grads(queue):
        _backward(outs, cots, inputs)
    return queue


def _leaf_grads(leaves) -> list[Tensor]:
    return [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]


class FourPhase:
    """Runs the compute actions of the stages hosted on this rank.

    Args:
        stages: ``{stage index: matris.stages.Stage}`` of this rank.
        num_stages: S, stages of the whole pipeline.
        loss: the ``LossConfig``; counts: the step's global label counts (denominators).
        lazy_p3: the Program's lazy-P3 flag; split: kinds whose W part is separate.
        params: ``{stage: [trainable parameters]}``.
        autocast: a context-manager factory for the forward (bf16 on CUDA) or None.
    """

    def __init__(self, stages: dict, num_stages: int, loss, counts: dict, *, lazy_p3: bool,
                 split: frozenset = frozenset(), params: dict, autocast=None,
                 dtype: torch.dtype = torch.float64) -> None:
        self.stages, self.S, self.loss, self.counts = stages, num_stages, loss, counts
        self.lazy, self.split, self.params = lazy_p3, split, params
        self.weights = {k: float(getattr(loss.weights, k)) for k in
                        ("energy", "forces", "stress", "magmoms")}
        self.autocast, self.dtype = autocast, dtype
        self.sums: dict[str, float] = {}

    # ------------------------------------------------------------------ losses
    def _loss(self, pred: dict, micro: Micro) -> Tensor:
        terms = [t for t in pred if self.weights[t] > 0]
        sums = loss_sums(pred, micro.labels, self.loss.kind, self.loss.huber_delta, terms)
        for t, s in sums.items():
            self.sums[t] = self.sums.get(t, 0.0) + float(s.detach())
        return weighted_loss(sums, self.weights, self.counts)

    # ------------------------------------------------------------------ P1
    def p1(self, slot: Slot, h_in: list[Tensor] | None) -> list[Tensor] | None:
        """Energy forward; returns h_{s+1} to hand on (None at the last stage)."""
        from matris.stages import StageIO

        stage, micro = self.stages[slot.stage], slot.micro
        g = micro.graph
        slot.x = g.positions.detach().clone().requires_grad_(True)
        if micro.stress:
            slot.strain = torch.zeros(g.num_structures, 3, 3, dtype=slot.x.dtype,
                                      device=slot.x.device, requires_grad=True)
        io = None
        if h_in is not None:
            slot.h_in = [t.detach().requires_grad_(True) for t in h_in]
            io = StageIO(**dict(zip(in_fields(stage), slot.h_in)))
        ex = micro.exchange
        pos = slot.x if ex is LOCAL else ex.positions(slot.x)
        with torch.enable_grad(), self._autocast(), deferrable(bool(self.split)):
            io = stage(io, g, pos, slot.strain, ex)
        if slot.stage < self.S - 1:
            slot.out = [t.to(self.dtype) for t in out_tensors(io)]
            return [t.detach() for t in slot.out]
        energy = io.energy.to(self.dtype)
        slot.out = [energy]
        pred = {"energy": energy}
        if io.magmoms is not None:
            m = io.magmoms.to(self.dtype)
            pred["magmoms"] = m if micro.owned is None else m[:micro.owned]
        slot.loss_last = self._loss(pred, micro)
        return None

    # ------------------------------------------------------------------ P2
    def p2(self, slot: Slot, a_in: list[Tensor] | None,
           f_acc: list[Tensor] | None) -> tuple[list[Tensor] | None, list[Tensor]]:
        """Force backward with create_graph. Returns (a_s to hand down or None at stage 0,
        the running sums [Σ∂E/∂x (n,3), Σ∂E/∂ε (B,3,3)?])."""
        if slot.stage == self.S - 1:
            cot = [torch.full_like(slot.out[0], slot.micro.seed)]
        else:
            slot.a_in = [t.detach().requires_grad_(True) for t in a_in]
            cot = slot.a_in
        wrt = slot.geo + (slot.h_in or [])
        outs, cots = _live(slot.out, cot)
        with torch.enable_grad(), no_param_grads():  # θ-grads of P2 itself are unused
            grads = torch.autograd.grad(outs, wrt, cots, create_graph=True, allow_unused=True)
        grads = _zeros_for(grads, wrt)
        slot.p2_out = grads
        n_geo = len(slot.geo)
        sums = [g.detach() for g in grads[:n_geo]]
        if f_acc is not None:
            sums = [a + b for a, b in zip(f_acc, sums)]
        if slot.stage == 0:
            slot.cot3 = self._first_loss(slot, sums)
            return None, sums
        return [g.detach() for g in grads[n_geo:]], sums

    def _first_loss(self, slot: Slot, sums: list[Tensor]) -> list[Tensor]:
        """Force / stress loss at stage 0 from the complete sums; returns dl."""
        from ..graph_parallel.forward import _per_volume

        micro = slot.micro
        leaves = [t.detach().requires_grad_(True) for t in sums]
        with torch.enable_grad():
            gx = leaves[0] if micro.owned is None else leaves[0][:micro.owned]
            pred = {"forces": -gx}
            if micro.stress:
                virial = leaves[1]
                if micro.exchange is not LOCAL:
                    virial = micro.exchange.reduce(virial)
                pred["stress"] = _per_volume(virial, micro.graph)
            loss = self._loss(pred, micro)
            if not loss.requires_grad:
                return [torch.zeros_like(t) for t in leaves]
            return _zeros_for(torch.autograd.grad(loss, leaves, allow_unused=True), leaves)

    # ------------------------------------------------------------------ P3
    def p3(self, slot: Slot, abar_in: list[Tensor] | None,
           dl: list[Tensor] | None) -> tuple[list[Tensor] | None, list[Tensor]]:
        """Backward of P2. Returns (ā_{s+1} to hand up or None at the last stage, dl)."""
        if slot.stage != 0:
            slot.cot3 = list(dl) + list(abar_in)
        dl = slot.cot3[:len(slot.geo)]
        outs = slot.p2_out
        a_leaves = slot.a_in or []
        if self.lazy:  # only ā on the critical path; the rest runs inside P4
            if a_leaves:
                o, c = _live(outs, slot.cot3)
                with torch.enable_grad(), no_param_grads():  # θ-terms run in P4
                    g = torch.autograd.grad(o, a_leaves, c, retain_graph=True,
                                            allow_unused=True)
                return _zeros_for(g, a_leaves), dl
            return None, dl
        inputs = a_leaves + (slot.h_in or []) + self.params[slot.stage]
        slot.w3_queue = _backward_deferring(outs, slot.cot3, inputs,
                                            Kind.P3 in self._split(slot))
        abar = _leaf_grads(a_leaves) if a_leaves else None
        if slot.w3_queue is None:  # split: W3 releases it
            slot.release_p2()
        return abar, dl

    def w3(self, slot: Slot) -> None:
        """Weight part of a split eager P3: the deferred GEMMs."""
        slot.w3_queue.flush()
        slot.w3_queue = None
        slot.release_p2()

    # ------------------------------------------------------------------ P4
    def _p4_terms(self, slot: Slot, hbar_in: list[Tensor] | None):
        if slot.stage == self.S - 1:
            outs = [slot.loss_last]
            cots = [torch.ones_like(slot.loss_last)]
        else:
            outs, cots = list(slot.out), list(hbar_in)
        if self.lazy and slot.cot3 is not None:
            outs, cots = outs + slot.p2_out, cots + slot.cot3
        return outs, cots

    def p4(self, slot: Slot, hbar_in: list[Tensor] | None) -> list[Tensor] | None:
        """Backward of P1 (lazy: plus the deferred P3 terms). Returns h̄_s (None at 0)."""
        outs, cots = self._p4_terms(slot, hbar_in)
        h = slot.h_in or []
        slot.w4_queue = _backward_deferring(outs, cots, h + self.params[slot.stage],
                                            Kind.P4 in self._split(slot))
        if slot.w4_queue is None and self.lazy:  # split: W4 releases it
            slot.release_p2()
        return _leaf_grads(h) if h else None

    def w4(self, slot: Slot) -> None:
        """Weight part of a split P4: the deferred GEMMs."""
        slot.w4_queue.flush()
        slot.w4_queue = None
        if self.lazy:
            slot.release_p2()

    # ------------------------------------------------------------------ P34
    def p34(self, slot: Slot, abar_in: list[Tensor] | None,
            dl: list[Tensor]) -> list[Tensor] | None:
        """Fused turn at the last stage: P3 and P4 in one backward call."""
        if slot.stage != 0:
            slot.cot3 = list(dl) + list(abar_in)
        outs = [slot.loss_last, *slot.p2_out]
        cots = [torch.ones_like(slot.loss_last), *slot.cot3]
        h = slot.h_in or []
        _backward(outs, cots, h + self.params[slot.stage])
        slot.release_p2()
        return _leaf_grads(h) if h else None

    def _split(self, slot: Slot) -> frozenset:
        """Phases whose weight part this slot defers: the program may split a phase for
        some micro-batches only (``Program.unsplit``)."""
        return self.split if slot.split is None else slot.split

    def _autocast(self):
        import contextlib

        return self.autocast() if self.autocast is not None else contextlib.nullcontext()
