"""``[mpirun -n N] gp_cli.py ARGS...``: the ``matris-train`` CLI with graph parallelism.

The trainer does not build a graph-parallel runner yet; this installs
``GraphParallelRunner.from_groups`` as its ``build_runner`` for ``parallel.gp > 1`` (the
lines the trainer needs, see docs/graph_parallel.md) and runs the unmodified CLI, so the
whole loop (sampler, step, all-reduce, clipping, AdamW, EMA, validation, checkpoints,
export) runs with GP.
"""

import sys

import matris.train.trainer as trainer_module
from matris.train.cli import main
from matris.train.graph_parallel.runner import GraphParallelRunner

default_build_runner = trainer_module.build_runner


def build_runner(cfg, model, groups, device):
    if cfg.parallel.gp > 1 and cfg.parallel.pp == 1:
        return GraphParallelRunner.from_groups(cfg, model, groups, device)
    return default_build_runner(cfg, model, groups, device)


trainer_module.build_runner = build_runner
sys.exit(main(sys.argv[1:]))
