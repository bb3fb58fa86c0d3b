"""The pipeline seam: `StageIO` and `Stage`.

A model is an ordered list of units: embedding, L interaction blocks, readout. Cuts are
interaction-block indices c (0 <= c <= L) at which a new stage starts: stage s runs
blocks [c_s, c_{s+1}); stage 0 always holds the embedding and the last stage the readout
(a cut at 0 gives an embedding-only stage 0, a cut at L a readout-only last stage).

Every stage recomputes its geometry from the `positions` and `strain` tensors it is
given, so a pipeline executor can pass per-stage autograd leaves and take VJPs with
respect to them; only features cross a cut.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from matris.graph import AtomGraph
from matris.nn.exchange import LOCAL, Exchange
from matris.nn.geometry import compute_topology

if TYPE_CHECKING:
    from matris.model import MatRIS


@dataclass
class StageIO:
    """What crosses a cut: features between stages; energies after the last stage.

    atom (N, D), bond (U, D), angle (A, D) between stages. After the last stage:
    energy (B,) in eV (reference energies included), atom_energy (N,) in eV (zero on
    halo rows), magmoms (N,) in μB when the model has the head.

    aux_loss: MoE models in training mode only (else None): this stage's share of the
    load-balancing loss (a scalar depending on this stage's router parameters only;
    the shares of all stages sum to the model's aux loss, see docs/moe.md). It never
    crosses a cut: `tensors()` leaves it out.
    """

    atom: Tensor | None = None
    bond: Tensor | None = None
    angle: Tensor | None = None
    energy: Tensor | None = None
    atom_energy: Tensor | None = None
    magmoms: Tensor | None = None
    aux_loss: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        """The non-None fields by name (e.g. to send them to the next stage), without the
        stage-local `aux_loss`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "aux_loss" and getattr(self, f.name) is not None}


class Stage(nn.Module):
    """Units [start, stop) of a model (sharing the model's modules and parameters).

    Attributes: index (stage number), block_range (first, last+1 interaction block),
    first (holds the embedding), last (holds the readout).
    """

    def __init__(self, model: MatRIS, index: int, start: int, stop: int, last: bool):
        super().__init__()
        self.index = index
        self.block_range = (start, stop)
        self.first = index == 0
        self.last = last
        self.config = model.config
        self.geometry = model.geometry
        self.embedding = model.embedding if self.first else None
        self.blocks = nn.ModuleList(model.blocks[start:stop])
        self.readout = model.readout if last else None
        # Plain list (not registered): the MoE layers of this stage's blocks, whose
        # aux losses the forward collects; the model's count normalises the shares.
        self._moe = [m for k in range(start, stop) for m in model.moe_layers_of_block(k)]
        self._moe_total = model.num_moe_layers_run

    def forward(self, io: StageIO | None, graph: AtomGraph, positions: Tensor,
                strain: Tensor | None, exchange: Exchange = LOCAL,
                checkpoint: bool = False) -> StageIO:
        """Run this stage.

        Args:
            io: the previous stage's output (None for stage 0).
            graph: the (micro-)batch graph (same on every stage).
            positions: (N, 3) Å, the positions to differentiate against.
            strain: (B, 3, 3) zeros to differentiate against for stress, or None.
            exchange: graph-parallel exchange (default: the identity `LOCAL`).
            checkpoint: recompute each interaction block during the backward instead of
                keeping its intermediates (forces/stress without create_graph: memory
                falls to the block boundaries plus one block, for one extra forward).
                Not useful with create_graph (the recomputed graph is kept anyway).
        """
        _check_inputs(self, io, graph, positions)
        topo = compute_topology(graph)
        geo = self.geometry(graph, topo, positions, strain, with_embedding=self.first)
        if self.first:
            h, e, t = self.embedding(self.geometry, geo, topo)
        else:
            h, e, t = io.atom, io.bond, io.angle
        n_model_blocks = self.config.num_blocks
        for k, block in enumerate(self.blocks):
            final = self.block_range[0] + k == n_model_blocks - 1
            if checkpoint and torch.is_grad_enabled():
                h, e, t = torch.utils.checkpoint.checkpoint(
                    block, h, e, t, geo, topo, exchange, final=final, use_reentrant=False)
            else:
                h, e, t = block(h, e, t, geo, topo, exchange, final=final)
        aux = self._collect_aux()
        if not self.last:
            return StageIO(atom=h, bond=e, angle=t, aux_loss=aux)
        energy, atom_energy, magmoms = self.readout(
            h, geo, topo, graph.batch, graph.num_structures, exchange)
        return StageIO(energy=energy, atom_energy=atom_energy, magmoms=magmoms, aux_loss=aux)

    def _collect_aux(self) -> Tensor | None:
        aux = None
        for layer in self._moe:
            a = layer.pop_aux()
            if a is not None:
                aux = a if aux is None else aux + a
        return None if aux is None else aux / self._moe_total

    def moe_aux_loss(self, graph: AtomGraph) -> Tensor | None:
        """This stage's share of the balance loss from the graph's chemistry alone (no
        forward; element routers only): equals ``StageIO.aux_loss`` of a training forward
        on the same graph. Lets a trainer add the aux term anywhere, e.g. after a pipeline
        step, or on GP part 0 with the whole micro-batch's graph. None for dense stages."""
        from matris.moe import stage_aux_loss

        return stage_aux_loss(self, graph)


def _check_inputs(stage: Stage, io: StageIO | None, graph: AtomGraph, positions: Tensor):
    cfg = stage.config
    if (graph.cutoff, graph.three_body_cutoff) != (cfg.cutoff, cfg.three_body_cutoff):
        raise ValueError(
            f"graph built with cutoffs ({graph.cutoff}, {graph.three_body_cutoff}) but the "
            f"model needs ({cfg.cutoff}, {cfg.three_body_cutoff})")
    if stage.first != (io is None):
        raise ValueError("stage 0 takes io=None; later stages need the previous StageIO")
    dtype = next(stage.parameters()).dtype
    if positions.dtype != dtype or graph.cell.dtype != dtype:
        raise ValueError(f"positions/graph dtype {positions.dtype} does not match the model "
                         f"dtype {dtype}; use graph.to(dtype=...) or model.to(...)")
