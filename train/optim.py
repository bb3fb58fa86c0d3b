"""AdamW, the warm-up + cosine learning-rate schedule, and gradient clipping.

The schedule is a pure function of the step (:func:`lr_at`), so resuming needs only the
step counter; the optimizer's own state (moments, step counts) is in its ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from .config import OptimConfig


def build_optimizer(named_params: Iterable[tuple[str, torch.nn.Parameter]],
                    cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on matrices (ndim ≥ 2),
    not on biases, norms or scalar scales, whose decay would only bias them towards zero."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters on this rank")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    Linear warm-up ``lr·(step+1)/warmup_steps`` for the first ``warmup_steps`` steps, then
    constant or cosine decay from ``lr`` to ``lr·min_lr_ratio`` at ``total_steps``.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def grad_norm(params: Iterable[torch.nn.Parameter],
              reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Global L2 norm of the gradients.

    ``reduce_sum`` sums the squared norm over the ranks holding *different* parameters
    (the pipeline group); ranks holding replicas (DP, GP) must not be summed.
    """
    sq = torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is not None:
            sq += p.grad.detach().to(torch.float64).square().sum().cpu()
    if reduce_sum is not None:
        sq = reduce_sum(sq)
    return float(sq.sqrt())


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float | None,
                   reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Scale gradients so their global norm is at most ``max_norm``; returns the norm before
    clipping (``max_norm=None``: only measure)."""
    norm = grad_norm(params, reduce_sum)
    if max_norm is not None and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    return norm
