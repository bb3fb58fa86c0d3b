"""Phase-cost measurement with late W: every W after the step's last critical action,
the same gradients as right-after W, and cost models priced from the late runs."""

from __future__ import annotations

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train.config import LossConfig
from matris.train.pipeline import measure
from matris.train.pipeline.actions import Kind
from matris.train.pipeline.testing import grads, microbatches

SPLIT = (Kind.P3, Kind.P4)


def _chain(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    times, _, _ = measure.run_chain(model, model.stages([1, 2]), batch, LossConfig(), **kw)
    return list(times), grads(model)


def test_late_w_runs_after_every_critical_action_with_the_same_gradients():
    model = random_model(preset("tiny"), seed=2).double()
    batch = microbatches(1)[0]
    order, late = _chain(model, batch, lazy=False, split=SPLIT, late=True)
    _, right_after = _chain(model, batch, lazy=False, split=SPLIT, late=False)
    _, unsplit = _chain(model, batch, lazy=False, split=())
    S = 3
    ws = [k for k in order if k[0] in (Kind.W3, Kind.W4)]
    assert order[-len(ws):] == ws  # nothing critical after the first W
    assert ws == [(Kind.W3, s) for s in range(S)] + [(Kind.W4, s) for s in reversed(range(S))]
    assert [k[0] for k in order[:-len(ws)]].count(Kind.P4) == S
    for name, g in unsplit.items():
        scale = g.abs().max().clamp_min(1e-30)
        assert torch.allclose(late[name], g, rtol=0, atol=1e-12 * scale), name
        assert torch.allclose(right_after[name], g, rtol=0, atol=1e-12 * scale), name
    assert any(g.abs().max() > 0 for g in unsplit.values())


def _fake_result(late_factor: float | None) -> dict:
    """A measure_runs-shaped result for 2 stages: unsplit t3 = 1.0 s and t4 = 0.5 s per
    stage; right-after split 1.02x (W 0.2 s); late split ``late_factor``x."""
    stages = [[0, 0, False], [0, 1, True]]
    med = {"eager": {}, "lazy": {}, "eager_split": {}, "lazy_split": {}}
    for s in range(2):
        med["eager"].update({f"P1:{s}": 0.1, f"P2:{s}": 0.1, f"P3:{s}": 1.0, f"P4:{s}": 0.5})
        med["lazy"].update({f"P1:{s}": 0.1, f"P2:{s}": 0.1, f"P3:{s}": 0.5, f"P4:{s}": 1.0})
        med["eager_split"].update({f"P3:{s}": 0.82, f"W3:{s}": 0.2,
                                   f"P4:{s}": 0.31, f"W4:{s}": 0.2})
        med["lazy_split"].update({f"P4:{s}": 0.82, f"W4:{s}": 0.2})
        if late_factor is not None:
            w = late_factor - 0.8
            med.setdefault("eager_split_late", {}).update(
                {f"P3:{s}": 0.8, f"W3:{s}": w, f"P4:{s}": 0.3, f"W4:{s}": 0.5 * w})
            med.setdefault("lazy_split_late", {}).update({f"P4:{s}": 0.8, f"W4:{s}": w})
    return {"median": med, "mem": {}, "info": {"stages": stages},
            "boundary": {"h": 8.0}}


def test_cost_models_price_splits_from_the_late_runs_when_measured():
    res = _fake_result(late_factor=1.1)
    eager = measure.cost_models(res, "fake")["eager"]
    d = res["derived"]
    assert d["w_late"]
    assert abs(d["split_factor_P3"] - 1.1) < 1e-12
    assert abs(eager.split_factor["P3"] - 1.1) < 1e-12
    assert abs(d["split_factors_w_right_after"]["P3"] - 1.02) < 1e-12
    old = _fake_result(late_factor=None)  # a file measured before the late runs existed
    eager_old = measure.cost_models(old, "fake")["eager"]
    assert not old["derived"]["w_late"]
    assert abs(eager_old.split_factor["P3"] - 1.02) < 1e-12
