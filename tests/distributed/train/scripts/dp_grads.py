"""Launched by test_dp.py as `mpirun -n 2 dp_grads.py DATASET OUT`.

Each DP rank takes a different batch (with different labels missing, so the loss
normalisation across ranks matters); the trainer computes the step's gradients and
all-reduces them. Rank 0 then computes the serial gradient of one collated batch of the
union of both ranks' frames on an identical model, and writes both to OUT/grads.pt.
"""

import copy
import sys
from pathlib import Path

import torch

from matris.graph import build_graph, collate
from matris.train import dist as mdist
from matris.train.batch import Batch, collate_labels
from matris.train.config import load_config
from matris.train.step import LocalRunner
from matris.train.trainer import Trainer

root, out = sys.argv[1], Path(sys.argv[2])
cfg = load_config(None, [f"data.root={root}", "parallel.dp=2", "train.dtype=float64",
                         "train.device=cpu", "model.preset=tiny", "loss.kind=huber",
                         "loss.huber_delta=0.05", "loss.weights.stress=0.3",
                         "loss.weights.magmoms=0.0"])
env = mdist.init_distributed(device="cpu", timeout_s=120)
trainer = Trainer(cfg, env)
serial_model = copy.deepcopy(trainer.model)  # identical initial weights on every rank
ds = trainer.train_ds
cut = trainer.model.config


def frames_for(rank: int) -> list[dict]:
    """Rank 0: frames 0-2 with stress dropped from frame 1; rank 1: frames 3-7 with the
    energy dropped from frame 4 and forces from frame 6."""
    picks = [0, 1, 2] if rank == 0 else [3, 4, 5, 6, 7]
    frames = [dict(ds[i]) for i in picks]
    drops = {0: {1: "stress"}, 1: {1: "energy", 3: "forces"}}[rank]
    for j, key in drops.items():
        del frames[j][key]
    return frames


def batch_of(frames: list[dict]) -> Batch:
    graphs = [build_graph(f["numbers"], f["positions"], f["cell"], f["pbc"], cut.cutoff,
                          cut.three_body_cutoff) for f in frames]
    return Batch(collate(graphs), collate_labels(frames), tuple(range(len(frames))))


mine = frames_for(env.rank)
result, counts = trainer.compute_gradients([batch_of(mine)])
# Parameters no rank touched keep grad None (as serially); stored as absent.
dp_grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
            if p.grad is not None}

if env.rank == 0:
    union = frames_for(0) + frames_for(1)
    serial = LocalRunner(serial_model, cfg.loss, torch.device("cpu"), "float64")
    batch = batch_of(union).to("cpu", torch.float64)
    serial.run([batch], batch.labels.counts())
    # Unused parameters (the magmom head: weight 0) have no gradient serially, and the DP
    # all-reduce leaves them without one too: the key sets must match.
    ref = {n: p.grad.detach().clone() for n, p in serial_model.named_parameters()
           if p.grad is not None}
    torch.save({"dp": dp_grads, "serial": ref, "counts": counts}, out / "grads.pt")
    print("WROTE", flush=True)
mdist.barrier()
mdist.shutdown()
