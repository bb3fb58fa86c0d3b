"""Expert selection for inference: the model an MD calculator evaluates for a composition.

With element routing, the experts a structure uses depend only on its elements, so a
calculator can hold and run a model specialised to them (`matris.moe.specialize`: same
energies, forces and stress, only the used experts allocated). `ExpertSelection` keeps
that model in step with the elements seen:

- ``elements=None`` ("auto"): specialise to the elements of the first structure, and
  re-specialise from the full model to the union when a structure brings a new element
  (the full model stays in memory as the source; cost per step tracks active
  parameters, memory does not);
- ``elements=[Z, ...]``: specialise once to these elements and drop the full model (held
  parameters track the active ones); other elements raise ValueError;
- ``elements="all"``: always the full model (every expert held; the grouped compute
  still only runs the experts that rows route to).

Dense models and MoE models with a feature router (routes depend on geometry) are always
used whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import nn

from matris.moe import specialize
from matris.nn.moe import moe_layers


def element_routed(model: nn.Module) -> bool:
    """True for an MoE model whose every MoE layer routes on chemistry (specialisable)."""
    layers = moe_layers(model)
    return bool(layers) and all(m.router_kind == "element" for m in layers)


class ExpertSelection:
    """The model to evaluate for given atomic numbers (see the module docstring).

    Args:
        model: a `MatRIS` (eval mode, on its device and dtype).
        elements: None ("auto"), an iterable of atomic numbers, or "all".

    Attributes:
        model: the model to evaluate now. elements: sorted atomic numbers the current
        model covers, or None when it covers every element (full model).
        specialisations: how many specialised models were made so far.
    """

    def __init__(self, model: nn.Module, elements: Iterable[int] | str | None = None):
        if isinstance(elements, str) and elements != "all":
            raise ValueError(f"moe elements must be None, 'all' or atomic numbers, "
                             f"got {elements!r}")
        self.model = model
        self.elements: list[int] | None = None
        self.specialisations = 0
        self._full: nn.Module | None = None
        self._fixed = False
        if not element_routed(model) or isinstance(elements, str):
            return
        if elements is None:
            self._full = model  # specialised lazily, on the first structure
            return
        self._fixed = True
        self._specialise(model, {int(z) for z in elements})

    def _specialise(self, source: nn.Module, elements: set[int]) -> None:
        self.elements = sorted(elements)
        if getattr(source, "specialized_elements", None) == self.elements:
            self.model = source  # already exactly these experts (pre-selected by the caller)
            return
        self.model = specialize(source, self.elements)
        self.specialisations += 1

    def for_numbers(self, numbers) -> nn.Module:
        """The model for a structure (or batch) with atomic numbers `numbers` (any
        int array-like); re-specialises in "auto" mode when a new element appears."""
        if self._full is None and not self._fixed:
            return self.model
        want = {int(z) for z in np.unique(np.asarray(numbers))}
        have = set(self.elements or ())
        if self.elements is not None and want <= have:
            return self.model
        if self._fixed:
            raise ValueError(f"element(s) Z={sorted(want - have)} are not among the "
                             f"elements {self.elements} this MoE calculator was specialised "
                             f"to (moe_elements); include them, or use moe_elements=None")
        self._specialise(self._full, want | have)
        return self.model
