"""Launched by test_pipeline.py as ``mpirun -n 2 pp_raise.py``: pipeline rank 1 raises in
its first P2 while rank 0 blocks in a receive from it. The abort hook must end the whole
job promptly (the collective timeout is 120 s; the test requires far less)."""

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.config import load_config
from matris.train.pipeline import phases
from matris.train.pipeline.executor import PipelineRunner
from matris.train.pipeline.testing import counts_of, microbatches

env = mdist.init_distributed(device="cpu", timeout_s=120)
groups = mdist.build_groups(mdist.Topology(pp=2, dp=1, gp=1, world_size=2), env.rank)
cfg = load_config(None, ["train.dtype=float64", "train.device=cpu", "parallel.pp=2",
                         "parallel.microbatches=2", "parallel.schedule=gpipe4"])


def failing_p2(self, slot, a_in, f_acc):
    raise RuntimeError("injected failure in P2 on rank 1")


if env.rank == 1:
    phases.FourPhase.p2 = failing_p2
model = random_model(preset("tiny"), seed=3)
runner = PipelineRunner(cfg, model, groups, torch.device("cpu"))
batches = microbatches(2)
runner.run(batches, counts_of(batches))
print("UNREACHABLE", flush=True)
