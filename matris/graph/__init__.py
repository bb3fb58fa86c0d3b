"""Graph building: cell-list neighbour search, bonds, angles, batching."""

from matris.graph.batch import AtomGraph, collate
from matris.graph.build import build_graph

__all__ = ["AtomGraph", "build_graph", "collate"]
