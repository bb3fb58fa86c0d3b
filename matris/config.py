"""Model configuration: a validated dataclass with named presets.

`ModelConfig` fixes every architectural choice of a MatRIS model. Bad values raise
`MatrisConfigError` (a `ValueError`) naming the field and the allowed values. Presets:

- ``tiny``: 2 blocks, width 24, cutoffs 5/3.5 Å (fast tests),
- ``4m``: the MatPES-size model (4 blocks, width 128, cutoffs 6/4.5 Å),
- ``10m``: the released 10M model (10 blocks, width 128, cutoffs 6/4.5 Å).

MoE presets (MatRIS-MoE, docs/moe.md) set ``moe``, the mixture-of-experts
sub-configuration (`MoEConfig`, stored in the model config as a plain dict so that it
round-trips through YAML, JSON and weights_only checkpoints); `None` means dense MLPs:

- ``tiny-moe``: the tiny backbone with 4 experts, top-2, a shared expert (tests),
- ``moe-100m``: the 10m backbone with 8 experts per gated MLP, top-2 + shared,
- ``moe-1b``: the 10m backbone with 120 experts per gated MLP, top-2 + shared (~1.0B
  total, ~27M active parameters per row).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class MatrisConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


def _from_plain(cls, data: Any, what: str, not_mapping: str):
    """``cls(**data)`` for a config dataclass; a non-mapping or unknown keys raise
    `MatrisConfigError` (``not_mapping``, or naming the keys of ``what``)."""
    if not isinstance(data, dict):
        raise MatrisConfigError(f"{not_mapping}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MatrisConfigError(f"unknown {what} field(s) {unknown}; allowed: {sorted(names)}")
    return cls(**data)


NORMS = ("layernorm", "rmsnorm")
ANGLE_BASES = ("fourier",)
ACTIVATIONS = ("silu",)

# Roles of the MLPs in an interaction block (`matris.nn.mlp.build_mlp`).
GATED_ROLES = ("line_attention.message", "line_attention.update", "atom_attention.message",
               "atom_attention.update", "line_refine.message", "atom_refine.message")
FFN_ROLES = ("line_refine.bond", "line_refine.angle", "atom_refine.atom", "atom_refine.bond")
ROUTERS = ("element", "features")
OVERFLOW = ("shared", "raise")


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts layers replacing MLPs of the interaction blocks (docs/moe.md).

    Attributes:
        num_experts: routed experts E per MoE layer, each of the dense MLP's shape.
        top_k: experts k per row; the k gate values are a softmax over their logits.
        shared_expert: add one always-active expert (weight 1) to every row.
        router: "element" (default: route on the chemistry of the row only: its centre
            atom, or both atoms of a bond; constant under atomic motion, so the energy
            stays smooth) or "features" (learned on the row's input features: the route
            can flip under motion and the energy then jumps; an option for studies).
        roles: which block MLPs become MoE layers (default: the six gated MLPs).
        capacity_factor: None (default) = dropless: every (row, expert) pair is
            computed. A number c caps each expert at ceil(c·k·R/E) rows of a layer call;
            the overflow is handled by `overflow` (never dropped silently).
        overflow: "shared" (overflowing pairs' gate weight moves to the shared expert;
            needs shared_expert) or "raise" (RuntimeError naming layer and expert).
        router_init_std: std of the initial router logits (element router) or weights.
    """

    num_experts: int = 8
    top_k: int = 2
    shared_expert: bool = True
    router: str = "element"
    roles: tuple[str, ...] = GATED_ROLES
    capacity_factor: float | None = None
    overflow: str = "shared"
    router_init_std: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.roles, (list, tuple)):
            object.__setattr__(self, "roles", tuple(self.roles))
        self.validate()

    def validate(self) -> None:
        for name in ("num_experts", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MatrisConfigError(f"moe.{name} must be an integer >= 1, got {value!r}")
        if self.top_k > self.num_experts:
            raise MatrisConfigError(f"moe.top_k ({self.top_k}) must be <= moe.num_experts "
                                    f"({self.num_experts})")
        if not isinstance(self.shared_expert, bool):
            raise MatrisConfigError(
                f"moe.shared_expert must be true or false, got {self.shared_expert!r}")
        if self.router not in ROUTERS:
            raise MatrisConfigError(f"moe.router must be one of {list(ROUTERS)}, "
                                    f"got {self.router!r}")
        allowed = GATED_ROLES + FFN_ROLES
        bad = [r for r in self.roles if r not in allowed] if isinstance(
            self.roles, tuple) else [self.roles]
        if bad or not self.roles:
            raise MatrisConfigError(f"moe.roles must be a non-empty list of {list(allowed)}, "
                                    f"got {self.roles!r}")
        cf = self.capacity_factor
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, (int, float))
                               or not cf > 0):
            raise MatrisConfigError(
                f"moe.capacity_factor must be null (dropless) or a positive number, got {cf!r}")
        if self.overflow not in OVERFLOW:
            raise MatrisConfigError(f"moe.overflow must be one of {list(OVERFLOW)}, "
                                    f"got {self.overflow!r}")
        if cf is not None and self.overflow == "shared" and not self.shared_expert:
            raise MatrisConfigError("moe.overflow='shared' needs moe.shared_expert=true "
                                    "(or use overflow='raise')")
        if isinstance(self.router_init_std, bool) or not isinstance(
                self.router_init_std, (int, float)) or not self.router_init_std > 0:
            raise MatrisConfigError(f"moe.router_init_std must be a positive number, "
                                    f"got {self.router_init_std!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["roles"] = list(self.roles)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoEConfig:
        return _from_plain(cls, data, "moe config", "moe must be a mapping or null")


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
        moe: the mixture-of-experts sub-configuration (`MoEConfig` fields as a dict;
            None = dense). Normalised on construction: defaults are filled in.
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
        if isinstance(self.moe, MoEConfig):
            object.__setattr__(self, "moe", self.moe.to_dict())
        elif isinstance(self.moe, dict):  # validated and completed with defaults
            object.__setattr__(self, "moe", MoEConfig.from_dict(self.moe).to_dict())
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

    @property
    def moe_config(self) -> MoEConfig | None:
        """The MoE sub-configuration as a `MoEConfig` (None for a dense model)."""
        return None if self.moe is None else MoEConfig.from_dict(self.moe)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict (lists, numbers, strings) safe for YAML, JSON and weights_only."""
        out = dataclasses.asdict(self)
        out["energy_head"] = list(self.energy_head)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise `MatrisConfigError` naming them."""
        return _from_plain(cls, data, "model config", "model config must be a mapping")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


_TINY = dict(num_blocks=2, width=24, cutoff=5.0, three_body_cutoff=3.5, num_radial=5,
             num_angular=5, energy_head=(32, 16), magmom_head=True)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    "4m": dict(num_blocks=4),
    "10m": dict(num_blocks=10),
    "tiny-moe": dict(_TINY, moe=dict(num_experts=4, top_k=2, shared_expert=True)),
    "moe-100m": dict(num_blocks=10, moe=dict(num_experts=8, top_k=2, shared_expert=True)),
    "moe-1b": dict(num_blocks=10, moe=dict(num_experts=120, top_k=2, shared_expert=True)),
}

# Parameter counts of the official releases (for `matris-model count` and docs).
OFFICIAL_PARAMS = {"10m": 10_443_505, "4m": 4_294_897}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (see `PRESETS`), optionally with fields overridden."""
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
