"""The MoE load-balancing term of a training step (``loss.weights.moe_balance``).

    L_bal = w · (1/M) · Σ_m aux(m)

over the M micro-batches of the step (all DP ranks), where aux(m) is the model's
balance loss on micro-batch m (`matris.model.MatRIS.moe_aux_loss`: 1 for a uniform
router, larger when imbalanced). With element routing it depends on chemistry only, so
it is computed from each micro-batch's graph after the runner's step, whatever the
runner did: each rank adds the shares of the stages it holds (`Stage.moe_aux_loss`; the
shares of all stages sum to the model's value), on graph-parallel part 0 only (every
part holds the whole micro-batch graph), before the gradient all-reduce over DP × GP.
The all-reduced gradient is then the serial one (tests/distributed/moe).

The routers get gradients from the task loss too (the gates multiply the expert
outputs); this term only adds the balancing pressure.
"""

from __future__ import annotations

import torch

from matris.nn.moe import moe_layers


class BalanceLoss:
    """Adds the balance term of one step on this rank (see the module docstring).

    Args:
        model: the full `MatRIS` of this rank; runner: the step runner (its ``stages``
        dict, for a pipeline rank, or its whole ``module``); weight: w >= 0;
        gp_rank: this rank's graph-parallel part.

    ``active`` is False for dense models (and for feature routers with w = 0): nothing is
    computed or logged. A feature router with w > 0 raises ValueError (its balance
    loss needs the forward's features, which the runners do not hand out).
    """

    def __init__(self, model, runner, weight: float, gp_rank: int = 0) -> None:
        layers = moe_layers(model)
        element = all(m.router_kind == "element" for m in layers)
        if layers and not element and weight > 0:
            raise ValueError("loss.weights.moe_balance > 0 needs element routing (moe.router"
                             "='element'); the trainer does not support the balance loss of a"
                             " feature router: set loss.weights.moe_balance=0")
        self.weight = float(weight)
        self.active = bool(layers) and element
        self.adds = self.active and gp_rank == 0
        stages = getattr(runner, "stages", None)
        self.modules = ([stages[s] for s in sorted(stages)] if isinstance(stages, dict)
                        else [model])

    def add(self, graphs, num_microbatches: float) -> float:
        """Backward of w/M · Σ (this rank's stage shares) over `graphs` (this rank's
        micro-batch graphs; M = the step's micro-batches over DP). Returns Σ shares / M
        (detached): its sum over the world is the step's mean aux."""
        if not self.adds or not graphs:
            return 0.0
        scale = 1.0 / num_microbatches
        total = 0.0
        with torch.enable_grad() if self.weight > 0 else torch.no_grad():
            for module in self.modules:
                for g in graphs:
                    share = module.moe_aux_loss(g)
                    if share is None:
                        continue
                    if self.weight > 0 and share.requires_grad:
                        (self.weight * scale * share).backward()
                    total += float(share.detach()) * scale
        return total
