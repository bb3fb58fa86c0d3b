"""Radial and angular bases with smooth cutoff envelopes.

All frequencies are fixed buffers (not learnable): every pipeline stage recomputes its
geometry, so learnable basis parameters would be replicated across stages with
gradients summed over the pipeline group. The official model learns them (17 scalars
in the 10M model); see docs/model.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


def envelope_coefficients(p: int) -> list[float]:
    """Coefficients (highest degree first) of poly(x) with
    u(x) = 1 − (p+1)(p+2)/2·x^p + p(p+2)·x^(p+1) − p(p+1)/2·x^(p+2) = (1 − x)^3·poly(x)."""
    # Highest-first: index 0 ↔ x^(p+2), index 1 ↔ x^(p+1), index 2 ↔ x^p, last ↔ x^0.
    u = np.zeros(p + 3)
    u[0] = -p * (p + 1) / 2
    u[1] = p * (p + 2)
    u[2] = -(p + 1) * (p + 2) / 2
    u[-1] = 1.0
    cube = np.array([-1.0, 3.0, -3.0, 1.0])  # (1 − x)^3 highest first
    quot, rem = np.polydiv(u, cube)
    if np.abs(rem).max() > 1e-9:
        raise AssertionError("envelope polynomial is not divisible by (1 - x)^3")
    return [float(c) for c in quot]


class Envelope(nn.Module):
    """Polynomial cutoff envelope u(d/c): 1 at 0, C² zero at d = c, 0 beyond.

    Evaluated as (1 − x)^3·poly(x) with x clamped to 1, so it is exactly zero with zero
    derivatives beyond the cutoff and needs no branch (twice differentiable).
    """

    def __init__(self, cutoff: float, exponent: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.coefficients = envelope_coefficients(exponent)

    def forward(self, d: Tensor) -> Tensor:
        x = (d / self.cutoff).clamp(max=1.0)
        acc = torch.full_like(x, self.coefficients[0])
        for c in self.coefficients[1:]:
            acc = acc * x + c
        one_minus = 1.0 - x
        return one_minus * one_minus * one_minus * acc


class Bessel(nn.Module):
    """sqrt(2/c)·sin(nπ d/c)/d, n = 1..R (fixed frequencies), without envelope. (U,) → (U, R)."""

    def __init__(self, cutoff: float, num: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("frequencies", torch.arange(1, num + 1, dtype=torch.float64)
                             * math.pi, persistent=False)

    def forward(self, d: Tensor) -> Tensor:
        f = self.frequencies.to(d.dtype)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(d[:, None] * (f / self.cutoff)) \
            / d[:, None]


def fourier_angle_basis(cos: Tensor, num: int) -> Tensor:
    """Fourier features of θ = arccos(x), x = (1 − 1e-6)·cos θ: (A,) → (A, num).

    [1/√2, sin(gθ)_{g=1..F}, cos(gθ)_{g=1..F}] / √π with F = (num − 1)/2 and integer
    frequencies, evaluated with Chebyshev recurrences (cos gθ = T_g(x),
    sin gθ = sin θ·U_{g−1}(x)): no arccos, finite derivatives at θ = 0, π.
    """
    x = cos * (1.0 - 1e-6)
    n_freq = (num - 1) // 2
    sin_t = torch.sqrt(1.0 - x * x)
    feats = [torch.full_like(x, 1.0 / math.sqrt(2.0))]
    sins, coss = [], []
    t_prev, t_cur = torch.ones_like(x), x  # T_0, T_1
    u_prev, u_cur = torch.zeros_like(x), torch.ones_like(x)  # U_{-1}, U_0
    for _ in range(n_freq):
        coss.append(t_cur)
        sins.append(sin_t * u_cur)
        t_prev, t_cur = t_cur, 2.0 * x * t_cur - t_prev
        u_prev, u_cur = u_cur, 2.0 * x * u_cur - u_prev
    feats += sins + coss
    return torch.stack(feats, dim=1) / math.sqrt(math.pi)
