"""``embedx fit --segments``: one example per aligned segment (e.g. a word embedding).

The frames whose centres lie inside a segment (``start <= centre < end``) are pooled with the
poolings of :mod:`embedx.extraction.pooling`; a segment shorter than a frame hop may hold no
frame centre and is dropped (counted). The ordinary study then runs on the segments, with
folds grouped by speaker (or, without a speaker column, by item, so that no item's segments
are on both sides of a fold).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import DataError
from embedx.probing.tasks import CLASSIFICATION

__all__ = ["POOL_BATCH", "segment_frames", "segment_study"]

#: segments pooled at a time
POOL_BATCH = 512


def segment_frames(offsets: np.ndarray, spec: Any, items: pd.DataFrame, segments: pd.DataFrame
                   ) -> tuple[pd.DataFrame, int]:
    """The stored frame rows of every segment of ``items``.

    Args:
        offsets: the set's frame offsets.
        spec: the set's spec (frame timing).
        items: the items (``row``: store row), in study order.
        segments: the alignments' segments (``item`` is a store row).

    Returns:
        ``(table, empty)``: one row per segment with a frame (``pos`` the item's position in
        ``items``, ``start``, ``end``, ``label``, ``first`` and ``count``: its stored frame rows)
        and the number of segments without a frame centre.
    """
    from embedx.probing.alignments import frame_centres

    by_item = dict(tuple(segments.groupby("item", sort=False)))
    parts, empty = [], 0
    for pos, row in enumerate(items["row"].to_numpy(dtype=np.int64)):
        segs = by_item.get(int(row))
        if segs is None:
            continue
        a, z = int(offsets[row]), int(offsets[row + 1])
        centres = np.asarray(frame_centres(spec, z - a), dtype=np.float64)
        i0 = np.searchsorted(centres, segs["start"].to_numpy(dtype=np.float64), side="left")
        i1 = np.searchsorted(centres, segs["end"].to_numpy(dtype=np.float64), side="left")
        has = i1 > i0
        empty += int((~has).sum())
        parts.append(pd.DataFrame({
            "pos": pos, "start": segs["start"].to_numpy()[has], "end": segs["end"].to_numpy()[has],
            "label": segs["label"].astype(str).to_numpy()[has], "first": a + i0[has],
            "count": (i1 - i0)[has],
        }))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["pos", "start", "end", "label", "first", "count"])
    return table, empty


def _pool(stored: np.ndarray, segs: pd.DataFrame, poolings: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Pool every segment of every layer in ``stored``.

    Args:
        stored: ``(num_layers, total_frames, dim)`` frames of some layers.
        segs: the segments (``first``, ``count``).
        poolings: pooling names.

    Returns:
        pooling -> ``(num_layers, num_segments, dim)`` float32.
    """
    import torch

    from embedx.extraction.pooling import get_pooling

    first = segs["first"].to_numpy(dtype=np.int64)
    count = segs["count"].to_numpy(dtype=np.int64)
    out = {p: np.empty((stored.shape[0], len(segs), stored.shape[2]), np.float32) for p in poolings}
    for a in range(0, len(segs), POOL_BATCH):
        f, c = first[a:a + POOL_BATCH], count[a:a + POOL_BATCH]
        steps = np.arange(int(c.max()))
        index = f[:, None] + np.minimum(steps[None, :], c[:, None] - 1)  # (batch, frames), padded by repeats
        hidden = torch.from_numpy(stored[:, index].astype(np.float32))  # (layers, batch, frames, dim)
        lengths = torch.from_numpy(c.copy())  # (batch,); a slice is read-only to torch
        for p in poolings:
            out[p][:, a:a + len(f)] = get_pooling(p)(hidden, lengths).numpy()  # (layers, batch, dim)
    return out


def _segment_dataset(features: str | Path, setup: Any, segs: pd.DataFrame, X: dict[str, np.ndarray],
                     configs: list[Any]) -> Any:
    from embedx.probing.data import Dataset

    items = setup.table.items
    classes = sorted(set(segs["label"]))
    if len(classes) < 2:
        raise DataError(f"the segments have {len(classes)} label(s); a probe needs at least 2")
    pos = segs["pos"].to_numpy(dtype=np.int64)
    ids = items["id"].astype(str).to_numpy()[pos]
    spans = [f"{i}@{s:.3f}-{e:.3f}" for i, s, e in zip(ids, segs["start"], segs["end"], strict=True)]
    groups = setup.groups[pos] if setup.groups is not None else ids  # an item never straddles a fold
    return Dataset(
        configs=configs, X=X, y=np.searchsorted(np.asarray(classes), segs["label"].to_numpy()),
        task=CLASSIFICATION, classes=classes, groups=np.asarray(groups), split=None,
        ids=np.asarray(spans), paths=items["path"].astype(str).to_numpy()[pos],
        rows=items["row"].to_numpy(dtype=np.int64)[pos], label=f"segment labels ({Path(setup.source).name})",
        group=setup.group or "item", group_auto=setup.group_auto, store=str(features),
        specs={setup.name: setup.spec}, skipped=dict(setup.skipped),
    )


def segment_study(features: str | Path, setup: Any, opts: Any, settings: Any, *, progress: bool,
                  log: Callable[[str], None] | None) -> Any:
    """Pool every aligned segment's frames, then run the ordinary study on the segments.

    Args:
        features: the store.
        setup: the labelled frames and alignments (see :func:`embedx.probing.frames.run.frame_study`).
        opts: the frame options (``poolings``).
        settings: the study settings (no refit: a segment model has no audio front end yet).
        progress: show a progress bar. log: where notes go.

    Returns:
        The :class:`~embedx.probing.study.StudyResult`.
    """
    from embedx.extraction.pooling import get_pooling
    from embedx.probing import analyses as registry
    from embedx.probing.analysis import Prepared
    from embedx.probing.data import Block, FeatureConfig
    from embedx.probing.frames.study import layer_batches
    from embedx.probing.frames.summary import describe
    from embedx.probing.study import run_study
    from embedx.store import StoreReader

    for p in opts.poolings:
        get_pooling(p)  # an unknown name fails before anything is read
    segs, empty = segment_frames(setup.offsets, setup.spec, setup.table.items, setup.alignments.segments)
    configs = [FeatureConfig((Block(setup.name, layer, f"segment-{p}"),))
               for layer in setup.layers for p in opts.poolings]
    X: dict[str, np.ndarray] = {}
    batches = layer_batches(setup.layers, int(setup.offsets[-1]), setup.spec.dim,
                            np.dtype(setup.spec.dtype).itemsize)
    with StoreReader(features) as reader:
        for batch in batches:
            pooled = _pool(reader.frames_layers(setup.name, batch), segs, opts.poolings)
            for li, layer in enumerate(batch):
                for p in opts.poolings:
                    X[f"{setup.name}@{layer}/segment-{p}"] = pooled[p][li]  # (num_segments, dim)
    dataset, prepared = registry.prepare(_segment_dataset(features, setup, segs, X, configs))
    frames = describe(setup, opts, segments=len(segs), empty_segments=empty, passes=len(batches))
    unit = f"speakers (`{setup.group}`)" if setup.groups is not None else "items (no speaker column)"
    note = (f"Segment level: {len(segs)} aligned segments, each the {'/'.join(opts.poolings)} of the "
            f"frames whose centres it covers ({empty} segments without a frame centre dropped); folds "
            f"grouped by {unit}. No model file is saved for segment-level probes.")
    return run_study(dataset, dataclasses.replace(settings, refit=False),
                     analyses=[*prepared, Prepared(registry.get("frames"), frames)], notes=[note],
                     progress=progress, log=log)
