"""compile=... : torch.compile when it works, a clean eager fallback (one warning) when
it does not."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from matris.md import MatRISCalculator

from .conftest import si_cell


def _failing_backend(gm, example_inputs):
    raise RuntimeError("backend exploded on purpose")


torch._dynamo.register_backend(name="md_test_failing_backend")(_failing_backend)


def test_unknown_backend_falls_back_at_construction(model):
    with pytest.warns(RuntimeWarning, match="falling back to eager"):
        calc = MatRISCalculator(model, dtype="float64", compile="no_such_backend")
    assert not calc.runner.compiled
    assert "no_such_backend" in calc.runner.fallback_reason


def test_failing_backend_falls_back_once_with_same_results(model):
    atoms = si_cell(1)
    eager = MatRISCalculator(model, dtype="float64")
    calc = MatRISCalculator(model, dtype="float64", compile="md_test_failing_backend")
    assert calc.runner.compiled
    with pytest.warns(RuntimeWarning, match="falling back to eager") as record:
        energy = calc.get_potential_energy(atoms)
    assert len([w for w in record if "falling back" in str(w.message)]) == 1
    assert not calc.runner.compiled
    assert "exploded on purpose" in calc.runner.fallback_reason
    assert energy == eager.get_potential_energy(atoms)
    atoms.positions[0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        np.testing.assert_array_equal(calc.get_forces(atoms), eager.get_forces(atoms))


def test_bad_input_does_not_disable_compilation(model):
    """An input error raised by the eager retry is the user's problem: re-raised, and
    compilation stays on."""
    calc = MatRISCalculator(model, dtype="float64", compile="md_test_failing_backend")

    def broken(*args, **kwargs):
        raise ValueError("bad graph")

    calc.runner.model = broken  # the eager retry fails too
    with pytest.raises(ValueError, match="bad graph"):
        calc.get_potential_energy(si_cell(1))
    assert calc.runner.compiled


def test_compile_type_checked(model):
    with pytest.raises(TypeError, match="compile"):
        MatRISCalculator(model, compile=3)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MATRIS_TEST_COMPILE") != "1",
                    reason="first compilation takes minutes on 2 CPU cores; set "
                           "MATRIS_TEST_COMPILE=1 to run")
@pytest.mark.parametrize("backend", ["aot_eager", True])
def test_real_compile_matches_eager_or_falls_back(model, backend):
    """torch.compile on CPU (aot_eager: tracing + AOT autograd; True: inductor, needs a
    C++ compiler) either runs and matches eager, or falls back with a warning."""
    atoms = si_cell(1)
    eager = MatRISCalculator(model, dtype="float64")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        calc = MatRISCalculator(model, dtype="float64", compile=backend)
        energy, forces = calc.get_potential_energy(atoms), calc.get_forces(atoms)
        atoms.positions[1] += 0.02  # a second geometry (dynamic shapes)
        energy2 = calc.get_potential_energy(atoms)
    fell_back = [w for w in record if "falling back to eager" in str(w.message)]
    assert calc.runner.compiled != bool(fell_back)
    atoms.positions[1] -= 0.02
    assert energy == pytest.approx(eager.get_potential_energy(atoms), rel=1e-11)
    np.testing.assert_allclose(forces, eager.get_forces(atoms), atol=1e-10)
    atoms.positions[1] += 0.02
    assert energy2 == pytest.approx(eager.get_potential_energy(atoms), rel=1e-11)
