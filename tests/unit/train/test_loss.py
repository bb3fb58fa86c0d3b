"""Loss terms: masking, units, kinds, and the global normalisation behind exact DP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matris.train.batch import collate_labels
from matris.train.loss import EV_PER_A3_TO_GPA, elementwise, errors, loss_sums, weighted_loss


def _frame(n, rng, drop=()):
    f = {"numbers": np.ones(n, dtype=np.uint8), "energy": rng.normal(),
         "forces": rng.normal(size=(n, 3)), "stress": rng.normal(size=(3, 3)) * 0.01,
         "magmoms": rng.normal(size=n)}
    for k in drop:
        del f[k]
    return f


def _pred(labels, rng):
    n, b = len(labels.forces), len(labels.energy)
    return {"energy": torch.tensor(rng.normal(size=b)),
            "forces": torch.tensor(rng.normal(size=(n, 3))),
            "stress": torch.tensor(rng.normal(size=(b, 3, 3)) * 0.01),
            "magmoms": torch.tensor(rng.normal(size=n))}


def test_missing_labels_are_masked_not_zero():
    rng = np.random.default_rng(0)
    frames = [_frame(2, rng), _frame(3, rng, drop=("forces", "stress")), _frame(1, rng)]
    labels = collate_labels(frames)
    assert labels.counts() == {"energy": 3, "forces": 9, "stress": 18, "magmoms": 6}
    assert torch.isnan(labels.forces[2:5]).all()  # placeholders are NaN, never 0
    pred = _pred(labels, rng)
    err = errors(pred, labels)
    assert err["forces"].numel() == 9 and torch.isfinite(err["forces"]).all()
    want = torch.cat([pred["forces"][:2] - labels.forces[:2],
                      pred["forces"][5:] - labels.forces[5:]]).reshape(-1)
    assert torch.equal(err["forces"], want)
    # energy per atom, stress in GPa
    natoms = torch.tensor([2.0, 3.0, 1.0])
    assert torch.allclose(err["energy"], (pred["energy"] - labels.energy) / natoms)
    s = (pred["stress"][[0, 2]] - labels.stress[[0, 2]]) * EV_PER_A3_TO_GPA
    assert torch.allclose(err["stress"], s.reshape(-1))


@pytest.mark.parametrize("kind", ["mse", "mae", "huber"])
def test_kinds(kind):
    e = torch.tensor([-2.0, -0.005, 0.0, 0.3])
    got = elementwise(e, kind, 0.01)
    want = {"mse": e**2, "mae": e.abs(),
            "huber": torch.tensor([0.01 * (2 - 0.005), 0.5 * 0.005**2, 0.0, 0.01 * (0.3 - 0.005)])}
    assert torch.allclose(got, want[kind])
    with pytest.raises(ValueError, match=r"loss\.kind"):
        elementwise(e, "l2", 0.01)


def test_split_batches_with_global_counts_sum_to_the_whole():
    """Two ranks' losses with global denominators add up to the loss of the union, even
    when their label sets differ (the property behind exact DP gradients)."""
    rng = np.random.default_rng(1)
    a = [_frame(2, rng, drop=("stress",)), _frame(4, rng)]
    b = [_frame(3, rng, drop=("energy", "forces")), _frame(1, rng), _frame(2, rng)]
    la, lb, lu = collate_labels(a), collate_labels(b), collate_labels(a + b)
    pa, pb = _pred(la, rng), _pred(lb, rng)
    pu = {k: torch.cat([pa[k], pb[k]]) for k in pa}
    w = {"energy": 1.0, "forces": 2.0, "stress": 0.5, "magmoms": 0.1}
    counts = {k: la.counts()[k] + lb.counts()[k] for k in w}
    assert counts == lu.counts()
    parts = sum(weighted_loss(loss_sums(p, lab, "huber", 0.1), w, counts)
                for p, lab in ((pa, la), (pb, lb)))
    whole = weighted_loss(loss_sums(pu, lu, "huber", 0.1), w, counts)
    assert torch.allclose(parts, whole, rtol=1e-14)
    # Per-rank (local) denominators would not add up: the test can tell.
    local = sum(weighted_loss(loss_sums(p, lab, "huber", 0.1), w, lab.counts())
                for p, lab in ((pa, la), (pb, lb)))
    assert not torch.allclose(local, whole)


def test_zero_weight_and_no_labels_drop_the_term():
    rng = np.random.default_rng(2)
    labels = collate_labels([_frame(2, rng, drop=("stress",))])
    pred = _pred(labels, rng)
    sums = loss_sums(pred, labels, "mse", 0.1)
    w = {"energy": 0.0, "forces": 1.0, "stress": 1.0, "magmoms": 0.0}
    got = weighted_loss(sums, w, labels.counts())
    assert torch.allclose(got, sums["forces"] / 6)
