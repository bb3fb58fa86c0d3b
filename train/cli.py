"""``matris-train``: the trainer's command line.

    matris-train CONFIG.yaml [section.key=value ...] [--resume]    train (1 process)
    mpirun -n N matris-train CONFIG.yaml parallel.dp=N ...            train (N ranks)
    matris-train check CONFIG.yaml [section.key=value ...]            print the resolved config
    matris-train export RUN_DIR [--out model.pt]                      inference checkpoint
    matris-train eval MODEL.pt DATA_ROOT [--split test] [--out DIR]   held-out metrics
    matris-train costs CONFIG.yaml [...] --out costs.json             phase costs for wavek

Config errors exit with status 2 and one message naming the key (printed by rank 0 only);
any other exception on any rank aborts the whole MPI job (see ``matris.train.dist.abort``).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError, load_config, to_yaml
from .cpu_allocator import tune_cpu_allocator


def _launcher_rank() -> int:
    """World rank from the launcher's environment (before MPI starts), 0 if none."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _fail(message: str) -> int:
    if _launcher_rank() == 0:
        print(f"matris-train: error: {message}", file=sys.stderr, flush=True)
    return 2


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matris-train",
        description="Train a MatRIS potential (run under mpirun for several ranks). "
                    "Other commands: `matris-train check CONFIG ...`, "
                    "`matris-train export RUN_DIR [--out PATH]`, "
                    "`matris-train eval MODEL.pt DATA_ROOT [--split test]`, "
                    "`matris-train costs CONFIG ... --out costs.json`.")
    p.add_argument("config", help="YAML config (see configs/ and docs/training.md)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted overrides, values parsed as YAML")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in checkpoint.dir")
    return p


def _export(argv: list[str]) -> int:
    from .export import export_checkpoint, resolve_checkpoint

    p = argparse.ArgumentParser(prog="matris-train export",
                                description="Write the inference checkpoint (EMA weights) "
                                            "of a training run or checkpoint directory.")
    p.add_argument("path", help="run directory (log.out), checkpoints directory, or one "
                                "checkpoint directory")
    p.add_argument("--out", help="output file (default: <run dir>/model.pt)")
    args = p.parse_args(argv)
    try:
        ckpt = resolve_checkpoint(args.path)
    except FileNotFoundError as err:
        return _fail(str(err))
    out = args.out or ckpt.parent.parent / "model.pt"
    print(f"exported {export_checkpoint(ckpt, out)} (from {ckpt})")
    return 0


def _check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="matris-train check")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        return _fail(str(err))
    print(to_yaml(cfg), end="")
    return 0


def _preflight_data(cfg) -> str | None:
    """Open the configured splits; a message naming the key if one cannot be opened."""
    from .trainer import open_dataset

    for key in ("train_split", "val_split"):
        split = getattr(cfg.data, key)
        if split is None:
            continue
        try:
            open_dataset(cfg.data.root, split)
        except (OSError, KeyError, ValueError) as err:
            return f"data.{key}={split!r} of data.root={cfg.data.root!r}: {err}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before the first large allocation: glibc's dynamic thresholds can make a pipeline
    # stage's P3 ~1.7x slower on CPU (train/cpu_allocator.py).
    tune_cpu_allocator()
    if argv and argv[0] == "export":
        return _export(argv[1:])
    if argv and argv[0] == "check":
        return _check(argv[1:])
    if argv and argv[0] == "costs":
        from .costs_cli import main as costs_main

        return costs_main(argv[1:])
    if argv and argv[0] == "eval":
        from .evaluate import main as eval_main

        return eval_main(argv[1:])
    args = _train_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        return _fail(str(err))

    from . import dist as mdist

    env = mdist.init_distributed(device=cfg.train.device, timeout_s=cfg.parallel.timeout_s,
                                 threads=cfg.train.threads)
    p = cfg.parallel
    try:
        mdist.Topology(pp=p.pp, dp=p.dp, gp=p.gp, world_size=env.world_size)
    except mdist.TopologyError as err:
        return _fail(str(err))
    if cfg.train.dtype == "bf16" and env.device.type != "cuda":
        return _fail("train.dtype: bf16 autocast needs a CUDA device; this rank has "
                     f"{env.device} (use float32 or float64 on CPU)")
    problem = _preflight_data(cfg)
    problems = [p for p in mdist.allgather_object(problem) if p]  # every rank agrees
    if problems:
        return _fail(problems[0])
    from .trainer import Trainer

    Trainer(cfg, env).fit(resume=args.resume)
    mdist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
