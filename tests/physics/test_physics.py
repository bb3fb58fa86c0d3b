"""Physics of the model (float64, random perturbed weights): symmetries, conservative
forces and stress, extensivity, smoothness at both cutoffs, isolated atoms, batching."""

from __future__ import annotations

import pytest

from matris import testing as phys


def test_rotation_translation(model, crystal, molecule, slab):
    for s in (crystal, molecule, slab):
        phys.check_invariance(model, s)


def test_permutation(model, crystal, molecule):
    phys.check_permutation(model, crystal)
    phys.check_permutation(model, molecule)


def test_forces_match_finite_differences(model, crystal, molecule):
    phys.check_forces_fd(model, crystal)
    phys.check_forces_fd(model, molecule)


def test_stress_matches_finite_strain(model, crystal):
    phys.check_stress_fd(model, crystal)


def test_extensivity(model, crystal):
    phys.check_extensivity(model, crystal)


@pytest.mark.parametrize("which", ["two_body", "three_body"])
def test_cutoff_continuity(model, which):
    phys.check_cutoff_continuity(model, which)


@pytest.mark.parametrize(("which", "module"), [("two_body", "atom_attention"),
                                               ("three_body", "line_attention")])
def test_cutoff_test_catches_unsmooth_attention(model, which, module):
    """Negative control: without the envelope on attention weights (as in the official
    model) the same scan sees a jump, so the continuity test can fail."""
    for block in model.blocks:
        getattr(block, module).smooth = False
    try:
        d_e, d_f = phys.cutoff_scan(model, which)
    finally:
        for block in model.blocks:
            getattr(block, module).smooth = True
    assert d_e > 1e-5 and d_f > 1e-5


def test_isolated_atoms(model):
    phys.check_isolated_atoms(model)


def test_batch_equals_single(model, crystal, molecule, slab):
    phys.check_batch_consistency(model, [crystal, molecule, slab, crystal])
