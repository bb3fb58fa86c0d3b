"""MatRIS: invariant message-passing interatomic potential (model only).

Public entry points: `matris.graph` (build_graph, collate, AtomGraph), `matris.config`
(ModelConfig, preset), `matris.model.MatRIS`, `matris.stages` (Stage, StageIO),
`matris.nn.exchange` (LOCAL), `matris.outputs` and `matris.checkpoint`.
"""

from matris.config import ModelConfig, preset

__all__ = ["ModelConfig", "preset"]
