"""The HDF5 store: the one file between stage 1 (extract) and stage 2 (fit).

This module is the only one that touches h5py. It implements schema version 1 of DESIGN.md:

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
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import socket
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import yaml

from embedx.errors import StoreError

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

#: version of the layout above; a reader refuses files with a higher one
SCHEMA_VERSION = 1

#: item columns every store has, in this order, before the extra manifest columns
REQUIRED_ITEM_COLUMNS = ("id", "path", "duration", "sample_rate", "num_samples")
#: storage dtypes a feature set may use
STORAGE_DTYPES = ("float32", "float16")
#: suffix of the feature set of a random-initialised model (``embedx extract --random-init``);
#: a store holding ``NAME`` and ``NAME-random`` gets the random-network control in ``embedx fit``
RANDOM_SUFFIX = "-random"
#: columns of /failed and of :meth:`StoreReader.failed`
FAILED_COLUMNS = ("set", "index", "id", "path", "stage", "message")

#: target bytes and most rows of one frames chunk ``(R, num_layers, dim)``
FRAMES_CHUNK_BYTES = 2 << 20
FRAMES_CHUNK_ROWS = 64

# group attrs of a feature set that are not free spec attrs
_SET_ATTRS = (
    "backend",
    "layers",
    "dim",
    "poolings",
    "frames",
    "dtype",
    "frame_rate",
    "config",
    "created",
    "command",
    "embedx_version",
)
# spec fields compared by FeatureSetSpec.differences, in message order
_COMPARED_FIELDS = ("backend", "layers", "dim", "poolings", "frames", "dtype", "heads")
#: what a config key absent from an older store meant (shown instead of "<absent>")
_ABSENT_CONFIG = {"resampler": "'torchaudio' (not recorded before embedx 0.2)"}

_STR = h5py.string_dtype("utf-8")
# larger texts go into a dataset: an attr must fit a 64 KiB object header (earliest format)
_MAX_ATTR_BYTES = 16 * 1024


def _embedx_version() -> str:
    from embedx import __version__

    return str(__version__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# the feature-set spec
# ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as plain YAML-safe Python (tuples -> lists, numpy -> Python, paths -> str)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _yaml(value: Any) -> str:
    return yaml.safe_dump(_plain(value), sort_keys=True, allow_unicode=True, width=1_000_000)


def _short(value: Any, limit: int = 80) -> str:
    text = _yaml(value).strip().replace("\n", " ")
    if text.endswith(" ..."):
        text = text[:-4]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FeatureSetSpec:
    """What defines one feature set of the store.

    Sequences are normalised to tuples (and layer numbers to ``int``) on construction, so a
    spec built from lists equals the one read back from the file.

    Attributes:
        name: feature-set name, e.g. ``"hubert-base-ls960"``; an HDF5 group name (no ``/``).
        backend: backend registry key (``"hf"``, ``"opensmile"``, ...).
        layers: model layer numbers stored, strictly increasing; axis 0 of ``pooled/*`` and
            axis 1 of ``frames/data`` follow this order.
        dim: feature dimension of every layer.
        poolings: pooling names, one ``pooled/<pooling>`` dataset each.
        frames: whether frame-level states are stored.
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
        frame_rate: frames per second, ``None`` for utterance-level features.
        heads: head name -> names of its outputs, stored under ``heads/<name>``.
        feature_names: names of the ``dim`` features, when they have names (openSMILE).
        attrs: free metadata (model id, revision, commit, library versions); values are
            str / int / float / bool, ``None`` values are not stored. Not compared on resume.
        config: the full extraction config, stored as YAML text; every key is compared on
            resume, so keep runtime-only settings (device, workers) out of it.
    """

    name: str
    backend: str
    layers: tuple[int, ...]
    dim: int
    poolings: tuple[str, ...]
    frames: bool
    dtype: str
    frame_rate: float | None = None
    heads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    feature_names: tuple[str, ...] | None = None
    attrs: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        try:
            put("layers", tuple(int(x) for x in self.layers))
            put("dim", int(self.dim))
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"feature set {self.name!r}: layers must be integers and dim an integer, "
                f"got layers={self.layers!r}, dim={self.dim!r}"
            ) from exc
        if isinstance(self.poolings, str):
            put("poolings", (self.poolings,))
        put("poolings", tuple(str(p) for p in self.poolings))
        put("frames", bool(self.frames))
        put("dtype", str(np.dtype(self.dtype).name) if _is_dtype(self.dtype) else str(self.dtype))
        if self.frame_rate is not None:
            put("frame_rate", float(self.frame_rate))
        put("heads", {str(k): tuple(str(n) for n in v) for k, v in dict(self.heads).items()})
        if self.feature_names is not None:
            put("feature_names", tuple(str(n) for n in self.feature_names))
        put("attrs", dict(self.attrs))
        put("config", dict(self.config))

    def differences(self, other: FeatureSetSpec) -> list[str]:
        """Differences in what defines the data, ``self`` being the stored spec.

        Compared: backend, layers, dim, poolings (as a set), frames, dtype, heads,
        feature_names and every config key. Not compared: name, frame_rate and attrs (model
        revision, versions, times), which describe rather than define the data.

        Args:
            other: the requested spec.

        Returns:
            One line per difference, e.g. ``"layers: stored (0, 6, 12) vs requested (0, 12)"``;
            empty when the specs define the same data.
        """
        out = []
        reported = set()
        for name in _COMPARED_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "poolings":
                same = sorted(mine) == sorted(theirs)
            elif name == "heads":
                same = dict(mine) == dict(theirs)
            else:
                same = mine == theirs
            if not same:
                out.append(f"{name}: stored {mine!r} vs requested {theirs!r}")
                reported.add(name)
        a, b = self.feature_names, other.feature_names
        if a != b:
            if a is None or b is None:
                out.append(
                    "feature_names: stored "
                    + ("none" if a is None else f"{len(a)} names")
                    + " vs requested "
                    + ("none" if b is None else f"{len(b)} names")
                )
            else:
                first = next(
                    (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                    min(len(a), len(b)),
                )
                x = repr(a[first]) if first < len(a) else "<end>"
                y = repr(b[first]) if first < len(b) else "<end>"
                out.append(
                    f"feature_names: stored {len(a)} names vs requested {len(b)} names "
                    f"(first difference at {first}: {x} vs {y})"
                )
        mine_cfg, their_cfg = _plain(self.config), _plain(other.config)
        for key in sorted(set(mine_cfg) | set(their_cfg)):
            if key in reported or (key == "poolings" and "poolings" in reported):
                continue  # the same difference, already stated through the spec field
            x = _short(mine_cfg[key]) if key in mine_cfg else _ABSENT_CONFIG.get(key, "<absent>")
            y = _short(their_cfg[key]) if key in their_cfg else _ABSENT_CONFIG.get(key, "<absent>")
            if (key in mine_cfg) != (key in their_cfg) or _yaml(mine_cfg[key]) != _yaml(
                their_cfg[key]
            ):
                out.append(f"config.{key}: stored {x} vs requested {y}")
        return out


def _is_dtype(value: Any) -> bool:
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise StoreError(f"invalid {kind} name {name!r}: expected a non-empty string without '/'")
    return name


def _validate_spec(spec: FeatureSetSpec) -> None:
    where = f"feature set {spec.name!r}"
    _check_name("feature-set", spec.name)
    if not isinstance(spec.backend, str) or not spec.backend:
        raise StoreError(f"{where}: backend must be a non-empty string, got {spec.backend!r}")
    if not spec.layers:
        raise StoreError(f"{where}: no layers; expected at least one layer number")
    if (
        any(b <= a for a, b in zip(spec.layers, spec.layers[1:], strict=False))
        or min(spec.layers) < 0
    ):
        raise StoreError(
            f"{where}: layers {spec.layers} must be non-negative and strictly increasing "
            "(sort them, and order the data the same way)"
        )
    if spec.dim < 1:
        raise StoreError(f"{where}: dim must be positive, got {spec.dim}")
    if spec.dtype not in STORAGE_DTYPES:
        raise StoreError(
            f"{where}: storage dtype {spec.dtype!r} is not supported; "
            f"accepted: {', '.join(STORAGE_DTYPES)}"
        )
    if len(set(spec.poolings)) != len(spec.poolings):
        raise StoreError(f"{where}: duplicate pooling names in {spec.poolings}")
    for p in spec.poolings:
        _check_name("pooling", p)
    if not spec.poolings and not spec.frames:
        raise StoreError(f"{where}: nothing to store; give at least one pooling or frames=True")
    for head, names in spec.heads.items():
        _check_name("head", head)
        if not names:
            raise StoreError(f"{where}: head {head!r} has no output names")
    if spec.feature_names is not None and len(spec.feature_names) != spec.dim:
        raise StoreError(
            f"{where}: {len(spec.feature_names)} feature_names for dim {spec.dim}; "
            "expected one name per feature"
        )
    if spec.frame_rate is not None and not (spec.frame_rate > 0 and math.isfinite(spec.frame_rate)):
        raise StoreError(f"{where}: frame_rate must be positive or None, got {spec.frame_rate}")
    for key, value in spec.attrs.items():
        if not isinstance(key, str) or not key or key in _SET_ATTRS:
            raise StoreError(
                f"{where}: attr name {key!r} is empty or reserved; reserved: {', '.join(_SET_ATTRS)}"
            )
        if value is not None and not isinstance(value, (str, int, float, bool, np.generic)):
            raise StoreError(
                f"{where}: attr {key!r} has a {type(value).__name__} value; "
                "accepted: str, int, float, bool"
            )


# ---------------------------------------------------------------------------------------------
# chunking
# ---------------------------------------------------------------------------------------------


def _frames_chunks(
    total_frames: int, num_layers: int, dim: int, itemsize: int
) -> tuple[int, int, int] | None:
    """Chunk shape ``(R, num_layers, dim)`` of frames/data: all layers of R <= 64 frames, <= 2 MiB.

    Frames are read per item (all layers), and an item's rows are contiguous.
    """
    if total_frames == 0:
        return None
    rows = max(1, min(FRAMES_CHUNK_ROWS, FRAMES_CHUNK_BYTES // (num_layers * dim * itemsize)))
    return (min(rows, total_frames), num_layers, dim)


def _runs(sorted_indices: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs of sorted unique indices as ``(position, start, stop)``."""
    if len(sorted_indices) == 0:
        return
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(sorted_indices)]])
    for a, b in zip(starts, stops, strict=True):
        yield int(a), int(sorted_indices[a]), int(sorted_indices[b - 1]) + 1


# ---------------------------------------------------------------------------------------------
# opening files
# ---------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _writer_fapl() -> h5py.h5p.PropFAID:
    """File access properties of the writer: h5py's defaults without HDF5's sieve buffer.

    Pooled datasets are contiguous and a batch writes one small row per (layer, item) at
    scattered positions; with the default 64 KiB sieve buffer every such row costs a 64 KiB
    read-modify-write (17 ms instead of 3.6 ms per batch of 32 items, 13 layers x 768, two
    poolings, float16).
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_sieve_buf_size(0)
    return fapl


def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open ``path`` with h5py, turning every failure into a one-line StoreError.

    Args:
        path: the store.
        mode: ``"r"`` (reader), ``"r+"`` (writer, existing file) or ``"w-"`` (writer, new file).
    """
    if mode == "r" and not path.exists():
        raise StoreError(f"{path}: no such store file")
    if path.exists():
        if path.is_dir():
            raise StoreError(f"{path} is a directory, expected an HDF5 store file")
        try:
            is_hdf5 = h5py.is_hdf5(str(path))
        except OSError:
            is_hdf5 = False
        if not is_hdf5:
            raise StoreError(f"{path} is not an HDF5 file (not an embedx store)")
    try:
        if mode == "r":
            return h5py.File(str(path), "r")
        name = os.fsencode(path)
        if mode == "r+":
            fid = h5py.h5f.open(name, h5py.h5f.ACC_RDWR, fapl=_writer_fapl())
        else:
            fid = h5py.h5f.create(name, h5py.h5f.ACC_EXCL, fapl=_writer_fapl())
        return h5py.File(fid)
    except (OSError, ValueError) as exc:
        text = str(exc).lower()
        if "unable to lock file" in text or "file locking" in text:
            if f"errno = {errno.EAGAIN}" in text or f"errno = {errno.EWOULDBLOCK}" in text:
                what = "open for writing" if mode == "r" else "open"
                status = writer_status(path)
                if status is not None and status.pid != os.getpid() and status.running is not False:
                    who = f"{status.where}, {status.progress}"
                else:  # not the recorded writer: name whoever has the file open
                    pids = _holders(path)
                    who = f"pid {', '.join(map(str, pids))}" if pids else "HDF5 file lock"
                raise StoreError(
                    f"{path} is {what} by another process ({who}); wait for it to finish"
                ) from exc
            raise StoreError(
                f"{path}: HDF5 cannot lock the file ({_first_line(exc)}); on a file system "
                "without locks set HDF5_USE_FILE_LOCKING=FALSE"
            ) from exc
        raise StoreError(f"{path} cannot be opened as HDF5: {_first_line(exc)}") from exc


def _check_schema(f: h5py.File, path: Path) -> None:
    if "schema_version" not in f.attrs:
        raise StoreError(f"{path} is an HDF5 file but not an embedx store (no schema_version)")
    version = int(f.attrs["schema_version"])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} uses store schema version {version}; this embedx reads version "
            f"{SCHEMA_VERSION} — upgrade embedx"
        )
    if version < 1:
        raise StoreError(f"{path} has invalid store schema version {version}; expected 1")


def _attr(value: Any) -> Any:
    """An h5py attr value as plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=_STR)


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------

#: root attrs of a shard file, in :class:`ShardInfo` field order
_SHARD_ATTRS = ("shard_index", "shard_count", "shard_total_items", "shard_items_digest")


@dataclass(frozen=True)
class ShardInfo:
    """Which part of which item list a shard file holds (see :mod:`embedx.shard`).

    Attributes:
        index: K, 0-based.
        count: N, the number of shards.
        total_items: items of the full, unsharded list.
        items_digest: SHA-256 (hex) of the full list's ids joined by newlines.
        indices: ``(num_items,)`` int64 global position of each of the file's items, increasing.
    """

    index: int
    count: int
    total_items: int
    items_digest: str
    indices: np.ndarray = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``"K/N"``."""
        return f"{self.index}/{self.count}"

    def same(self, other: ShardInfo) -> bool:
        """Whether both describe the same shard (fields and indices)."""
        return (
            (self.index, self.count, self.total_items, self.items_digest)
            == (other.index, other.count, other.total_items, other.items_digest)
            and np.array_equal(self.indices, other.indices)
        )


# ---------------------------------------------------------------------------------------------
# shared reading
# ---------------------------------------------------------------------------------------------


class _StoreBase:
    """Reading operations shared by :class:`StoreReader` and :class:`StoreWriter`."""

    path: Path
    _f: h5py.File | None

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _file(self) -> h5py.File:
        if self._f is None:
            raise StoreError(f"store {self.path} is closed")
        return self._f

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _group(self, name: str) -> h5py.Group:
        features = self._file.get("features")
        if features is None or name not in features:
            available = ", ".join(self.feature_sets()) or "none"
            raise StoreError(f"{self.path} has no feature set {name!r}; available: {available}")
        return features[name]

    # -- public -----------------------------------------------------------------------------

    @property
    def num_items(self) -> int:
        """Number of items (0 before items are written)."""
        items = self._file.get("items")
        return 0 if items is None or "id" not in items else int(items["id"].shape[0])

    def feature_sets(self) -> list[str]:
        """Names of the feature sets in the store, sorted."""
        features = self._file.get("features")
        return sorted(features) if features is not None else []

    @property
    def shard(self) -> ShardInfo | None:
        """The shard this file holds (``extract --shard K/N``), ``None`` for a whole store.

        Raises:
            StoreError: the shard metadata is incomplete (a damaged file).
        """
        a = self._file.attrs
        if "shard_index" not in a:
            return None
        missing = [k for k in _SHARD_ATTRS if k not in a]
        if missing or "shard/indices" not in self._file:
            what = ", ".join(missing + ([] if "shard/indices" in self._file else ["/shard/indices"]))
            raise StoreError(f"{self.path} has incomplete shard metadata (missing {what})")
        return ShardInfo(
            index=int(a["shard_index"]),
            count=int(a["shard_count"]),
            total_items=int(a["shard_total_items"]),
            items_digest=str(_attr(a["shard_items_digest"])),
            indices=self._file["shard/indices"][()].astype(np.int64),
        )

    @property
    def merged_from(self) -> list[str] | None:
        """The shard files a merged store was made of, ``None`` for a store not merged."""
        f = self._file
        if "merged_from" in f.attrs:
            return [str(x) for x in _attr(f.attrs["merged_from"])]
        if "merged_from" in f:
            return f["merged_from"].asstr()[()].tolist()
        return None

    def spec(self, name: str) -> FeatureSetSpec:
        """Read a feature set's spec back.

        Args:
            name: feature-set name.

        Returns:
            The stored :class:`FeatureSetSpec`.

        Raises:
            StoreError: the set does not exist (the message lists those that do).
        """
        g = self._group(name)
        a = g.attrs
        heads = {}
        if "heads" in g:
            for head, ds in g["heads"].items():
                heads[head] = tuple(_attr(ds.attrs["names"]))
        feature_names = None
        if "feature_names" in g:
            feature_names = tuple(g["feature_names"].asstr()[()].tolist())
        attrs = {k: _attr(v) for k, v in a.items() if k not in _SET_ATTRS}
        return FeatureSetSpec(
            name=name,
            backend=_attr(a["backend"]),
            layers=tuple(_attr(a["layers"])),
            dim=int(a["dim"]),
            poolings=tuple(_attr(a["poolings"])),
            frames=bool(a["frames"]),
            dtype=_attr(a["dtype"]),
            frame_rate=float(a["frame_rate"]) if "frame_rate" in a else None,
            heads=heads,
            feature_names=feature_names,
            attrs=attrs,
            config=yaml.safe_load(_attr(a["config"]) if "config" in a else g["config"].asstr()[()])
            or {},
        )

    def done(self, name: str) -> np.ndarray:
        """Which items of a feature set are complete.

        Args:
            name: feature-set name.

        Returns:
            ``(num_items,)`` bool array.

        Raises:
            StoreError: unknown feature set.
        """
        return self._group(name)["done"][()].astype(bool)

    def frame_offsets(self, name: str) -> np.ndarray:
        """Frame offsets of a feature set: item i owns rows ``offsets[i]:offsets[i + 1]``.

        Args:
            name: feature-set name.

        Returns:
            ``(num_items + 1,)`` int64 array.

        Raises:
            StoreError: unknown feature set, or the set has no frames.
        """
        g = self._group(name)
        if "frames" not in g:
            raise StoreError(
                f"feature set {name!r} of {self.path} has no frames "
                "(extract with frame-level output to get them)"
            )
        return g["frames/offsets"][()].astype(np.int64)

    def failed(self, name: str | None = None) -> pd.DataFrame:
        """Items that could not be processed.

        Args:
            name: only this feature set's failures; all when ``None``.

        Returns:
            DataFrame with columns set, index, id, path, stage, message.
        """
        g = self._file.get("failed")
        if g is None or "set" not in g:
            return pd.DataFrame(
                {
                    c: pd.Series([], dtype="int64" if c == "index" else object)
                    for c in FAILED_COLUMNS
                }
            )
        data = {
            c: (g[c][()].astype(np.int64) if c == "index" else g[c].asstr()[()].astype(object))
            for c in FAILED_COLUMNS
        }
        df = pd.DataFrame(data, columns=list(FAILED_COLUMNS))
        if name is not None:
            df = df[df["set"] == name].reset_index(drop=True)
        return df


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------


def _item_column(name: str, col: pd.Series) -> np.ndarray:
    """A manifest column as the array stored for it (see the module docstring)."""
    has_na = bool(col.isna().any())
    if pd.api.types.is_bool_dtype(col.dtype) and not has_na:
        return col.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(col.dtype) and not has_na:
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_complex_dtype(col.dtype):
        # float, or a nullable int/bool column with missing values
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    values = [("" if _is_missing(v) else str(v)) for v in col.tolist()]
    return np.array(values, dtype=object)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like values
        return False


# ---------------------------------------------------------------------------------------------
# the writer's lock
# ---------------------------------------------------------------------------------------------

#: bytes of the holder record in ``<store>.lock``: every update rewrites them in one pwrite, so
#: a reader never sees a shorter record spliced onto the tail of a longer one
_RECORD_BYTES = 2048
#: tries at taking the lock when the lock file is replaced between opening and locking it
_LOCK_TRIES = 3


def _stderr_line(message: str) -> None:
    print(f"embedx: {message}", file=sys.stderr, flush=True)


def _proc_state(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` of a process, from /proc (Linux only)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses; the fields after it are plain
    fields = text[text.rindex(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OverflowError:
        return False
    state = _proc_state(pid)
    if state is None:
        return True  # no /proc: kill(pid, 0) is all we know
    return state[0] != "Z" and (start is None or state[1] == start)


def _holders(path: Path) -> list[int]:
    """Pids of this host's other processes that have ``path`` open (Linux /proc; [] elsewhere)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(entry))
                break
    return sorted(pids)


def _read_record(lock_path: Path) -> dict[str, Any] | None:
    """The holder record of a lock file; None when there is no file or no (valid) record."""
    for _ in range(3):
        try:
            raw = lock_path.read_bytes()
        except OSError:
            return None
        try:
            record = json.loads(raw.decode("utf-8").strip() or "null")
        except (UnicodeDecodeError, ValueError):
            # caught between the holder's truncation and its rewrite (filelock < 4 truncates
            # the file as it opens it): ask again
            import time

            time.sleep(0.02)
            continue
        return record if isinstance(record, dict) and "pid" in record else None
    return None


@dataclass(frozen=True)
class WriterStatus:
    """Who writes a store (or wrote it, when a killed run left its lock file), and how far.

    Attributes:
        store: the store file.
        pid: the writing process.
        host: the host it runs on.
        started: when it took the lock (ISO 8601).
        command: its command line.
        running: True/False when ``host`` is this host; None on another host (cannot tell).
        set: the feature set being written, when the loop has started.
        done: items of ``set`` processed (written or failed).
        total: items of ``set``.
        updated: when ``done`` was last published.
    """

    store: Path
    pid: int
    host: str
    started: str
    command: str
    running: bool | None
    set: str | None = None
    done: int | None = None
    total: int | None = None
    updated: str | None = None

    @property
    def where(self) -> str:
        """``"pid P"`` or ``"pid P on host H"`` when H is not this host."""
        here = self.host == socket.gethostname()
        return f"pid {self.pid}" + ("" if here else f" on host {self.host}")

    @property
    def progress(self) -> str:
        """``"N/M items of 'set' done"``, or ``"starting"`` before the loop."""
        if self.set is None or self.done is None or self.total is None:
            return "starting"
        return f"{self.done}/{self.total} items of '{self.set}' done"

    def line(self) -> str:
        """One line for ``embedx info`` while the store is written."""
        since = f", last update {self.updated}" if self.updated else ""
        if self.running is False:
            return (f"{self.store} was being written by {self.where}, which was killed at "
                    f"{self.progress}; re-run its command to resume: {self.command or '?'}")
        return (f"{self.store} is being written by {self.where}: {self.progress} "
                f"(started {self.started}{since}; command: {self.command or '?'})")


def writer_status(path: str | os.PathLike[str]) -> WriterStatus | None:
    """The writer of a store as its lock file tells it, without opening the store.

    Args:
        path: the store file.

    Returns:
        The status, or None when no writer holds (or left) a lock file.
    """
    store = Path(path)
    record = _read_record(Path(f"{store}.lock"))
    if record is None:
        return None
    try:
        pid = int(record["pid"])
    except (TypeError, ValueError):
        return None
    host = str(record.get("host", ""))
    running = _alive(pid, record.get("start")) if host == socket.gethostname() else None

    def opt_int(key: str) -> int | None:
        value = record.get(key)
        return int(value) if isinstance(value, int) else None

    return WriterStatus(
        store=store, pid=pid, host=host, started=str(record.get("started", "")),
        command=str(record.get("command", "")), running=running,
        set=record.get("set") if isinstance(record.get("set"), str) else None,
        done=opt_int("done"), total=opt_int("total"),
        updated=record.get("updated") if isinstance(record.get("updated"), str) else None,
    )


def _busy_message(store: Path, lock_path: Path, status: WriterStatus | None) -> str:
    """Why the lock of ``store`` cannot be taken, naming the holder as well as it is known."""
    if status is None:
        return (f"{store} is being written by another embedx process (lock {lock_path}); "
                "wait for it or write another file")
    if status.running is False:
        # the recorded writer is gone but the lock is held: something inherited it
        holders = _holders(lock_path)
        who = f"process(es) {', '.join(map(str, holders))}" if holders else "another process"
        return (f"{store} is locked by {who}, left over from a killed writer (pid {status.pid}, "
                f"{status.progress}); end {'them' if len(holders) > 1 else 'it'} and re-run")
    return (f"{store} is being written by another embedx process (lock {lock_path}, {status.where}, "
            f"{status.progress}); wait for it or write another file")


class _WriterLock:
    """The exclusive lock of a store's writer: ``<store>.lock``, with a record of the holder.

    The mutual exclusion is :class:`filelock.FileLock` (``flock``: the kernel releases it when
    the holder dies, whatever kills it). The file's content is a JSON record (pid, host, start
    time, command, progress) that names the holder to a refused writer and to ``embedx info``,
    and tells a new writer that it takes over from a killed one. :meth:`release` removes the
    file; a writer that locked a file removed meanwhile sees so and tries again.
    """

    def __init__(self, store: Path, command: str) -> None:
        self.store = store
        self.path = Path(f"{store}.lock")
        self.command = command
        self._lock: Any = None
        self._fd: int | None = None
        self._record: dict[str, Any] = {}

    def acquire(self) -> str | None:
        """Take the lock; return a one-line notice when it is taken over from a killed writer.

        Raises:
            StoreError: another process holds it (naming pid and host when recorded), or the
                lock file cannot be created.
        """
        import filelock

        for _ in range(_LOCK_TRIES):
            # read before locking: filelock < 4 truncates the file as it opens it
            previous = writer_status(self.store)
            lock = filelock.FileLock(str(self.path), timeout=0, thread_local=False)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise StoreError(_busy_message(self.store, self.path, previous)) from None
            except OSError as exc:
                raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            try:
                # no O_CREAT: the file at the path must be the one that was locked
                fd = os.open(self.path, os.O_WRONLY)
            except FileNotFoundError:
                lock.release()
                continue
            if _same_file(lock, fd):
                self._lock, self._fd = lock, fd
                break
            os.close(fd)
            lock.release()
        else:
            raise StoreError(f"cannot lock {self.path}: other writers keep replacing it; try again")
        state = _proc_state(os.getpid())
        self._record = {"pid": os.getpid(), "host": socket.gethostname(),
                        "start": state[1] if state else None, "started": _now(),
                        "command": self.command}
        self.publish()
        if previous is not None and previous.pid != os.getpid():
            return (f"{self.path} was left by a writer that is gone ({previous.where}, "
                    f"{previous.progress}); taking it over, its finished items are kept")
        return None

    def publish(self, **progress: Any) -> None:
        """Rewrite the holder record with ``progress`` (set, done, total) and the time."""
        if self._fd is None:
            return
        self._record.update(progress, updated=_now() if progress else None)
        data = json.dumps(self._record).encode("utf-8")
        if len(data) > _RECORD_BYTES:  # a very long command line: keep the rest readable
            self._record["command"] = self._record["command"][: _RECORD_BYTES // 2] + "..."
            data = json.dumps(self._record).encode("utf-8")[:_RECORD_BYTES]
        try:
            os.pwrite(self._fd, data.ljust(_RECORD_BYTES), 0)
        except OSError:  # the record is informative only; a full disk shows in the store itself
            pass

    def fds(self) -> list[int]:
        """The descriptors this lock holds."""
        fd = _lock_fd(self._lock)
        return [f for f in (self._fd, fd) if f is not None]

    def release(self) -> None:
        """Remove the lock file, then unlock (idempotent)."""
        fd, lock = self._fd, self._lock
        self._fd = self._lock = None
        try:
            if fd is not None:
                # removed while still locked: a writer that opened the file meanwhile finds
                # the path gone once it gets the lock, and tries again
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                finally:
                    os.close(fd)
        finally:
            if lock is not None:
                lock.release()


def _lock_fd(lock: Any) -> int | None:
    """The descriptor filelock locked (a private attribute, present in filelock 3.x and 4.x)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    return fd if isinstance(fd, int) else None


def _same_file(lock: Any, fd: int) -> bool:
    """Whether ``fd`` (opened by path after locking) is the file ``lock`` locked, still linked."""
    locked = _lock_fd(lock)
    if locked is None:
        return True  # cannot tell with this filelock version; the race needs two other writers
    a, b = os.fstat(locked), os.fstat(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and a.st_nlink > 0


#: writers open in this process, whose descriptors a forked child must not keep
_OPEN_WRITERS: weakref.WeakSet[StoreWriter] = weakref.WeakSet()


def _close_in_child() -> None:
    """Close every open writer's store and lock descriptors in a freshly forked child.

    A DataLoader worker is forked while the store is open; if it kept the descriptors and
    outlived a killed parent, it would hold the lock (and HDF5's own lock on the file) forever.
    The child never uses the parent's writer: its h5py objects are left alone (touching HDF5
    here could deadlock on a lock another thread held at the fork), only the descriptors go.
    """
    for writer in list(_OPEN_WRITERS):
        for fd in writer._fds:
            try:
                os.close(fd)
            except OSError:
                pass
    _OPEN_WRITERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class StoreWriter(_StoreBase):
    """Create or append to a store; one writer per file at a time.

    The writer holds an exclusive lock on the side file ``<path>.lock`` (:mod:`filelock`, an
    ``flock`` the kernel drops when the process dies) for its lifetime, so a second embedx process
    writing the same store fails fast instead of corrupting it. The lock file also records who
    writes (pid, host, command) and how far (:meth:`set_progress`), for :func:`writer_status`;
    it is removed on close. Neither the lock nor the HDF5 file descriptor survives into a child
    forked while the writer is open (DataLoader workers): a child that outlives a killed parent
    can never keep the store locked.

    Example:
        >>> with StoreWriter("features.h5", command="embedx extract ...") as w:  # doctest: +SKIP
        ...     w.write_items(items)
        ...     w.create_feature_set(spec, num_frames=counts)
        ...     w.write(spec.name, idx, pooled={"mean": x})  # x: (num_layers, batch, dim)
    """

    def __init__(self, path: str | os.PathLike[str], *, command: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """Open ``path`` for appending, creating it when missing.

        Args:
            path: store file.
            command: the command line, recorded in the root attrs of a new file and in the
                attrs of every feature set this writer creates.
            log: where the one-line notice goes when the lock of a killed writer is taken over
                (default: standard error).

        Raises:
            StoreError: another process writes the file; the file is not an embedx HDF5 store,
                is truncated, or has a newer schema version.
        """
        self.path = Path(path)
        self.command = command or ""
        if not self.path.parent.is_dir():
            raise StoreError(
                f"cannot create {self.path}: directory {self.path.parent} does not exist"
            )
        self._f = None
        self.log = log or _stderr_line
        self._writer_lock: _WriterLock | None = None
        self._fds: list[int] = []
        self._failed_keys: set[tuple[str, int]] | None = None
        self._specs: dict[str, FeatureSetSpec] = {}  # read-back specs, for write()
        self._offsets: dict[str, np.ndarray] = {}  # frame offsets, for write()
        self._lock()
        try:
            existed = self.path.exists()
            self._f = _open_h5(self.path, "r+" if existed else "w-")
            if existed:
                _check_schema(self._f, self.path)
            else:
                a = self._f.attrs
                a["schema_version"] = SCHEMA_VERSION
                a["embedx_version"] = _embedx_version()
                a["created"] = _now()
                a["command"] = self.command
                self._f.flush()
            self._fds = self._inherited_fds()
            _OPEN_WRITERS.add(self)
        except BaseException:
            self.close()
            raise

    # -- lifetime ---------------------------------------------------------------------------

    def _lock(self) -> None:
        self._writer_lock = _WriterLock(self.path, self.command)
        notice = self._writer_lock.acquire()
        if notice:
            self.log(notice)

    def set_progress(self, name: str, done: int, total: int) -> None:
        """Publish how far this run is (``embedx info`` shows it while the file is written).

        Args:
            name: the feature set being written.
            done: its items done (or failed) so far.
            total: its items.
        """
        if self._writer_lock is not None:
            self._writer_lock.publish(set=name, done=int(done), total=int(total))

    def close(self) -> None:
        """Flush and close the file, then release and remove the lock (idempotent)."""
        try:
            if self._f is not None:
                try:
                    self._f.flush()
                finally:
                    super().close()
        finally:
            _OPEN_WRITERS.discard(self)
            if self._writer_lock is not None:
                lock, self._writer_lock = self._writer_lock, None
                lock.release()

    def _inherited_fds(self) -> list[int]:
        """Descriptors of the store and its lock, closed in forked children (see _close_in_child)."""
        fds = list(self._writer_lock.fds()) if self._writer_lock is not None else []
        if self._f is not None:
            try:
                fds.append(int(self._f.id.get_vfd_handle()))
            except (ValueError, TypeError, RuntimeError):  # a driver without a plain descriptor
                pass
        return fds

    def __enter__(self) -> StoreWriter:
        return self

    # -- items ------------------------------------------------------------------------------

    def write_items(self, items: pd.DataFrame) -> None:
        """Store the items, or check them against the stored ones.

        ``duration`` (NaN), ``sample_rate`` (0) and ``num_samples`` (0) are filled in when
        absent. When ``/items`` exists, the ids must be the same in the same order; extra
        columns not yet stored are added, and stored columns are never rewritten.

        Args:
            items: one row per item with columns id (unique, non-empty str), path (str),
                duration (float seconds), sample_rate (int), num_samples (int), and any extra
                manifest columns (label, speaker, split, ...).

        Raises:
            StoreError: no items, missing id/path column, duplicate or empty ids, a column name
                with ``/``, non-numeric duration, or ids that differ from the stored ones.
        """
        if not isinstance(items, pd.DataFrame):
            raise StoreError(f"items must be a pandas DataFrame, got {type(items).__name__}")
        if len(items) == 0:
            raise StoreError("no items to write; expected at least one row")
        for col in ("id", "path"):
            if col not in items.columns:
                raise StoreError(
                    f"items have no {col!r} column; columns: {', '.join(map(str, items.columns))}"
                )
        for col in items.columns:
            _check_name("item column", col)
        if items.columns.duplicated().any():
            dup = items.columns[items.columns.duplicated()].tolist()
            raise StoreError(f"duplicate item columns: {dup}")
        ids = items["id"]
        bad = [v for v in ids.tolist() if not isinstance(v, str) or not v]
        if bad:
            raise StoreError(f"item ids must be non-empty strings; got {bad[0]!r}")
        dups = ids[ids.duplicated()].tolist()
        if dups:
            raise StoreError(
                f"{len(dups)} duplicate item ids, first {dups[0]!r}; ids must be unique"
            )

        columns = self._item_arrays(items)
        f = self._file
        if "items" in f and "id" in f["items"]:
            g = f["items"]
            self._check_ids(g["id"].asstr()[()], columns["id"])
            stored = list(_attr(g.attrs["columns"]))
            new = [c for c in columns if c not in stored]
            for c in new:
                self._create_item_column(g, c, columns[c])
            if new:
                g.attrs["columns"] = _str_array(stored + new)
        else:
            g = f.require_group("items")
            for c, values in columns.items():
                self._create_item_column(g, c, values)
            g.attrs["columns"] = _str_array(list(columns))
        f.flush()

    def _item_arrays(self, items: pd.DataFrame) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "id": np.array(items["id"].tolist(), dtype=object),
            "path": np.array([str(p) for p in items["path"].tolist()], dtype=object),
        }
        n = len(items)
        for col, fill, kind in (
            ("duration", np.nan, np.float64),
            ("sample_rate", 0, np.int64),
            ("num_samples", 0, np.int64),
        ):
            if col not in items.columns:
                out[col] = np.full(n, fill, dtype=kind)
                continue
            try:
                numeric = pd.to_numeric(items[col], errors="raise")
                values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"item column {col!r} must be numeric: {exc}") from exc
            if kind is np.int64:
                values = np.where(np.isnan(values), 0, values).astype(np.int64)
            out[col] = values
        for col in items.columns:
            if col not in out:
                out[col] = _item_column(col, items[col])
        return out

    @staticmethod
    def _create_item_column(g: h5py.Group, name: str, values: np.ndarray) -> None:
        if values.dtype == object:
            g.create_dataset(name, data=values, dtype=_STR)
        else:
            g.create_dataset(name, data=values)

    def _check_ids(self, stored: np.ndarray, requested: np.ndarray) -> None:
        if len(stored) != len(requested):
            raise StoreError(
                f"{self.path} holds {len(stored)} items but {len(requested)} were requested; "
                "a store holds one fixed item list (write to another file)"
            )
        differ = np.flatnonzero(stored.astype(object) != requested.astype(object))
        if len(differ):
            i = int(differ[0])
            hint = (
                " (same ids in another order)"
                if set(stored.tolist()) == set(requested.tolist())
                else ""
            )
            raise StoreError(
                f"{len(differ)} items differ from those in {self.path}{hint}: first at row {i}, "
                f"{stored[i]!r} in file, {requested[i]!r} requested"
            )

    # -- shards -----------------------------------------------------------------------------

    def set_shard(
        self, k: int, n: int, indices: np.ndarray, total_items: int, items_digest: str
    ) -> None:
        """Record that this file holds shard ``k`` of ``n`` of an item list.

        Call it after :meth:`write_items` with the shard's items (in global order). It is
        idempotent: a resumed shard run records the same values again.

        Args:
            k: shard index, 0-based.
            n: number of shards.
            indices: ``(num_items,)`` increasing global positions of the file's items.
            total_items: items of the full, unsharded list.
            items_digest: SHA-256 hex of the full list's ids joined by newlines
                (:func:`embedx.shard.items_digest`).

        Raises:
            StoreError: invalid values, items not written yet, or the file already holds
                another shard (other K, N, item list or indices).
        """
        ints = (k, n, total_items)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in ints):
            raise StoreError(f"shard k, n and total_items must be integers, got {ints!r}")
        k, n, total_items = (int(v) for v in ints)
        if not (n >= 1 and 0 <= k < n):
            raise StoreError(f"invalid shard {k}/{n}; expected K/N with 0 <= K < N")
        if not (
            isinstance(items_digest, str)
            and len(items_digest) == 64
            and all(c in "0123456789abcdef" for c in items_digest)
        ):
            raise StoreError(f"items_digest must be 64 lowercase hex digits, got {items_digest!r}")
        m = self.num_items
        if m == 0:
            raise StoreError(f"{self.path} has no items yet; call write_items before set_shard")
        idx = np.asarray(indices)
        if idx.shape != (m,) or not (np.issubdtype(idx.dtype, np.integer) or m == 0):
            raise StoreError(
                f"shard indices must be {m} integers (one per stored item), got shape "
                f"{idx.shape} of {idx.dtype}"
            )
        idx = idx.astype(np.int64)
        if (np.diff(idx) <= 0).any() or idx[0] < 0 or idx[-1] >= total_items:
            raise StoreError(
                f"shard indices must increase strictly within 0..{total_items - 1}, "
                f"got {int(idx.min())}..{int(idx.max())} (not increasing, or out of range)"
            )
        new = ShardInfo(k, n, total_items, items_digest, idx)
        old = self.shard
        if old is not None:
            if old.same(new):
                return
            if old.items_digest != new.items_digest or old.total_items != new.total_items:
                why = (
                    f"an item list of {old.total_items} items (digest {old.items_digest[:12]}) "
                    f"vs this run's {new.total_items} items (digest {new.items_digest[:12]})"
                )
            else:
                why = f"shard {old.label} vs this run's shard {new.label}"
            raise StoreError(
                f"{self.path} already holds another shard: {why}; write each shard to its own file"
            )
        f = self._file
        g = f.require_group("shard")
        if "indices" in g:
            del g["indices"]
        g.create_dataset("indices", data=idx)
        for key, value in zip(_SHARD_ATTRS, (k, n, total_items), strict=False):
            f.attrs[key] = np.int64(value)
        f.attrs["shard_items_digest"] = items_digest
        f.flush()

    # -- feature sets -----------------------------------------------------------------------

    def create_feature_set(
        self,
        spec: FeatureSetSpec,
        *,
        num_frames: np.ndarray | None = None,
        overwrite: bool = False,
    ) -> None:
        """Create ``/features/<spec.name>``, or check it for a resume.

        All datasets are preallocated (pooled and frames filled with NaN), so writing streams
        into them and memory does not grow with the number of items.

        Args:
            spec: what the set holds.
            num_frames: ``(num_items,)`` frame count of every item; required when
                ``spec.frames`` (ignored otherwise).
            overwrite: replace an existing set whose spec differs (its data and failures are
                dropped; HDF5 does not shrink the file, ``h5repack`` does).

        Raises:
            StoreError: items not written yet, an invalid spec or num_frames, or an existing
                set with another spec (the message lists the differences) and no overwrite.
        """
        if not isinstance(spec, FeatureSetSpec):
            raise StoreError(f"expected a FeatureSetSpec, got {type(spec).__name__}")
        _validate_spec(spec)
        n = self.num_items
        if n == 0:
            raise StoreError(
                f"{self.path} has no items yet; call write_items before create_feature_set"
            )
        counts = None
        if spec.frames:
            counts = self._check_num_frames(spec, num_frames, n)

        f = self._file
        features = f.require_group("features")
        if spec.name in features:
            stored = self.spec(spec.name)
            diffs = stored.differences(spec)
            if not diffs:
                if counts is not None:
                    offsets = self.frame_offsets(spec.name)
                    changed = np.flatnonzero(np.diff(offsets) != counts)
                    if len(changed):
                        i = int(changed[0])
                        raise StoreError(
                            f"feature set {spec.name!r}: {len(changed)} items have another frame "
                            f"count than stored, first {self._id(i)!r}: stored "
                            f"{int(offsets[i + 1] - offsets[i])}, requested {int(counts[i])}; "
                            "use --overwrite to replace the set"
                        )
                return
            if not overwrite:
                raise StoreError(
                    f"feature set {spec.name!r} in {self.path} was extracted with other settings: "
                    + "; ".join(diffs)
                    + ". Use --overwrite to replace it, or --name NAME to store these settings "
                    "as another feature set"
                )
            del features[spec.name]
            self._specs.pop(spec.name, None)
            self._offsets.pop(spec.name, None)
            self.clear_failures(spec.name)

        g = features.create_group(spec.name)
        try:
            self._create_set(g, spec, n, counts)
        except BaseException:
            del features[spec.name]
            raise
        f.flush()

    @staticmethod
    def _check_num_frames(spec: FeatureSetSpec, num_frames: Any, n: int) -> np.ndarray:
        if num_frames is None:
            raise StoreError(
                f"feature set {spec.name!r} stores frames; num_frames (frames per item) is required"
            )
        counts = np.asarray(num_frames)
        if counts.shape != (n,) or not (
            np.issubdtype(counts.dtype, np.integer)
            or (np.issubdtype(counts.dtype, np.floating) and np.all(counts == np.round(counts)))
        ):
            raise StoreError(
                f"num_frames must be {n} integers (one per item), got shape {counts.shape} "
                f"of {counts.dtype}"
            )
        counts = counts.astype(np.int64)
        if (counts < 0).any():
            raise StoreError(f"num_frames must be >= 0, got {int(counts.min())}")
        return counts

    def _create_set(
        self,
        g: h5py.Group,
        spec: FeatureSetSpec,
        n: int,
        counts: np.ndarray | None,
        *,
        fill: bool = True,
    ) -> None:
        """Write a new set's attrs and create its datasets.

        ``fill=False`` (for :func:`merge`, which writes every row) allocates the pooled
        datasets without writing their NaN fill value first; the fill value is still recorded.
        """
        a = g.attrs
        a["backend"] = spec.backend
        a["layers"] = np.array(spec.layers, dtype=np.int64)
        a["dim"] = spec.dim
        a["poolings"] = _str_array(spec.poolings)
        a["frames"] = spec.frames
        a["dtype"] = spec.dtype
        if spec.frame_rate is not None:
            a["frame_rate"] = float(spec.frame_rate)
        config = _yaml(spec.config)
        if len(config.encode("utf-8")) <= _MAX_ATTR_BYTES:
            a["config"] = config
        else:  # too large for an attr in the earliest file format
            g.create_dataset("config", data=config, dtype=_STR)
        a["created"] = _now()
        a["command"] = self.command
        a["embedx_version"] = _embedx_version()
        for key, value in spec.attrs.items():
            if value is not None:
                if isinstance(value, str):  # str subclasses (torch's TorchVersion) confuse h5py
                    value = str(value)
                a[key] = value.item() if isinstance(value, np.generic) else value

        dtype = np.dtype(spec.dtype)
        num_layers = len(spec.layers)
        pooled = g.create_group("pooled")
        for p in spec.poolings:
            # contiguous and layer-major: layer k is one contiguous block, so reading it is one
            # read that touches no other layer, and a batch's scattered rows are written in
            # place (no chunk read-modify-write). Allocated and NaN-filled now, so a full disk
            # shows at once and a row not yet written can never pass for data.
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            if not fill:
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            pooled.create_dataset(
                p,
                shape=(num_layers, n, spec.dim),  # (num_layers, num_items, dim)
                dtype=dtype,
                fillvalue=np.nan,
                dcpl=dcpl,
            )
        if spec.frames and counts is not None:
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            total = int(offsets[-1])
            fr = g.create_group("frames")
            fr.create_dataset(
                "data",
                shape=(total, num_layers, spec.dim),  # (total_frames, num_layers, dim)
                dtype=dtype,
                chunks=_frames_chunks(total, num_layers, spec.dim, dtype.itemsize),
                fillvalue=np.nan,
            )
            fr.create_dataset("offsets", data=offsets)
        if spec.heads:
            heads = g.create_group("heads")
            for head, names in spec.heads.items():
                ds = heads.create_dataset(
                    head, shape=(n, len(names)), dtype=np.float32, fillvalue=np.nan
                )
                ds.attrs["names"] = _str_array(names)
        if spec.feature_names is not None:
            g.create_dataset("feature_names", data=_str_array(spec.feature_names))
        g.create_dataset("done", shape=(n,), dtype=bool, fillvalue=False)

    def _spec_cached(self, name: str) -> FeatureSetSpec:
        if name not in self._specs:
            self._specs[name] = self.spec(name)
        return self._specs[name]

    def _id(self, index: int) -> str:
        return self._file["items/id"].asstr()[index]

    # -- data -------------------------------------------------------------------------------

    def write(
        self,
        name: str,
        indices: np.ndarray,
        *,
        pooled: Mapping[str, np.ndarray] | None = None,
        frames: Sequence[np.ndarray] | None = None,
        heads: Mapping[str, np.ndarray] | None = None,
        frames_written: bool = False,
    ) -> None:
        """Write one batch and mark its items done.

        Every pooling, the frames (when the set has them, unless already written piecewise with
        :meth:`write_frame_rows` and ``frames_written=True``) and every head must be given, so
        that ``done`` means complete. Data are written and flushed first; only then ``done`` is
        set and flushed. Failures recorded earlier for these items are dropped.

        Args:
            name: feature-set name.
            indices: ``(batch,)`` item indices, unique, any order.
            pooled: pooling -> ``(num_layers, batch, dim)`` array aligned with ``indices``.
            frames: per item of ``indices``, a ``(num_frames_i, num_layers, dim)`` array whose
                length matches the set's frame offsets.
            heads: head -> ``(batch, k)`` array.
            frames_written: the items' frames were written with :meth:`write_frame_rows`.

        Raises:
            StoreError: unknown set, bad indices, missing/unknown poolings or heads, or arrays
                of the wrong shape.
        """
        g = self._group(name)
        spec = self._spec_cached(name)
        n = self.num_items
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise StoreError(
                f"indices must be a 1-D integer array, got shape {idx.shape} of {idx.dtype}"
            )
        idx = idx.astype(np.int64)
        b = len(idx)
        if b == 0:
            return
        if idx.min() < 0 or idx.max() >= n:
            raise StoreError(
                f"item indices must be in 0..{n - 1}, got {int(idx.min())}..{int(idx.max())}"
            )
        if len(np.unique(idx)) != b:
            raise StoreError("item indices of a batch must be unique")
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        num_layers = len(spec.layers)

        pooled = dict(pooled or {})
        if set(pooled) != set(spec.poolings):
            raise StoreError(
                f"feature set {name!r} stores poolings {list(spec.poolings)}; "
                f"write got {sorted(pooled)}"
            )
        heads = dict(heads or {})
        if set(heads) != set(spec.heads):
            raise StoreError(
                f"feature set {name!r} stores heads {sorted(spec.heads)}; write got {sorted(heads)}"
            )
        if spec.frames != (frames is not None) and not (spec.frames and frames_written):
            raise StoreError(
                f"feature set {name!r} "
                + (
                    "stores frames; write got none"
                    if spec.frames
                    else "stores no frames; write got frames"
                )
            )

        dtype = np.dtype(spec.dtype)
        pooled_sorted = {}
        for p, x in pooled.items():
            x = np.asarray(x)
            if x.shape != (num_layers, b, spec.dim):
                raise StoreError(
                    f"pooled[{p!r}] has shape {x.shape}; expected (num_layers, batch, dim) = "
                    f"{(num_layers, b, spec.dim)}"
                )
            pooled_sorted[p] = x[:, order, :].astype(dtype, copy=False)  # (num_layers, batch, dim)
        heads_sorted = {}
        for h, y in heads.items():
            y = np.asarray(y)
            k = len(spec.heads[h])
            if y.shape != (b, k):
                raise StoreError(
                    f"heads[{h!r}] has shape {y.shape}; expected (batch, k) = {(b, k)}"
                )
            heads_sorted[h] = y[order].astype(np.float32, copy=False)  # (batch, k)
        frames_sorted: list[np.ndarray] = []
        offsets = None
        if spec.frames and frames is not None:
            if len(frames) != b:
                raise StoreError(f"frames has {len(frames)} arrays for a batch of {b} items")
            if name not in self._offsets:
                self._offsets[name] = self.frame_offsets(name)
            offsets = self._offsets[name]
            for pos in order:
                fr = np.asarray(frames[pos])
                i = int(idx[pos])
                want = int(offsets[i + 1] - offsets[i])
                if fr.shape != (want, num_layers, spec.dim):
                    raise StoreError(
                        f"frames of item {self._id(i)!r} (index {i}) have shape {fr.shape}; "
                        f"expected (num_frames, num_layers, dim) = {(want, num_layers, spec.dim)}"
                    )
                frames_sorted.append(fr.astype(dtype, copy=False))

        runs = list(_runs(sidx))
        # one write per dataset: a slice for a contiguous batch, else the sorted index list
        rows = slice(runs[0][1], runs[0][2]) if len(runs) == 1 else sidx
        for p, x in pooled_sorted.items():
            g["pooled"][p][:, rows, :] = x  # (num_layers, batch, dim)
        for h, y in heads_sorted.items():
            g["heads"][h][rows] = y  # (batch, k)
        if offsets is not None:
            ds = g["frames/data"]
            for pos, start, stop in runs:
                block = frames_sorted[pos : pos + stop - start]
                a, z = int(offsets[start]), int(offsets[stop])
                if z > a:
                    # (frames of the run, num_layers, dim)
                    ds[a:z] = block[0] if len(block) == 1 else np.concatenate(block, axis=0)
        self._file.flush()
        g["done"][rows] = np.ones(len(sidx), dtype=bool)
        self._file.flush()

        keys = self._failure_keys()
        stale = [int(i) for i in sidx if (name, int(i)) in keys]
        if stale:
            self.clear_failures(name, stale)

    def set_run_profile(self, name: str, profile: Mapping[str, str | int | float]) -> None:
        """Record how the last extraction run into a feature set went (``embedx info`` shows it).

        Stored as the set's attrs ``run_<key>``, replacing an earlier run's; they describe the
        run, not the values, so they are free attrs and never compared on resume or merge.

        Args:
            name: feature-set name.
            profile: key -> str / int / float (e.g. audio_per_s, device_name, peak_memory_bytes,
                precision).

        Raises:
            StoreError: unknown set, or a value of another type.
        """
        g = self._group(name)
        for key, value in profile.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float, np.integer, np.floating)):
                raise StoreError(f"run profile {key!r}: {value!r} is not a str, int or float")
            g.attrs[f"run_{key}"] = value
        self._file.flush()

    def write_frame_rows(self, name: str, index: int, start: int, rows: np.ndarray) -> None:
        """Write part of one item's frames (long items arrive chunk by chunk).

        The item is not marked done; call :meth:`write` with ``frames_written=True`` once all
        its rows are written.

        Args:
            name: feature-set name.
            index: item index.
            start: first frame of the item that ``rows`` holds.
            rows: ``(num_rows, num_layers, dim)`` frames ``start .. start + num_rows`` of the item.

        Raises:
            StoreError: the set has no frames, or the rows fall outside the item's frames.
        """
        g = self._group(name)
        spec = self._spec_cached(name)
        if not spec.frames:
            raise StoreError(f"feature set {name!r} stores no frames")
        if name not in self._offsets:
            self._offsets[name] = self.frame_offsets(name)
        offsets = self._offsets[name]
        rows = np.asarray(rows)
        want = int(offsets[index + 1] - offsets[index])
        if rows.ndim != 3 or rows.shape[1:] != (len(spec.layers), spec.dim) or not (
            0 <= start and start + rows.shape[0] <= want
        ):
            raise StoreError(
                f"frame rows {start}..{start + rows.shape[0]} of shape {rows.shape} do not fit item "
                f"{self._id(index)!r} with {want} frames of (num_layers, dim) = "
                f"{(len(spec.layers), spec.dim)}"
            )
        a = int(offsets[index]) + start
        g["frames/data"][a : a + rows.shape[0]] = rows.astype(np.dtype(spec.dtype), copy=False)

    # -- failures ---------------------------------------------------------------------------

    def _failure_keys(self) -> set[tuple[str, int]]:
        if self._failed_keys is None:
            df = self.failed()
            self._failed_keys = set(zip(df["set"].tolist(), df["index"].tolist(), strict=True))
        return self._failed_keys

    def record_failure(self, name: str, index: int, stage: str, message: str) -> None:
        """Record that an item could not be processed for a feature set.

        There is at most one row per (set, item): a new failure of the same item replaces the
        old row. The item's ``done`` flag is left as it is.

        Args:
            name: feature-set name.
            index: item index.
            stage: where it failed (``"decode"``, ``"forward"``, ...).
            message: the reason, one line.

        Raises:
            StoreError: index out of range.
        """
        _check_name("feature-set", name)
        n = self.num_items
        if not (isinstance(index, (int, np.integer)) and 0 <= int(index) < n):
            raise StoreError(f"failure index {index!r} is not an item index (0..{n - 1})")
        index = int(index)
        f = self._file
        g = self._failed_group()
        keys = self._failure_keys()
        row = {
            "set": name,
            "index": index,
            "id": self._id(index),
            "path": f["items/path"].asstr()[index],
            "stage": str(stage),
            "message": str(message),
        }
        if (name, index) in keys:
            sets = g["set"].asstr()[()]
            where = np.flatnonzero((sets == name) & (g["index"][()] == index))
            pos = int(where[0])
        else:
            pos = int(g["set"].shape[0])
            for c in FAILED_COLUMNS:
                g[c].resize((pos + 1,))
            keys.add((name, index))
        for c in FAILED_COLUMNS:
            g[c][pos] = row[c]
        f.flush()

    def clear_failures(self, name: str, indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Drop a feature set's failure rows (before retrying those items).

        Args:
            name: feature-set name.
            indices: only these item indices; all of the set's rows when ``None``.
        """
        g = self._file.get("failed")
        if g is None or "set" not in g or g["set"].shape[0] == 0:
            return
        df = self.failed()
        drop = df["set"] == name
        if indices is not None:
            drop &= df["index"].isin(np.asarray(indices, dtype=np.int64).ravel().tolist())
        if not drop.any():
            return
        keep = df[~drop]
        for c in FAILED_COLUMNS:
            ds = g[c]
            ds.resize((len(keep),))
            if len(keep):
                values = keep[c].to_numpy(dtype=np.int64 if c == "index" else object)
                ds[...] = values
        self._file.flush()
        self._failed_keys = set(zip(keep["set"].tolist(), keep["index"].tolist(), strict=True))

    def _failed_group(self) -> h5py.Group:
        """``/failed``, created with its empty resizable columns on first use."""
        g = self._file.require_group("failed")
        if "set" not in g:
            for c in FAILED_COLUMNS:
                g.create_dataset(
                    c,
                    shape=(0,),
                    maxshape=(None,),
                    chunks=(1024,),
                    dtype=np.int64 if c == "index" else _STR,
                )
        return g

    def _append_failures(self, rows: pd.DataFrame) -> None:
        """Append failure rows (columns :data:`FAILED_COLUMNS`) in one write, for :func:`merge`.

        The caller guarantees at most one row per (set, index).
        """
        if rows.empty:
            return
        g = self._failed_group()
        start = int(g["set"].shape[0])
        for c in FAILED_COLUMNS:
            g[c].resize((start + len(rows),))
            g[c][start:] = rows[c].to_numpy(dtype=np.int64 if c == "index" else object)
        self._file.flush()
        self._failed_keys = None


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------


class StoreReader(_StoreBase):
    """Read a store (stage 2, ``embedx info``); never modifies the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` read-only.

        Args:
            path: store file.

        Raises:
            StoreError: missing file, not HDF5 / truncated, open for writing by another process,
                newer schema version, or no items.
        """
        self.path = Path(path)
        self._f = None
        self._f = _open_h5(self.path, "r")
        try:
            _check_schema(self._f, self.path)
            if self.num_items == 0:
                raise StoreError(f"{self.path} holds no items (an extraction that never started?)")
        except BaseException:
            self.close()
            raise
        self._items: pd.DataFrame | None = None
        self._layer_index: dict[str, dict[int, int]] = {}

    def __enter__(self) -> StoreReader:
        return self

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attrs: schema_version, embedx_version, created, command."""
        return {k: _attr(v) for k, v in self._file.attrs.items()}

    @property
    def items(self) -> pd.DataFrame:
        """The items: id, path, duration, sample_rate, num_samples, extra columns in stored order.

        String columns read ``""`` back as missing (NaN).
        """
        if self._items is None:
            g = self._file["items"]
            data = {}
            for c in _attr(g.attrs["columns"]):
                ds = g[c]
                if h5py.check_string_dtype(ds.dtype) is not None:
                    s = pd.Series(ds.asstr()[()].tolist())
                    if c not in ("id", "path"):
                        s = s.where(s != "")
                    data[c] = s
                else:
                    data[c] = pd.Series(ds[()])
            self._items = pd.DataFrame(data)
        return self._items.copy()

    def _axis(self, name: str, layer: int) -> int:
        if name not in self._layer_index:
            layers = _attr(self._group(name).attrs["layers"])
            self._layer_index[name] = {int(x): i for i, x in enumerate(layers)}
        index = self._layer_index[name]
        if (
            isinstance(layer, (bool, np.bool_))
            or not isinstance(layer, (int, np.integer))
            or int(layer) not in index
        ):
            raise StoreError(
                f"feature set {name!r} has no layer {layer!r}; stored layers: "
                f"{', '.join(map(str, index))}"
            )
        return index[int(layer)]

    def pooled(self, name: str, pooling: str, layer: int) -> np.ndarray:
        """One layer's pooled features of all items, reading only that layer.

        Args:
            name: feature-set name.
            pooling: pooling name.
            layer: model layer number (not the axis position).

        Returns:
            ``(num_items, dim)`` float32; rows of items not done are NaN.

        Raises:
            StoreError: unknown set, pooling or layer (the message lists what is stored).
        """
        g = self._group(name)
        if "pooled" not in g or pooling not in g["pooled"]:
            have = sorted(g["pooled"]) if "pooled" in g else []
            raise StoreError(
                f"feature set {name!r} has no pooling {pooling!r}; stored: "
                f"{', '.join(have) or 'none'}"
            )
        axis = self._axis(name, layer)
        return g["pooled"][pooling][axis].astype(np.float32, copy=False)  # (num_items, dim)

    def frames(self, name: str, index: int, layer: int | None = None) -> np.ndarray:
        """Frame-level states of one item.

        Args:
            name: feature-set name.
            index: item index.
            layer: a model layer number, or ``None`` for all stored layers.

        Returns:
            ``(num_frames, num_layers, dim)`` float32, or ``(num_frames, dim)`` for one layer.

        Raises:
            StoreError: unknown set or layer, the set has no frames, or index out of range.
        """
        offsets = self.frame_offsets(name)
        n = len(offsets) - 1
        if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise StoreError(f"item index {index!r} out of range 0..{n - 1}")
        a, z = int(offsets[index]), int(offsets[index + 1])
        ds = self._group(name)["frames/data"]
        if layer is None:
            return ds[a:z].astype(np.float32, copy=False)  # (num_frames, num_layers, dim)
        axis = self._axis(name, layer)
        return ds[a:z, axis, :].astype(np.float32, copy=False)  # (num_frames, dim)

    def heads(self, name: str, head: str) -> tuple[np.ndarray, list[str]]:
        """A model head's outputs.

        Args:
            name: feature-set name.
            head: head name.

        Returns:
            ``(num_items, k)`` float32 outputs and the ``k`` output names.

        Raises:
            StoreError: unknown set or head.
        """
        g = self._group(name)
        if "heads" not in g or head not in g["heads"]:
            have = sorted(g["heads"]) if "heads" in g else []
            raise StoreError(
                f"feature set {name!r} has no head {head!r}; stored: {', '.join(have) or 'none'}"
            )
        ds = g["heads"][head]
        return ds[()].astype(np.float32, copy=False), list(_attr(ds.attrs["names"]))

    def summary(self) -> dict[str, Any]:
        """Everything ``embedx info`` prints.

        Returns:
            A dict with keys path, size_bytes, schema_version, embedx_version, created, command,
            num_items, columns (list of dicts: name, dtype, and for string columns num_unique,
            num_missing and ``counts`` when there are at most 20 distinct values) and
            feature_sets (name -> dict: backend, model, revision, attrs, layers, dim, poolings,
            frames, total_frames, dtype, frame_rate, heads, num_feature_names, done, failed,
            created, command). ``model`` is the ``model_id`` (or ``model``) attr and ``revision``
            the ``revision`` (or ``commit``) attr, None when absent. A shard file adds ``shard``
            (``"K/N (m of M items)"``) and a merged file ``merged_from`` (the shard files).
        """
        a = self.attrs
        items = self.items
        columns = []
        for c in items.columns:
            col = items[c]
            entry: dict[str, Any] = {"name": c, "dtype": str(col.dtype)}
            if not pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(
                col.dtype
            ):
                entry["num_unique"] = int(col.nunique(dropna=True))
                entry["num_missing"] = int(col.isna().sum())
                if entry["num_unique"] <= 20 and c not in ("id", "path"):
                    entry["counts"] = {str(k): int(v) for k, v in col.value_counts().items()}
            else:
                entry["num_missing"] = int(col.isna().sum())
            columns.append(entry)
        failed = self.failed()
        sets = {}
        for name in self.feature_sets():
            spec = self.spec(name)
            g = self._group(name)
            sets[name] = {
                "backend": spec.backend,
                "model": spec.attrs.get("model_id", spec.attrs.get("model")),
                "revision": spec.attrs.get("revision", spec.attrs.get("commit")),
                "attrs": dict(spec.attrs),
                "layers": list(spec.layers),
                "dim": spec.dim,
                "poolings": list(spec.poolings),
                "frames": spec.frames,
                "total_frames": int(g["frames/data"].shape[0]) if spec.frames else None,
                "dtype": spec.dtype,
                "frame_rate": spec.frame_rate,
                "heads": {h: list(v) for h, v in spec.heads.items()},
                "num_feature_names": len(spec.feature_names) if spec.feature_names else 0,
                "done": int(self.done(name).sum()),
                "failed": int((failed["set"] == name).sum()),
                "created": _attr(g.attrs.get("created", "")),
                "command": _attr(g.attrs.get("command", "")),
            }
        out: dict[str, Any] = {
            "path": str(self.path),
            "size_bytes": self.path.stat().st_size,
            "schema_version": a.get("schema_version"),
            "embedx_version": a.get("embedx_version"),
            "created": a.get("created"),
            "command": a.get("command"),
        }
        shard = self.shard
        if shard is not None:
            out["shard"] = f"{shard.label} ({self.num_items} of {shard.total_items} items)"
        merged = self.merged_from
        if merged is not None:
            out["merged_from"] = merged
        out.update(num_items=self.num_items, columns=columns, feature_sets=sets)
        return out


# ---------------------------------------------------------------------------------------------
# merging shards
# ---------------------------------------------------------------------------------------------

#: most bytes of one block :func:`merge` holds in memory while copying a dataset
MERGE_BLOCK_BYTES = 16 << 20
#: feature-set attrs that name the model: shards that disagree on them hold other models' data
_IDENTITY_ATTRS = ("model_id", "model", "revision", "commit", "commit_hash")


@dataclass
class MergeSummary:
    """What :func:`merge` did.

    Attributes:
        output: the merged store.
        inputs: the shard files, as given.
        num_items: items of the merged store.
        feature_sets: names of the merged feature sets.
        failed: failure rows carried over (all sets).
        seconds: wall-clock time of the merge.
        size_bytes: size of the merged file.
        notes: differences between shards that do not change the data (library versions,
            device); the merged file keeps shard 0's values.
    """

    output: Path
    inputs: list[Path]
    num_items: int
    feature_sets: list[str]
    failed: int
    seconds: float
    size_bytes: int
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        sets = ", ".join(self.feature_sets) or "none"
        return (
            f"merged {len(self.inputs)} shards into {self.output}: {self.num_items} items, "
            f"{len(self.feature_sets)} feature set(s) ({sets}), {self.failed} failed, "
            f"{self.size_bytes / 2**20:.1f} MiB in {self.seconds:.1f} s"
        )


@dataclass
class _Shard:
    path: Path
    reader: StoreReader
    info: ShardInfo

    @property
    def where(self) -> str:
        return f"shard {self.info.label} ({self.path})"


def _open_shard(path: Path, stack: Any) -> _Shard:
    reader = stack.enter_context(StoreReader(path))
    info = reader.shard
    if info is None:
        what = "a merged store" if reader.merged_from is not None else "a whole store"
        raise StoreError(
            f"{path} is not a shard file ({what}, no shard_index attr); merge combines the "
            "files written by `embedx extract --shard K/N`"
        )
    if len(info.indices) != reader.num_items:
        raise StoreError(
            f"{path} is damaged: {reader.num_items} items but {len(info.indices)} shard indices"
        )
    return _Shard(path, reader, info)


def _ensure_open_files(count: int) -> None:
    """Make room for ``count`` files open at once (a merge holds every shard open)."""
    import resource

    needed = count + 64  # the output, the interpreter's own files, libraries
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    raise StoreError(
        f"merging {count} shard files needs about {needed} open files but the hard limit is "
        f"{hard} (ulimit -Hn); raise it (ulimit -n {needed} as root or in limits.conf)"
    )


def _check_split(shards: list[_Shard]) -> list[_Shard]:
    """Same N and item list everywhere, every K exactly once; returns the shards by K."""
    first = shards[0]
    for s in shards[1:]:
        if s.info.count != first.info.count:
            raise StoreError(
                f"the files are shards of different splits: {first.path} is shard "
                f"{first.info.label} but {s.path} is shard {s.info.label}; merge the N files of "
                "one --shard K/N run"
            )
        if (s.info.total_items, s.info.items_digest) != (
            first.info.total_items,
            first.info.items_digest,
        ):
            raise StoreError(
                f"{s.where} was split from another item list than {first.where}: "
                f"{s.info.total_items} items (digest {s.info.items_digest[:12]}) vs "
                f"{first.info.total_items} items (digest {first.info.items_digest[:12]}); "
                "extract every shard from the same inputs"
            )
    n = first.info.count
    by_k: dict[int, list[_Shard]] = {}
    for s in shards:
        by_k.setdefault(s.info.index, []).append(s)
    for k in sorted(by_k):
        if len(by_k[k]) > 1:
            files = ", ".join(str(s.path) for s in by_k[k])
            raise StoreError(f"shard {k}/{n} is given {len(by_k[k])} times: {files}; give each once")
    missing = [k for k in range(n) if k not in by_k]
    if missing:
        names = ", ".join(f"{k}/{n}" for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        given = ", ".join(f"{k}/{n} {by_k[k][0].path}" for k in sorted(by_k)[:10])
        raise StoreError(
            f"shard{'s' if len(missing) > 1 else ''} {names} missing ({len(missing)} of {n}; "
            f"given: {given}{' ...' if len(by_k) > 10 else ''}); extract "
            f"{'them' if len(missing) > 1 else 'it'} first"
        )
    return [by_k[k][0] for k in range(n)]


def _merged_items(shards: list[_Shard]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Item columns in global order, checked against the item list's digest."""
    from embedx.shard import items_digest

    first = shards[0]
    total = first.info.total_items
    owner = np.full(total, -1, dtype=np.int64)
    for s in shards:
        idx = s.info.indices
        if len(idx) and (idx.min() < 0 or idx.max() >= total):
            raise StoreError(f"{s.where} is damaged: shard indices outside 0..{total - 1}")
        clash = idx[owner[idx] >= 0]
        if len(clash):
            i = int(clash[0])
            raise StoreError(
                f"item {i} is in {shards[int(owner[i])].where} and in {s.where}; "
                "the files do not come from one split"
            )
        owner[idx] = s.info.index
    if (owner < 0).any():
        raise StoreError(
            f"{int((owner < 0).sum())} items are in no shard (first: item "
            f"{int(np.flatnonzero(owner < 0)[0])}); the shard files do not cover their item list"
        )
    cols = list(_attr(first.reader._file["items"].attrs["columns"]))
    for s in shards[1:]:
        other = list(_attr(s.reader._file["items"].attrs["columns"]))
        if other != cols:
            raise StoreError(
                f"item columns differ: {first.where} has {cols}, {s.where} has {other}; "
                "extract every shard with the same manifest"
            )
    columns: dict[str, np.ndarray] = {}
    for c in cols:
        parts = []
        for s in shards:
            ds = s.reader._file["items"][c]
            is_str = h5py.check_string_dtype(ds.dtype) is not None
            parts.append(ds.asstr()[()].astype(object) if is_str else ds[()])
        kinds = {p.dtype == object for p in parts}
        if len(kinds) > 1:
            raise StoreError(
                f"item column {c!r} holds text in some shards and numbers in others; "
                "extract every shard with the same manifest"
            )
        # a column with missing values in one shard only is float64 there (NaN), int64 or bool
        # elsewhere: promote, as the unsharded run stored it
        dtype = np.dtype(object) if kinds == {True} else np.result_type(*parts)
        column = np.empty(total, dtype=dtype)
        for s, part in zip(shards, parts, strict=True):
            column[s.info.indices] = part
        columns[c] = column
    if items_digest(columns["id"].tolist()) != first.info.items_digest:
        raise StoreError(
            "the shards' item ids in global order do not match the item list they were split "
            f"from (digest {first.info.items_digest[:12]}); the shard files are damaged"
        )
    return cols, columns


def _merged_sets(shards: list[_Shard]) -> tuple[dict[str, FeatureSetSpec], list[str]]:
    """Specs of the feature sets (equal in every shard, every item done or failed) and notes."""
    first = shards[0]
    names = first.reader.feature_sets()
    for s in shards[1:]:
        other = s.reader.feature_sets()
        if other != names:
            name = sorted(set(names) ^ set(other))[0]
            has, lacks = (first, s) if name in names else (s, first)
            raise StoreError(
                f"feature set {name!r} is in {has.where} but not in {lacks.where}; "
                "extract it into every shard"
            )
    specs: dict[str, FeatureSetSpec] = {}
    notes: list[str] = []
    for name in names:
        spec = first.reader.spec(name)
        specs[name] = spec
        for s in shards[1:]:
            other = s.reader.spec(name)
            diffs = spec.differences(other)
            if diffs:
                a, b = f"shard {first.info.label}", f"shard {s.info.label}"
                lines = [
                    d.replace(": stored ", f": {a} ", 1).replace(" vs requested ", f" vs {b} ", 1)
                    for d in diffs
                ]
                raise StoreError(
                    f"feature set {name!r} was extracted with other settings in {s.where} than in "
                    f"{first.where}: " + "; ".join(lines)
                )
            for key in sorted(set(spec.attrs) | set(other.attrs)):
                x, y = spec.attrs.get(key), other.attrs.get(key)
                if x == y:
                    continue
                if key in _IDENTITY_ATTRS:
                    raise StoreError(
                        f"feature set {name!r}: {key} is {x!r} in {first.where} but {y!r} in "
                        f"{s.where}; the shards hold features of different models"
                    )
                notes.append(
                    f"feature set {name!r}: attr {key} is {x!r} in shard {first.info.label} but "
                    f"{y!r} in shard {s.info.label}; the merged file keeps {x!r}"
                )
        for s in shards:
            pending = ~s.reader.done(name)
            pending[s.reader.failed(name)["index"].to_numpy(dtype=np.int64)] = False
            count = int(pending.sum())
            if count:
                raise StoreError(
                    f"{s.where} has {count} items neither done nor failed in feature set "
                    f"{name!r}; finish it first (re-run the same command)"
                )
    return specs, notes


def _merge_rows(
    dst: h5py.Dataset,
    sources: list[h5py.Dataset],
    parts: list[np.ndarray],
    n: int,
    row_bytes: int,
    lead: tuple[int, ...] = (),
) -> None:
    """Copy rows (axis ``len(lead)``) of the shards' datasets into global order, block by block.

    ``sources[k][(*lead, j)]`` is the row of global item ``parts[k][j]``. A block of global
    rows ``[a, b)`` takes a contiguous slice of every shard (its indices are increasing), so
    each read is one contiguous read and each write one contiguous write.
    """
    rows = max(1, MERGE_BLOCK_BYTES // max(1, row_bytes))
    for a in range(0, n, rows):
        b = min(n, a + rows)
        buf = None
        for src, idx in zip(sources, parts, strict=True):
            lo, hi = (int(x) for x in np.searchsorted(idx, [a, b]))
            if hi > lo:
                block = src[(*lead, slice(lo, hi))]  # (hi - lo, *row shape)
                if buf is None:
                    buf = np.empty((b - a, *block.shape[1:]), dtype=block.dtype)
                buf[idx[lo:hi] - a] = block
        dst[(*lead, slice(a, b))] = buf  # (b - a, *row shape)


def _merge_frames(
    dst: h5py.Dataset,
    sources: list[h5py.Dataset],
    parts: list[np.ndarray],
    part_offsets: list[np.ndarray],
    offsets: np.ndarray,
    row_bytes: int,
) -> None:
    """Copy the shards' frames/data into global item order, a block of items at a time.

    Item ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``dst``; item ``parts[k][j]`` owns
    rows ``part_offsets[k][j]:part_offsets[k][j + 1]`` of ``sources[k]``.
    """
    n = len(offsets) - 1
    budget = max(1, MERGE_BLOCK_BYTES // max(1, row_bytes))  # frame rows per block
    a = 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + budget, side="right")) - 1
        b = min(n, max(b, a + 1))
        base, stop = int(offsets[a]), int(offsets[b])
        if stop > base:
            buf = None
            for src, idx, off in zip(sources, parts, part_offsets, strict=True):
                lo, hi = (int(x) for x in np.searchsorted(idx, [a, b]))
                s0, s1 = int(off[lo]), int(off[hi])
                if s1 <= s0:
                    continue
                block = src[s0:s1]  # (frames of the shard's items in [a, b), num_layers, dim)
                if buf is None:
                    buf = np.empty((stop - base, *block.shape[1:]), dtype=block.dtype)
                # source row r of shard item j goes to offsets[idx[j]] - base + (r - off[j])
                delta = offsets[idx[lo:hi]] - base - off[lo:hi]
                dest = np.arange(s0, s1) + np.repeat(delta, np.diff(off[lo : hi + 1]))
                buf[dest] = block
            dst[base:stop] = buf  # (frames of items [a, b), num_layers, dim)
        a = b


def _write_merged(
    w: StoreWriter,
    shards: list[_Shard],
    cols: list[str],
    columns: dict[str, np.ndarray],
    specs: dict[str, FeatureSetSpec],
    failed: pd.DataFrame,
    merged_from: list[str],
) -> None:
    f = w._file
    listing = _str_array(merged_from)
    if sum(len(x.encode("utf-8")) + 16 for x in merged_from) <= _MAX_ATTR_BYTES:
        f.attrs["merged_from"] = listing
    else:  # too many or too long names for an attr in the earliest file format
        f.create_dataset("merged_from", data=listing)
    g = f.create_group("items")
    for c in cols:
        w._create_item_column(g, c, columns[c])
    g.attrs["columns"] = _str_array(cols)
    f.flush()

    n = len(columns["id"])
    parts = [s.info.indices for s in shards]
    features = f.create_group("features")
    for name, spec in specs.items():
        src = [s.reader._group(name) for s in shards]
        counts = None
        part_offsets: list[np.ndarray] = []
        if spec.frames:
            counts = np.zeros(n, dtype=np.int64)
            for s, idx in zip(shards, parts, strict=True):
                off = s.reader.frame_offsets(name)
                part_offsets.append(off)
                counts[idx] = np.diff(off)
        g = features.create_group(name)
        w._create_set(g, spec, n, counts, fill=False)
        for key in ("created", "command", "embedx_version"):  # of the run that extracted it
            if key in src[0].attrs:
                g.attrs[key] = src[0].attrs[key]
        itemsize = np.dtype(spec.dtype).itemsize
        for p in spec.poolings:
            for axis in range(len(spec.layers)):
                _merge_rows(
                    g["pooled"][p],
                    [x["pooled"][p] for x in src],
                    parts,
                    n,
                    spec.dim * itemsize,
                    lead=(axis,),
                )
        for h, names in spec.heads.items():
            _merge_rows(g["heads"][h], [x["heads"][h] for x in src], parts, n, 4 * len(names))
        if spec.frames and counts is not None and counts.sum() > 0:
            _merge_frames(
                g["frames/data"],
                [x["frames/data"] for x in src],
                parts,
                part_offsets,
                g["frames/offsets"][()].astype(np.int64),
                len(spec.layers) * spec.dim * itemsize,
            )
        done = np.zeros(n, dtype=bool)
        for x, idx in zip(src, parts, strict=True):
            done[idx] = x["done"][()].astype(bool)
        f.flush()
        g["done"][...] = done
        f.flush()
    w._append_failures(failed)


def merge(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    command: str | None = None,
) -> MergeSummary:
    """Combine the shard files of one ``extract --shard K/N`` split into one store.

    Checks first, writes second: every input must be a shard of the same N and item list
    (digest), each K present once, every feature set present in every shard with the same
    spec, the same model (model id, revision, commit) and every item done or recorded failed.
    Then the items are written in global order with all columns, every feature set's pooled,
    frames (offsets recomputed in global order), heads and done are copied block by block
    (at most :data:`MERGE_BLOCK_BYTES` per block in memory), and the failures are carried
    over with global indices. The result equals an unsharded run (same items, values bit for
    bit, failures, specs); its root attrs name the inputs (``merged_from``) and carry no shard
    attrs. It is written to a hidden temporary file next to ``output`` and renamed, so a failed
    merge leaves no half-written store.

    Args:
        inputs: the shard files (any order).
        output: the merged store to create.
        overwrite: replace an existing ``output``.
        command: the command line, recorded in the root attrs.

    Returns:
        A :class:`MergeSummary`.

    Raises:
        StoreError: no inputs, a file given twice, the output among the inputs or existing
            (without ``overwrite``), or a check above failing (the message names the shard,
            file, set or difference).
    """
    from contextlib import ExitStack
    from time import perf_counter

    start = perf_counter()
    paths = [Path(p) for p in inputs]
    if not paths:
        raise StoreError(
            "no shard files to merge; give the N files written by `embedx extract --shard K/N`"
        )
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise StoreError(f"{p} is given twice (as {seen[key]} and {p}); give each shard once")
        seen[key] = p
    out = Path(output)
    if out.resolve() in seen:
        raise StoreError(f"output {out} is one of the shard files; merge into a new file")
    if out.is_dir():
        raise StoreError(f"output {out} is a directory, expected a file name")
    if out.exists() and not overwrite:
        raise StoreError(f"{out} exists; use --overwrite to replace it")
    if not out.parent.is_dir():
        raise StoreError(f"cannot create {out}: directory {out.parent} does not exist")

    _ensure_open_files(len(paths))
    with ExitStack() as stack:
        shards = _check_split([_open_shard(p, stack) for p in paths])
        cols, columns = _merged_items(shards)
        specs, notes = _merged_sets(shards)
        failures = []
        for s in shards:
            df = s.reader.failed()
            df["index"] = s.info.indices[df["index"].to_numpy(dtype=np.int64)]
            failures.append(df)
        order = {name: i for i, name in enumerate(specs)}
        failed = pd.concat(failures, ignore_index=True)
        failed = (
            failed.assign(_set=failed["set"].map(order).fillna(len(order)))
            .sort_values(["_set", "set", "index"], kind="stable")
            .drop(columns="_set")
            .reset_index(drop=True)
        )
        tmp = out.with_name(f".{out.name}.merging-{os.getpid()}")
        try:
            with StoreWriter(tmp, command=command) as w:
                _write_merged(w, shards, cols, columns, specs, failed, [str(p) for p in paths])
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return MergeSummary(
        output=out,
        inputs=paths,
        num_items=len(columns["id"]),
        feature_sets=list(specs),
        failed=len(failed),
        seconds=perf_counter() - start,
        size_bytes=out.stat().st_size,
        notes=notes,
    )


def check_store_path(path: str | os.PathLike[str]) -> Path:
    """Check, before any expensive work, that a store can be created or appended at ``path``.

    Nothing is left behind: an existing file is opened for writing and closed, a new one is
    probed with a temporary file in its folder (this also catches read-only file systems,
    which permission bits do not show to root).

    Args:
        path: the store file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        StoreError: ``path`` is a folder, its folder does not exist or is a file, or it cannot
            be written (the reason in one line).
    """
    import tempfile

    p = Path(path)
    if p.is_dir():
        raise StoreError(f"-o {str(path)!r} is a folder; give a file name, e.g. {str(p / 'feats.h5')!r}")
    parent = p.parent
    if not parent.exists():
        raise StoreError(f"cannot create {p}: directory {parent} does not exist")
    if not parent.is_dir():
        raise StoreError(f"cannot create {p}: {parent} is a file, not a folder")
    try:
        if p.exists():
            with open(p, "r+b"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{p.name}.", suffix=".probe"):
                pass
    except OSError as exc:
        raise StoreError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p
