"""A 200-step tiny-model run must clearly lower the validation force MAE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matris.train.metrics import read_metrics
from matris.train.testing import build_emt_dataset

REPO = Path(__file__).resolve().parents[3]


# A chemically coherent family of the embedded data (alkaline-earth, Ti, Zr, Al and Si
# oxides and their elements: ~360 frames, 33 parent structures). A stride over all 89
# elements would put unseen elements in the validation split, which 200 steps of a tiny
# model cannot be expected to learn.
OXIDE_FAMILY = {"O", "Mg", "Ca", "Sr", "Ba", "Ti", "Zr", "Si", "Al"}


def _embedded_subset(root: Path, n: int = 256) -> Path:
    """``n`` frames of the oxide family, spread over the shipped embedded extxyz, built
    as a dataset root (splits by parent structure)."""
    import itertools

    import ase.io

    from matris.datasets import BuildConfig, build_dataset
    from matris.datasets.embedded import embedded_dataset_path
    from matris.datasets.sources.ase_files import plain_file

    src = root.parent / "embedded_subset.extxyz"
    with plain_file(embedded_dataset_path()) as plain:
        frames = [a for a in ase.io.iread(plain, index=":")
                  if set(a.get_chemical_symbols()) <= OXIDE_FAMILY]
    frames = list(itertools.islice(frames, 0, None, max(1, len(frames) // n)))[:n]
    ase.io.write(src, frames, format="extxyz")
    build_dataset(BuildConfig(source="extxyz", inputs=[src], out=root, split=(0.8, 0.2, 0.0),
                              progress=False))
    return root


def _has_embedded() -> bool:
    try:
        from matris.datasets.embedded import embedded_dataset_path

        embedded_dataset_path()
        return True
    except (ImportError, FileNotFoundError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("source", [
    "emt",
    pytest.param("embedded", marks=pytest.mark.skipif(
        not _has_embedded(), reason="datasets/embedded/ptable_chgnet.extxyz.gz not shipped yet")),
])
def test_200_steps_lower_validation_force_mae(tmp_path, source):
    # EMT-labelled alloys (always), and a subset of the shipped embedded data when present.
    # Targets: validation force MAE after 200 steps below `force_ratio` × the step-0 value
    # (an untrained or broken trainer stays near 1×), and for the embedded data also the
    # energy MAE below `energy_ratio` ×. The embedded oxides (9 elements, teacher MD up to
    # 1500 K) learn slower than the EMT alloys; the Huber loss (as in configs/demo.yaml)
    # keeps the few high-temperature frames with forces of ~20 eV/Å from dominating the
    # MSE. Measured on 2026-11-22: forces 186 → 110 meV/Å (0.59×), energy 61 → 13
    # meV/atom (0.21×).
    extra: list[str] = []
    if source == "emt":
        root = build_emt_dataset(tmp_path / "emt", n=64, seed=3)
        force_ratio, energy_ratio = 0.6, None
    else:
        root = _embedded_subset(tmp_path / "embedded")
        force_ratio, energy_ratio = 0.75, 0.5
        extra = ["loss.kind=huber", "loss.huber_delta=0.05"]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "matris.train.cli", str(REPO / "configs" / "tiny.yaml"),
           f"data.root={root}", f"log.out={out}", "train.steps=200", "log.val_at_start=true",
           "log.val_every=100", "log.progress=false", "checkpoint.every=0",
           "data.val_max_frames=32", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-5000:]
    val = read_metrics(out / "metrics.jsonl", "val")
    assert [r["step"] for r in val] == [0, 100, 200]
    before, after = val[0]["forces_mae_mev_a"], val[-1]["forces_mae_mev_a"]
    assert after < force_ratio * before, f"force MAE {before:.1f} -> {after:.1f} meV/Å"
    if energy_ratio is not None:
        e0, e1 = val[0]["energy_mae_mev_atom"], val[-1]["energy_mae_mev_atom"]
        assert e1 < energy_ratio * e0, f"energy MAE {e0:.1f} -> {e1:.1f} meV/atom"
    assert (out / "parity.png").stat().st_size > 10_000
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert (out / "model.pt").is_file()
