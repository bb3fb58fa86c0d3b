"""matris-data: build, inspect, verify and export sharded datasets (plus synth, if present).

Exit codes: 0 success, 1 verify found problems, 2 usage or input errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .sources import SOURCES


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="convert DFT data into a sharded dataset",
                       description="Convert inputs into <out>/shards, index, splits and "
                                   "manifest.yaml. Run under `mpirun -n N` to convert in "
                                   "parallel (each rank writes its own shards).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    p.add_argument("--source", required=True, choices=sorted(SOURCES))
    p.add_argument("--out", required=True, type=Path, help="dataset root to create")
    p.add_argument("--shards", type=int, default=None,
                   help="number of shards (default: one per rank)")
    p.add_argument("--split", default="0.9,0.05,0.05",
                   help="train,val,test fractions by group_id (default 0.9,0.05,0.05)")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--strict", action="store_true", help="any rejected frame is fatal")
    p.add_argument("--compress", action="store_true", help="zlib-compress records")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--min-distance", type=float, default=0.1,
                   help="reject frames with atoms closer than this, Å (default 0.1)")
    p.add_argument("--dataset", help="dataset name stored in each frame")
    p.add_argument("--task", help="level of theory stored in each frame, e.g. PBE")
    p.add_argument("--energy-key", default="energy",
                   help="label key (calculator result or info), e.g. REF_energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.add_argument("--magmoms-key", default="magmoms")
    p.add_argument("--charge-key", default="charge")
    p.add_argument("--spin-key", default="spin")
    p.add_argument("--group-key", default=None,
                   help="info/key_value_pairs key holding the group id for splits")
    p.add_argument("--format", default=None, help="ASE format name (extxyz/vasp sources)")
    p.add_argument("--mptrj-energy", choices=("uncorrected", "corrected"),
                   default="uncorrected",
                   help="MPtrj: which total energy becomes `energy` (the other is kept "
                        "via energy_correction)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args) -> int:
    from .build import BuildConfig, build_dataset
    from .parallel import get_comm
    from .sources import SourceOptions
    from .splits import parse_fractions

    opts = SourceOptions(dataset=args.dataset, task=args.task, energy_key=args.energy_key,
                         forces_key=args.forces_key, stress_key=args.stress_key,
                         magmoms_key=args.magmoms_key, charge_key=args.charge_key,
                         spin_key=args.spin_key, group_key=args.group_key,
                         format=args.format, mptrj_energy=args.mptrj_energy)
    cfg = BuildConfig(source=args.source, inputs=args.inputs, out=args.out,
                      shards=args.shards, split=parse_fractions(args.split), seed=args.seed,
                      strict=args.strict, compress=args.compress, overwrite=args.overwrite,
                      min_distance=args.min_distance, options=opts,
                      progress=not args.no_progress)
    comm = get_comm()
    manifest = build_dataset(cfg, comm)
    if comm.rank == 0:
        sp = manifest["splits"]["counts"]
        print(f"built {args.out}: {manifest['n_frames']} frames in "
              f"{len(manifest['shards'])} shard(s) on {comm.size} rank(s); "
              f"rejected {manifest['rejects']['count']}; splits "
              + " ".join(f"{k}={v}" for k, v in sp.items()))
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print counts, element table and histograms")
    p.add_argument("root", type=Path)
    p.set_defaults(func=lambda a: print(_report(a.root)) or 0)


def _report(root):
    from .report import inspect_dataset

    return inspect_dataset(root)


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="recompute checksums and decode every record")
    p.add_argument("root", type=Path)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from .layout import read_manifest
    from .verify import verify_dataset

    problems = verify_dataset(args.root, progress=not args.no_progress)
    if problems:
        for line in problems:
            print(f"FAIL {line}")
        print(f"verify: {len(problems)} problem(s) in {args.root}")
        return 1
    m = read_manifest(args.root)
    print(f"verify: OK, {m['n_frames']} frames in {len(m['shards'])} shard(s), "
          "all checksums match and every record decodes")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a dataset as extxyz or aselmdb")
    p.add_argument("root", type=Path)
    p.add_argument("--to", required=True, choices=("extxyz", "aselmdb"))
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: <root>/export.{xyz,aselmdb})")
    p.add_argument("--split", default=None, help="export only this split")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .dataset import ShardedDataset
    from .export import export_aselmdb, export_extxyz

    ds = ShardedDataset(args.root, split=args.split)
    ext = "xyz" if args.to == "extxyz" else "aselmdb"
    out = args.out or args.root / f"export.{ext}"
    fn = export_extxyz if args.to == "extxyz" else export_aselmdb
    n = fn(ds, out, progress=not args.no_progress)
    print(f"exported {n} frames to {out}")
    return 0


def _add_synth(sub) -> None:
    try:
        from .synth.cli import add_parser
    except ImportError as exc:
        # Only a missing synth module is tolerated; errors inside it must surface.
        if exc.name not in (f"{__package__}.synth", f"{__package__}.synth.cli"):
            raise
        return
    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matris-data", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_inspect(sub)
    _add_verify(sub)
    _add_export(sub)
    _add_synth(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    from .parallel import under_mpirun

    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as exc:
        if under_mpirun():
            raise  # the MPI excepthook aborts every rank instead of leaving them waiting
        print(f"matris-data {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
