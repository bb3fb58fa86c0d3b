"""Exponential moving average of the trained parameters (the weights that get exported).

shadow ← d·shadow + (1 − d)·param after every optimizer step, with
d = min(decay, (1 + n) / (10 + n)) during warm-up (n = updates so far) so early, poor
weights are forgotten quickly. Shadows are kept in float32 or wider (never bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch


class EMA:
    """EMA of named parameters (``[(name, parameter), ...]``, e.g. a runner's)."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], decay: float,
                 warmup: bool = True) -> None:
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.params = {name: p for name, p in named_params if p.requires_grad}
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().to(torch.promote_types(p.dtype, torch.float32))
            for name, p in self.params.items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameter values into the averages."""
        d = self.current_decay()
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().to(self.shadow[name].dtype), 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        differ = set(self.shadow) ^ set(state["shadow"])
        if differ:
            raise KeyError(f"EMA state does not match the parameters; differing names: "
                           f"{sorted(differ)[:5]}")
        self.updates = int(state["updates"])
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily put the averaged weights into the parameters (e.g. for validation)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])
