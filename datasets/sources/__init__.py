"""Input sources for ``matris-data build --source NAME``."""

from __future__ import annotations

from .ase_files import AseDbSource, AseFileSource, VaspSource
from .aselmdb import AseLmdbSource
from .base import Source, SourceError, SourceOptions
from .mptrj import MPtrjSource

SOURCES: dict[str, type[Source]] = {
    "extxyz": AseFileSource,
    "ase-db": AseDbSource,
    "aselmdb": AseLmdbSource,
    "mptrj": MPtrjSource,
    "vasp": VaspSource,
}


def make_source(name: str, options: SourceOptions | None = None) -> Source:
    """Instantiate the source registered under ``name``."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose from {sorted(SOURCES)}") from None
    return cls(options)


__all__ = ["SOURCES", "Source", "SourceError", "SourceOptions", "make_source"]
