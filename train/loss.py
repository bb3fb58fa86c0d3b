"""Weighted energy / force / stress / magmom loss with masks and global normalisation.

    L = Σ_t w_t · (Σ_{labelled components c} ℓ(pred_c − label_c)) / N_t

with ℓ ∈ {squared error (mse), absolute error (mae), Huber(δ)} and N_t the number of
labelled components of term t in the *whole step* (all micro-batches, all DP ranks):

- energy: per-atom energy E/N in eV/atom, one component per frame with an energy label
  (the model's energy already includes the per-element reference energies, so it is
  compared with the total-energy label directly);
- forces: eV/Å, three components per atom with a force label;
- stress: GPa (1 eV/Å³ = 160.2177 GPa, so that its scale is comparable), nine components per
  frame with a stress label;
- magmoms: μB, one per atom with a magmom label.

Each rank computes the numerators of its own micro-batches and divides by the *global*
counts (summed over DP before the forward); the DP gradient all-reduce is then a plain sum
and the result equals the serial gradient on the union of the batches exactly, even when
ranks hold different numbers of labels. Terms are separable, so a pipeline can evaluate the
energy term on its last stage and forces/stress on its first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from .batch import LABELS, Labels

EV_PER_A3_TO_GPA = 160.21766208


def elementwise(err: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """ℓ applied to each element of ``err`` (prediction − label)."""
    if kind == "mse":
        return err.square()
    if kind == "mae":
        return err.abs()
    if kind == "huber":
        a = err.abs()
        return torch.where(a <= delta, 0.5 * err.square(), delta * (a - 0.5 * delta))
    raise ValueError(f"loss.kind must be one of mse, mae, huber; got {kind!r}")


def pairs(pred: Mapping[str, torch.Tensor], labels: Labels,
          terms: Iterable[str] = LABELS) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, label) of the labelled components of each term, in loss units.

    Flat tensors: energy (n_E,) eV/atom, forces (3·n_F,) eV/Å, stress (9·n_S,) GPa,
    magmoms (n_M,) μB. A term whose prediction is missing from ``pred`` is skipped.
    """
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for term in terms:
        if pred.get(term) is None:
            continue
        mask = getattr(labels, f"{term}_mask")
        p, y = pred[term][mask], getattr(labels, term)[mask]
        if term == "energy":
            n = labels.natoms[mask].to(p.dtype)
            p, y = p / n, y / n
        elif term == "stress":
            p, y = p * EV_PER_A3_TO_GPA, y * EV_PER_A3_TO_GPA
        out[term] = (p.reshape(-1), y.reshape(-1))
    return out


def errors(pred: Mapping[str, torch.Tensor], labels: Labels,
           terms: Iterable[str] = LABELS) -> dict[str, torch.Tensor]:
    """Prediction − label per labelled component, in loss units (see :func:`pairs`)."""
    return {t: p - y for t, (p, y) in pairs(pred, labels, terms).items()}


def loss_sums(pred: Mapping[str, torch.Tensor], labels: Labels, kind: str, delta: float,
              terms: Iterable[str] = LABELS) -> dict[str, torch.Tensor]:
    """Σ ℓ over the labelled components of each term (differentiable scalar tensors)."""
    return {t: elementwise(e, kind, delta).sum()
            for t, e in errors(pred, labels, terms).items()}


def weighted_loss(sums: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                  counts: Mapping[str, float]) -> torch.Tensor:
    """Σ_t w_t · sums_t / counts_t over terms with w_t > 0 and counts_t > 0.

    ``counts`` are the global (step, all DP ranks) label counts. Returns a scalar tensor
    (zero, without a graph, when no term applies).
    """
    total = None
    for term, s in sums.items():
        w, c = float(weights.get(term, 0.0)), float(counts.get(term, 0))
        if w > 0 and c > 0:
            piece = s * (w / c)
            total = piece if total is None else total + piece
    if total is None:
        ref = next(iter(sums.values()), None)
        return torch.zeros((), dtype=ref.dtype if ref is not None else torch.float64)
    return total
