"""The store's reader: :class:`StoreReader` opens a store read-only (stage 2, ``embedx info``).

Names with a leading underscore are private to the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from embedx.errors import StoreError
from embedx.store.base import _attr, _check_schema, _open_h5, _StoreBase


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

    def frames_layers(self, name: str, layers: list[int] | tuple[int, ...],
                      *, block_rows: int = 4096) -> np.ndarray:
        """Every frame of some layers, reading each stored chunk once.

        ``frames/data`` is chunked over frames (all layers of up to 64 frames per chunk), so
        reading one layer reads every chunk whole; asking for several layers in one call shares
        that cost. Rows are read in blocks of ``block_rows`` (a multiple of the chunk rows), so
        the transient memory is one block of all layers.

        Args:
            name: feature-set name.
            layers: model layer numbers (not axis positions).
            block_rows: frames read at a time (rounded up to whole chunks).

        Returns:
            ``(len(layers), total_frames, dim)`` in the stored dtype (float16 or float32).

        Raises:
            StoreError: unknown set or layer, or the set has no frames.
        """
        self.frame_offsets(name)  # raises when the set has no frames
        axes = [self._axis(name, layer) for layer in layers]
        ds = self._group(name)["frames/data"]
        total, _, dim = ds.shape
        out = np.empty((len(axes), total, dim), dtype=ds.dtype)
        chunk = ds.chunks[0] if ds.chunks else 1
        step = max(chunk, -(-int(block_rows) // chunk) * chunk)
        for a in range(0, total, step):
            z = min(total, a + step)
            block = ds[a:z]  # (rows, num_layers, dim)
            for k, axis in enumerate(axes):
                out[k, a:z] = block[:, axis, :]
        return out

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

