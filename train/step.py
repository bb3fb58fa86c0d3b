"""The per-rank training step and the seam a pipeline / graph-parallel runner plugs into.

A **runner** owns the part of the model that lives on this rank and turns this rank's
micro-batches of one step into accumulated parameter gradients. The trainer does the rest,
identically for every runner:

    counts = Σ label counts of the step over the DP group      (loss denominators)
    result = runner.run(microbatches, counts)                  (→ p.grad of runner.parameters())
    all-reduce p.grad (sum) over the ranks holding the same stage (DP × GP)
    clip by the global norm (squared norms summed over PP)
    AdamW step, EMA update

Runner protocol (duck-typed):

- ``named_parameters() -> list[(name, Parameter)]``: the parameters trained on this rank,
  named as in the full ``MatRIS`` (checkpoints and the export merge stages by name), in an
  order that is the same on every rank of a stage-replica group (the gradient buckets
  depend on it). Optimizer, EMA and checkpoints cover exactly these;
- ``parameters() -> list[Parameter]``: the same parameters without names;
- ``run(microbatches, counts) -> StepResult``: forward, loss, backward for this rank's
  micro-batches; ``counts`` are the global (DP-summed) label counts of the step. The loss of
  term t is normalised as ``Σ ℓ / counts[t]`` (``matris.train.loss.weighted_loss``), so that
  summing gradients over DP (and over GP parts, each holding its owned share) gives the
  serial gradient of the whole step;
- ``evaluate(batch) -> dict | None``: detached predictions (energy, forces, stress,
  magmoms) for validation, or ``None`` on ranks that must not count them (e.g. non-final
  pipeline stages); each frame must be counted by exactly one rank of a DP replica.

:class:`LocalRunner` is the whole model on this rank (``pp = gp = 1``); the pipeline
executor (``matris.train.pipeline.executor``) provides the per-stage four-phase runner.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .batch import Batch
from .config import LossConfig
from .loss import loss_sums, weighted_loss


@dataclass
class StepResult:
    """This rank's share of one step's loss: Σ over the world of ``sums[t]`` is the step's
    numerator of term t. ``frames``/``atoms`` count this rank's work (throughput)."""

    sums: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    atoms: int = 0


def autocast_context(device: torch.device, dtype_mode: str):
    """bf16 autocast on CUDA (parameters stay fp32: the master weights), else a no-op.

    Untested on GPU in this repository (developed on a CPU-only machine).
    """
    if dtype_mode == "bf16":
        if device.type != "cuda":
            raise ValueError("train.dtype=bf16 needs a CUDA device")
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def param_dtype(dtype_mode: str) -> torch.dtype:
    """Parameter / input dtype for ``train.dtype`` (bf16 keeps fp32 master weights)."""
    return {"float32": torch.float32, "float64": torch.float64, "bf16": torch.float32}[dtype_mode]


class LocalRunner:
    """The whole model on this rank: forces and stress by autograd with ``create_graph``.

    Args:
        model: a ``matris.model.MatRIS`` on ``device`` in ``param_dtype(dtype_mode)``.
        loss: the loss section of the config.
        device, dtype_mode: where and how to compute (``float32``, ``float64``, ``bf16``).
    """

    def __init__(self, model: torch.nn.Module, loss: LossConfig, device: torch.device,
                 dtype_mode: str = "float32") -> None:
        self.module, self.loss, self.device, self.dtype_mode = model, loss, device, dtype_mode
        self.weights = {k: getattr(loss.weights, k) for k in ("energy", "forces", "stress",
                                                               "magmoms")}
        self.dtype = param_dtype(dtype_mode)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def _outputs(self, batch: Batch, create_graph: bool) -> dict[str, torch.Tensor]:
        from matris.outputs import compute_outputs

        train = create_graph  # training needs only weighted terms; validation wants all
        has_stress = bool(batch.labels.stress_mask.any())
        with autocast_context(self.device, self.dtype_mode):
            out = compute_outputs(
                self.module, batch.graph,
                forces=not train or self.weights["forces"] > 0,
                stress=has_stress and (not train or self.weights["stress"] > 0),
                magmoms=not train or self.weights["magmoms"] > 0,
                create_graph=create_graph)
        # Loss arithmetic in the parameter dtype (fp32 under bf16 autocast).
        return {k: v.to(self.dtype) for k, v in out.items()}

    def run(self, microbatches: list[Batch], counts: dict[str, float]) -> StepResult:
        """Forward + loss + backward of each micro-batch; gradients accumulate in ``.grad``."""
        result = StepResult()
        self.module.train()
        for batch in microbatches:
            out = self._outputs(batch, create_graph=True)
            terms = [t for t, w in self.weights.items() if w > 0]
            sums = loss_sums(out, batch.labels, self.loss.kind, self.loss.huber_delta, terms)
            loss = weighted_loss(sums, self.weights, counts)
            if loss.requires_grad:
                loss.backward()
            for t, s in sums.items():
                result.sums[t] = result.sums.get(t, 0.0) + float(s.detach())
            result.frames += batch.n_frames
            result.atoms += batch.n_atoms
        return result

    def evaluate(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Detached energy, forces, stress (frames with stress labels) and magmoms."""
        self.module.eval()
        return self._outputs(batch, create_graph=False)
