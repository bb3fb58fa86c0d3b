"""LR schedule, clipping, EMA."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from matris.train.config import OptimConfig
from matris.train.ema import EMA
from matris.train.optim import build_optimizer, clip_gradients, lr_at


def test_warmup_then_cosine():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg, 14) for s in range(15)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    const = OptimConfig(lr=0.5, schedule="constant")
    assert {lr_at(s, const, 10) for s in range(10)} == {0.5}


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model.named_parameters(), OptimConfig(weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_clip_to_max_norm_and_reduce_hook():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_gradients([p], None) == pytest.approx(5.0)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0, 0.0, 0.0]))
    # A pipeline peer holds a gradient of norm 12 elsewhere: global norm 13.
    norm = clip_gradients([p], 1.0, reduce_sum=lambda sq: sq + 144.0)
    assert norm == pytest.approx(13.0)
    assert float(p.grad.norm()) == pytest.approx(5.0 / 13.0, rel=1e-5)


def test_ema_average_warmup_and_swap():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model.named_parameters(), decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.5))
    with ema.swapped():
        assert torch.allclose(model.weight, torch.full((1, 2), 0.5))
    assert torch.allclose(model.weight, torch.ones(1, 2))
    warm = EMA(model.named_parameters(), decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)
    state = ema.state_dict()
    other = EMA(model.named_parameters(), decay=0.5, warmup=False)
    other.load_state_dict(state)
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"]) and other.updates == 1
