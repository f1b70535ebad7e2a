"""The write side of ``/failed``: one row per (feature set, item) that could not be processed.

:class:`_FailureLog` is the base of :class:`~embedx.store.writer.StoreWriter`: it adds the
failure operations to the shared read operations of :class:`~embedx.store.base._StoreBase`
(which reads the table back, :meth:`failed`). Names with a leading underscore are private to
the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np
import pandas as pd

from embedx.errors import StoreError
from embedx.store.base import _STR, _StoreBase
from embedx.store.spec import FAILED_COLUMNS, _check_name


class _FailureLog(_StoreBase):
    """Record, replace and drop failure rows of an open, writable store."""

    #: (set, index) of every failure row, read once and kept up to date; None until needed
    _failed_keys: set[tuple[str, int]] | None = None

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

    def append_failures(self, rows: pd.DataFrame) -> None:
        """Append failure rows in one write (:func:`merge` carries the shards' failures over).

        Args:
            rows: columns :data:`FAILED_COLUMNS`, at most one row per (set, index), none for an
                (set, index) already recorded (the caller guarantees both).
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

