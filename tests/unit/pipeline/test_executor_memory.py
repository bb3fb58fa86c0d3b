"""Live saved-tensor accounting (``matris.train.pipeline.memory``): exact gradients with
the hooks installed, every graph freed after the step, and the schedules' memory order
(gpipe4 keeps all M micro-batches' graphs, symfold a bounded number)."""

from __future__ import annotations

import gc

import pytest
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
    variants,
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


def _lifetime_mismatches(model, name, options, P=2, M=3):
    """Run ``name`` in process with one LiveSaved per rank; after every compute action
    compare the rank's live bytes with the lifetime model (``deps.creates`` allocates a
    set, it dies after all of ``deps.freeing_actions``), each set's size being what its
    creating action added. Returns [(rank, action, measured, model)] beyond 1 % (graph
    constants shared by two stages of one rank, e.g. the cell, count once and die with
    the later stage: ~1 KB here)."""
    from matris.nn.exchange import LOCAL
    from matris.train.pipeline.deps import creates, freeing_actions
    from matris.train.pipeline.executor import stage_parameters
    from matris.train.pipeline.phases import FourPhase, Micro
    from matris.train.pipeline.runtime import StageEngine, run_in_process
    from matris.train.pipeline.testing import counts_of

    prog = make_program(name, P, M, model.num_blocks, options)
    stages = model.stages(model.balanced_cuts(prog.num_stages, num_devices=prog.num_devices))
    batches = microbatches(M)
    live = [LiveSaved(list(model.parameters())) for _ in range(P)]
    seen: list[list] = [[] for _ in range(P)]

    class Recording(StageEngine):
        def run(self, a, msg):
            with live[self.rank]:
                out = super().run(a, msg)
            seen[self.rank].append((a, live[self.rank].live))
            return out

    def micro_of(m):
        b = batches[m]
        return Micro(b.graph, b.labels, LOCAL, None, 1.0, bool(b.labels.stress_mask.any()))

    engines = []
    for r in range(P):
        mine = {s: stages[s] for s in prog.stages_of(r)}
        _, params = stage_parameters(model, mine)
        ph = FourPhase(mine, prog.num_stages, loss_config(), counts_of(batches),
                       lazy_p3=prog.lazy_p3, split=prog.split_w, params=params)
        engines.append(Recording(prog, r, ph, micro_of))
    model.zero_grad(set_to_none=True)
    run_in_process(prog, engines)
    bad = []
    for r in range(P):
        model_live, before, size, alive = 0, 0, {}, {}
        for a, measured in seen[r]:
            name_ = creates(prog, a)
            if name_ is not None:
                tag = (name_, a.stage, a.microbatch)
                size[tag] = measured - before
                model_live += size[tag]
                alive[tag] = set(freeing_actions(prog, name_, a.stage, a.microbatch))
            for tag, pending in list(alive.items()):
                pending.discard(a)
                if not pending:
                    model_live -= size.pop(tag)
                    del alive[tag]
            if abs(measured - model_live) > 0.01 * max(measured, model_live):
                bad.append((r, str(a), measured, model_live))
            before = measured
        assert not alive and measured == 0, f"rank {r}: sets left alive after the step"
    return bad


@pytest.mark.parametrize("name", ["gpipe4", "1f1b4", "hanayo4", "symfold"])
def test_every_set_lives_exactly_as_the_simulator_assumes(name):
    """The simulator's memory (and wavek's caps) assume each activation set A, A', Q3, Q4
    is allocated by its creating action and freed right after its last freeing action;
    the executor must free nothing later (a leak: memory above the forecast, as the
    deferred gradients once did) and nothing earlier (the graph would be gone)."""
    torch.set_num_threads(1)
    model = random_model(preset("tiny", num_blocks=2), seed=3)
    for label, options in variants(name):
        assert _lifetime_mismatches(model, name, options) == [], f"{name}:{label}"
