"""Model configuration: a validated dataclass with named presets.

`ModelConfig` fixes every architectural choice of a MatRIS model. Bad values raise
`MatrisConfigError` (a `ValueError`) naming the field and the allowed values. Presets:

- ``tiny``: 2 blocks, width 24, cutoffs 5/3.5 Å (fast tests),
- ``4m``: the MatPES-size model (4 blocks, width 128, cutoffs 6/4.5 Å),
- ``10m``: the released 10M model (10 blocks, width 128, cutoffs 6/4.5 Å).

`moe` is reserved for the MatRIS-MoE sub-configuration (a plain dict until the MoE
work defines its own dataclass); `None` means dense gated MLPs everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class MatrisConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


NORMS = ("layernorm", "rmsnorm")
ANGLE_BASES = ("fourier",)
ACTIVATIONS = ("silu",)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a MatRIS model (all lengths in Å).

    Attributes:
        num_blocks: interaction blocks L (each updates atoms, bonds and angles).
        width: feature width D of atoms, bonds and angles (and of hidden MLP layers).
        cutoff: two-body cutoff r_c of the atom graph.
        three_body_cutoff: three-body cutoff r_3 of the line graph (angles), <= cutoff.
        num_radial: Bessel functions R per bond (also the width of the envelope bases).
        num_angular: Fourier angle features (odd: constant + sin/cos of (n-1)/2 frequencies).
        envelope_exponent: p of the polynomial cutoff envelope (C^2 at the cutoff).
        norm: norm used inside gated MLPs and the readout ("layernorm" or "rmsnorm").
        energy_head: hidden widths of the per-atom energy MLP.
        magmom_head: build the magnetic-moment head (hidden width 2·width).
        max_z: largest atomic number the embedding table covers.
        attention_logit_bound: c in logit = c·tanh(raw/c): exp() stays finite, no max pass.
        attention_kappa: κ > 0 added to every attention normaliser (smooth fade-in).
        moe: reserved for the MoE sub-configuration (None = dense).
    """

    num_blocks: int = 10
    width: int = 128
    cutoff: float = 6.0
    three_body_cutoff: float = 4.5
    num_radial: int = 7
    num_angular: int = 7
    envelope_exponent: int = 8
    norm: str = "layernorm"
    energy_head: tuple[int, ...] = (256, 192)
    magmom_head: bool = True
    max_z: int = 94
    attention_logit_bound: float = 6.0
    attention_kappa: float = 1.0
    angle_basis: str = "fourier"
    activation: str = "silu"
    moe: dict | None = field(default=None)

    def __post_init__(self) -> None:
        # Normalise sequence-like values (YAML/JSON give lists) before validating.
        object.__setattr__(self, "energy_head", tuple(int(h) for h in self.energy_head))
        self.validate()

    def validate(self) -> None:
        """Raise `MatrisConfigError` on the first invalid field."""
        _int_at_least(self, "num_blocks", 1)
        _int_at_least(self, "width", 1)
        _int_at_least(self, "num_radial", 1)
        _int_at_least(self, "envelope_exponent", 2)
        _int_at_least(self, "max_z", 1)
        if self.max_z > 118:
            raise MatrisConfigError(f"max_z must be <= 118, got {self.max_z}")
        if not (isinstance(self.num_angular, int) and self.num_angular >= 1
                and self.num_angular % 2 == 1):
            raise MatrisConfigError(
                f"num_angular must be an odd integer >= 1 (constant + sin/cos pairs), "
                f"got {self.num_angular!r}")
        _positive(self, "cutoff")
        _positive(self, "three_body_cutoff")
        if self.three_body_cutoff > self.cutoff:
            raise MatrisConfigError(
                f"three_body_cutoff ({self.three_body_cutoff}) must be <= cutoff ({self.cutoff})")
        _choice(self, "norm", NORMS)
        _choice(self, "angle_basis", ANGLE_BASES)
        _choice(self, "activation", ACTIVATIONS)
        if any(h < 1 for h in self.energy_head):
            raise MatrisConfigError(
                f"energy_head must list positive hidden widths, got {self.energy_head}")
        if not isinstance(self.magmom_head, bool):
            raise MatrisConfigError(f"magmom_head must be true or false, got {self.magmom_head!r}")
        _positive(self, "attention_logit_bound")
        _positive(self, "attention_kappa")
        if self.moe is not None and not isinstance(self.moe, dict):
            raise MatrisConfigError(f"moe must be a mapping or null, got {type(self.moe).__name__}")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict (lists, numbers, strings) safe for YAML, JSON and weights_only."""
        out = dataclasses.asdict(self)
        out["energy_head"] = list(self.energy_head)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise `MatrisConfigError` naming them."""
        if not isinstance(data, dict):
            raise MatrisConfigError(f"model config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MatrisConfigError(
                f"unknown model config field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(num_blocks=2, width=24, cutoff=5.0, three_body_cutoff=3.5, num_radial=5,
                 num_angular=5, energy_head=(32, 16), magmom_head=True),
    "4m": dict(num_blocks=4),
    "10m": dict(num_blocks=10),
}

# Parameter counts of the official releases (for `matris-model count` and docs).
OFFICIAL_PARAMS = {"10m": 10_443_505, "4m": 4_294_897}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (``tiny``, ``4m``, ``10m``), optionally with fields overridden."""
    if name not in PRESETS:
        raise MatrisConfigError(f"unknown model preset {name!r}; allowed: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def _int_at_least(cfg: ModelConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MatrisConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _positive(cfg: ModelConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise MatrisConfigError(f"{name} must be a positive number, got {value!r}")


def _choice(cfg: ModelConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise MatrisConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
