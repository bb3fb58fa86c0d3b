"""Teacher-free preview of the structure stage (used by `synth --dry-run` and the tests).

It runs the same plan and the same perturbation code as the real run, on *unrelaxed*
parents (no volume scan, which needs the teacher), so it shows the element coverage and the
atom-count distribution and checks that structure generation is deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
from ase import Atoms

from .config import SynthConfig
from .perturb import make_static_frame, nearest_neighbour_distance
from .plan import Unit, build_parent, build_plan


def unlabelled_static_frames(cfg: SynthConfig, units: list[Unit] | None = None
                             ) -> Iterator[tuple[Unit, Atoms]]:
    """(unit, frame) for the static units of the plan: n_frames candidates each, unrelaxed
    parents, no rejection (positions Å, cell rows Å)."""
    for unit in build_plan(cfg) if units is None else units:
        if unit.mode != "static":
            continue
        rng = np.random.default_rng(list(unit.seed))
        parent = build_parent(unit.parent)
        nn = nearest_neighbour_distance(parent)
        for _ in range(unit.n_frames):
            yield unit, make_static_frame(parent, nn, rng, cfg.natoms_min, cfg.natoms_max,
                                          cfg.max_aspect, cfg.max_strain, cfg.rattle_min,
                                          cfg.rattle_max, cfg.rattle_nn_cap)


def plan_summary(cfg: SynthConfig) -> dict:
    """Counts of the plan (no teacher): units, frames by kind, elements, natoms of static
    candidates (a histogram keyed by atom count)."""
    plan = build_plan(cfg)
    frames_by = Counter()
    elements: set[str] = set()
    for unit in plan:
        frames_by["md" if unit.mode == "md" else unit.parent.kind] += unit.n_frames
        elements.update(unit.parent.symbols)
    natoms = Counter(len(a) for _, a in unlabelled_static_frames(cfg, plan))
    return {"units": len(plan), "frames": dict(frames_by), "n_elements": len(elements),
            "elements": sorted(elements), "natoms_static": dict(sorted(natoms.items()))}
