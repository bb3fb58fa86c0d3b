"""Exponential moving average of the parameters (the weights that get exported).

shadow ← d·shadow + (1 − d)·param after every optimizer step, with
d = min(decay, (1 + n) / (10 + n)) during warm-up (n = updates so far) so early, poor
weights are forgotten quickly. Shadows are kept in float32 or wider (never bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    """EMA of ``module``'s trainable parameters (by name)."""

    def __init__(self, module: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().to(torch.promote_types(p.dtype, torch.float32))
            for name, p in module.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        d = self.current_decay()
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().to(self.shadow[name].dtype), 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the model; differing names: "
                           f"{sorted(missing)[:5]}")
        self.updates = int(state["updates"])
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)

    def averaged_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with the parameters replaced by their averages (buffers
        such as reference energies are taken from the module)."""
        out = {}
        for name, t in module.state_dict().items():
            out[name] = self.shadow[name].to(t.dtype).clone() if name in self.shadow else t
        return out

    @contextlib.contextmanager
    def swapped(self, module: torch.nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``module`` (e.g. for validation)."""
        backup = {n: p.detach().clone() for n, p in module.named_parameters() if n in self.shadow}
        with torch.no_grad():
            for n, p in module.named_parameters():
                if n in self.shadow:
                    p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in module.named_parameters():
                    if n in backup:
                        p.copy_(backup[n])
