"""`MatRIS`: embedding, L interaction blocks and readout; the serial forward is the
composition of its stages (see `matris.stages`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from matris.config import ModelConfig, preset
from matris.cuts import balance, validate_cuts
from matris.graph import AtomGraph
from matris.nn.embed import Embedding
from matris.nn.exchange import LOCAL, Exchange
from matris.nn.geometry import GeometryModule
from matris.nn.interaction import InteractionBlock
from matris.nn.readout import NUM_ELEMENTS, Readout
from matris.stages import Stage, StageIO


class MatRIS(nn.Module):
    """Invariant MatRIS potential.

    Args:
        config: a `ModelConfig` or a preset name ("tiny", "4m", "10m").

    Call ``model(graph, positions=None, strain=None, exchange=LOCAL) -> StageIO`` for
    energies (use `matris.outputs` for forces and stress). Units: eV, Å, μB.
    """

    def __init__(self, config: ModelConfig | str = "10m"):
        super().__init__()
        if isinstance(config, str):
            config = preset(config)
        self.config = config
        self.geometry = GeometryModule(config)
        self.embedding = Embedding(config)
        self.blocks = nn.ModuleList(InteractionBlock(config) for _ in range(config.num_blocks))
        self.readout = Readout(config)
        self._moe_cache: list | None = None

    # ------------------------------------------------------------------ MoE
    def moe_layers_of_block(self, k: int) -> list:
        """The MoE layers of interaction block k (empty for a dense model)."""
        if self._moe_cache is None:
            from matris.nn.moe import moe_layers

            self._moe_cache = [moe_layers(b) for b in self.blocks]
        return self._moe_cache[k]

    @property
    def num_moe_layers_run(self) -> int:
        """MoE layers run by a full forward (normalises the aux loss)."""
        from matris.nn.moe import moe_layers_run

        return moe_layers_run(self.config)

    def moe_aux_loss(self, graph: AtomGraph) -> Tensor | None:
        """The model's load-balancing loss on `graph` from chemistry alone (element
        routers; see `Stage.moe_aux_loss`); None for a dense model."""
        from matris.moe import stage_aux_loss

        return stage_aux_loss(self.stages(())[0], graph)

    def specialize(self, elements) -> MatRIS:
        """A copy that keeps only the experts `elements` route to (exact for them; other
        elements raise). MD cost then tracks active, not total, parameters. See
        `matris.moe.specialize`."""
        from matris.moe import specialize

        return specialize(self, elements)

    def active_parameters(self) -> int:
        """Parameters used for one row: every MoE layer counts k experts + shared expert
        + its router table; equals the total for a dense model."""
        from matris.nn.moe import moe_layers

        total = sum(p.numel() for p in self.parameters())
        return total - sum(m.expert_parameters() * (len(m.experts) - m.top_k)
                           for m in moe_layers(self))

    # ------------------------------------------------------------------ stages
    @property
    def num_blocks(self) -> int:
        """Number of interaction blocks L (cuts are indices in [0, L])."""
        return len(self.blocks)

    def stages(self, cuts: Sequence[int] = ()) -> list[Stage]:
        """Stages split at interaction-block indices `cuts` (strictly increasing, in
        [0, L]); ``len(cuts) + 1`` stages sharing this model's parameters."""
        cuts = validate_cuts(cuts, self.num_blocks)
        bounds = [0, *cuts, self.num_blocks]
        n = len(bounds) - 1
        return [Stage(self, s, bounds[s], bounds[s + 1], last=s == n - 1) for s in range(n)]

    def unit_costs(self, graph: AtomGraph | None = None) -> list[float]:
        """Relative cost of each unit (embedding, blocks..., readout) for balancing.

        Estimated from per-row multiply-adds of a training step at width D: an
        interaction block does ~12·D² per angle, ~6·D² per edge, ~24·D² per bond and
        ~20·D² per atom; angles dominate. Without a graph, typical bulk ratios are used
        (A = 10·E, U = E/2, N = E/40).
        """
        d = self.config.width
        if graph is None:
            n_e = 40.0
            n_a, n_u, n_n = 10 * n_e, n_e / 2, 1.0
        else:
            n_a, n_e, n_u, n_n = (float(x) for x in (graph.n_angles, graph.n_edges,
                                                      graph.n_bonds, graph.n_atoms))
        block = d * d * (12 * n_a + 6 * n_e + 24 * n_u + 20 * n_n)
        embed = d * (self.config.num_angular + 10) * n_a + d * d * (n_u + n_n)
        heads = [d, *self.config.energy_head, 1]
        readout = n_n * sum(a * b for a, b in itertools.pairwise(heads)) * 3
        return [embed, *[block] * self.num_blocks, readout]

    def balanced_cuts(self, num_stages: int, graph: AtomGraph | None = None,
                      costs: Sequence[float] | None = None,
                      num_devices: int | None = None) -> list[int]:
        """Cuts giving `num_stages` stages of balanced cost (angle work by default, or
        measured per-unit `costs`: embedding, each block, readout); with `num_devices`
        and a wave placement (2·waves·P stages) each device's total is balanced
        (``matris.cuts.balance``)."""
        costs = list(costs) if costs is not None else self.unit_costs(graph)
        if len(costs) != self.num_blocks + 2:
            raise ValueError(f"costs needs {self.num_blocks + 2} entries "
                             f"(embedding, {self.num_blocks} blocks, readout)")
        return balance(costs, num_stages, num_devices)

    # ------------------------------------------------------------------ forward
    def forward(self, graph: AtomGraph, positions: Tensor | None = None,
                strain: Tensor | None = None, exchange: Exchange = LOCAL,
                checkpoint: bool = False) -> StageIO:
        """Energies of a batch: the stages of ``self.stages()`` composed.

        positions default to ``graph.positions``; strain (B, 3, 3) may be None;
        `checkpoint` recomputes blocks in the backward (see `Stage.forward`).
        """
        if positions is None:
            positions = graph.positions
        io, aux = None, None
        for stage in self.stages(()):
            io = stage(io, graph, positions, strain, exchange, checkpoint=checkpoint)
            if io.aux_loss is not None:
                aux = io.aux_loss if aux is None else aux + io.aux_loss
        io.aux_loss = aux
        return io

    # ------------------------------------------------------------------ references
    @property
    def reference_energies(self) -> Tensor:
        """(119,) frozen per-element reference energies, eV per atom of element Z."""
        return self.readout.reference_energies

    def set_reference_energies(self, values) -> None:
        """Set the composition model from an array of length 119 (eV/atom, index Z)."""
        arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values,
                         dtype=np.float64).reshape(-1)
        if arr.shape != (NUM_ELEMENTS,):
            raise ValueError(f"reference energies must have length {NUM_ELEMENTS} (index = Z), "
                             f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("reference energies must be finite")
        buf = self.readout.reference_energies
        buf.copy_(torch.from_numpy(arr).to(device=buf.device, dtype=buf.dtype))

    # ------------------------------------------------------------------ counting
    def parameter_breakdown(self) -> dict[str, int]:
        """Trainable parameters per component (the blocks summed)."""
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())
        emb = self.embedding
        out = {
            "atom embedding": count(emb.atom_table) + count(emb.atom_proj),
            "bond embedding": sum(count(m) for m in (emb.bond_w1, emb.bond_w2, emb.bond_norm,
                                                     emb.bond_ws)),
            "angle embedding": count(emb.angle_w1) + count(emb.angle_w2),
        }
        for name in ("line_attention", "atom_attention", "line_refine", "atom_refine"):
            out[f"{name} (all blocks)"] = sum(count(getattr(b, name)) for b in self.blocks)
        out["readout norm"] = count(self.readout.norm)
        out["energy head"] = count(self.readout.energy)
        if self.readout.magmom is not None:
            out["magmom head"] = count(self.readout.magmom)
        out["total"] = count(self)
        if self.config.moe is not None:
            out["active (per row)"] = self.active_parameters()
        return out
