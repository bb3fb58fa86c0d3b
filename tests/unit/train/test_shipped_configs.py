"""Every config shipped in configs/ is valid, names a real preset and a consistent layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from matris.config import PRESETS
from matris.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"tiny", "demo", "4m-gpu8", "10m-gpu64", "moe-1b-gpu32"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.model.preset in PRESETS
    # a "-gpuN" config's layout must use exactly N ranks, on CUDA
    match = re.search(r"-gpu(\d+)$", path.stem)
    if match:
        p = cfg.parallel
        assert p.pp * p.dp * p.gp == int(match.group(1))
        assert cfg.train.device == "cuda"
