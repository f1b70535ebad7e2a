"""How a writer lays data out in HDF5: item columns, a new feature set's attrs and datasets,
and the chunk shape of frames.

The storage layout and why it is so are in the package docstring (:mod:`embedx.store`).
Names with a leading underscore are private to the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import pandas as pd

from embedx.errors import StoreError
from embedx.store.base import _MAX_ATTR_BYTES, _STR, _str_array
from embedx.store.spec import FeatureSetSpec, _embedx_version, _now, _yaml

#: target bytes and most rows of one frames chunk ``(R, num_layers, dim)``
FRAMES_CHUNK_BYTES = 2 << 20
FRAMES_CHUNK_ROWS = 64


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


def _item_arrays(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """The arrays stored for a manifest's item columns, required columns first (checked)."""
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


def _create_item_column(g: h5py.Group, name: str, values: np.ndarray) -> None:
    """Create item column ``name`` of ``/items``: object arrays as utf-8 strings."""
    if values.dtype == object:
        g.create_dataset(name, data=values, dtype=_STR)
    else:
        g.create_dataset(name, data=values)


def _create_set(
    g: h5py.Group,
    spec: FeatureSetSpec,
    n: int,
    counts: np.ndarray | None,
    *,
    command: str,
    fill: bool = True,
) -> None:
    """Write a new set's attrs and create its datasets in the empty group ``g``.

    ``fill=False`` (for :func:`merge`, which writes every row) allocates the pooled
    datasets without writing their NaN fill value first; the fill value is still recorded.
    ``command`` is recorded as the set's ``command`` attr.
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
    a["command"] = command
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
        pooled.create_dataset(
            p,
            shape=(num_layers, n, spec.dim),  # (num_layers, num_items, dim)
            dtype=dtype,
            fillvalue=np.nan,
            dcpl=_allocated(fill),
        )
    if spec.frames and counts is not None:
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(offsets[-1])
        fr = g.create_group("frames")
        # every chunk allocated and indexed now, not filled (rows of items not done are never
        # read): no write mid-run changes the file's structure, so one that fails (a full disk)
        # cannot leave it half-written; the disk space is taken as frames are written
        fr.create_dataset(
            "data",
            shape=(total, num_layers, spec.dim),  # (total_frames, num_layers, dim)
            dtype=dtype,
            chunks=_frames_chunks(total, num_layers, spec.dim, dtype.itemsize),
            fillvalue=np.nan,
            dcpl=_allocated(fill=False),
        )
        fr.create_dataset("offsets", data=offsets)
    if spec.heads:
        heads = g.create_group("heads")
        for head, names in spec.heads.items():
            ds = heads.create_dataset(head, shape=(n, len(names)), dtype=np.float32, fillvalue=np.nan,
                                      dcpl=_allocated(True))
            ds.attrs["names"] = _str_array(names)
    if spec.feature_names is not None:
        g.create_dataset("feature_names", data=_str_array(spec.feature_names))
    g.create_dataset("done", shape=(n,), dtype=bool, fillvalue=False, dcpl=_allocated(True))


def _allocated(fill: bool) -> h5py.h5p.PropDCID:
    """Creation properties of a dataset allocated when it is created, its fill value written
    then (``fill``) or never."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if not fill:
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _runs(sorted_indices: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Contiguous runs of sorted unique indices as ``(position, start, stop)``."""
    if len(sorted_indices) == 0:
        return
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(sorted_indices)]])
    for a, b in zip(starts, stops, strict=True):
        yield int(a), int(sorted_indices[a]), int(sorted_indices[b - 1]) + 1


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
