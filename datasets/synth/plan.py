"""The generation plan: which parent structures, how many frames each, in which order.

The plan is a pure function of :class:`SynthConfig` (seed included) and the frozen tables in
:mod:`.chem`; it does not touch the teacher. Each :class:`Unit` carries its own RNG seed
derived from the global seed and the unit's id, so a unit's frames do not depend on which
units ran before it (this is what makes checkpoint/resume byte-identical).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.collections import dcdft
from ase.data import atomic_masses, covalent_radii, reference_states

from .chem import (
    ANIONS,
    CATIONS,
    COVALENT,
    CURATED_BINARIES,
    ELEMENTS,
    GROUP13,
    HYDRIDE_FORMERS,
    MOLECULAR,
    PNICTIDE_FORMERS,
    z_of,
)
from .config import SynthConfig
from .prototypes import STOICHIOMETRY, build_prototype, scale_to_pair_distance, scale_to_volume

KINDS = ("elemental", "binary", "ternary")

# Elements without a usable ase reference crystal: ase.build.bulk has no state for Pm, Pa,
# Pu, and builds U and Np as 1-atom orthorhombic cells at 4x the real atomic volume (their
# alpha phases have 4 and 8 atoms per cell). They get a simple lattice of a known phase
# (Pm dhcp -> hcp, gamma-U/Np and Pa -> bcc, delta-Pu fcc) at the experimental volume per
# atom (Å^3), which the volume scan then refines.
_FALLBACK_LATTICE = {"Pm": ("hcp", 33.6), "Pa": ("bcc", 24.9), "U": ("bcc", 20.8),
                     "Np": ("bcc", 19.2), "Pu": ("fcc", 24.9)}


@dataclass(frozen=True)
class ParentSpec:
    """A parent structure before relaxation.

    `source` is "ase-reference" (ase.build.bulk(symbol)), "dcdft" (ase.collections.dcdft) or
    "prototype" (built by :mod:`.prototypes` from `prototype` and `symbols`, then scaled so
    that the shortest `scale_pair` distance is `scale_value` Å, or, with `scale_pair` None,
    the volume per atom is `scale_value` Å³).
    """

    group_id: str
    kind: str
    formula: str
    prototype: str
    symbols: tuple[str, ...]
    source: str
    scale_pair: tuple[str, str] | None = None
    scale_value: float = 0.0
    #: Scan the volume with the teacher (False for molecular/van-der-Waals solids).
    relax: bool = True


@dataclass(frozen=True)
class Unit:
    """One work item: `n_frames` frames from one parent (static) or one MD trajectory."""

    unit_id: str
    mode: str            # "static" | "md"
    parent: ParentSpec
    n_frames: int
    seed: tuple[int, int]
    temperature_K: float = 0.0
    timestep_fs: float = 0.0


def unit_seed(seed: int, unit_id: str) -> tuple[int, int]:
    """Stable (seed, 64-bit hash of the unit id) pair for np.random.default_rng."""
    digest = hashlib.sha256(unit_id.encode()).digest()
    return (seed, int.from_bytes(digest[:8], "little"))


def split_evenly(total: int, n: int) -> list[int]:
    """`total` split into `n` near-equal non-negative ints; the first ones get the remainder."""
    if n <= 0:
        return []
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _formula(symbols: tuple[str, ...], counts: tuple[int, ...]) -> str:
    return "".join(f"{s}{c if c > 1 else ''}" for s, c in zip(symbols, counts))


# ----------------------------------------------------------------------------- elemental


def _reference_symmetry(symbol: str) -> str | None:
    state = reference_states[z_of(symbol)]
    return None if state is None else str(state.get("symmetry"))


def elemental_parents(symbol: str) -> list[ParentSpec]:
    """The reference crystal of `symbol` plus alternative simple lattices (same volume/atom)."""
    relax = symbol not in MOLECULAR
    parents: list[ParentSpec] = []
    sym: str | None = None
    if symbol in _FALLBACK_LATTICE:
        sym, volume = _FALLBACK_LATTICE[symbol]
        parents.append(ParentSpec(f"el:{symbol}:{sym}", "elemental", symbol, sym, (symbol,),
                                  "prototype", None, volume, relax))
    else:
        try:
            ref = bulk(symbol)
            sym = _reference_symmetry(symbol) or "reference"
            source = "ase-reference"
        except (ValueError, KeyError, TypeError, RuntimeError):
            # no reference state, or one ase can only build as a non-primitive cell
            ref, sym, source = dcdft[symbol], None, "dcdft"
        parents.append(ParentSpec(f"el:{symbol}:{sym or 'dcdft'}", "elemental", symbol,
                                  sym or "dcdft", (symbol,), source, relax=relax))
        volume = ref.get_volume() / len(ref)
    if symbol in MOLECULAR:
        return parents
    alternatives = ("diamond", "sc") if symbol in COVALENT else ("fcc", "bcc", "hcp")
    for lattice in alternatives:
        if lattice != sym:
            parents.append(ParentSpec(f"el:{symbol}:{lattice}", "elemental", symbol, lattice,
                                      (symbol,), "prototype", None, float(volume)))
    return parents


# ----------------------------------------------------------------------------- binaries


def _ax_prototypes(ratio: float) -> tuple[str, ...]:
    """Pauling radius-ratio rule for AX (threshold for tetrahedral raised to 0.45)."""
    if ratio < 0.45:
        return ("zincblende", "wurtzite")
    if ratio < 0.73:
        return ("rocksalt",)
    return ("rocksalt", "cscl")


# Bond-length corrections (Å) from the CN6 radii sum: shorter for 4-fold, longer for 8-fold.
_CN_SHIFT = {"zincblende": -0.08, "wurtzite": -0.08, "cscl": 0.05, "fluorite": 0.05,
             "antifluorite": 0.05}


def binary_candidates() -> list[ParentSpec]:
    """All rule-based and curated binary compounds, deterministic order, unique group ids."""
    out: dict[str, ParentSpec] = {}

    def add(cation: str, anion: str, prototype: str, d: float) -> None:
        counts = STOICHIOMETRY[prototype]
        symbols = (cation, anion)
        formula = _formula(symbols, counts)
        gid = f"bin:{formula}:{prototype}"
        if gid not in out:
            out[gid] = ParentSpec(gid, "binary", formula, prototype, symbols, "prototype",
                                  (cation, anion), round(d + _CN_SHIFT.get(prototype, 0.0), 4))

    for cation, states in sorted(CATIONS.items(), key=lambda kv: z_of(kv[0])):
        for q, rc in states:
            for anion, (p, ra) in ANIONS.items():
                charge = -p
                ratio = rc / ra
                if anion in ("N", "P", "As"):
                    if cation in PNICTIDE_FORMERS and q == 3:
                        # group 13 follows the radius ratio (BN, AlP, GaAs...); rare-earth and
                        # actinide pnictides are rocksalt (LaN, CeP, PuN...)
                        protos = (_ax_prototypes(ratio) if cation in GROUP13
                                  else ("rocksalt",))
                        for proto in protos:
                            add(cation, anion, proto, rc + ra)
                    continue
                if anion == "H" and cation not in HYDRIDE_FORMERS:
                    continue
                if q == charge:
                    for proto in _ax_prototypes(ratio):
                        add(cation, anion, proto, rc + ra)
                elif q == 2 * charge and anion in ("O", "F", "Cl", "H"):
                    add(cation, anion, "fluorite" if ratio >= 0.6 else "rutile", rc + ra)
                elif charge == 2 * q and q == 1 and anion in ("O", "S", "Se", "Te"):
                    add(cation, anion, "antifluorite", rc + ra)
    for (a, b), proto in CURATED_BINARIES:
        add(a, b, proto, float(covalent_radii[z_of(a)] + covalent_radii[z_of(b)]))
    return list(out.values())


# ----------------------------------------------------------------------------- ternaries

_PEROVSKITE_A = ("Na", "K", "Rb", "Cs", "Ca", "Sr", "Ba", "Pb", "Eu", "Y", "Bi", "La", "Ce",
                 "Pr", "Nd", "Pm", "Sm", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Ac")
# A-site radius: CN6 value + 0.2 Å approximates the 12-fold radius of the tolerance factor.
_CN12_SHIFT = 0.2
# Large electropositive cations are A-site formers; keep them off the octahedral B site.
_NOT_B_SITE = frozenset({"Li", "Na", "K", "Rb", "Cs", "Sr", "Ba", "Eu", "Ac"})
_TOLERANCE = (0.85, 1.06)
_SPINEL_A2 = ("Mg", "Zn", "Cd", "Fe", "Co", "Ni", "Mn", "Cu")
_SPINEL_B3 = ("Al", "Ga", "In", "Cr", "Fe", "Mn", "Co", "V", "Rh", "Ti", "Sc")
_SPINEL_CHALCO_A = ("Zn", "Cd", "Fe", "Co", "Cu", "Mn", "Hg")
_SPINEL_CHALCO_B = ("Cr", "In", "Al", "Ga", "Co", "Rh")
_SPINEL_A4 = ("Si", "Ge", "Ti", "Sn")
_SPINEL_B2 = ("Mg", "Zn", "Co", "Fe", "Mn", "Ni", "Cd")


def _radius(symbol: str, q: int) -> float | None:
    return dict(CATIONS.get(symbol, ())).get(q)


def perovskite_candidates() -> list[ParentSpec]:
    """Cubic ABX3 with charge balance and Goldschmidt tolerance factor in [0.85, 1.06]."""
    out: list[ParentSpec] = []
    for a in _PEROVSKITE_A:
        for qa, ra in CATIONS[a]:
            for b, states in sorted(CATIONS.items(), key=lambda kv: z_of(kv[0])):
                if b == a or b in _NOT_B_SITE:
                    continue
                for qb, rb in states:
                    if not 0.5 <= rb <= 1.2:
                        continue
                    for x in ("O", "F", "Cl", "Br", "I"):
                        p, rx = ANIONS[x]
                        if qa + qb != -3 * p:
                            continue
                        t = (ra + _CN12_SHIFT + rx) / (math.sqrt(2.0) * (rb + rx))
                        if not _TOLERANCE[0] <= t <= _TOLERANCE[1]:
                            continue
                        formula = _formula((a, b, x), (1, 1, 3))
                        gid = f"ter:{formula}:perovskite"
                        if all(s.group_id != gid for s in out):
                            out.append(ParentSpec(gid, "ternary", formula, "perovskite",
                                                  (a, b, x), "prototype", (b, x),
                                                  round(rb + rx, 4)))
    return out


def spinel_candidates() -> list[ParentSpec]:
    """Normal spinels A2+B3+2X4 (X = O, S, Se) and A4+B2+2O4."""
    combos: list[tuple[str, int, str, int, str]] = []
    combos += [(a, 2, b, 3, "O") for a in _SPINEL_A2 for b in _SPINEL_B3]
    combos += [(a, 2, b, 3, x) for x in ("S", "Se") for a in _SPINEL_CHALCO_A
               for b in _SPINEL_CHALCO_B]
    combos += [(a, 4, b, 2, "O") for a in _SPINEL_A4 for b in _SPINEL_B2]
    out: list[ParentSpec] = []
    for a, qa, b, qb, x in combos:
        rb = _radius(b, qb)
        if a == b or rb is None or _radius(a, qa) is None:
            continue
        formula = _formula((a, b, x), (1, 2, 4))
        out.append(ParentSpec(f"ter:{formula}:spinel", "ternary", formula, "spinel", (a, b, x),
                              "prototype", (b, x), round(rb + ANIONS[x][1], 4)))
    return out


# ----------------------------------------------------------------------------- selection


def round_robin(candidates: Iterable[ParentSpec], key_index: int, n: int,
                rng: np.random.Generator) -> list[ParentSpec]:
    """Pick `n` candidates cycling over groups keyed by `symbols[key_index]`.

    Groups are visited in a random order and each group's members in a random order, so that
    a small `n` still spreads over many elements.
    """
    groups: dict[str, list[ParentSpec]] = {}
    for c in candidates:
        groups.setdefault(c.symbols[key_index], []).append(c)
    keys = sorted(groups, key=z_of)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    queues = [[groups[k][i] for i in rng.permutation(len(groups[k]))] for k in keys]
    picked: list[ParentSpec] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth])
        depth += 1
    return picked


def _stage_rng(cfg: SynthConfig, stage: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 1000 + stage])


def _static_units(parents: list[ParentSpec], counts: list[int], cfg: SynthConfig) -> list[Unit]:
    return [Unit(f"static:{p.group_id}", "static", p, n,
                 unit_seed(cfg.seed, f"static:{p.group_id}"))
            for p, n in zip(parents, counts) if n > 0]


def _lightest_mass(parent: ParentSpec) -> float:
    return min(float(atomic_masses[z_of(s)]) for s in parent.symbols)


def build_plan(cfg: SynthConfig) -> list[Unit]:
    """The ordered work list: elemental, binary, ternary static units, then MD units."""
    budget = {
        "elemental": round(cfg.frames * cfg.frac_elemental),
        "binary": round(cfg.frames * cfg.frac_binary),
        "ternary": round(cfg.frames * cfg.frac_ternary),
    }
    budget["md"] = cfg.frames - sum(budget.values())

    # Elemental: equal share per element (random order gets the remainder), then split over
    # that element's parents.
    rng = _stage_rng(cfg, 0)
    per_element = split_evenly(budget["elemental"], len(ELEMENTS))
    order = rng.permutation(len(ELEMENTS))
    share = {ELEMENTS[k]: per_element[rank] for rank, k in enumerate(order)}
    elemental: list[Unit] = []
    for symbol in ELEMENTS:
        parents = elemental_parents(symbol)
        elemental += _static_units(parents, split_evenly(share[symbol], len(parents)), cfg)

    # Binaries: ~frames_per_parent frames per chosen compound, chosen round-robin by cation.
    rng = _stage_rng(cfg, 1)
    n_bin = max(1, math.ceil(budget["binary"] / cfg.frames_per_parent)) if budget["binary"] else 0
    binaries = round_robin(binary_candidates(), 0, n_bin, rng)
    binary = _static_units(binaries, split_evenly(budget["binary"], len(binaries)), cfg)

    # Ternaries: perovskites (round-robin by B site) and spinels (by B site).
    rng = _stage_rng(cfg, 2)
    n_ter = math.ceil(budget["ternary"] / cfg.frames_per_parent) if budget["ternary"] else 0
    n_per = round(n_ter * cfg.perovskite_share)
    ternaries = (round_robin(perovskite_candidates(), 1, n_per, rng)
                 + round_robin(spinel_candidates(), 1, n_ter - n_per, rng))
    ternary = _static_units(ternaries, split_evenly(budget["ternary"], len(ternaries)), cfg)

    # MD: trajectories from a random subset of the relaxable parents of the static units.
    rng = _stage_rng(cfg, 3)
    md: list[Unit] = []
    if budget["md"]:
        pool = [u.parent for u in elemental + binary + ternary if u.parent.relax]
        if not pool:  # tiny plans: any relaxable elemental parent will do
            pool = [p for s in ELEMENTS for p in elemental_parents(s) if p.relax]
        n_traj = math.ceil(budget["md"] / cfg.md_snapshots)
        picks = rng.permutation(len(pool))
        counts = split_evenly(budget["md"], n_traj)
        for k in range(n_traj):
            parent = pool[int(picks[k % len(pool)])]
            temperature = float(cfg.md_t_min + 10.0 * rng.integers(
                0, int((cfg.md_t_max - cfg.md_t_min) // 10) + 1))
            timestep = 1.0 if _lightest_mass(parent) < 12.0 else 2.0
            uid = f"md:{parent.group_id}:{k:03d}"
            md.append(Unit(uid, "md", parent, counts[k], unit_seed(cfg.seed, uid),
                           temperature, timestep))
    return elemental + binary + ternary + md


# ----------------------------------------------------------------------------- building


def build_parent(spec: ParentSpec) -> Atoms:
    """Unrelaxed primitive cell of a parent (positions in Å, pbc all True)."""
    if spec.source == "ase-reference":
        atoms = bulk(spec.symbols[0])
    elif spec.source == "dcdft":
        atoms = dcdft[spec.symbols[0]].copy()
    else:
        atoms = build_prototype(spec.prototype, spec.symbols)
        if spec.scale_pair is None:
            atoms = scale_to_volume(atoms, spec.scale_value)
        else:
            atoms = scale_to_pair_distance(atoms, *spec.scale_pair, spec.scale_value)
    atoms.pbc = True
    atoms.info.clear()
    atoms.calc = None
    return atoms
