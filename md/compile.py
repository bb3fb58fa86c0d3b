"""Opt-in `torch.compile` of the model with an eager fallback.

`ModelRunner` is the callable that `matris.outputs.compute_outputs` invokes in place
of the model (same arguments, forwarded unchanged). With compilation on, a call that fails
inside torch.compile (missing compiler, unsupported op, backend error) is retried
eagerly; if the eager call succeeds, compilation is switched off for good with one
warning. If the eager call fails too, the problem is the input, so its error is raised
and compilation stays on.
"""

from __future__ import annotations

import warnings

import torch

from matris.model import MatRIS


class ModelRunner:
    """Calls `model` eagerly or through torch.compile.

    Args:
        model: the MatRIS (eval mode, frozen).
        compile: False (eager), True (torch.compile, default inductor backend) or a
            backend name for torch.compile (e.g. "aot_eager").

    Attributes:
        compiled: whether calls currently go through the compiled module.
        fallback_reason: the exception text that switched compilation off, else None.
    """

    def __init__(self, model: MatRIS, compile: bool | str = False):
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be a bool or a torch.compile backend name, got "
                            f"{type(compile).__name__}")
        self.model = model
        self.fallback_reason: str | None = None
        self._compiled = None
        if compile:
            kwargs = {"dynamic": True}  # graph sizes change at every rebuild/step
            if isinstance(compile, str):
                kwargs["backend"] = compile
            try:
                self._compiled = torch.compile(model, **kwargs)
            except Exception as exc:  # e.g. an unknown backend name
                self._fall_back(exc)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args, **kwargs):
        if self._compiled is None:
            return self.model(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as exc:
            out = self.model(*args, **kwargs)  # raises on bad input
            self._fall_back(exc)
            return out

    def _fall_back(self, exc: Exception) -> None:
        self._compiled = None
        # One line: torch's messages span many lines (traceback hints, env-var tips).
        self.fallback_reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        warnings.warn(f"torch.compile failed, falling back to eager mode: "
                      f"{self.fallback_reason}", RuntimeWarning, stacklevel=3)
