"""MoE through the four-phase pipeline executor, in process (every rank here): P = 2
gradients equal the serial double backward (float64, 1e-10), and the balance loss added
per stage after the step equals the serial forward's aux loss gradient."""

from __future__ import annotations

import pytest
import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.graph_parallel.testing import loss_config, relative_error
from matris.train.pipeline.executor import stage_cuts
from matris.train.pipeline.testing import (
    grads,
    in_process_step,
    make_program,
    microbatches,
    serial_gradients,
)

TOL = 1e-10
W_AUX = 0.05


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = random_model(preset("tiny-moe", num_blocks=2), seed=3)
    batches = microbatches(2)
    loss = loss_config()
    ref, ref_sums = serial_gradients(model, batches, loss)
    # Serial aux term: the training forward's aux loss, one share per micro-batch.
    model.zero_grad(set_to_none=True)
    for b in batches:
        (W_AUX / len(batches) * model(b.graph).aux_loss).backward()
    aux_ref = grads(model)
    return model, loss, batches, ref, ref_sums, aux_ref


@pytest.mark.parametrize("name,options", [("gpipe4", {}), ("symfold", {"lazy_p3": True}),
                                          ("wavek", {"split_w": True})])
def test_moe_pipeline_equals_serial(setup, name, options):
    model, loss, batches, ref, ref_sums, aux_ref = setup
    prog = make_program(name, 2, len(batches), model.num_blocks, options)
    g, sums, _ = in_process_step(model, prog, batches, loss)
    assert max(float(v.abs().max()) for k, v in ref.items() if "experts." in k) > 1e-4
    assert relative_error(g, ref) < TOL
    assert relative_error({k: torch.tensor(v) for k, v in sums.items()},
                          {k: torch.tensor(v) for k, v in ref_sums.items()}) < TOL
    # The trainer-side aux term: each stage's share from chemistry, after the step.
    model.zero_grad(set_to_none=True)
    for stage in model.stages(stage_cuts(model, prog.num_stages,
                                         num_devices=prog.num_devices)):
        for b in batches:
            share = stage.moe_aux_loss(b.graph)
            if share is not None:
                (W_AUX / len(batches) * share).backward()
    assert relative_error(grads(model), aux_ref) < TOL


def test_w_split_defers_the_experts_weight_gemms():
    """Under the W split the experts' linear maps (input projections and the fused
    SiLU+linear) queue their weight GEMMs like the dense layers do."""
    from matris.nn.deferred import WeightGradQueue, collect_weight_grads, deferrable

    torch.set_num_threads(1)
    model = random_model(preset("tiny-moe", num_blocks=2), seed=3)
    graph = microbatches(1)[0].graph
    with deferrable():
        energy = model(graph).energy
    queue = WeightGradQueue()
    with collect_weight_grads(queue):
        energy.sum().backward()
    queued = {id(w) for w, _, _ in queue.items}
    experts = [(n, p) for n, p in model.named_parameters()
               if "experts." in n and n.endswith("weight") and p.dim() == 2]
    assert experts and all(id(p) in queued for _, p in experts), \
        [n for n, p in experts if id(p) not in queued]
