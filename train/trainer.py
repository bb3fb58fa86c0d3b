"""The training loop: data → runner step → gradient all-reduce → clip → AdamW → EMA,
with validation, metrics, checkpoints, resume and the final export.

Only :mod:`matris.train.dist` communicates; this module calls its wrappers.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from . import dist as mdist
from .batch import Batch
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, to_yaml
from .data import GraphDataset, StepLoader
from .edge_counts import edge_counts
from .ema import EMA
from .loss import weighted_loss
from .metrics import ValAccumulator
from .moe import BalanceLoss
from .optim import build_optimizer, clip_gradients, lr_at, set_lr
from .rng import rng_state, seed_everything, set_rng_state
from .sampler import StepSampler
from .step import LocalRunner, StepResult, param_dtype

TERMS = ("energy", "forces", "stress", "magmoms")


def open_dataset(root: str, split: str):
    """``matris.datasets.ShardedDataset(root, split)`` with an error naming the config key."""
    from matris.datasets import ShardedDataset

    if not (Path(root) / "manifest.yaml").is_file():
        raise FileNotFoundError(
            f"data.root={root!r} is not a built dataset (no manifest.yaml); build one, e.g. "
            "`matris-data build --source extxyz datasets/embedded/ptable_chgnet.extxyz.gz "
            f"--out {root}`, or point data.root at one")
    return ShardedDataset(root, split)


def build_model(cfg: TrainConfig, reference_energies: np.ndarray, device, dtype):
    """``MatRIS`` from the preset + overrides, with the dataset's reference energies."""
    from matris.config import preset
    from matris.model import MatRIS

    model = MatRIS(preset(cfg.model.preset, **cfg.model.overrides))
    model.set_reference_energies(reference_energies)
    return model.to(device=device, dtype=dtype)


def build_runner(cfg: TrainConfig, model, groups: mdist.ProcessGroups, device):
    """The runner for this topology (see :mod:`matris.train.step`)."""
    p = cfg.parallel
    if p.pp == 1 and p.gp == 1:
        return LocalRunner(model, cfg.loss, device, cfg.train.dtype)
    if p.pp > 1:  # with or without graph parallelism (the executor builds the GP parts)
        try:
            from .pipeline.executor import PipelineRunner
        except ImportError as err:
            raise NotImplementedError(
                f"parallel.pp={p.pp} needs the pipeline executor "
                "(matris.train.pipeline.executor.PipelineRunner), which is not available: "
                f"{err}") from err
        return PipelineRunner(cfg, model, groups, device)
    if p.gp > 1:
        from .graph_parallel.runner import GraphParallelRunner

        return GraphParallelRunner.from_groups(cfg, model, groups, device)
    raise AssertionError("unreachable")


def _named_parameters(runner) -> list[tuple[str, torch.nn.Parameter]]:
    """The runner's trained parameters by full-model name (``named_parameters()``, or its
    ``module``'s trainable parameters for runners that hold the whole model)."""
    if hasattr(runner, "named_parameters"):
        return list(runner.named_parameters())
    return [(n, p) for n, p in runner.module.named_parameters() if p.requires_grad]


class Trainer:
    """One rank's trainer. Construct on every rank after :func:`mdist.init_distributed`."""

    def __init__(self, cfg: TrainConfig, env: mdist.DistEnv) -> None:
        self.cfg, self.env = cfg, env
        p = cfg.parallel
        self.topology = mdist.Topology(pp=p.pp, dp=p.dp, gp=p.gp, world_size=env.world_size)
        self.groups = mdist.build_groups(self.topology, env.rank)
        self.device, self.dtype = env.device, param_dtype(cfg.train.dtype)
        seed_everything(cfg.train.seed, env.rank)
        self.train_ds = open_dataset(cfg.data.root, cfg.data.train_split)
        self.val_ds = (open_dataset(cfg.data.root, cfg.data.val_split)
                       if cfg.data.val_split else None)
        self.model = build_model(cfg, self.train_ds.reference_energies, self.device, self.dtype)
        self.runner = build_runner(cfg, self.model, self.groups, self.device)
        self.balance = BalanceLoss(self.model, self.runner, cfg.loss.weights.moe_balance,
                                   self.groups.coord.gp)
        self.named_params = _named_parameters(self.runner)
        self.params = [p for _, p in self.named_params]
        self.optimizer = build_optimizer(self.named_params, cfg.optim)
        self.ema = (EMA(self.named_params, cfg.ema.decay, cfg.ema.warmup)
                    if cfg.ema.enabled else None)
        t = cfg.train
        self.edges = self.root_edge_counts() if t.max_edges is not None else None
        self.sampler = StepSampler(self.train_ds.natoms, max_atoms=t.max_atoms, dp_size=p.dp,
                                   dp_rank=self.groups.coord.dp, microbatches=p.microbatches,
                                   seed=t.seed, shuffle=cfg.data.shuffle,
                                   nedges=self.split_edges(self.train_ds),
                                   max_edges=t.max_edges)
        self.total_steps = t.steps or sum(self.sampler.steps_in_epoch(e) for e in range(t.epochs))
        self.step = 0

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """This rank's checkpoint part (tensors and plain containers only)."""
        named = dict(self.named_params)
        # Persistent buffers (e.g. references) and frozen parameters only: under PP the
        # other stages' trainable parameters are in state_dict() too, untrained here, and
        # must not reach the export merge.
        params = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {"step": self.step, "model": {k: v.detach().cpu() for k, v in named.items()},
                "buffers": {k: v.detach().cpu() for k, v in self.model.state_dict().items()
                            if k not in params},
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "sampler": self.sampler.state_dict(), "rng": rng_state(),
                "coord": [self.groups.coord.dp, self.groups.coord.pp, self.groups.coord.gp]}

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for name, p in self.named_params:
                p.copy_(state["model"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError("the checkpoint has no EMA state but ema.enabled is true")
            self.ema.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save(self) -> Path:
        topo = {"pp": self.topology.pp, "dp": self.topology.dp, "gp": self.topology.gp}
        meta = {"topology": topo, "stage_cuts": self.stage_cuts}
        return save_checkpoint(self.cfg.checkpoint_dir, self.step, self.env.rank, self.state(),
                               world_size=self.env.world_size, config_yaml=to_yaml(self.cfg),
                               meta=meta, barrier=mdist.barrier,
                               keep_last=self.cfg.checkpoint.keep_last)

    def resume(self) -> Path | None:
        """Load the newest complete checkpoint (same on every rank), if any."""
        path = mdist.broadcast_object(latest_checkpoint(self.cfg.checkpoint_dir))
        if path is None:
            return None
        topo = {"pp": self.topology.pp, "dp": self.topology.dp, "gp": self.topology.gp}
        self.load_state(load_checkpoint(path, self.env.rank, self.env.world_size,
                                        expect={"topology": topo},
                                        stage_cuts=self.stage_cuts))
        return path

    @property
    def stage_cuts(self) -> list[int] | None:
        """The pipeline runner's stage cuts (None without pipeline parallelism)."""
        cuts = getattr(self.runner, "cuts", None)
        return None if cuts is None else [int(c) for c in cuts]

    # ------------------------------------------------------------------ one step
    def compute_gradients(self, batches: list[Batch]) -> tuple[StepResult, dict[str, float]]:
        """Loss and gradients of one step, all-reduced over the stage replicas.

        Returns the runner's result and the global label counts; afterwards every
        ``p.grad`` of :attr:`params` holds the gradient of the whole step's loss.
        """
        batches = [b.to(self.device, self.dtype) for b in batches]
        local_counts = {t: 0.0 for t in TERMS}
        for b in batches:
            for t, c in b.labels.counts().items():
                local_counts[t] += c
        local_counts["microbatches"] = float(len(batches))
        counts = mdist.all_reduce_dict(local_counts, self.groups.dp)
        self.optimizer.zero_grad(set_to_none=True)
        result = self.runner.run(batches, counts)
        if self.balance.active:  # MoE balance term (matris.train.moe), before the all-reduce
            result.sums["moe_balance"] = self.balance.add([b.graph for b in batches],
                                                          counts["microbatches"])
        mdist.allreduce_gradients(self.params, self.groups.stage, op="sum",
                                  bucket_mb=self.cfg.parallel.bucket_mb)
        return result, counts

    def train_step(self, batches: list[Batch]) -> dict[str, float]:
        """One optimizer step on this rank's micro-batches; returns world-reduced metrics."""
        result, counts = self.compute_gradients(batches)
        norm = clip_gradients(self.params, self.cfg.optim.clip_grad_norm,
                              lambda sq: mdist.all_reduce_(sq, self.groups.pp))
        if not math.isfinite(norm):  # never let one bad batch overwrite every weight
            frames = [list(b.frames) for b in batches]
            raise FloatingPointError(
                f"non-finite gradient norm at step {self.step} (this rank's frames {frames} "
                f"of split {self.cfg.data.train_split!r}); the weights were not updated")
        lr = lr_at(self.step, self.cfg.optim, self.total_steps)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        keys = (*TERMS, "moe_balance") if self.balance.active else TERMS
        sums = mdist.all_reduce_dict({t: result.sums.get(t, 0.0) for t in keys},
                                     self.groups.world)
        weights = {t: getattr(self.cfg.loss.weights, t) for t in TERMS}
        out = {"loss": float(weighted_loss({t: torch.tensor(s, dtype=torch.float64)
                                            for t, s in sums.items()},
                                           weights, counts)),
               "lr": lr, "grad_norm": norm}
        out.update({f"loss_{t}": sums[t] / counts[t] for t in TERMS if counts[t] > 0})
        if self.balance.active:  # mean balance loss of the step's micro-batches (1: uniform)
            out["moe_balance"] = sums["moe_balance"]
        work = mdist.all_reduce_dict({"frames": result.frames, "atoms": result.atoms},
                                     self.groups.dp)
        out["frames"], out["atoms"] = work["frames"], work["atoms"]
        return out

    # ------------------------------------------------------------------ validation
    def validate(self, keep_pairs: bool = False) -> tuple[dict[str, float], dict]:
        """MAEs over the validation split (EMA weights when enabled), reduced over ranks.

        Returns (metrics, pairs); ``pairs`` (prediction, label) arrays are gathered on
        rank 0 when ``keep_pairs``.
        """
        acc = ValAccumulator(keep=20000 if keep_pairs else 0)
        total = n = len(self.val_ds)
        if self.cfg.data.val_max_frames:
            n = min(n, self.cfg.data.val_max_frames)
        # Evenly spaced over the split, not its first n frames: datasets are often stored
        # sorted (by element, source file or parent structure), so a prefix is biased.
        indices = (np.arange(n) * total) // n
        val_edges = self.split_edges(self.val_ds)
        sampler = StepSampler(self.val_ds.natoms[indices], max_atoms=self.cfg.train.max_atoms,
                              dp_size=self.cfg.parallel.dp, dp_rank=self.groups.coord.dp,
                              shuffle=False, max_edges=self.cfg.train.max_edges,
                              nedges=None if val_edges is None else val_edges[indices])
        loader = StepLoader(self.graphs_of(self.val_ds, indices), sampler,
                            max_steps=sampler.steps_in_epoch(0), **self.loader_kwargs())
        swap = self.ema.swapped() if self.ema else contextlib.nullcontext()
        with swap:
            for _, batches in loader:
                for b in batches:
                    b = b.to(self.device, self.dtype)
                    pred = self.runner.evaluate(b)
                    if pred is not None:
                        acc.add(pred, b.labels)
        totals = mdist.all_reduce_dict(acc.totals(), self.groups.world)
        pairs = {}
        if keep_pairs:
            gathered = mdist.allgather_object(acc.pair_arrays())
            for part in gathered:
                for term, arr in part.items():
                    pairs.setdefault(term, []).append(arr)
            pairs = {t: np.concatenate(v) for t, v in pairs.items()}
        return ValAccumulator.finalize(totals), pairs

    # ------------------------------------------------------------------ helpers
    def root_edge_counts(self) -> np.ndarray:
        """(n_frames,) directed edges within the model's r_c of every frame of data.root.

        Cached in the root (:mod:`matris.train.edge_counts`); a first count is split over
        all world ranks, which exchange their parts, so every rank holds the same array.
        """
        env = self.env
        return edge_counts(self.cfg.data.root, self.model.config.cutoff, rank=env.rank,
                           world=env.world_size,
                           allgather=mdist.allgather_object if env.world_size > 1 else None,
                           log=(lambda s: print(s, flush=True)) if env.is_main else None)

    def split_edges(self, ds) -> np.ndarray | None:
        """Edge counts aligned with ``ds`` (a split of data.root), or None without
        ``train.max_edges``."""
        return None if self.edges is None else self.edges[ds.indices]

    def graphs_of(self, ds, indices=None) -> GraphDataset:
        mc = self.model.config
        return GraphDataset(ds, mc.cutoff, mc.three_body_cutoff, indices)

    def loader_kwargs(self) -> dict:
        d = self.cfg.data
        return {"num_workers": d.num_workers, "worker_start": d.worker_start,
                "prefetch_factor": d.prefetch_factor}

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        """Train to ``total_steps`` (or ``train.stop_at``); returns the last metrics."""
        from .loop import run_loop

        return run_loop(self, resume)
