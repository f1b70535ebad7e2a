"""What the reader and the writer share: opening an HDF5 store, attr conversions, and the
read operations of both (:class:`_StoreBase`).

Names with a leading underscore are private to the package: its modules share them, nothing
outside it uses them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import yaml

from embedx.errors import StoreError, one_line
from embedx.store.lock import _holders, writer_status
from embedx.store.spec import (
    _ORIGIN_ATTRS,
    _SET_ATTRS,
    _SHARD_ATTRS,
    FAILED_COLUMNS,
    SCHEMA_VERSION,
    FeatureSetSpec,
    ShardInfo,
)

_STR = h5py.string_dtype("utf-8")
# larger texts go into a dataset: an attr must fit a 64 KiB object header (earliest format)
_MAX_ATTR_BYTES = 16 * 1024


# ---------------------------------------------------------------------------------------------
# opening files
# ---------------------------------------------------------------------------------------------


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
    # no raw-data chunk cache: a frames write goes to disk when it is made, so a write that
    # fails (a full disk) leaves no dirty chunk behind for close() to fail on again. Frames
    # chunks of real models (>= 1 MiB) bypassed the default 1 MiB cache anyway.
    mdc, _slots, _nbytes, w0 = fapl.get_cache()
    fapl.set_cache(mdc, 0, 0, w0)
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
                f"{path}: HDF5 cannot lock the file ({one_line(exc, first_line=True)}); on a file system "
                "without locks set HDF5_USE_FILE_LOCKING=FALSE"
            ) from exc
        raise StoreError(f"{path} cannot be opened as HDF5: {one_line(exc, first_line=True)}") from exc


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
            f, self._f = self._f, None
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except (OSError, RuntimeError, StoreError):  # e.g. a full disk: the error in flight says so
            pass

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


    # -- raw access, for copying between stores (merge) -------------------------------------

    def item_columns(self) -> list[str]:
        """Names of the item columns, in stored order (``[]`` before items are written)."""
        items = self._file.get("items")
        if items is None or "columns" not in items.attrs:
            return []
        return [str(c) for c in _attr(items.attrs["columns"])]

    def item_column(self, column: str) -> np.ndarray:
        """One item column as stored: bool, int64, float64, or an object array of str.

        Unlike :attr:`StoreReader.items`, a missing string stays ``""``, so the array can be
        written to another store unchanged (:meth:`StoreWriter.write_item_columns`).

        Args:
            column: column name.

        Returns:
            ``(num_items,)`` array.

        Raises:
            StoreError: no such column (the message lists the stored ones).
        """
        if column not in self.item_columns():
            raise StoreError(
                f"{self.path} has no item column {column!r}; stored: "
                f"{', '.join(self.item_columns()) or 'none'}"
            )
        ds = self._file["items"][column]
        if h5py.check_string_dtype(ds.dtype) is not None:
            return ds.asstr()[()].astype(object)
        return ds[()]

    def dataset(self, name: str, key: str) -> h5py.Dataset:
        """One dataset of a feature set, for block-wise copies (:func:`merge`).

        Args:
            name: feature-set name.
            key: the dataset's path in the set: ``pooled/<pooling>``, ``heads/<head>``,
                ``frames/data``, ``frames/offsets`` or ``done``.

        Returns:
            The open h5py dataset (valid until the store is closed). A writer's caller that
            writes rows into it must mark them done with :meth:`StoreWriter.mark_done` last.

        Raises:
            StoreError: unknown feature set or dataset.
        """
        g = self._group(name)
        ds = g.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise StoreError(f"feature set {name!r} of {self.path} has no dataset {key!r}")
        return ds

    def origin(self, name: str) -> dict[str, Any]:
        """Which run extracted a feature set: its ``created``, ``command`` and ``embedx_version``.

        Args:
            name: feature-set name.

        Returns:
            The attrs present, as plain Python values.

        Raises:
            StoreError: unknown feature set.
        """
        a = self._group(name).attrs
        return {k: _attr(a[k]) for k in _ORIGIN_ATTRS if k in a}

    def _id(self, index: int) -> str:
        return self._file["items/id"].asstr()[index]
