"""``matris-train costs``: measure this config's model on its own data for cost-aware schedules.

    matris-train costs CONFIG [key=value ...] --out costs.json [--repeats 3] [--frames 8]

Builds the config's model (random weights: phase times do not depend on their values) and
one micro-batch of real frames from the training split (spread over the split, at most
``train.max_atoms`` atoms), runs the four phases through the executor's phase code on one
process (:mod:`matris.train.pipeline.measure`), and writes a cost bundle {"eager", "lazy"}
with per-unit-stage times, W shares, split factors, the fixed per-stage cost and
activation sizes. Point ``parallel.costs`` at the file: ``wavek`` then orders (and, where
the model is deep enough, places) its actions for this model rather than for the built-in
10M CPU profile. Run it on the hardware and dtype you will train with.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def pick_frames(natoms: np.ndarray, max_atoms: int, max_frames: int) -> list[int]:
    """Frames spread evenly over the split, in order, while the total stays within
    ``max_atoms`` (at least one frame)."""
    n = len(natoms)
    if n == 0:
        raise ValueError("the training split is empty")
    candidates = np.unique(np.linspace(0, n - 1, min(n, 4 * max_frames)).astype(int))
    picked, total = [], 0
    for i in candidates:
        if len(picked) == max_frames:
            break
        if picked and total + int(natoms[i]) > max_atoms:
            continue
        picked.append(int(i))
        total += int(natoms[i])
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="matris-train costs", description=__doc__.splitlines()[0])
    ap.add_argument("config", help="training config YAML")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    ap.add_argument("--out", required=True, help="cost bundle JSON to write")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (medians)")
    ap.add_argument("--frames", type=int, default=8, help="at most this many frames")
    args = ap.parse_args(argv)

    from functools import partial

    import torch

    from .config import ConfigError, load_config
    from .data import GraphDataset, collate_batch
    from .dist.launch import pick_device
    from .pipeline.costs import save_costs
    from .pipeline.measure import cost_models, measure_runs
    from .step import autocast_context, param_dtype
    from .trainer import build_model, open_dataset

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.frames < 1:
        print("error: --repeats and --frames must be >= 1", file=sys.stderr)
        return 2
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        device = pick_device(cfg.train.device)
    except (RuntimeError, ValueError) as err:
        print(f"error: train.device: {err}", file=sys.stderr)
        return 2
    if cfg.train.dtype == "bf16" and device.type != "cuda":
        print("error: train.dtype: bf16 autocast needs a CUDA device; this machine has "
              f"{device}", file=sys.stderr)
        return 2
    dtype = param_dtype(cfg.train.dtype)  # bf16: fp32 master weights, autocast below
    # The executor's own autocast (bf16 on CUDA, else none): phases are timed as trained.
    autocast = partial(autocast_context, device, cfg.train.dtype)
    ds = open_dataset(cfg.data.root, cfg.data.train_split)
    model = build_model(cfg, ds.reference_energies, device, dtype)
    frames = pick_frames(np.asarray(ds.natoms), cfg.train.max_atoms, args.frames)
    graphs = GraphDataset(ds, model.config.cutoff, model.config.three_body_cutoff)
    batch = collate_batch([graphs[i] for i in frames]).to(device, dtype)
    res = measure_runs(model, batch, cfg.loss, args.repeats,
                       log=lambda line: print(line, flush=True), autocast=autocast)
    info = res["info"]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    precision = ("bf16 autocast" if cfg.train.dtype == "bf16"
                 else str(dtype).removeprefix("torch."))
    label = (f"{cfg.model.preset} {dict(cfg.model.overrides)} on {where}, {precision}, "
             f"{len(frames)} frames of {cfg.data.root} ({info['atoms']} atoms, "
             f"{info['angles']} angles); one entry per unit stage")
    models = cost_models(res, label)
    save_costs(models, args.out)
    d = res["derived"]
    e = models["eager"]
    tot = [sum(t[k] for t in e.stage_times) for k in range(4)]
    print(f"wrote {args.out}: {e.num_stages} unit stages; eager t1:t2:t3:t4 = "
          + ":".join(f"{x / tot[0]:.2f}" for x in tot)
          + f"; W share P3 {d['w3']:.2f}, P4 {d['w4']:.2f}; split factor P3 "
          f"{d['split_factor_P3']:.2f}, P4 {d['split_factor_P4']:.2f}; fixed per-stage ms "
          + ", ".join(f"{x * 1e3:.1f}" for x in d["stage_overhead"])
          + f"\nuse it with: parallel.costs={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
