"""train.max_edges end to end: the trainer counts edges, caps micro-batches, and trains."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from matris.train.data import StepLoader
from matris.train.edge_counts import cache_path
from matris.train.sampler import StepSampler
from matris.train.testing import build_emt_dataset

MAX_EDGES = 800


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from matris.train import dist as mdist
    from matris.train.config import load_config
    from matris.train.trainer import Trainer

    root = build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=24, seed=4)
    env = mdist.init_distributed(device="cpu", abort_hook=False)
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [f"data.root={root}", "train.dtype=float64", "train.device=cpu",
                             f"log.out={out}", "train.steps=3", "train.max_atoms=64",
                             f"train.max_edges={MAX_EDGES}", "parallel.microbatches=2",
                             "checkpoint.every=0", "log.every=1", "log.val_every=0",
                             "log.progress=false", "log.plots=false", "log.tensorboard=false",
                             "data.val_max_frames=4"])
    return Trainer(cfg, env)


def test_edge_counts_are_cached_and_aligned_with_the_splits(trainer):
    cutoff = trainer.model.config.cutoff
    assert cache_path(trainer.cfg.data.root, cutoff).is_file()
    assert len(trainer.edges) == len(trainer.train_ds) + len(trainer.val_ds)
    assert np.array_equal(trainer.sampler.nedges, trainer.edges[trainer.train_ds.indices])


def test_micro_batches_respect_the_edge_cap_on_the_real_graphs(trainer):
    loader = StepLoader(trainer.graphs_of(trainer.train_ds), trainer.sampler,
                        max_steps=trainer.sampler.steps_in_epoch(0))
    n_frames = 0
    for _, batches in loader:
        for b in batches:
            edges = int(b.graph.num_edges.sum())  # the graphs the model will see
            assert edges == int(trainer.sampler.nedges[list(b.frames)].sum())
            assert edges <= MAX_EDGES or b.n_frames == 1
            n_frames += b.n_frames
    assert n_frames == len(trainer.train_ds)
    # The cap binds here: by atoms alone some micro-batch would hold more edges.
    by_atoms = StepSampler(trainer.train_ds.natoms, max_atoms=64, microbatches=2)
    assert max(trainer.sampler.nedges[p].sum() for p in by_atoms.epoch_plan(0)) > MAX_EDGES


def test_a_config_with_max_edges_trains(trainer):
    last = trainer.fit()
    assert trainer.step == 3
    assert math.isfinite(last["loss"]) and last["loss"] > 0
    assert last["n_frames"] == 4  # the final validation ran over data.val_max_frames
    assert (Path(trainer.cfg.log.out) / "metrics.jsonl").is_file()
