"""Physics-suite fixtures: a random-weight float64 model per preset and test structures.

`PHYSICS_PRESETS` lists the presets the suite runs on (dense and MoE).
"""

from __future__ import annotations

import numpy as np
import pytest

from matris.config import preset
from matris.testing import random_model

PHYSICS_PRESETS = ["tiny", "tiny-moe"]


@pytest.fixture(scope="module", params=PHYSICS_PRESETS)
def model(request):
    return random_model(preset(request.param), seed=3)


@pytest.fixture(scope="module")
def crystal():
    """A skewed 5-atom cell of three elements with short bonds (large forces)."""
    rng = np.random.default_rng(11)
    cell = np.array([[4.2, 0.0, 0.0], [0.9, 3.9, 0.0], [0.4, -0.7, 4.4]])
    pos = rng.random((5, 3)) @ cell
    return np.array([14, 8, 8, 26, 1]), pos, cell, np.ones(3, bool)


@pytest.fixture(scope="module")
def molecule():
    pos = np.array([[0.0, 0, 0], [1.1, 0.1, 0], [-0.4, 1.0, 0.2], [0.3, -0.5, 1.3],
                    [2.6, 1.2, -0.4]])
    return np.array([6, 1, 1, 8, 7]), pos, np.zeros((3, 3)), np.zeros(3, bool)


@pytest.fixture(scope="module")
def slab():
    rng = np.random.default_rng(5)
    cell = np.array([[3.6, 0, 0], [1.2, 3.3, 0], [0, 0, 0]])
    pos = rng.random((4, 3)) * [3.0, 3.0, 2.5]
    return np.array([29, 29, 8, 1]), pos, cell, np.array([True, True, False])
