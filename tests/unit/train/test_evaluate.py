"""`matris-train eval`: held-out MAEs of an exported checkpoint, with trivial baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matris.checkpoint import save_checkpoint
from matris.config import preset
from matris.datasets import ShardedDataset
from matris.graph.batch import collate
from matris.graph.build import build_graph
from matris.model import MatRIS
from matris.outputs import compute_outputs
from matris.train.evaluate import evaluate_checkpoint
from matris.train.testing import build_emt_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    root = build_emt_dataset(tmp / "data", n=24, seed=5, split=(0.5, 0.25, 0.25))
    torch.manual_seed(0)
    model = MatRIS(preset("tiny"))
    model.set_reference_energies(ShardedDataset(root, split="train").reference_energies)
    save_checkpoint(tmp / "model.pt", model)
    return tmp, root, model.double().eval()


def test_eval_matches_per_frame_reference(setup):
    tmp, root, model = setup
    out = evaluate_checkpoint(tmp / "model.pt", root, "test", dtype="float64",
                              out_dir=tmp / "eval")
    ds = ShardedDataset(root, split="test")
    assert out["split"] == "test" and out["n_frames"] == len(ds) > 0
    cfg = model.config
    e_err, f_err, f_n, base_e, base_f = [], 0.0, 0, [], 0.0
    ref = model.reference_energies.numpy()
    for i in range(len(ds)):
        f = ds[i]
        g = collate([build_graph(f["numbers"], f["positions"], f["cell"], f["pbc"],
                                 cfg.cutoff, cfg.three_body_cutoff)]).to("cpu", torch.float64)
        pred = compute_outputs(model, g, forces=True, stress=False, magmoms=False)
        n = len(f["numbers"])
        e_err.append(abs(float(pred["energy"][0]) - f["energy"]) / n)
        f_err += float(np.abs(pred["forces"].detach().numpy() - f["forces"]).sum())
        f_n += f["forces"].size
        base_e.append(abs(ref[f["numbers"]].sum() - f["energy"]) / n)
        base_f += float(np.abs(f["forces"]).sum())
    assert out["energy_mae_mev_atom"] == pytest.approx(1000 * np.mean(e_err), rel=1e-8)
    assert out["forces_mae_mev_a"] == pytest.approx(1000 * f_err / f_n, rel=1e-8)
    assert out["baseline_energy_mae_mev_atom"] == pytest.approx(1000 * np.mean(base_e), rel=1e-8)
    assert out["baseline_forces_mae_mev_a"] == pytest.approx(1000 * base_f / f_n, rel=1e-8)
    saved = json.loads((tmp / "eval" / "eval_test.json").read_text())
    assert saved["forces_mae_mev_a"] == out["forces_mae_mev_a"]
    assert (tmp / "eval" / "parity_test.png").stat().st_size > 5_000


def test_eval_refuses_empty_split(setup):
    tmp, root, _ = setup
    with pytest.raises((ValueError, KeyError, FileNotFoundError)):
        evaluate_checkpoint(tmp / "model.pt", root, "nonexistent")
