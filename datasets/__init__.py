"""matris.datasets: dataset builders, LMDB shards and the frame schema.

Public API (docs/architecture.md §1, docs/data.md):

* :class:`ShardedDataset` — random access to a built dataset root;
* :class:`ShardWriter` / :class:`ShardReader` — one single-file LMDB shard;
* :func:`encode_record` / :func:`decode_record` — the binary record codec;
* :func:`build_dataset` / :class:`BuildConfig` — the builder behind ``matris-data build``.
"""

from .build import BuildConfig, BuildError, build_dataset
from .codec import RecordError, decode_record, encode_record
from .dataset import ShardedDataset
from .layout import IncompleteDatasetError, read_manifest
from .schema import SCHEMA_VERSION, FrameError, frames_equal, normalize_frame
from .shards import ShardCorruptError, ShardReader, ShardWriter
from .sources import SOURCES, SourceOptions

__all__ = [
    "SCHEMA_VERSION", "SOURCES", "BuildConfig", "BuildError", "FrameError",
    "IncompleteDatasetError", "RecordError", "ShardCorruptError", "ShardReader",
    "ShardWriter", "ShardedDataset", "SourceOptions", "build_dataset", "decode_record",
    "encode_record", "frames_equal", "normalize_frame", "read_manifest",
]
