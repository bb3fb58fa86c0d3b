"""`matris-md`: molecular dynamics (NVE/NVT/NPT) and relaxation with a MatRIS model.

Example:
    matris-md --model model.pt --structure POSCAR --ensemble nvt --temperature 300 \\
        --timestep 1 --steps 10000 --out run/

Writes into --out: thermo.csv (or relax.csv), thermo.png, trajectory.extxyz (or
.traj), final.extxyz and summary.json. Exit status: 0 success, 2 bad arguments or
input, 3 relaxation not converged within --steps.
"""

from __future__ import annotations

import argparse
import os
import sys

from matris.md.drivers import ENSEMBLES, OPTIMIZERS, THERMOSTATS


def default_threads() -> int:
    """Cores available to this process, divided among the ranks of this node when
    launched by mpirun (MPICH's MPI_LOCALNRANKS or Open MPI's local size)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
    ranks = int(local) if local and local.isdigit() and int(local) > 0 else 1
    return max(1, (cores or 1) // ranks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matris-md", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="inference checkpoint (matris.checkpoint)")
    p.add_argument("--structure", required=True,
                   help="structure file: anything ase.io.read takes (CIF, POSCAR, extxyz...)")
    p.add_argument("--index", default="-1", help="frame of a multi-frame file (ase.io.read)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="nvt")
    p.add_argument("--steps", type=int, default=1000, help="MD steps (relax: maximum steps)")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="K: thermostat target and initial Maxwell-Boltzmann temperature")
    p.add_argument("--pressure", type=float, default=0.0, help="GPa (npt, relax)")
    p.add_argument("--thermostat", choices=THERMOSTATS, default="langevin",
                   help="nvt: Langevin or Nose-Hoover chain; npt: Langevin-BAOAB or MTK")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--tdamp", type=float, default=None,
                   help="Nose-Hoover time constant, fs (default 100 timesteps)")
    p.add_argument("--pdamp", type=float, default=None,
                   help="barostat time constant, fs (default 1000 timesteps)")
    p.add_argument("--anisotropic", action="store_true",
                   help="npt: let the cell shape change (default: isotropic volume only)")
    p.add_argument("--fmax", type=float, default=0.05, help="relax: force threshold, eV/Å")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="FIRE")
    p.add_argument("--fix-cell", action="store_true", help="relax: positions only")
    p.add_argument("--seed", type=int, default=0, help="velocities and Langevin noise")
    p.add_argument("--keep-velocities", action="store_true",
                   help="use the momenta stored in the structure file instead of drawing them")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin, Å")
    p.add_argument("--compile", action="store_true", help="torch.compile (eager fallback)")
    p.add_argument("--unseen-elements", choices=("error", "warn", "allow"), default="error",
                   help="elements absent from the model's training data")
    p.add_argument("--log-every", type=int, default=10, help="steps between thermo rows")
    p.add_argument("--traj-every", type=int, default=None,
                   help="steps between trajectory frames (0: none; default 100, relax 1)")
    p.add_argument("--traj-format", choices=("extxyz", "traj"), default="extxyz")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: OMP_NUM_THREADS if set, else all cores of "
                        "this process, divided by the local ranks under mpirun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _set_threads(requested: int | None) -> int:
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        n = requested
    elif os.environ.get("OMP_NUM_THREADS"):
        n = torch.get_num_threads()
    else:
        n = default_threads()
    torch.set_num_threads(n)
    return n


def _print_summary(summary: dict) -> None:
    print("summary:")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key}: {value}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ase.io import read

    from matris.checkpoint import CheckpointError
    from matris.md.calculator import MatRISCalculator
    from matris.md.run import run_md, run_relax
    from matris.md.validate import MatrisInputError

    try:
        threads = _set_threads(args.threads)
        atoms = read(args.structure, index=args.index)
        atoms.calc = MatRISCalculator(args.model, device=args.device, dtype=args.dtype,
                                      skin=args.skin, compile=args.compile,
                                      unseen_elements=args.unseen_elements)
        calc = atoms.calc
        print(f"matris-md: {len(atoms)} atoms ({atoms.get_chemical_formula()}), "
              f"{args.ensemble}, device {calc.device}, {args.dtype}, {threads} thread(s)")
        atoms.get_potential_energy()  # validates the structure before any output
        extra = {"model": str(args.model), "structure": str(args.structure),
                 "device": str(calc.device), "dtype": args.dtype, "threads": threads,
                 "skin_A": args.skin, "compiled": calc.runner.compiled}
        if args.ensemble == "relax":
            summary = run_relax(
                atoms, args.out, fmax=args.fmax, steps=args.steps, optimizer=args.optimizer,
                relax_cell=not args.fix_cell, pressure_GPa=args.pressure,
                traj_every=1 if args.traj_every is None else args.traj_every,
                traj_format=args.traj_format, progress=not args.no_progress, extra=extra)
        else:
            summary = run_md(
                atoms, args.out, args.ensemble, args.steps, timestep_fs=args.timestep,
                temperature_K=args.temperature, pressure_GPa=args.pressure,
                thermostat=args.thermostat, anisotropic=args.anisotropic,
                friction_per_fs=args.friction, tdamp_fs=args.tdamp, pdamp_fs=args.pdamp,
                seed=args.seed, init_velocities=not args.keep_velocities,
                log_every=args.log_every,
                traj_every=100 if args.traj_every is None else args.traj_every,
                traj_format=args.traj_format, progress=not args.no_progress, extra=extra)
    except (MatrisInputError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"matris-md: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    print(f"wrote {args.out}/summary.json")
    if args.ensemble == "relax" and not summary["converged"]:
        print(f"matris-md: relaxation did not reach fmax {args.fmax} eV/Å in {args.steps} "
              f"steps", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

