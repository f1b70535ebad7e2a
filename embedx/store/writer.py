"""The store's writer: :class:`StoreWriter` creates or appends to a store, one writer per file.

It writes items, shard metadata, feature sets and batches, keeping the invariant every reader
relies on: an item's data are flushed before its ``done`` flag is set. Its lock lives in
:mod:`embedx.store.lock`, the HDF5 layout of what it creates in :mod:`embedx.store.layout`, and
its failure rows in :mod:`embedx.store.failures`. :func:`~embedx.store.merging.merge` writes
through the public methods of the "copying from other stores" section below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedx.errors import OVERWRITE, Param, StoreConflictError, StoreError
from embedx.store.base import _check_schema, _open_h5
from embedx.store.items import _ItemsWriter
from embedx.store.layout import _check_num_frames, _create_set, _runs
from embedx.store.lock import (
    _stderr_line,
    _WriterLock,
    close_in_forked_children,
    keep_in_forked_children,
)
from embedx.store.spec import (
    _ORIGIN_ATTRS,
    RUN_ATTR_PREFIX,
    SCHEMA_VERSION,
    FeatureSetSpec,
    _embedx_version,
    _now,
    _validate_spec,
)


class StoreWriter(_ItemsWriter):
    """Create or append to a store; one writer per file at a time.

    The writer holds an exclusive lock on the side file ``<path>.lock`` (:mod:`filelock`, an
    ``flock`` the kernel drops when the process dies) for its lifetime, so a second embedx process
    writing the same store fails fast instead of corrupting it. The lock file also records who
    writes (pid, host, command) and how far (:meth:`set_progress`), for :func:`writer_status`;
    it is removed on close. Neither the lock nor the HDF5 file descriptor survives into a child
    forked while the writer is open (DataLoader workers): a child that outlives a killed parent
    can never keep the store locked.

    Copying data already in store form (:func:`~embedx.store.merging.merge`) goes through
    :meth:`write_item_columns`, :meth:`set_merged_from`, :meth:`create_feature_set` with
    ``fill=False``, :meth:`set_origin`, :meth:`dataset`, :meth:`mark_done` and
    :meth:`append_failures`, never through the writer's private state.

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
        self._handles: dict[str, dict[str, Any]] = {}  # open datasets, for write(): lookups cost
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
            close_in_forked_children(self, self._fds)
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
            keep_in_forked_children(self)
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

    # -- feature sets -----------------------------------------------------------------------

    def create_feature_set(
        self,
        spec: FeatureSetSpec,
        *,
        num_frames: np.ndarray | None = None,
        overwrite: bool = False,
        fill: bool = True,
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
            fill: write the NaN fill value into the pooled datasets now. ``False`` is for a
                caller that writes every row itself (:func:`merge`): the space is still
                allocated and the fill value recorded, but not written twice.

        Raises:
            StoreConflictError: an existing set with another spec (the message lists the
                differences) and no overwrite, or with other frame counts.
            StoreError: items not written yet, or an invalid spec or num_frames.
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
            counts = _check_num_frames(spec, num_frames, n)

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
                        raise StoreConflictError(
                            f"feature set {spec.name!r}: {len(changed)} items have another frame "
                            f"count than stored, first {self._id(i)!r}: stored "
                            f"{int(offsets[i + 1] - offsets[i])}, requested {int(counts[i])}; "
                            "use ", OVERWRITE, " to replace the set"
                        )
                return
            if not overwrite:
                raise StoreConflictError(
                    f"feature set {spec.name!r} in {self.path} was extracted with other settings: "
                    + "; ".join(diffs) + ". Use ", OVERWRITE, " to replace it, or ", Param("name", "NAME"),
                    " to store these settings as another feature set"
                )
            del features[spec.name]
            self._specs.pop(spec.name, None)
            self._offsets.pop(spec.name, None)
            self._handles.pop(spec.name, None)
            self.clear_failures(spec.name)

        g = features.create_group(spec.name)
        try:
            _create_set(g, spec, n, counts, command=self.command, fill=fill)
        except BaseException:
            del features[spec.name]
            raise
        f.flush()

    def _spec_cached(self, name: str) -> FeatureSetSpec:
        if name not in self._specs:
            self._specs[name] = self.spec(name)
        return self._specs[name]

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
        ds = self._datasets(name)
        spec = self._spec_cached(name)
        idx = _batch_indices(indices, ds["num_items"])
        if len(idx) == 0:
            return
        pooled, heads = dict(pooled or {}), dict(heads or {})
        _check_batch_parts(name, spec, pooled, heads, frames, frames_written)
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        pooled_sorted = _sorted_pooled(spec, pooled, order)
        heads_sorted = _sorted_heads(spec, heads, order)
        frames_sorted: list[np.ndarray] = []
        offsets = None
        if spec.frames and frames is not None:
            frames_sorted, offsets = self._sorted_frames(name, spec, idx, order, frames)

        # crash safety: the data are written and flushed first; only then is done set (and
        # flushed), so an item marked done always has its data on disk
        rows = _write_rows(ds, sidx, pooled_sorted, heads_sorted, frames_sorted, offsets)
        self._file.flush()
        ds["done"][rows] = np.ones(len(sidx), dtype=bool)
        self._file.flush()

        keys = self._failure_keys()
        stale = [int(i) for i in sidx if (name, int(i)) in keys]
        if stale:
            self.clear_failures(name, stale)

    def _datasets(self, name: str) -> dict[str, Any]:
        """A feature set's datasets by path (``pooled/mean``, ``done``, ...), opened once."""
        if name not in self._handles:
            g = self._group(name)
            found: dict[str, Any] = {"num_items": self.num_items}
            g.visititems(lambda path, obj: found.update({path: obj}) if hasattr(obj, "shape") else None)
            self._handles[name] = found
        return self._handles[name]

    def _sorted_frames(self, name: str, spec: FeatureSetSpec, idx: np.ndarray, order: np.ndarray,
                       frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """A batch's frame arrays in item order, checked against the set's frame offsets.

        Returns:
            Per item of ``idx[order]`` its ``(num_frames_i, num_layers, dim)`` frames in the
            storage dtype, and the set's ``(num_items + 1,)`` frame offsets.
        """
        b = len(idx)
        if len(frames) != b:
            raise StoreError(f"frames has {len(frames)} arrays for a batch of {b} items")
        if name not in self._offsets:
            self._offsets[name] = self.frame_offsets(name)
        offsets = self._offsets[name]
        num_layers, dtype = len(spec.layers), np.dtype(spec.dtype)
        frames_sorted = []
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
        return frames_sorted, offsets

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
            g.attrs[RUN_ATTR_PREFIX + key] = value
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

    # -- copying from other stores (the seam merge writes through) --------------------------

    def set_origin(self, name: str, origin: Mapping[str, Any]) -> None:
        """Keep which run extracted a copied feature set, instead of this writer's run.

        Args:
            name: feature-set name.
            origin: ``created``, ``command`` and/or ``embedx_version``, as
                :meth:`~embedx.store.base._StoreBase.origin` of the source store returns them.

        Raises:
            StoreError: unknown feature set, or another key.
        """
        g = self._group(name)
        other = sorted(set(origin) - set(_ORIGIN_ATTRS))
        if other:
            raise StoreError(
                f"origin keys {other} are not accepted; accepted: {', '.join(_ORIGIN_ATTRS)}"
            )
        for key, value in origin.items():
            g.attrs[key] = value

    def mark_done(self, name: str, done: np.ndarray) -> None:
        """Set a feature set's whole ``done`` column after its rows were written in bulk.

        The rows (written into :meth:`~embedx.store.base._StoreBase.dataset`) are flushed
        first, then ``done`` is written and flushed, as :meth:`write` does for a batch.

        Args:
            name: feature-set name.
            done: ``(num_items,)`` bool, True for the items whose rows are complete.

        Raises:
            StoreError: unknown feature set, or ``done`` of another shape.
        """
        ds = self.dataset(name, "done")
        done = np.asarray(done)
        if done.shape != ds.shape or done.dtype != bool:
            raise StoreError(
                f"done must be {ds.shape[0]} bools (one per item), got shape {done.shape} of "
                f"{done.dtype}"
            )
        self._file.flush()
        ds[...] = done
        self._file.flush()


# -- one batch of StoreWriter.write: checks, item order, the data writes ----------------------


def _batch_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """A batch's item indices as int64, checked: 1-D integers, in ``0..n-1``, unique."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise StoreError(
            f"indices must be a 1-D integer array, got shape {idx.shape} of {idx.dtype}"
        )
    idx = idx.astype(np.int64)
    if len(idx) == 0:
        return idx
    if idx.min() < 0 or idx.max() >= n:
        raise StoreError(
            f"item indices must be in 0..{n - 1}, got {int(idx.min())}..{int(idx.max())}"
        )
    if len(np.unique(idx)) != len(idx):
        raise StoreError("item indices of a batch must be unique")
    return idx


def _check_batch_parts(name: str, spec: FeatureSetSpec, pooled: Mapping[str, np.ndarray],
                       heads: Mapping[str, np.ndarray], frames: Sequence[np.ndarray] | None,
                       frames_written: bool) -> None:
    """Every pooling and head of the set is given, and frames exactly when the set has them."""
    if set(pooled) != set(spec.poolings):
        raise StoreError(
            f"feature set {name!r} stores poolings {list(spec.poolings)}; "
            f"write got {sorted(pooled)}"
        )
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


def _sorted_pooled(spec: FeatureSetSpec, pooled: Mapping[str, np.ndarray],
                   order: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled arrays checked for shape, their items in ``order``, in the storage dtype."""
    num_layers, b, dtype = len(spec.layers), len(order), np.dtype(spec.dtype)
    pooled_sorted = {}
    for p, x in pooled.items():
        x = np.asarray(x)
        if x.shape != (num_layers, b, spec.dim):
            raise StoreError(
                f"pooled[{p!r}] has shape {x.shape}; expected (num_layers, batch, dim) = "
                f"{(num_layers, b, spec.dim)}"
            )
        pooled_sorted[p] = x[:, order, :].astype(dtype, copy=False)  # (num_layers, batch, dim)
    return pooled_sorted


def _sorted_heads(spec: FeatureSetSpec, heads: Mapping[str, np.ndarray],
                  order: np.ndarray) -> dict[str, np.ndarray]:
    """Head outputs checked for shape, their items in ``order``, as float32."""
    b = len(order)
    heads_sorted = {}
    for h, y in heads.items():
        y = np.asarray(y)
        k = len(spec.heads[h])
        if y.shape != (b, k):
            raise StoreError(
                f"heads[{h!r}] has shape {y.shape}; expected (batch, k) = {(b, k)}"
            )
        heads_sorted[h] = y[order].astype(np.float32, copy=False)  # (batch, k)
    return heads_sorted


def _write_rows(ds: Mapping[str, Any], sidx: np.ndarray, pooled: Mapping[str, np.ndarray],
                heads: Mapping[str, np.ndarray], frames: list[np.ndarray],
                offsets: np.ndarray | None) -> slice | np.ndarray:
    """Write a batch's data (not ``done``) into feature-set group ``g``, items in sorted order.

    Args:
        ds: the feature set's datasets by path in its group.
        sidx: ``(batch,)`` sorted item indices.
        pooled: pooling -> ``(num_layers, batch, dim)``, items in ``sidx`` order.
        heads: head -> ``(batch, k)``, items in ``sidx`` order.
        frames: per item in ``sidx`` order its frames (empty when none are written here).
        offsets: the set's frame offsets, ``None`` when no frames are written here.

    Returns:
        The rows of the batch: a slice for a contiguous batch, else ``sidx``.
    """
    runs = list(_runs(sidx))
    # one write per dataset: a slice for a contiguous batch, else the sorted index list
    rows = slice(runs[0][1], runs[0][2]) if len(runs) == 1 else sidx
    for p, x in pooled.items():
        ds[f"pooled/{p}"][:, rows, :] = x  # (num_layers, batch, dim)
    for h, y in heads.items():
        ds[f"heads/{h}"][rows] = y  # (batch, k)
    if offsets is not None:
        data = ds["frames/data"]
        for pos, start, stop in runs:
            block = frames[pos : pos + stop - start]
            a, z = int(offsets[start]), int(offsets[stop])
            if z > a:
                # (frames of the run, num_layers, dim)
                data[a:z] = block[0] if len(block) == 1 else np.concatenate(block, axis=0)
    return rows


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
        raise StoreError(Param("output", str(path)), " is a folder; give a file name, e.g. ",
                         Param("output", str(p / "feats.h5")))
    parent = p.parent
    if not parent.exists():
        raise StoreError(f"cannot create {p}: directory {parent} does not exist")
    if not parent.is_dir():
        raise StoreError(f"cannot create {p}: {parent} is a file, not a folder")
    from embedx.paths import why_not_writable

    if p.exists():
        try:
            with open(p, "r+b"):
                pass
        except OSError as exc:
            raise StoreError(f"cannot write {p}: {exc.strerror or exc}") from None
        return p
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{p.name}.", suffix=".probe"):
            pass
    except OSError as exc:  # its errno alone misleads: "No such file or directory" in /proc
        raise StoreError(f"cannot create {p}: {why_not_writable(parent, exc)}") from None
    return p
