"""The write side of ``/items`` and of the root's records of where the items come from (the
shard a file holds, the shard files a merged store was made of).

:class:`_ItemsWriter` is a base of :class:`~embedx.store.writer.StoreWriter`, which adds the
lock, the feature sets and the batches. Names with a leading underscore are private to the
package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from embedx.errors import StoreError
from embedx.store.base import _MAX_ATTR_BYTES, _attr, _str_array
from embedx.store.failures import _FailureLog
from embedx.store.layout import _create_item_column, _item_arrays
from embedx.store.spec import _SHARD_ATTRS, ShardInfo, _check_name


class _ItemsWriter(_FailureLog):
    """Write the items of an open, writable store and record which items these are."""

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

        columns = _item_arrays(items)
        f = self._file
        if "items" in f and "id" in f["items"]:
            g = f["items"]
            self._check_ids(g["id"].asstr()[()], columns["id"])
            stored = list(_attr(g.attrs["columns"]))
            new = [c for c in columns if c not in stored]
            for c in new:
                _create_item_column(g, c, columns[c])
            if new:
                g.attrs["columns"] = _str_array(stored + new)
            f.flush()
        else:
            self.write_item_columns(columns)

    def write_item_columns(self, columns: Mapping[str, np.ndarray]) -> None:
        """Store the item columns of a new store as given: the arrays a store holds.

        For copying items from other stores (:func:`merge`, with
        :meth:`~embedx.store.base._StoreBase.item_column`); :meth:`write_items` converts a
        manifest and checks it first.

        Args:
            columns: column -> ``(num_items,)`` bool, int64 or float64 array, or object array of
                str (missing as ``""``), in stored order; ``id`` and ``path`` among them.

        Raises:
            StoreError: the store has items already, or ``id``/``path`` is missing, or the
                columns differ in length.
        """
        f = self._file
        if "items" in f and "id" in f["items"]:
            raise StoreError(f"{self.path} has items already; write_item_columns starts a new store")
        lengths = {c: len(v) for c, v in columns.items()}
        if "id" not in columns or "path" not in columns or len(set(lengths.values())) != 1:
            raise StoreError(
                f"item columns must include id and path, all of one length; got lengths {lengths}"
            )
        for c in columns:
            _check_name("item column", c)
        g = f.require_group("items")
        for c, values in columns.items():
            _create_item_column(g, c, values)
        g.attrs["columns"] = _str_array(list(columns))
        f.flush()

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
                (:func:`embedx.extraction.shard.items_digest`).

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

    def set_merged_from(self, sources: Sequence[str]) -> None:
        """Record the shard files a merged store was made of (:attr:`merged_from` reads it).

        Stored as the root attr ``merged_from``, or a root dataset when the names are too long
        for an attr in the earliest file format.

        Args:
            sources: the shard files, as given to :func:`merge`.
        """
        f = self._file
        listing = _str_array([str(x) for x in sources])
        if sum(len(str(x).encode("utf-8")) + 16 for x in sources) <= _MAX_ATTR_BYTES:
            f.attrs["merged_from"] = listing
        else:  # too many or too long names for an attr in the earliest file format
            f.create_dataset("merged_from", data=listing)
        f.flush()
