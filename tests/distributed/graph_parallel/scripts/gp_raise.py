"""Launched by test_gp.py as ``mpirun -n 2 gp_raise.py``: rank 1 raises in the middle of a
graph-parallel training step (its third cut-bond exchange) while rank 0 waits for it in
the same exchange. The abort hook must end the whole job promptly (the collective
timeout is 120 s; the test requires far less)."""

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.dist.halo import GraphExchange, TorchTransport
from matris.train.graph_parallel.runner import GraphParallelRunner
from matris.train.graph_parallel.testing import case_graphs, counts_of, labelled_batch, loss_config

env = mdist.init_distributed(device="cpu", timeout_s=120)
groups = mdist.build_groups(mdist.Topology(pp=1, dp=1, gp=2, world_size=2), env.rank)
transport = TorchTransport(groups.gp)


class Failing(GraphExchange):
    calls = 0

    def bonds(self, x):
        Failing.calls += 1
        if env.rank == 1 and Failing.calls == 3:
            raise RuntimeError("injected failure in the bond exchange on rank 1")
        return super().bonds(x)


runner = GraphParallelRunner(random_model(preset("tiny"), seed=3), loss_config(),
                             torch.device("cpu"), "float64", transport)
prepare = runner.prepare


def failing_prepare(graph):
    part, _ = prepare(graph)
    return part, Failing(part.plan, transport)


runner.prepare = failing_prepare
batch = labelled_batch(case_graphs("triclinic"), seed=0)
runner.run([batch], counts_of([batch]))
print("UNREACHABLE: the step finished", flush=True)
mdist.shutdown()
