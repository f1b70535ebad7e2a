"""The HDF5 store: the one file between stage 1 (extract) and stage 2 (fit).

This package is the only one that touches h5py. It implements schema version 1 (see
docs/architecture.md):

```
/                       attrs: schema_version, embedx_version, created, command
/items/<column>         one row per item: id, path, duration, sample_rate, num_samples, extras
/features/<set>/        attrs: backend, layers, dim, poolings, frames, dtype, frame_rate,
                        config (YAML), the spec's free attrs (model id, revision, ...),
                        created, command, embedx_version (of the run that created the set)
    pooled/<pooling>    (num_layers, num_items, dim)
    frames/data         (total_frames, num_layers, dim)
    frames/offsets      (num_items + 1,) int64
    heads/<head>        (num_items, k) float32, attr ``names``
    feature_names       (dim,) utf-8 strings, only when the features have names
    config              the config YAML, only when it is too long (> 16 KiB) for the attr
    done                (num_items,) bool
/failed/<column>        set, index, id, path, stage, message (resizable, one row per failure)
```

A shard file (``embedx extract --shard K/N``) holds only its items, in global order, and says
which part of which item list it is: root attrs ``shard_index`` (K), ``shard_count`` (N),
``shard_total_items`` and ``shard_items_digest`` (SHA-256 of the full id list joined by
newlines), and ``/shard/indices`` ``(num_items,)`` int64, the global position of every item.
:func:`merge` combines the N shard files into one store equal to an unsharded run; a merged
file has a root attr (or, when long, a root dataset) ``merged_from`` and no shard attrs.

Conventions a reader of the raw file should know:

* Item columns keep their kind: bool, int64, float64 (NaN for missing) or utf-8 strings. A
  string column stores a missing value as ``""`` and :attr:`StoreReader.items` reads ``""``
  back as missing (NaN), the way ``pandas.read_csv`` treats an empty field; nullable integer or
  boolean columns that hold missing values are stored as float64 with NaN. The column order is
  the ``columns`` attr of ``/items``.
* ``feature_names`` is a dataset, not an attr: openSMILE's ComParE set has 6373 names, more than
  an attr may hold in the earliest HDF5 file format.
* ``duration`` is float64 seconds (NaN when unknown), ``sample_rate`` and ``num_samples`` int64
  (0 when unknown); ``id`` and ``path`` are never empty.
* Pooled and frame datasets are filled with NaN until written, so an item that is not ``done``
  can never pass for a real feature vector.
* Storage layout. ``pooled/<pooling>`` is *contiguous* (not chunked) and layer-major: layer k
  is one contiguous block, so reading it is a single read that touches no other layer, and the
  scattered rows of a length-sorted batch are written in place. (With ~1 MiB chunks
  ``(1, C, dim)`` every row written costs a read-modify-write of its chunk: 262 ms per batch of
  32 random items, 13 layers x 768, 2 poolings, float16, vs 3.6 ms contiguous.) The space is
  allocated and NaN-filled by ``create_feature_set``, so a full disk shows at once.
  ``frames/data`` is chunked ``(R, num_layers, dim)`` with R <= 64 frames and <= 2 MiB per
  chunk: it is allocated as items arrive, an item's rows are contiguous, and it is read per
  item. Nothing is compressed (float features compress poorly; reading must be fast).
* Writes are flushed before ``done`` is set, and ``done`` is flushed again, so after a crash
  between batches every item marked done has its data on disk. The file uses HDF5's earliest
  file format (no SWMR, no "file is open" flag), so a killed writer leaves a readable file.

The package, one concern per module (each imports only those above it):

```
spec.py       schema constants, FeatureSetSpec and its validation, ShardInfo   (no h5py)
lock.py       the writer's lock file and its holder record, writer_status, fork safety
base.py       opening an HDF5 store; the read operations reader and writer share
reader.py     StoreReader
failures.py   the write side of /failed (a base of StoreWriter)
layout.py     the HDF5 layout a writer creates: item columns, a feature set's datasets
items.py      the write side of /items and of the shard / merged-from records
writer.py     StoreWriter: lock, feature sets, batches; check_store_path
merging.py    merge (through the writer's public "copying" methods)
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below are loaded on first use (PEP 562), so that importing a light module of the
# package (embedx.store.spec, for a constant) does not import h5py. Constants outside __all__
# are public too: embedx.store keeps every name it had as one module. Patch them where they
# are used (e.g. embedx.store.merging).
_EXPORTS: dict[str, str] = {
    "FRAMES_CHUNK_BYTES": "layout",
    "FRAMES_CHUNK_ROWS": "layout",
    "WriterStatus": "lock",
    "writer_status": "lock",
    "MERGE_BLOCK_BYTES": "merging",
    "MergeSummary": "merging",
    "merge": "merging",
    "StoreReader": "reader",
    "FAILED_COLUMNS": "spec",
    "RANDOM_SUFFIX": "spec",
    "REQUIRED_ITEM_COLUMNS": "spec",
    "SCHEMA_VERSION": "spec",
    "STORAGE_DTYPES": "spec",
    "FeatureSetSpec": "spec",
    "ShardInfo": "spec",
    "StoreWriter": "writer",
    "check_store_path": "writer",
}

if TYPE_CHECKING:  # what the type checker sees; at run time __getattr__ loads them
    from embedx.store.layout import FRAMES_CHUNK_BYTES as FRAMES_CHUNK_BYTES
    from embedx.store.layout import FRAMES_CHUNK_ROWS as FRAMES_CHUNK_ROWS
    from embedx.store.lock import WriterStatus, writer_status
    from embedx.store.merging import MERGE_BLOCK_BYTES as MERGE_BLOCK_BYTES
    from embedx.store.merging import MergeSummary, merge
    from embedx.store.reader import StoreReader
    from embedx.store.spec import FAILED_COLUMNS as FAILED_COLUMNS
    from embedx.store.spec import RANDOM_SUFFIX, SCHEMA_VERSION, FeatureSetSpec, ShardInfo
    from embedx.store.spec import REQUIRED_ITEM_COLUMNS as REQUIRED_ITEM_COLUMNS
    from embedx.store.spec import STORAGE_DTYPES as STORAGE_DTYPES
    from embedx.store.writer import StoreWriter, check_store_path

__all__ = [
    "RANDOM_SUFFIX",
    "SCHEMA_VERSION",
    "FeatureSetSpec",
    "MergeSummary",
    "ShardInfo",
    "StoreReader",
    "StoreWriter",
    "check_store_path",
    "WriterStatus",
    "merge",
    "writer_status",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedx.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"embedx.store.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
