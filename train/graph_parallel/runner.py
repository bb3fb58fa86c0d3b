"""`GraphParallelRunner`: the trainer's runner seam (``matris.train.step``) for ``gp > 1``.

Every rank of a GP group receives the same micro-batches (the sampler is indexed by the
DP coordinate only). Each rank cuts every micro-batch with the same `GraphPartition`,
keeps its part and computes its **share** of the loss:

- forces and magmoms: the labelled components of its owned atoms;
- energy and stress: computed from replicated totals, so held by part 0 only. The other
  parts keep the same terms with all labels masked out, so that every rank records the
  same autograd graph (their backward must visit the same communicating nodes).

Each term is normalised by the step's global count (``weighted_loss``), so the sum over
the GP group (and DP replicas) of the per-rank parameter gradients, which the trainer
all-reduces over its ``stage`` group (DP × GP), is the serial gradient; and the sum over
the world of ``StepResult.sums`` is the step's loss numerator.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from matris.train.dist.halo import GraphExchange, TorchTransport, Transport
from matris.train.loss import loss_sums, weighted_loss
from matris.train.step import StepResult, autocast_context, param_dtype

from .forward import part_outputs
from .part import LocalPart, build_part
from .partition import DEFAULT_WEIGHTS, partition_graph


def part_labels(labels, part: LocalPart, rank: int):
    """This part's share of a micro-batch's `Labels` (see the module docstring):
    per-atom labels restricted to owned atoms (in local order), per-frame labels kept
    on part 0 and masked out elsewhere. ``natoms`` stays global (energy per atom)."""
    own = part.owned_atoms.to(labels.forces.device)
    keep = rank == 0
    return replace(
        labels, forces=labels.forces.index_select(0, own),
        forces_mask=labels.forces_mask.index_select(0, own),
        magmoms=labels.magmoms.index_select(0, own),
        magmoms_mask=labels.magmoms_mask.index_select(0, own),
        energy_mask=labels.energy_mask & keep, stress_mask=labels.stress_mask & keep)


class GraphParallelRunner:
    """Runner for a graph-parallel group (``pp = 1``).

    Args:
        model: the full ``MatRIS`` (replicated on every rank of the group).
        loss: the ``LossConfig``.
        device, dtype_mode: as for ``LocalRunner``.
        transport: the GP group's transport (``TorchTransport(groups.gp)``, or a
            ``ThreadTransport`` in tests); its ``rank`` is this rank's part.
        partition_weights: per atom / edge / angle balancing weights.
    """

    def __init__(self, model: torch.nn.Module, loss, device: torch.device,
                 dtype_mode: str, transport: Transport,
                 partition_weights: tuple[float, float, float] = DEFAULT_WEIGHTS) -> None:
        self.module, self.loss, self.device, self.dtype_mode = model, loss, device, dtype_mode
        self.transport = transport
        self.weights = {k: getattr(loss.weights, k) for k in ("energy", "forces", "stress",
                                                               "magmoms")}
        self.dtype = param_dtype(dtype_mode)
        self.partition_weights = partition_weights
        self.last_exchange: GraphExchange | None = None  # diagnostics (volumes)

    @classmethod
    def from_groups(cls, cfg, model, groups, device, method: str = "p2p"):
        """The runner for the trainer: ``TorchTransport`` over ``groups.gp``."""
        return cls(model, cfg.loss, device, cfg.train.dtype, TorchTransport(groups.gp, method))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def prepare(self, graph) -> tuple[LocalPart, GraphExchange]:
        """This rank's part of ``graph`` and its exchange."""
        partition = partition_graph(graph, self.transport.size, weights=self.partition_weights)
        part = build_part(graph, partition, self.transport.rank)
        exchange = GraphExchange(part.plan, self.transport)
        self.last_exchange = exchange
        return part, exchange

    def _outputs(self, batch, part, exchange, create_graph: bool) -> dict[str, torch.Tensor]:
        train = create_graph
        has_stress = bool(batch.labels.stress_mask.any())
        with autocast_context(self.device, self.dtype_mode):
            out = part_outputs(
                self.module, part, exchange,
                forces=not train or self.weights["forces"] > 0,
                stress=has_stress and (not train or self.weights["stress"] > 0),
                magmoms=not train or self.weights["magmoms"] > 0,
                create_graph=create_graph)
        return {k: v.to(self.dtype) for k, v in out.items()}

    def run(self, microbatches, counts: dict[str, float]) -> StepResult:
        """Forward + this part's loss share + backward of each micro-batch."""
        result = StepResult()
        self.module.train()
        rank = self.transport.rank
        for batch in microbatches:
            part, exchange = self.prepare(batch.graph)
            out = self._outputs(batch, part, exchange, create_graph=True)
            terms = [t for t, w in self.weights.items() if w > 0]
            labels = part_labels(batch.labels, part, rank)
            sums = loss_sums(out, labels, self.loss.kind, self.loss.huber_delta, terms)
            loss = weighted_loss(sums, self.weights, counts)
            if loss.requires_grad:
                loss.backward()
            for t, s in sums.items():
                result.sums[t] = result.sums.get(t, 0.0) + float(s.detach())
            # Every part counts the frames: the trainer sums work over DP only.
            result.frames += batch.n_frames
            result.atoms += batch.n_atoms
        return result

    def evaluate(self, batch) -> dict[str, torch.Tensor] | None:
        """Detached predictions of the whole micro-batch on part 0 (None elsewhere):
        forces and magmoms are gathered from the owners."""
        self.module.eval()
        part, exchange = self.prepare(batch.graph)
        out = self._outputs(batch, part, exchange, create_graph=False)
        n = batch.graph.n_atoms
        for key in ("forces", "magmoms"):
            if key in out:
                out[key] = exchange.gather_owned(out[key], part.owned_atoms, n)
        return out if self.transport.rank == 0 else None
