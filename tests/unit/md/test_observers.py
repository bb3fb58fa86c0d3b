"""Progress bar (ns/day) and thermo PNG, without running a model (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from matris.md.observers import MD_COLUMNS, RELAX_COLUMNS, Progress
from matris.md.plots import plot_thermo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_progress_bar_shows_ns_per_day(capsys):
    """10 steps of 2 fs in ~1 s of wall time = 10·2e-6 ns · 86400 s/day ≈ 1.73 ns/day."""
    bar = Progress(10, 2.0, desc="nve")
    bar.start -= 1.0  # pretend one second of wall time has passed
    bar.update(10, T=300.0)
    rate = bar.ns_per_day()
    bar.close()
    assert rate == pytest.approx(10 * 2.0 * 1e-6 * 86400.0, rel=0.05)
    err = capsys.readouterr().err  # tqdm writes to stderr
    assert "ns/day=" in err and "T=300" in err and "10/10" in err


def test_progress_bar_relax_has_no_ns_per_day(capsys):
    bar = Progress(5, None, desc="relax")
    bar.update(3, fmax=0.25)
    assert np.isnan(bar.ns_per_day())
    bar.close()
    err = capsys.readouterr().err
    assert "fmax=0.25" in err and "ns/day" not in err


def _png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG header (IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_thermo_png_md_and_relax(tmp_path):
    t = np.linspace(0.0, 0.1, 11)
    md = {c: np.sin(t + k) for k, c in enumerate(MD_COLUMNS)}
    md["time_ps"] = t
    width, height = _png_size(plot_thermo(md, tmp_path / "md.png", title="NVE", n_atoms=8))
    assert width > 500 and height > 500  # 3×2 panels
    relax = {c: np.linspace(1.0, 0.01, 6) for c in RELAX_COLUMNS}
    relax["step"] = np.arange(6.0)
    width, height = _png_size(plot_thermo(relax, tmp_path / "relax.png"))
    assert width > height  # 1×2 panels
