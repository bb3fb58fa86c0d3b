"""Evaluate an inference checkpoint on one split of a dataset (held-out test metrics).

    matris-train eval MODEL.pt DATA_ROOT [--split test] [--out DIR] [--max-atoms N]

Single process, no MPI: it loads the exported checkpoint (``matris.checkpoint``, weights
only) exactly as MD does, so the numbers describe the model users get. Writes
``<out>/eval_<split>.json`` (MAEs in meV/atom, meV/Å, GPa, μB, and the frames/elements
evaluated) and ``<out>/parity_<split>.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data import GraphDataset, StepLoader
from .metrics import ValAccumulator
from .plots import parity_plot
from .sampler import StepSampler


class _Baselines:
    """MAEs of trivial predictors on the evaluated frames, as context for the model's:
    energy = Σ per-element reference energies (composition only, meV/atom) and
    forces = 0 (meV/Å). A model that does not beat them has learned nothing. Accumulated
    from the same batches as the model's MAEs (labels in their stored precision)."""

    def __init__(self, reference_energies: torch.Tensor):
        self.ref = reference_energies.detach().cpu().to(torch.float64)  # (119,) eV
        self.e_err = self.f_err = 0.0
        self.e_n = self.f_n = 0

    def add(self, graph, labels) -> None:
        ref = self.ref.index_select(0, graph.numbers)  # (N,)
        e_ref = ref.new_zeros(len(labels.natoms)).index_add(0, graph.batch, ref)  # (B,)
        err = (e_ref - labels.energy.to(torch.float64)).abs() / labels.natoms
        self.e_err += float(err[labels.energy_mask].sum())
        self.e_n += int(labels.energy_mask.sum())
        self.f_err += float(labels.forces[labels.forces_mask].to(torch.float64).abs().sum())
        self.f_n += 3 * int(labels.forces_mask.sum())

    def metrics(self) -> dict:
        return {"baseline_energy_mae_mev_atom": 1000 * self.e_err / self.e_n if self.e_n
                else None,
                "baseline_forces_mae_mev_a": 1000 * self.f_err / self.f_n if self.f_n
                else None}


def evaluate_checkpoint(model_path: str | Path, data_root: str | Path, split: str = "test",
                        *, max_atoms: int = 256, dtype: str = "float32",
                        out_dir: str | Path | None = None) -> dict:
    """MAEs of the checkpoint's predictions against the labels of every frame of `split`.

    Returns a dict with ``split``, ``n_frames``, ``n_atoms``, ``elements`` (sorted Z present),
    the MAE keys of :class:`~matris.train.metrics.ValAccumulator`, the trivial-predictor
    MAEs ``baseline_energy_mae_mev_atom`` / ``baseline_forces_mae_mev_a`` (see
    `_Baselines`), and ``seconds``.
    """
    from matris.checkpoint import load_checkpoint
    from matris.datasets import ShardedDataset
    from matris.outputs import compute_outputs

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = load_checkpoint(model_path).to(torch_dtype).eval()
    ds = ShardedDataset(data_root, split=split)
    if len(ds) == 0:
        raise ValueError(f"split {split!r} of {data_root} holds no frames")
    cfg = model.config
    graphs = GraphDataset(ds, cfg.cutoff, cfg.three_body_cutoff)
    sampler = StepSampler(ds.natoms, max_atoms=max(max_atoms, int(ds.natoms.max())),
                          shuffle=False)
    loader = StepLoader(graphs, sampler, max_steps=sampler.steps_in_epoch(0), num_workers=0)
    acc = ValAccumulator(keep=200_000)
    baselines = _Baselines(model.reference_energies)
    elements: set[int] = set()
    t0 = time.perf_counter()
    for _, batches in loader:
        for batch in batches:
            baselines.add(batch.graph, batch.labels)  # before the cast to the model dtype
            batch = batch.to("cpu", torch_dtype)
            has_stress = bool(batch.labels.stress_mask.any())
            pred = compute_outputs(model, batch.graph, forces=True, stress=has_stress,
                                   magmoms=True)
            acc.add(pred, batch.labels)
            elements.update(int(z) for z in torch.unique(batch.graph.numbers))
    metrics = ValAccumulator.finalize(acc.totals())
    metrics.update(baselines.metrics())
    metrics.update(split=split, n_frames=len(ds), n_atoms=int(ds.natoms.sum()),
                   elements=sorted(elements), seconds=time.perf_counter() - t0,
                   model=str(model_path), data_root=str(data_root))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
        pairs = {t: np.asarray(a) for t, a in acc.pair_arrays().items()}
        parity_plot(pairs, out / f"parity_{split}.png",
                    title=f"{Path(model_path).name} on the {split} split ({len(ds)} frames)")
    return metrics


def main(argv: list[str]) -> int:
    """``matris-train eval`` entry point."""
    p = argparse.ArgumentParser(prog="matris-train eval",
                                description="Held-out metrics of an inference checkpoint.")
    p.add_argument("model", help="inference checkpoint (matris-train export)")
    p.add_argument("data_root", help="dataset root (matris-data build)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="folder for eval_<split>.json and parity_<split>.png")
    p.add_argument("--max-atoms", type=int, default=256, help="atoms per evaluation batch")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = p.parse_args(argv)
    m = evaluate_checkpoint(args.model, args.data_root, args.split, max_atoms=args.max_atoms,
                            dtype=args.dtype, out_dir=args.out)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
             if k != "elements"}
    print(json.dumps(shown, indent=2))
    return 0
