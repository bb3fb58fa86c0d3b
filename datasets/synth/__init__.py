"""`matris-data synth`: the embedded, teacher-labelled periodic-table dataset generator.

Stages: :mod:`.plan` (which parent structures, pure function of the seed) →
:mod:`.perturb` (supercell, strain, rattle) → :mod:`.teacher` (labels; imported lazily, the
teacher is an optional extra) → :mod:`.extxyz` (deterministic text) → :mod:`.generate`
(orchestration, checks, checkpointing). See docs/embedded_dataset.md.
"""
