"""Frozen chemistry tables for choosing sensible compounds.

The tables are written out here (not read from pymatgen at run time) so that the generated
structure list cannot drift when a dependency updates its data files: the plan is a pure
function of these tables and the seed.

Cation radii are Shannon effective ionic radii for six-fold coordination (Å), rounded; where
a state has no six-fold value a nearby coordination was used. They only seed lattice
constants (the teacher's volume scan refines them) and choose prototypes by Pauling's
radius-ratio rule, so 0.05 Å accuracy is plenty.
"""

from __future__ import annotations

from ase.data import atomic_numbers, chemical_symbols

#: Elements the generator uses: Z = 1..83 and 89..94. CHGNet's training set (MPtrj) covers
#: these 89 elements; Po, At, Rn, Fr, Ra (84..88) are absent from it, so a teacher label for
#: them would be an extrapolation and is not generated.
ELEMENTS: tuple[str, ...] = tuple(chemical_symbols[z] for z in [*range(1, 84), *range(89, 95)])

#: Elements whose ground state is a molecular or van-der-Waals solid. The teacher (a GGA-level
#: model without dispersion) has no sensible equilibrium volume for them, so their reference
#: crystals are used at the experimental geometry and no alternative lattices are made.
MOLECULAR = frozenset({"H", "N", "O", "F", "Cl", "Br", "I", "He", "Ne", "Ar", "Kr", "Xe"})

#: p-block covalent/semimetal elements: alternative lattices are diamond and simple cubic
#: instead of the close-packed metal lattices.
COVALENT = frozenset({"B", "C", "Si", "Ge", "Sn", "P", "As", "Sb", "Bi", "S", "Se", "Te"})

# "symbol ox:radius ox:radius ..." — common positive oxidation states, Shannon CN6 radii (Å).
_CATION_TABLE = """
Li 1:0.76
Na 1:1.02
K 1:1.38
Rb 1:1.52
Cs 1:1.67
Be 2:0.45
Mg 2:0.72
Ca 2:1.00
Sr 2:1.18
Ba 2:1.35
Sc 3:0.745
Y 3:0.90
La 3:1.032
Ce 3:1.01 4:0.87
Pr 3:0.99
Nd 3:0.983
Pm 3:0.97
Sm 3:0.958
Eu 2:1.17 3:0.947
Gd 3:0.938
Tb 3:0.923
Dy 3:0.912
Ho 3:0.901
Er 3:0.89
Tm 3:0.88
Yb 2:1.02 3:0.868
Lu 3:0.861
Ti 2:0.86 3:0.67 4:0.605
Zr 4:0.72
Hf 4:0.71
V 2:0.79 3:0.64 4:0.58 5:0.54
Nb 4:0.68 5:0.64
Ta 5:0.64
Cr 2:0.80 3:0.615 4:0.55
Mo 4:0.65 6:0.59
W 4:0.66 6:0.60
Mn 2:0.83 3:0.645 4:0.53
Tc 4:0.645
Re 4:0.63
Fe 2:0.78 3:0.645
Ru 3:0.68 4:0.62
Os 4:0.63
Co 2:0.745 3:0.61
Rh 3:0.665 4:0.60
Ir 3:0.68 4:0.625
Ni 2:0.69
Pd 2:0.86
Pt 2:0.80 4:0.625
Cu 1:0.77 2:0.73
Ag 1:1.15
Au 1:1.37 3:0.85
Zn 2:0.74
Cd 2:0.95
Hg 2:1.02
B 3:0.27
Al 3:0.535
Ga 3:0.62
In 3:0.80
Tl 1:1.50 3:0.885
Si 4:0.40
Ge 2:0.73 4:0.53
Sn 2:0.93 4:0.69
Pb 2:1.19 4:0.775
Sb 3:0.76
Bi 3:1.03
Ac 3:1.12
Th 4:0.94
Pa 4:0.90
U 4:0.89
Np 4:0.87
Pu 3:1.00 4:0.86
"""

#: Anion -> (charge, Shannon radius in Å).
ANIONS: dict[str, tuple[int, float]] = {
    "O": (-2, 1.40), "S": (-2, 1.84), "Se": (-2, 1.98), "Te": (-2, 2.21),
    "F": (-1, 1.33), "Cl": (-1, 1.81), "Br": (-1, 1.96), "I": (-1, 2.20),
    "N": (-3, 1.46), "P": (-3, 2.12), "As": (-3, 2.22), "H": (-1, 1.40),
}

#: Cations that form rocksalt/zincblende pnictides (nitrides, phosphides, arsenides) with a
#: 3- anion: group 13, group 3 and the f-elements in their 3+ state.
PNICTIDE_FORMERS = frozenset(
    {"B", "Al", "Ga", "In", "Sc", "Y", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Gd", "Tb", "Dy",
     "Ho", "Er", "Tm", "Lu", "Ac", "Pu"})

#: Group 13 pnictide formers (tetrahedral or rocksalt by radius ratio).
GROUP13 = frozenset({"B", "Al", "Ga", "In"})

#: Electropositive cations that form saline hydrides.
HYDRIDE_FORMERS = frozenset({"Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba"})


def _parse_cations(table: str) -> dict[str, tuple[tuple[int, float], ...]]:
    out: dict[str, tuple[tuple[int, float], ...]] = {}
    for line in table.strip().splitlines():
        symbol, *states = line.split()
        out[symbol] = tuple((int(q), float(r)) for q, r in (s.split(":") for s in states))
    return out


#: Cation -> ((oxidation state, radius Å), ...).
CATIONS: dict[str, tuple[tuple[int, float], ...]] = _parse_cations(_CATION_TABLE)

#: Known CsCl-type (B2) intermetallics and rocksalt interstitial carbides/nitrides, plus
#: antifluorite Mg2X: real compounds outside the simple ionic oxidation-state rules.
#: (formula symbols, prototype)
CURATED_BINARIES: tuple[tuple[tuple[str, str], str], ...] = (
    *((p, "cscl") for p in [
        ("Ni", "Al"), ("Co", "Al"), ("Fe", "Al"), ("Ru", "Al"), ("Cu", "Zn"), ("Ag", "Mg"),
        ("Au", "Zn"), ("Au", "Cd"), ("Co", "Ti"), ("Ni", "Ti"), ("Fe", "Ti"), ("Cu", "Pd"),
        ("Li", "Tl"), ("Y", "Cu"), ("Y", "Ag"), ("Sc", "Ag"), ("Cs", "Au"), ("Fe", "Co"),
        ("Pd", "In"), ("Mg", "Sc")]),
    *((p, "rocksalt") for p in [
        ("Ti", "N"), ("Zr", "N"), ("Hf", "N"), ("V", "N"), ("Nb", "N"), ("Cr", "N"),
        ("Ti", "C"), ("Zr", "C"), ("Hf", "C"), ("V", "C"), ("Nb", "C"), ("Ta", "C"),
        ("U", "N"), ("U", "C"), ("Th", "C"), ("Np", "N"), ("Pu", "N"), ("Mo", "C"),
        ("W", "C"), ("Tc", "C")]),
    *((p, "zincblende") for p in [("Si", "C"), ("B", "As")]),
    *((p, "antifluorite") for p in [("Mg", "Si"), ("Mg", "Ge"), ("Mg", "Sn"), ("Mg", "Pb")]),
    *((p, "fluorite") for p in [("U", "O"), ("Np", "O"), ("Pa", "O"), ("Pu", "O"),
                                 ("Th", "O"), ("Ce", "O"), ("Zr", "O"), ("Hf", "O")]),
    *((p, "rutile") for p in [("Ru", "O"), ("Ir", "O"), ("Os", "O"), ("Re", "O"),
                               ("Tc", "O"), ("Mo", "O"), ("W", "O"), ("Cr", "O")]),
)


def z_of(symbol: str) -> int:
    """Atomic number of an element symbol."""
    return atomic_numbers[symbol]
