"""The link fit of ``benchmarks/pipeline_link.py`` recovers a known α–β link."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "pipeline_link.py"


def _module():
    spec = importlib.util.spec_from_file_location("pipeline_link", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raw(mod, alpha, beta, real_bytes, real_extra, noisy_size=None):
    """Raw ping-pong times of an exact link; one size optionally 10× slow in every round."""
    sizes = {}
    for b in mod.SIZES:
        t = alpha + b / beta
        sizes[str(b)] = [t * (10 if b == noisy_size else 1)] * 5
    real = alpha + real_extra + real_bytes / beta
    return {"sizes": sizes, "real": {"bytes": real_bytes, "shapes": [[4, 2]],
                                     "times": [real, real * 1.5, real * 0.9]}}


def test_fit_recovers_alpha_beta_and_handoff_latency():
    mod = _module()
    alpha, beta, nbytes, extra = 3e-4, 2.5e9, 9_530_880, 5e-4
    fit = mod.fit(_raw(mod, alpha, beta, nbytes, extra))
    assert fit["alpha_s"] == pytest.approx(alpha, rel=1e-12)
    assert fit["beta_Bps"] == pytest.approx(beta, rel=1e-9)
    # The boundary's extra messages show up as hand-off latency, and α_h + bytes/β is
    # the measured boundary time (its median).
    assert fit["alpha_handoff_s"] == pytest.approx(alpha + extra, rel=1e-9)
    assert fit["alpha_handoff_s"] + nbytes / fit["beta_Bps"] == \
        pytest.approx(fit["real_one_way_s"], rel=1e-12)


def test_bandwidth_fit_ignores_one_slow_size():
    mod = _module()
    fit = mod.fit(_raw(mod, 3e-4, 2.5e9, 9_530_880, 0.0, noisy_size=mod.SIZES[-1]))
    assert fit["beta_Bps"] == pytest.approx(2.5e9, rel=1e-9)


def test_handoff_latency_never_below_alpha():
    mod = _module()
    fit = mod.fit(_raw(mod, 3e-4, 2.5e9, 9_530_880, -2e-4))  # boundary faster than the model
    assert fit["alpha_handoff_s"] == fit["alpha_s"]
