"""The four-phase compute of the executor equals the serial double backward (in process:
every pipeline rank of a Program runs in this process, hand-offs through a mailbox), and
breaking one term of the derivation (the P3 second-order contributions, the ∂L/∂F
injection, lazy P3's deferred terms) breaks the equality. The mpirun tests
(tests/distributed/pipeline) run the same compute over real point-to-point links."""

from __future__ import annotations

import pytest
import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.pipeline.phases import FourPhase
from matris.train.pipeline.testing import (
    in_process_step,
    make_program,
    microbatches,
    serial_gradients,
)

TOL = 1e-10


def reference(num_blocks: int, seed: int, offset: int = 0) -> tuple:
    """(model, loss, 3 micro-batches, serial gradients, serial loss sums)."""
    torch.set_num_threads(1)
    model = random_model(preset("tiny", num_blocks=num_blocks), seed=seed)
    loss = loss_config()
    batches = microbatches(3, offset=offset)
    ref, ref_sums = serial_gradients(model, batches, loss)
    return model, loss, batches, ref, ref_sums


@pytest.fixture(scope="module")
def setup():
    out = reference(2, seed=3)
    assert max(float(v.abs().max()) for v in out[3].values()) > 1e-3
    return out


@pytest.mark.parametrize("name,options", [
    ("gpipe4", {}), ("1f1b4", {"lazy_p3": True}), ("symfold", {"split_w": True}),
    ("symfold", {"fused_turn": True, "lazy_p3": True}), ("hanayo4", {}),
    ("wavek", {"lazy_p3": True}), ("1f1b4", {"split_w": True}),
    ("hanayo4", {"split_w": True, "lazy_p3": True}), ("symfold", {"split_w": {"P4"}}),
    # W split for some micro-batches only (Program.unsplit)
    ("symfold", {"split_w": True, "whole_microbatches": [1]}),
    ("hanayo4", {"split_w": True, "lazy_p3": True, "whole_microbatches": [0, 2]})])
def test_in_process_equals_serial(setup, name, options):
    model, loss, batches, ref, ref_sums = setup
    prog = make_program(name, 2, len(batches), model.num_blocks, options)
    g, sums, walkers = in_process_step(model, prog, batches, loss)
    assert relative_error(g, ref) < TOL
    assert relative_error({k: torch.tensor(v) for k, v in sums.items()},
                          {k: torch.tensor(v) for k, v in ref_sums.items()}) < TOL
    ran = {s.action for w in walkers for s in w.slices if s.action.kind.is_compute}
    assert ran == set(prog.expected_actions()), "every compute action ran exactly once"
    if "whole_microbatches" in options:
        assert prog.unsplit and any(a.kind.name in ("W3", "W4") for a in ran)


class NoSecondOrderParams(FourPhase):
    """P3 without the second-order θ and h terms (only ā): the classic mistake of
    treating P3 as a pure relay."""

    def p3(self, slot, abar_in, dl):
        params, self.params = self.params, {s: [] for s in self.params}
        h, slot.h_in = slot.h_in, None
        try:
            return super().p3(slot, abar_in, dl)
        finally:
            self.params, slot.h_in = params, h


class NoForceInjection(FourPhase):
    """∂L/∂F is not injected on stages other than 0 (their geometry cotangent is zero)."""

    def p3(self, slot, abar_in, dl):
        if slot.stage != 0:
            dl = [torch.zeros_like(t) for t in dl]
        return super().p3(slot, abar_in, dl)


class LazyForgetsDeferred(FourPhase):
    """Lazy P3 whose P4 forgets the deferred P3 terms."""

    def _p4_terms(self, slot, hbar_in):
        cot, slot.cot3 = slot.cot3, None
        try:
            return super()._p4_terms(slot, hbar_in)
        finally:
            slot.cot3 = cot


@pytest.mark.parametrize("broken,options", [(NoSecondOrderParams, {}),
                                            (NoForceInjection, {}),
                                            (NoForceInjection, {"lazy_p3": True}),
                                            (LazyForgetsDeferred, {"lazy_p3": True})])
def test_broken_derivation_is_caught(setup, broken, options):
    model, loss, batches, ref, _ = setup
    prog = make_program("symfold", 2, len(batches), model.num_blocks, options)
    g, _, _ = in_process_step(model, prog, batches, loss, phases_cls=broken)
    assert relative_error(g, ref) > 1e-3, f"{broken.__name__} went unnoticed"


def test_w_actions_run_the_deferred_weight_gemms(setup, monkeypatch):
    """With a W split, every W action flushes a non-empty queue of weight GEMMs (the
    critical action left them), and the result still equals the serial gradients."""
    from matris.nn import deferred

    model, loss, batches, ref, _ = setup
    sizes = []
    flush = deferred.WeightGradQueue.flush

    def counting_flush(queue):
        sizes.append(len(queue))
        flush(queue)

    monkeypatch.setattr(deferred.WeightGradQueue, "flush", counting_flush)
    prog = make_program("symfold", 2, len(batches), model.num_blocks, {"split_w": True})
    g, _, _ = in_process_step(model, prog, batches, loss)
    n_w = sum(1 for a in prog.expected_actions() if a.kind.name in ("W3", "W4"))
    assert n_w > 0 and len(sizes) == n_w and min(sizes) > 0
    assert relative_error(g, ref) < TOL


@pytest.fixture(scope="module")
def deep_setup():
    """A 6-block model: 8 units, enough for four chunks per rank at P = 2."""
    return reference(6, seed=5, offset=1)


@pytest.mark.parametrize("name,options", [
    ("hanayo4", {"waves": 2}),
    ("hanayo4", {"waves": 2, "split_w": True, "lazy_p3": True}),
    ("wavek", {"waves": 2}), ("wavek", {"waves": 2, "lazy_p3": True, "fused_turn": True})])
def test_four_chunks_per_rank_equal_serial(deep_setup, name, options):
    """Two waves: every rank hosts four stages (0, 3, 4, 7 on rank 0), hand-offs between
    a rank's own stages and across ranks in both directions."""
    model, loss, batches, ref, ref_sums = deep_setup
    prog = make_program(name, 2, len(batches), model.num_blocks, options)
    assert prog.num_stages == 8 and len(prog.stages_of(0)) == 4
    g, sums, _ = in_process_step(model, prog, batches, loss)
    assert relative_error(g, ref) < TOL
    assert relative_error({k: torch.tensor(v) for k, v in sums.items()},
                          {k: torch.tensor(v) for k, v in ref_sums.items()}) < TOL
