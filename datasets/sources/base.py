"""Common source interface.

A source turns input paths into a stream of *items*. ``iter_file(path)`` yields
``(frame_index, raw)`` pairs cheaply (parsing only); ``convert(path, frame_index, raw)``
turns one raw item into a frame dict (may raise :class:`FrameError`). The builder splits
``convert`` + validation + encoding across MPI ranks, so it must not depend on state
carried between items.

A file that cannot be parsed further (truncated, malformed) raises :class:`SourceError`
from ``iter_file``; the builder records it as a rejected item and moves to the next file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..schema import FrameError


class SourceError(RuntimeError):
    """An input file is unreadable from some point on; names file, frame and reason."""

    def __init__(self, path, frame, reason: str):
        super().__init__(f"{path}: frame {frame}: {reason}")
        self.path, self.frame, self.reason = str(path), frame, reason


@dataclass
class SourceOptions:
    """Options shared by all sources (CLI flags of ``matris-data build``).

    ``*_key``: where labels live. For ASE-read inputs a key is looked up first in the
    attached calculator's results (ASE >= 3.23 moves ``energy``/``forces``/``stress``/
    ``free_energy``/``magmoms`` there), then in ``atoms.info`` / ``atoms.arrays``
    (e.g. MACE-style ``REF_energy``). ``group_key``: info/key_value_pairs key holding the
    group id for leak-free splits (``None``: a per-source default, see each source).
    """

    dataset: str | None = None
    task: str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    magmoms_key: str = "magmoms"
    charge_key: str = "charge"
    spin_key: str = "spin"
    group_key: str | None = None
    format: str | None = None          # ASE format name override (extxyz source)
    mptrj_energy: str = "uncorrected"  # MPtrj: which total energy becomes `energy`
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}


class Source:
    """Base class; subclasses set ``name``/``patterns`` and implement the two methods."""

    name = "base"
    patterns: tuple[str, ...] = ()  # glob patterns used when an input is a directory

    def __init__(self, options: SourceOptions | None = None):
        self.options = options or SourceOptions()

    def expand(self, inputs: list[str | Path]) -> list[Path]:
        """Input paths -> files, directories expanded to sorted matching files."""
        files: list[Path] = []
        for item in inputs:
            p = Path(item)
            if p.is_dir():
                found = sorted({f for pat in self.patterns for f in p.rglob(pat) if f.is_file()})
                if not found:
                    raise FileNotFoundError(f"no {self.name} files ({', '.join(self.patterns)})"
                                            f" under directory {p}")
                files.extend(found)
            elif p.is_file():
                files.append(p)
            else:
                raise FileNotFoundError(f"input {p} does not exist")
        return files

    def iter_file(self, path: Path) -> Iterator[tuple[int, object]]:
        raise NotImplementedError

    def convert(self, path: Path, index: int, raw) -> dict:
        raise NotImplementedError

    def provenance(self, frame: dict, path: Path, index: int, group=None) -> dict:
        """Fill provenance: --dataset/--task options win over values found in the input;
        source_id defaults to '<file name>:<index>', group_id to ``group``, else source_id."""
        frame["dataset"] = self.options.dataset or frame.get("dataset") or self.name
        if self.options.task:
            frame["task"] = self.options.task
        frame.setdefault("source_id", f"{path.name}:{index}")
        if group is not None:
            frame.setdefault("group_id", str(group))
        frame.setdefault("group_id", frame["source_id"])
        return frame


__all__ = ["FrameError", "Source", "SourceError", "SourceOptions"]
