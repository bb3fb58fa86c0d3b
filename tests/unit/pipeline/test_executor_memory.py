"""Live saved-tensor accounting (``matris.train.pipeline.memory``): exact gradients with
the hooks installed, every graph freed after the step, and the schedules' memory order
(gpipe4 keeps all M micro-batches' graphs, symfold a bounded number)."""

from __future__ import annotations

import gc

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.pipeline.memory import LiveSaved
from matris.train.pipeline.testing import (
    in_process_step,
    make_program,
    microbatches,
    serial_gradients,
)


def test_live_saved_bytes_are_exact_and_released():
    torch.set_num_threads(1)
    model = random_model(preset("tiny", num_blocks=2), seed=3)
    batches = microbatches(4)
    ref, _ = serial_gradients(model, batches, loss_config())
    peaks = {}
    for name, opts in (("gpipe4", {}), ("symfold", {}), ("symfold+W", {"split_w": True})):
        prog = make_program(name.split("+")[0], 2, 4, model.num_blocks, opts)
        with LiveSaved(list(model.parameters())) as mem:
            g, _, _ = in_process_step(model, prog, batches, loss_config())
        gc.collect()
        assert relative_error(g, ref) < 1e-10, "the hooks must not change the gradients"
        assert mem.live == 0 and not mem.refs, "every saved tensor is released"
        peaks[name] = mem.peak
    assert peaks["symfold"] < peaks["gpipe4"]
    # The W split's queues (new gradient factors held until W) are counted.
    assert peaks["symfold+W"] > peaks["symfold"]


def test_w3_frees_the_p2_graph_and_its_queue_while_w4_is_pending():
    """On one stage: P1, P2, P3 (split), W3, then P4 (split). W3 must leave only A
    alive (A' and the W3 queue gone), although the slot's W4 is still to come; P4's
    queue then adds its factors, W4 drops them. (A flushed product recorded with a
    graph once kept A' and the queue alive until the weight's next flush.)"""
    from matris.nn.exchange import LOCAL
    from matris.train.pipeline.actions import Kind
    from matris.train.pipeline.executor import stage_parameters
    from matris.train.pipeline.phases import FourPhase, Micro, Slot
    from matris.train.pipeline.testing import counts_of

    torch.set_num_threads(1)
    model = random_model(preset("tiny", num_blocks=2), seed=5)
    (batch,) = microbatches(1)
    stages = dict(enumerate(model.stages([1])))
    _, params = stage_parameters(model, stages)
    ph = FourPhase(stages, 2, loss_config(), counts_of([batch]), lazy_p3=False,
                   split=frozenset({Kind.P3, Kind.P4}), params=params)
    micro = Micro(batch.graph, batch.labels, LOCAL, None, 1.0,
                  bool(batch.labels.stress_mask.any()))
    s0, s1 = Slot(0, 0, micro), Slot(1, 0, micro)
    mem0, mem1 = LiveSaved(list(model.parameters())), LiveSaved(list(model.parameters()))
    with mem0:
        h = ph.p1(s0, None)
    with mem1:
        ph.p1(s1, h)
    after_p1 = mem1.live
    with mem1:
        a, f = ph.p2(s1, None, None)
    with mem0:
        ph.p2(s0, a, f)
        abar, dl = ph.p3(s0, None, None)
    with mem1:
        ph.p3(s1, abar, dl)
        assert len(s1.w3_queue) > 0 and mem1.live > after_p1
        ph.w3(s1)
        assert mem1.live == after_p1, "W3 frees A' and its queue"
        ph.p4(s1, None)
        assert len(s1.w4_queue) > 0 and mem1.live > after_p1
        ph.w4(s1)
        assert mem1.live == after_p1
    assert all(p.grad is None or p.grad.grad_fn is None for p in model.parameters())
