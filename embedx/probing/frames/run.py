"""``embedx fit --frames`` / ``--segments``: one call from :func:`embedx.api.fit`.

:func:`frame_study` reads the store's frames and an alignment (see
:mod:`embedx.probing.alignments`), labels every frame, and runs either

* the frame-level study (``--frames``): every frame is an example, folds are over items
  grouped by speaker, statistics over speakers (:mod:`embedx.probing.frames.study`), or
* the segment-level study (``--segments``): the frames of every aligned segment are pooled
  into one example (:mod:`embedx.probing.frames.segments`) and the ordinary study runs on them.

Both return a :class:`embedx.probing.study.StudyResult`, so the report, ``summary.csv`` and
the figures are those of an utterance study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedx.errors import ConfigError, DataError, Param, StoreError
from embedx.probing.frames.labels import DROP

__all__ = ["FrameOptions", "frame_study"]


@dataclass
class FrameOptions:
    """What ``--frames`` / ``--segments`` add to a study's options.

    Attributes:
        alignments: the alignment file or folder (``--alignments``).
        segments: pool every segment into one example instead of probing frames.
        tier: the alignment tier (TextGrid), ``None``: the reader's default.
        unlabelled: ``"drop"``, or the label of frames no segment covers.
        max_train_frames: most training frames per fold (``None``: all).
        poolings: segment poolings (``--segments``), from the pooling registry.
    """

    alignments: str | Path
    segments: bool = False
    tier: str | None = None
    unlabelled: str = DROP
    max_train_frames: int | None = 100_000
    poolings: tuple[str, ...] = ("mean",)


@dataclass
class _Setup:
    """What both studies share: the store's frames, labelled, with speakers."""

    name: str
    spec: Any
    offsets: np.ndarray
    table: Any
    groups: np.ndarray | None  # (num_items,) speaker of every item of table.items
    group: str | None
    group_auto: bool
    layers: list[int]
    skipped: dict[str, int]
    source: str
    alignments: Any


def _frame_set(reader: Any, sets: list[str] | None) -> tuple[str, str | None]:
    """The one feature set with frames to probe, and the layers named with it."""
    from embedx.probing.data import parse_set

    available = reader.feature_sets()
    with_frames = [n for n in available if reader.spec(n).frames]
    if sets:
        if len(sets) > 1:
            raise ConfigError(Param("frames", switch=True), " probes one feature set at a time; got "
                              f"{len(sets)} ", Param("sets"), " values")
        name, layers, _ = parse_set(str(sets[0]).strip(), available)
    elif len(with_frames) == 1:
        name, layers = with_frames[0], None
    else:
        raise StoreError(f"{reader.path} has {len(with_frames)} feature sets with frames "
                         f"({', '.join(with_frames) or 'none'}); ", *(
                             ("name one with ", Param("sets", "NAME")) if with_frames else
                             ("extract with ", Param("frames", switch=True), " to probe frames")))
    if not reader.spec(name).frames:
        raise StoreError(f"feature set {name!r} of {reader.path} has no frames; extract it with ",
                         Param("frames", switch=True), f" (sets with frames: {', '.join(with_frames) or 'none'})")
    return name, layers


def _setup(features: str | Path, opts: FrameOptions, *, sets: list[str] | None, layers: str,
           group: str | None, labels_csv: str | Path | None) -> _Setup:
    """Open the store, read the alignments, label the frames of the usable items."""
    from embedx.probing.alignments import read_alignments
    from embedx.probing.columns import column as item_column
    from embedx.probing.columns import join_labels, speaker_column
    from embedx.probing.data import resolve_layers
    from embedx.probing.frames.labels import label_frames
    from embedx.store import StoreReader

    with StoreReader(features) as reader:
        name, set_layers = _frame_set(reader, sets)
        spec = reader.spec(name)
        offsets = reader.frame_offsets(name)
        chosen = resolve_layers(set_layers or layers, spec.layers, name)
        store_items = reader.items
        items = join_labels(store_items, labels_csv)
        done = reader.done(name)
    group_auto = group == "auto"
    if group_auto:
        group = speaker_column(list(items.columns))
    groups = item_column(items, group, "group") if group else None
    usable = done & (groups.notna().to_numpy() if groups is not None else True)
    skipped = {"not extracted": int((~done).sum())}
    if groups is not None:
        skipped["no group"] = int((done & groups.isna().to_numpy()).sum())
    alignments = read_alignments(opts.alignments, store_items, tier=opts.tier)
    used = items[usable].assign(row=np.flatnonzero(usable))
    table = label_frames(offsets, spec, used, alignments, unlabelled=opts.unlabelled)
    skipped["items without labelled frames"] = int(usable.sum()) - len(table.items)
    if len(table.items) < 2:
        raise DataError(f"only {len(table.items)} item(s) have labelled frames; "
                        f"{len(alignments.unaligned)} item(s) have no segment in the alignments")
    item_groups = None if group is None else table.items[group].astype(str).to_numpy()
    return _Setup(name=name, spec=spec, offsets=offsets, table=table, groups=item_groups, group=group,
                  group_auto=group_auto and group is not None, layers=chosen,
                  skipped={k: v for k, v in skipped.items() if v}, source=str(alignments.source),
                  alignments=alignments)


def frame_study(features: str | Path, opts: FrameOptions, settings: Any, *, sets: list[str] | None,
                layers: str, group: str | None, labels_csv: str | Path | None, progress: bool,
                log: Callable[[str], None] | None) -> Any:
    """Run the frame-level (or, with ``opts.segments``, the segment-level) study.

    Args:
        features: the store.
        opts: the frame options.
        settings: the :class:`embedx.probing.study.StudySettings`.
        sets, layers, group, labels_csv: as in :func:`embedx.api.fit`.
        progress: show a progress bar.
        log: where notes go.

    Returns:
        The :class:`embedx.probing.study.StudyResult` (``analyses["frames"]`` describes the
        frames: counts, cap, timings).

    Raises:
        ConfigError, StoreError, DataError: in one line, before any model is fitted.
    """
    note = log or (lambda _m: None)
    if opts.max_train_frames is not None and opts.max_train_frames < 100:
        raise ConfigError(Param("max_train_frames", opts.max_train_frames), " not accepted; it must be at least 100")
    start = time.perf_counter()
    setup = _setup(features, opts, sets=sets, layers=layers, group=group, labels_csv=labels_csv)
    t = setup.table
    note(f"{t.num_frames} labelled frames of {len(t.items)} items ({len(t.classes)} labels) from "
         f"{setup.source}" + "".join(f"; {v} {k}" for k, v in t.dropped.items()))
    if opts.segments:
        from embedx.probing.frames.segments import segment_study

        result = segment_study(features, setup, opts, settings, progress=progress, log=log)
    else:
        from embedx.probing.frames.frame_study import run_frame_study

        result = run_frame_study(features, setup, opts, settings, progress=progress, log=log)
    result.analyses["frames"]["seconds_total"] = time.perf_counter() - start
    return result
