"""Factories for ASE integrators and optimisers (NVE, NVT, NPT, relaxation).

Units of the arguments: timestep and damping times in fs, temperature in K, pressure
in GPa, friction in 1/fs, fmax in eV/Å. The returned objects are plain ASE dynamics /
optimisers: attach observers and call ``.run(steps)``.

Ensembles:
- NVE: `ase.md.verlet.VelocityVerlet`.
- NVT: `ase.md.langevin.Langevin` (thermostat "langevin"; adds a FixCom constraint to
  the atoms, ASE's replacement for the deprecated fixcm=True) or
  `ase.md.nose_hoover_chain.NoseHooverChainNVT` ("nose-hoover", chain of 3).
- NPT: "nose-hoover" → Martyna–Tobias–Klein with Nose–Hoover chains
  (`IsotropicMTKNPT`, or `MTKNPT` for a fully flexible cell); "langevin" →
  `ase.md.langevinbaoab.LangevinBAOAB` (hydrostatic, or fully flexible cell).
- Relaxation: FIRE or BFGS on a `FrechetCellFilter` (positions and cell; scalar
  pressure) for 3D-periodic cells, on the atoms alone otherwise or when asked.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE
from ase.optimize.optimize import Optimizer

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    thermalize_momenta = None

ENSEMBLES = ("nve", "nvt", "npt", "relax")
THERMOSTATS = ("langevin", "nose-hoover")
OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS}


def init_velocities(atoms: Atoms, temperature_K: float, seed: int | None = 0) -> None:
    """Maxwell–Boltzmann momenta at `temperature_K` with zero total momentum (and zero
    angular momentum for non-periodic systems), rescaled so the instantaneous
    temperature equals `temperature_K` exactly. T = 0 sets all momenta to zero."""
    if temperature_K < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")
    if temperature_K == 0 or len(atoms) < 2:
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    rng = np.random.default_rng(seed)
    if thermalize_momenta is not None:  # ASE >= 3.29
        thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    current = atoms.get_temperature()
    if current > 0:
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(temperature_K / current))


def nve(atoms: Atoms, timestep_fs: float) -> MolecularDynamics:
    """Velocity Verlet (microcanonical)."""
    _positive("timestep_fs", timestep_fs)
    return VelocityVerlet(atoms, timestep=timestep_fs * units.fs)


def nvt(atoms: Atoms, timestep_fs: float, temperature_K: float, thermostat: str = "langevin",
        friction_per_fs: float = 0.01, tdamp_fs: float | None = None,
        seed: int | None = 0) -> MolecularDynamics:
    """Canonical MD. Langevin uses `friction_per_fs`; Nose–Hoover uses `tdamp_fs`
    (default 100 timesteps)."""
    _positive("timestep_fs", timestep_fs)
    _positive("temperature_K", temperature_K)
    dt = timestep_fs * units.fs
    if thermostat == "langevin":
        _positive("friction_per_fs", friction_per_fs)
        _fix_com(atoms)
        return Langevin(atoms, timestep=dt, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs, fixcm=False,
                        rng=np.random.default_rng(seed))
    if thermostat == "nose-hoover":
        tdamp = (tdamp_fs if tdamp_fs is not None else 100 * timestep_fs) * units.fs
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature_K, tdamp=tdamp)
    raise ValueError(f"thermostat must be one of {list(THERMOSTATS)}, got {thermostat!r}")


def npt(atoms: Atoms, timestep_fs: float, temperature_K: float, pressure_GPa: float,
        thermostat: str = "langevin", anisotropic: bool = False,
        friction_per_fs: float = 0.01, tdamp_fs: float | None = None,
        pdamp_fs: float | None = None, seed: int | None = 0) -> MolecularDynamics:
    """Isothermal–isobaric MD (needs a 3D-periodic cell). `anisotropic` lets the cell
    shape change (all six components); otherwise only the volume changes. Barostat
    time `pdamp_fs` defaults to 1000 timesteps; Nose–Hoover `tdamp_fs` to 100."""
    _positive("timestep_fs", timestep_fs)
    _positive("temperature_K", temperature_K)
    if not atoms.pbc.all():
        raise ValueError(f"NPT needs a cell periodic along all axes, got pbc={atoms.pbc}")
    dt = timestep_fs * units.fs
    pdamp = (pdamp_fs if pdamp_fs is not None else 1000 * timestep_fs) * units.fs
    pressure = pressure_GPa * units.GPa
    if thermostat == "nose-hoover":
        tdamp = (tdamp_fs if tdamp_fs is not None else 100 * timestep_fs) * units.fs
        cls = MTKNPT if anisotropic else IsotropicMTKNPT
        return cls(atoms, timestep=dt, temperature_K=temperature_K, pressure_au=pressure,
                   tdamp=tdamp, pdamp=pdamp)
    if thermostat == "langevin":
        _positive("friction_per_fs", friction_per_fs)
        # LangevinBAOAB takes an external *stress*: negative of the pressure. Its
        # barostat mass comes from a heuristic on P_tau, which it announces: expected.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using heuristic P_mass")
            return LangevinBAOAB(atoms, timestep=dt, temperature_K=temperature_K,
                                 externalstress=-pressure, hydrostatic=not anisotropic,
                                 T_tau=units.fs / friction_per_fs, P_tau=pdamp,
                                 rng=np.random.default_rng(seed))
    raise ValueError(f"thermostat must be one of {list(THERMOSTATS)}, got {thermostat!r}")


def relaxer(atoms: Atoms, optimizer: str = "FIRE", relax_cell: bool = True,
            pressure_GPa: float = 0.0, logfile: str | None = None) -> Optimizer:
    """An optimiser over positions (and the cell when `relax_cell` and the cell is
    3D-periodic, via FrechetCellFilter at scalar `pressure_GPa`). Run it with
    ``.run(fmax=..., steps=...)``; its ``.optimizable`` reports the filtered forces."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    target = atoms
    if relax_cell and atoms.pbc.all():
        target = FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa)
    return OPTIMIZERS[optimizer](target, logfile=logfile)


def make_dynamics(atoms: Atoms, ensemble: str, *, timestep_fs: float = 1.0,
                  temperature_K: float = 300.0, pressure_GPa: float = 0.0,
                  thermostat: str = "langevin", anisotropic: bool = False,
                  friction_per_fs: float = 0.01, tdamp_fs: float | None = None,
                  pdamp_fs: float | None = None, seed: int | None = 0) -> MolecularDynamics:
    """The integrator of `ensemble` ("nve", "nvt" or "npt") with the given settings."""
    if ensemble == "nve":
        return nve(atoms, timestep_fs)
    if ensemble == "nvt":
        return nvt(atoms, timestep_fs, temperature_K, thermostat, friction_per_fs, tdamp_fs,
                   seed)
    if ensemble == "npt":
        return npt(atoms, timestep_fs, temperature_K, pressure_GPa, thermostat, anisotropic,
                   friction_per_fs, tdamp_fs, pdamp_fs, seed)
    raise ValueError(f"ensemble must be one of nve, nvt, npt (or relax), got {ensemble!r}")


def _fix_com(atoms: Atoms) -> None:
    """Add a FixCom constraint (ASE's recommended replacement for Langevin's
    deprecated fixcm=True) unless the atoms already have one."""
    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixCom()])


def _positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
