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
