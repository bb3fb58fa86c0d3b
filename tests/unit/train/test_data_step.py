"""Loader (graphs built in workers, in the planned order) and the local training step."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from matris.datasets import ShardedDataset
from matris.train.data import GraphDataset, StepLoader
from matris.train.sampler import StepSampler
from matris.train.testing import build_emt_dataset


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=24, seed=2)


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_loader_yields_the_planned_frames(emt_root, workers):
    ds = ShardedDataset(emt_root, "train")
    sampler = StepSampler(ds.natoms, max_atoms=20, dp_size=2, dp_rank=1, microbatches=2, seed=4)
    sampler.load_state_dict({"epoch": 1, "step": 1, "seed": 4})  # start mid-epoch
    loader = StepLoader(GraphDataset(ds, 5.0, 3.5), sampler, max_steps=3, num_workers=workers)
    steps = list(loader)
    expected = list(itertools.islice(iter(copy.copy(sampler)), 3))
    assert [p for p, _ in steps] == expected and expected[0].step == 1
    for plan, batches in steps:
        for mb, frames in zip(batches, plan.microbatches):
            assert mb.frames == frames
            assert mb.graph.num_structures == len(frames)
            want = np.concatenate([ds[i]["positions"] for i in frames])
            assert np.array_equal(mb.graph.positions.numpy(), want)
            assert mb.labels.counts()["forces"] == 3 * int(ds.natoms[list(frames)].sum())
    assert (sampler.epoch, sampler.step) == (1, 1)  # the loader never moves the sampler


@pytest.fixture(scope="module")
def trainer(emt_root, tmp_path_factory):
    from matris.train import dist as mdist
    from matris.train.config import load_config
    from matris.train.trainer import Trainer

    env = mdist.init_distributed(device="cpu", abort_hook=False)
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [f"data.root={emt_root}", "train.dtype=float64", "train.device=cpu",
                             f"log.out={out}", "train.max_atoms=16"])
    return Trainer(cfg, env)


def _batch(trainer, frames):
    from matris.graph import build_graph, collate
    from matris.train.batch import Batch, collate_labels

    mc = trainer.model.config
    graphs = [build_graph(f["numbers"], f["positions"], f["cell"], f["pbc"], mc.cutoff,
                          mc.three_body_cutoff) for f in frames]
    return Batch(collate(graphs), collate_labels(frames), tuple(range(len(frames))))


def test_step_updates_weights_and_reports_terms(trainer):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    frames = [dict(trainer.train_ds[i]) for i in range(2)]
    metrics = trainer.train_step([_batch(trainer, frames)])
    assert metrics["loss"] > 0 and np.isfinite(metrics["grad_norm"])
    assert {"loss_energy", "loss_forces", "loss_stress"} <= set(metrics)
    assert metrics["frames"] == 2
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed


def test_non_finite_gradient_stops_training_without_touching_weights(trainer):
    frames = [dict(trainer.train_ds[0])]
    frames[0]["energy"] = np.nan  # a corrupt label
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        trainer.train_step([_batch(trainer, frames)])
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_molecule_next_to_a_stress_labelled_crystal_gives_finite_gradients(trainer):
    crystal = dict(trainer.train_ds[0])
    molecule = {"numbers": np.array([29, 29], dtype=np.uint8),
                "positions": np.array([[0.0, 0.0, 0.0], [2.4, 0.0, 0.0]]),
                "cell": np.zeros((3, 3)), "pbc": np.zeros(3, dtype=bool), "energy": -1.0,
                "forces": np.zeros((2, 3))}
    batch = _batch(trainer, [crystal, molecule]).to("cpu", torch.float64)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.runner.run([batch], batch.labels.counts())
    for name, p in trainer.model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
