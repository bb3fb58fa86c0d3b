"""The outer loop: steps, logging, periodic validation and checkpoints, the final export."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from . import dist as mdist
from .checkpointing import atomic_write_bytes
from .config import to_yaml
from .data import StepLoader
from .export import export_checkpoint
from .metrics import MetricsLog, Throughput, memory_stats
from .plots import learning_curve, parity_plot

if TYPE_CHECKING:
    from .trainer import Trainer


def _say(trainer: Trainer, text: str) -> None:
    if trainer.env.is_main:
        print(text, flush=True)


def _banner(tr: Trainer) -> str:
    e, p = tr.env, tr.cfg.parallel
    n_params = sum(p_.numel() for p_ in tr.params)
    return (f"matris-train: {e.world_size} rank(s) = pp {p.pp} × dp {p.dp} × gp {p.gp}; "
            f"{e.threads} thread(s)/rank; device {e.device}; dtype {tr.cfg.train.dtype}; "
            f"{len(tr.train_ds)} training frames; {n_params} trained parameters on rank 0; "
            f"{tr.total_steps} steps")


def _validate(tr: Trainer, log: MetricsLog, final: bool) -> dict:
    metrics, pairs = tr.validate(keep_pairs=final)
    log.write("val", tr.step, metrics)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "n_frames")
    _say(tr, f"[val step {tr.step}] {shown}")
    if final and tr.env.is_main and tr.cfg.log.plots:
        parity_plot(pairs, log.path.parent / "parity.png", title=f"validation, step {tr.step}")
    return metrics


def run_loop(tr: Trainer, resume: bool) -> dict:
    """Train from scratch or from the newest checkpoint; see :meth:`Trainer.fit`."""
    cfg = tr.cfg
    resumed = tr.resume() if resume else None
    if resume:
        _say(tr, f"resumed from {resumed} at step {tr.step}" if resumed else
             f"--resume: no complete checkpoint in {cfg.checkpoint_dir}; starting at step 0")
    log = MetricsLog(cfg.log.out, tr.env.is_main, cfg.log.tensorboard,
                     resume_step=tr.step if resumed else None)
    _say(tr, "resolved config:\n" + to_yaml(cfg))
    if tr.env.is_main:  # the run folder documents itself (checkpoints keep their own copy)
        atomic_write_bytes(Path(cfg.log.out) / "config.yaml", to_yaml(cfg).encode())
    _say(tr, _banner(tr))
    stop = min(tr.total_steps, cfg.train.stop_at or tr.total_steps)
    loader = StepLoader(tr.graphs_of(tr.train_ds), tr.sampler, max_steps=max(0, stop - tr.step),
                        **tr.loader_kwargs())
    bar = tqdm(total=stop, initial=tr.step, disable=not (tr.env.is_main and cfg.log.progress),
               file=sys.stderr, dynamic_ncols=True, desc="train")
    if tr.val_ds is not None and cfg.log.val_at_start and tr.step == 0:
        _validate(tr, log, final=False)
    throughput, t0, last = Throughput(), time.perf_counter(), {}
    for plan, batches in loader if tr.step < stop else ():
        metrics = tr.train_step(batches)
        # The loader runs ahead; the consumed position is what a checkpoint must hold.
        tr.sampler.epoch, tr.sampler.step = plan.epoch, plan.step + 1
        throughput.add(int(metrics.pop("frames")), int(metrics.pop("atoms")))
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
        last = metrics
        if tr.step % cfg.log.every == 0 or tr.step == stop:
            log.write("train", tr.step, {**metrics, "epoch": plan.epoch, **throughput.rates(),
                                         **memory_stats(tr.device),
                                         "time_s": time.perf_counter() - t0})
        if tr.step >= stop:
            break
        if tr.val_ds is not None and cfg.log.val_every and tr.step % cfg.log.val_every == 0:
            _validate(tr, log, final=False)
        if cfg.checkpoint.every and tr.step % cfg.checkpoint.every == 0:
            tr.save()
    bar.close()
    finished = tr.step >= tr.total_steps
    if tr.val_ds is not None and tr.step > 0:
        last = {**last, **_validate(tr, log, final=finished)}
    path = tr.save()  # the loop exits before the periodic save of the last step
    _say(tr, f"checkpoint {path}")
    if finished:
        mdist.barrier()
        if tr.env.is_main:
            out = export_checkpoint(path, cfg.export_path)
            _say(tr, f"exported inference checkpoint {out}")
            if cfg.log.plots:
                learning_curve(log.path, log.path.parent / "learning_curve.png")
    else:
        _say(tr, f"stopped at step {tr.step} of {tr.total_steps} (train.stop_at); "
                 "continue with --resume")
    log.close()
    return last
