"""matris.md: ASE calculator, neighbour-list reuse, MD/relax drivers and `matris-md`.

Public API: `MatRISCalculator` (ASE calculator with skin reuse, batch evaluation and
opt-in torch.compile), `MatrisInputError`, and the drivers in `matris.md.drivers`.
"""

from matris.md.calculator import MatRISCalculator
from matris.md.validate import MatrisInputError

__all__ = ["MatRISCalculator", "MatrisInputError"]
