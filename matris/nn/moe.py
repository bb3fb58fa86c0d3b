"""MatRIS-MoE layers: mixture-of-experts replacements of the interaction blocks' MLPs.

`MoELayer` holds E experts of the dense module's shape (`GatedMLP` or `FFN`), a router
(`matris.nn.moe_router`) and optionally one shared expert. For R rows:

    out_r = Σ_{j ∈ topk(r)} g_rj · Expert_j(x_r) + Shared(x_r)

computed grouped by expert (`matris.nn.moe_compute`: plan → dispatch → experts →
combine). Importing this module registers the ``"moe"`` builder of
`matris.nn.mlp.build_mlp`; MLPs whose role is not in ``config.moe["roles"]`` stay dense.

Experts are separate modules (not one stacked tensor) so that a step only creates
gradients, and an optimiser only state, for the experts its batch routed to, and so that
specialisation (`matris.moe.specialize`) and expert parallelism can hold a subset of
experts: ``local_of`` maps global expert ids to the index in ``experts`` (−1 = not held).

The layer records the load-balancing loss of its last training forward; `pop_aux`
hands it to the stage (`matris.stages.Stage` sums its layers' shares into
``StageIO.aux_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from matris.config import ModelConfig
from matris.nn.mlp import FFN, MLP_BUILDERS, GatedMLP, _dense
from matris.nn.moe_compute import grouped_experts, make_plan
from matris.nn.moe_router import ElementRouter, FeatureRouter, apply_capacity

#: Row type of each role's MLP (the route key passed as ``z`` by the blocks).
ROLE_ROWS = {
    "line_attention.message": "angle", "line_attention.update": "bond",
    "atom_attention.message": "edge", "atom_attention.update": "atom",
    "line_refine.message": "angle", "line_refine.bond": "bond", "line_refine.angle": "angle",
    "atom_refine.message": "edge", "atom_refine.atom": "atom", "atom_refine.bond": "edge",
}
#: Roles whose output the model's last block does not compute (never run there).
FINAL_BLOCK_SKIPS = ("line_refine.angle", "atom_refine.bond")


class MoELayer(nn.Module):
    """Mixture of `num_experts` MLPs of one role (see the module docstring).

    Args:
        kind: "gated" (called as ``layer(parts, z)``) or "ffn" (``layer(x, z)``).
        in_dims, hidden, out: the dense MLP's shape.
        config: the model config (``config.moe`` set).
        role: the MLP's role in its block (error messages, row type).

    Call with ``z`` the route keys of the rows: (R,) atomic numbers of the centre atoms
    or (R, 2) the two atoms of each bond. Returns (R, out).
    """

    def __init__(self, kind: str, in_dims: Sequence[int], hidden: int, out: int,
                 config: ModelConfig, role: str):
        super().__init__()
        mc = config.moe_config
        self.kind, self.role, self.out_dim = kind, role, out
        self.num_experts, self.top_k = mc.num_experts, mc.top_k
        self.capacity_factor, self.overflow = mc.capacity_factor, mc.overflow
        self.router_kind = mc.router

        def make():
            if kind == "gated":
                return GatedMLP(in_dims, hidden, out, config.norm)
            (d,) = in_dims
            return FFN(d, hidden, out)

        self.experts = nn.ModuleList(make() for _ in range(mc.num_experts))
        self.shared = make() if mc.shared_expert else None
        if mc.router == "element":
            self.router = ElementRouter(mc.num_experts, mc.top_k, config.max_z,
                                        mc.router_init_std)
        else:
            self.router = FeatureRouter(in_dims, mc.num_experts, mc.top_k, mc.router_init_std)
        self.register_buffer("local_of", torch.arange(mc.num_experts))
        self._aux: Tensor | None = None
        self.last_experts: Tensor | None = None  # (R, k) of the last call, for tests

    def forward(self, x, z: Tensor) -> Tensor:
        parts = x if self.kind == "gated" else [(x, None)]
        want_aux = self.training and torch.is_grad_enabled()
        if self.router_kind == "element":
            route = self.router(z, want_aux)
        else:
            route = self.router(parts, want_aux)
        local = self.local_of.index_select(0, route.experts.reshape(-1)).view_as(route.experts)
        if local.numel() and int(local.min()) < 0:
            raise ValueError(f"MoE layer {self.role}: rows route to experts this model does "
                             f"not hold (specialised for other elements?)")
        keep, overflow = apply_capacity(local, route.gates, self.num_experts,
                                        self.capacity_factor, self.overflow, self.role)
        plan = make_plan(local, keep, len(self.experts))
        out = grouped_experts(self.experts, plan, parts, route.gates, self.out_dim, self.kind)
        if self.shared is not None:
            shared = self.shared(x, z)
            if overflow is not None:  # overflowing pairs' weight goes to the shared expert
                shared = shared * (1.0 + overflow)[:, None]
            out = out + shared
        self._aux = route.aux
        self.last_experts = route.experts.detach()
        return out

    def pop_aux(self) -> Tensor | None:
        """The balance loss of the last training forward (once; then None)."""
        aux, self._aux = self._aux, None
        return aux

    def expert_parameters(self) -> int:
        """Parameters of one expert."""
        return sum(p.numel() for p in self.experts[0].parameters()) if len(self.experts) else 0

    def active_parameters(self) -> int:
        """Parameters a row uses: k experts, the shared expert and the router table."""
        total = sum(p.numel() for p in self.parameters())
        return total - (len(self.experts) - self.top_k) * self.expert_parameters()


def moe_layers(module: nn.Module) -> list[MoELayer]:
    """The MoE layers inside `module` in module order."""
    return [m for m in module.modules() if isinstance(m, MoELayer)]


def moe_layers_run(config: ModelConfig) -> int:
    """MoE layers executed by one full forward (the denominator of the model's
    aux loss, so that the balanced value is ~1 whatever the stage split)."""
    if config.moe is None:
        return 0
    roles = config.moe_config.roles
    return config.num_blocks * len(roles) - sum(r in roles for r in FINAL_BLOCK_SKIPS)


def _moe_builder(kind: str, in_dims: Sequence[int], hidden: int, out: int,
                 config: ModelConfig, role: str) -> nn.Module:
    if role not in config.moe_config.roles:
        return _dense(kind, in_dims, hidden, out, config, role)
    return MoELayer(kind, in_dims, hidden, out, config, role)


MLP_BUILDERS["moe"] = _moe_builder
