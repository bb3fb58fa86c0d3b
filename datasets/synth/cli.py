"""`matris-data synth`: command-line front end of the embedded-dataset generator.

`add_parser(subparsers)` registers the subcommand on the `matris-data` parser
(datasets/cli.py); `python -m matris.datasets.synth ...` runs it stand-alone. Importing this
module never imports the teacher: that happens inside the handler, which fails with an
install hint when the optional `teacher` extra is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from .config import SynthConfig

_DEFAULTS = SynthConfig()


def default_work_dir(out: Path, seed: int, frames: int) -> Path:
    """Checkpoint directory in the system temp dir, unique per output path and settings."""
    key = hashlib.sha256(f"{out.resolve()}|{seed}|{frames}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"matris-synth-{key}"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `synth` on an argparse subparsers object; sets `func=handler`."""
    p = subparsers.add_parser(
        "synth", help="generate the teacher-labelled periodic-table dataset (extxyz.gz)",
        description=("Generate elemental, binary and ternary crystals (supercells, strained, "
                     "rattled) plus teacher-MD snapshots, label them with a pretrained "
                     "potential and write a deterministic extxyz.gz with a JSON sidecar. "
                     "Needs the teacher extra: pip install -e '.[teacher]'."))
    p.add_argument("--teacher", default=_DEFAULTS.teacher, choices=["chgnet"],
                   help="labelling model (default: %(default)s)")
    p.add_argument("--teacher-model", default=_DEFAULTS.teacher_model,
                   help="teacher weights version (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. data.extxyz.gz")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="default: %(default)s")
    p.add_argument("--frames", type=int, default=_DEFAULTS.frames,
                   help="frames to produce (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; keep fixed for byte-identical output (default: 1)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoint directory (default: a per-output folder in $TMPDIR)")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore an existing checkpoint and start over")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (elements, frames per kind, natoms of the static "
                        "candidates) as JSON without the teacher, and exit")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    """Run the generator; returns a process exit code."""
    from .teacher import TeacherUnavailable, load_teacher

    try:
        cfg = SynthConfig(seed=args.seed, frames=args.frames, teacher=args.teacher,
                          teacher_model=args.teacher_model)
    except ValueError as exc:
        print(f"matris-data synth: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        from .preview import plan_summary

        print(json.dumps(plan_summary(cfg), indent=1))
        return 0
    try:
        teacher = load_teacher(cfg.teacher, cfg.teacher_model, threads=args.threads)
    except TeacherUnavailable as exc:
        print(f"matris-data synth: {exc}", file=sys.stderr)
        return 3
    from .generate import generate

    work = args.work_dir or default_work_dir(args.out, cfg.seed, cfg.frames)
    print(f"teacher {teacher.teacher_tag} (model {teacher.model_version}); checkpoint {work}",
          flush=True)
    sidecar = generate(cfg, args.out, work, teacher, resume=not args.no_resume,
                       log=lambda msg: print(msg, flush=True))
    stats = sidecar["stats"]
    print(f"{stats['frames']} frames, {stats['n_elements']} elements, "
          f"{stats['n_groups']} groups, rejects {stats['rejects']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `python -m matris.datasets.synth synth --out FILE ...`."""
    parser = argparse.ArgumentParser(prog="matris-data")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
