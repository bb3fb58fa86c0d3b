"""Generation settings: one frozen dataclass, every number the output depends on."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SynthConfig:
    """All knobs of `matris-data synth`; the output is a pure function of these + versions.

    Units: lengths Å, temperatures K, times fs, forces eV/Å.
    """

    seed: int = 0
    #: Total frames to produce (accepted frames; rejected candidates are retried).
    frames: int = 6000
    #: Shares of `frames` by kind (elemental, binary, ternary, md); they sum to 1.
    frac_elemental: float = 0.44
    frac_binary: float = 0.29
    frac_ternary: float = 0.14
    frac_md: float = 0.13
    #: Static frames per compound parent structure (sets how many parents are chosen).
    frames_per_parent: int = 8
    #: Share of ternary parents that are perovskites (the rest are spinels).
    perovskite_share: float = 0.6
    #: Atom-count window of supercells for static frames and for MD cells.
    natoms_min: int = 8
    natoms_max: int = 64
    md_natoms_min: int = 16
    md_natoms_max: int = 48
    #: Largest supercell aspect ratio (longest / shortest perpendicular cell width).
    max_aspect: float = 2.5
    #: Symmetric random strain: each independent component uniform in ±max_strain.
    max_strain: float = 0.05
    #: Rattle: Gaussian displacement σ drawn uniformly in [rattle_min, rattle_max] Å, capped
    #: at rattle_nn_cap × (parent nearest-neighbour distance) so that molecular crystals
    #: (H2: 0.74 Å bonds) are not torn apart.
    rattle_min: float = 0.02
    rattle_max: float = 0.15
    rattle_nn_cap: float = 0.12
    #: MD: snapshots per trajectory, steps between snapshots, steps before the first one,
    #: temperature range, Langevin friction (1/fs).
    md_snapshots: int = 10
    md_stride: int = 10
    md_equilibration: int = 20
    md_t_min: float = 300.0
    md_t_max: float = 1500.0
    md_friction: float = 0.02
    #: Rejection thresholds: shortest distance / (sum of covalent radii), max |F| (eV/Å).
    min_distance_ratio: float = 0.7
    max_force: float = 50.0
    #: Candidates tried per wanted frame before a parent gives up.
    max_attempts_per_frame: int = 4
    #: Teacher and its model version.
    teacher: str = "chgnet"
    teacher_model: str = "0.3.0"

    def __post_init__(self) -> None:
        total = self.frac_elemental + self.frac_binary + self.frac_ternary + self.frac_md
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"frame fractions must sum to 1, got {total}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not 1 <= self.natoms_min <= self.natoms_max:
            raise ValueError(f"bad natoms window [{self.natoms_min}, {self.natoms_max}]")
        if not self.md_t_min <= self.md_t_max:
            raise ValueError("md_t_min must be <= md_t_max")

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable), in field order."""
        return asdict(self)
