"""The trainer trains an MoE preset from YAML (configs/tiny-moe.yaml) with the balance
loss weight ``loss.weights.moe_balance``: the trainer's added gradient equals the
gradient of w · mean over micro-batches of the *forward's* aux loss (float64), the
step's mean aux is reported, and bad settings are refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.config import ConfigError, load_config
from matris.train.moe import BalanceLoss
from matris.train.testing import build_emt_dataset

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "tiny-moe.yaml"
W = 0.3


@pytest.fixture(scope="module")
def emt_root(tmp_path_factory):
    return build_emt_dataset(tmp_path_factory.mktemp("emt") / "ds", n=12, seed=3)


def _trainer(root, out, weight):
    from matris.train import dist as mdist
    from matris.train.trainer import Trainer

    env = mdist.init_distributed(device="cpu", abort_hook=False)
    cfg = load_config(CONFIG, [f"data.root={root}", f"log.out={out}", "train.dtype=float64",
                               "train.max_atoms=16", "log.tensorboard=false",
                               f"loss.weights.moe_balance={weight}"])
    tr = Trainer(cfg, env)
    torch.set_num_threads(1)  # init_distributed picks 2; spinning threads on a busy VM
    return tr


def _batches(trainer, groups):
    from matris.graph import build_graph, collate
    from matris.train.batch import Batch, collate_labels

    mc = trainer.model.config
    out = []
    for frames in groups:
        frames = [dict(trainer.train_ds[i]) for i in frames]
        graphs = [build_graph(f["numbers"], f["positions"], f["cell"], f["pbc"], mc.cutoff,
                              mc.three_body_cutoff) for f in frames]
        out.append(Batch(collate(graphs), collate_labels(frames), tuple(range(len(frames)))))
    return out


def test_trainer_balance_term_equals_forward_aux_gradient(emt_root, tmp_path):
    runs = {}
    for w in (0.0, W):
        tr = _trainer(emt_root, tmp_path / f"w{w}", w)
        assert tr.model.config.moe_config.num_experts == 4 and tr.balance.active
        batches = _batches(tr, [[0, 1], [2]])
        ref_model = copy.deepcopy(tr.model)  # the initial weights (same seed for both)
        result, counts = tr.compute_gradients(batches)
        assert counts["microbatches"] == 2
        runs[w] = ({n: p.grad.clone() for n, p in tr.named_params if p.grad is not None},
                   result.sums["moe_balance"], ref_model, batches)
    g0, aux0, ref_model, batches = runs[0.0]
    g1, aux1, _, _ = runs[W]
    # Reference: w · mean over micro-batches of the training forward's aux loss.
    ref_model.train()
    ref_model.zero_grad(set_to_none=True)
    forward_aux = [ref_model(b.graph.to(dtype=torch.float64)).aux_loss for b in batches]
    (W * sum(forward_aux) / len(batches)).backward()
    ref = {n: p.grad for n, p in ref_model.named_parameters() if p.grad is not None}
    assert ref and all(".router." in n for n in ref)
    for n, r in ref.items():
        diff = g1[n] - g0.get(n, torch.zeros_like(r))
        assert float((diff - r).abs().max()) <= 1e-10 * float(r.abs().max()), n
    for n in set(g1) - set(ref):  # everything else is the task gradient, unchanged
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-12, atol=0)
    mean_aux = float(sum(a.detach() for a in forward_aux)) / len(batches)
    assert aux0 == pytest.approx(mean_aux, rel=1e-12) and aux1 == pytest.approx(mean_aux)


def test_train_step_reports_moe_balance(emt_root, tmp_path):
    tr = _trainer(emt_root, tmp_path, 0.01)
    metrics = tr.train_step(_batches(tr, [[0, 1]]))
    assert metrics["moe_balance"] > 0 and metrics["loss"] > 0


def test_balance_weight_is_validated_and_feature_routers_refused():
    with pytest.raises(ConfigError, match=r"loss\.weights\.moe_balance"):
        load_config(CONFIG, ["loss.weights.moe_balance=-1"])
    assert load_config(None, []).loss.weights.moe_balance == 0.01
    model = random_model(preset("tiny-moe", moe={"router": "features"}), seed=0)
    with pytest.raises(ValueError, match="moe_balance"):
        BalanceLoss(model, None, 0.1)
    assert not BalanceLoss(model, None, 0.0).active
    assert not BalanceLoss(random_model(preset("tiny"), seed=0), None, 0.1).active
