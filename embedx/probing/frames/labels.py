"""Frame labels and honest frame folds.

Every stored frame gets the label of the aligned segment that covers its centre
(:func:`embedx.probing.alignments.frame_labels`); frames no segment covers are dropped, or
given a label of their own (``--unlabelled-frames LABEL``), and counted either way. Folds are
made over *items* grouped by speaker with :func:`embedx.probing.cv.make_folds` and then
expanded to the items' frames, so no item and no speaker has frames on both sides of a fold.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import DataError, Param
from embedx.probing.cv import Folds, make_folds
from embedx.probing.tasks import CLASSIFICATION
from embedx.text import plural

__all__ = ["DROP", "FrameTable", "cap_training", "frame_folds", "label_frames"]

#: ``--unlabelled-frames`` value that drops the frames no segment covers
DROP = "drop"


@dataclass
class FrameTable:
    """The labelled frames of a study, in store order.

    Attributes:
        rows: ``(num_frames,)`` row of every kept frame in ``frames/data``.
        item: ``(num_frames,)`` position of its item in ``items`` (0..num_items-1).
        y: ``(num_frames,)`` int64 class codes.
        classes: class names; code k is ``classes[k]``.
        items: the items that have kept frames (store columns plus ``row``, their store row).
        dropped: reason -> number of frames not used (or, with a label for them, the number
            of frames no segment covers that got it).
        total_frames: frames stored for the used items, before dropping.
    """

    rows: np.ndarray
    item: np.ndarray
    y: np.ndarray
    classes: list[str]
    items: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    total_frames: int = 0

    @property
    def num_frames(self) -> int:
        """Frames in the study."""
        return len(self.y)


def label_frames(
    offsets: np.ndarray, spec: Any, items: pd.DataFrame, alignments: Any, *, unlabelled: str = DROP
) -> FrameTable:
    """Label every frame of ``items`` from ``alignments``.

    Args:
        offsets: the set's ``(num_store_items + 1,)`` frame offsets.
        spec: the set's :class:`~embedx.store.FeatureSetSpec` (frame timing).
        items: the usable items, with a ``row`` column (store row, the ``item`` of the segments).
        alignments: an :class:`embedx.probing.alignments.Alignments`.
        unlabelled: :data:`DROP`, or the label given to frames no segment covers.

    Returns:
        The :class:`FrameTable`.

    Raises:
        DataError: fewer than two labels among the kept frames.
    """
    from embedx.probing.alignments import frame_centres, frame_labels

    by_item = dict(tuple(alignments.segments.groupby("item", sort=False)))
    rows_parts, item_parts, label_parts = [], [], []
    uncovered = unaligned = total = 0
    for pos, row in enumerate(items["row"].to_numpy(dtype=np.int64)):
        a, z = int(offsets[row]), int(offsets[row + 1])
        total += z - a
        segs = by_item.get(int(row))
        if segs is None:
            unaligned += z - a
            if unlabelled == DROP:
                continue
            labels = np.full(z - a, None, dtype=object)
        else:
            labels = np.asarray(frame_labels(segs, frame_centres(spec, z - a)), dtype=object)
        missing = pd.isna(labels)
        uncovered += int(missing.sum())
        if unlabelled == DROP:
            keep = np.flatnonzero(~missing)
        else:
            labels[missing] = unlabelled
            keep = np.arange(z - a)
        rows_parts.append(a + keep)
        item_parts.append(np.full(len(keep), pos, dtype=np.int64))
        label_parts.append(labels[keep].astype(str))
    dropped = {"frames no segment covers (dropped)": uncovered,
               "frames of items without alignments (dropped)": unaligned}
    if unlabelled != DROP:  # kept under their own label, and said so
        dropped = {f"frames no segment covers (labelled {unlabelled!r})": uncovered}
    labels_all = np.concatenate(label_parts) if label_parts else np.empty(0, dtype=str)
    classes = sorted(set(labels_all.tolist()))
    if len(classes) < 2:
        raise DataError(f"the alignments give the frames {plural(len(classes), 'label')} "
                        f"({', '.join(map(repr, classes)) or 'none'}); a probe needs at least 2")
    y = np.searchsorted(np.asarray(classes), labels_all).astype(np.int64)
    item = np.concatenate(item_parts)
    used = np.unique(item)
    remap = np.full(len(items), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return FrameTable(rows=np.concatenate(rows_parts), item=remap[item], y=y, classes=classes,
                      items=items.iloc[used].reset_index(drop=True),
                      dropped={k: v for k, v in dropped.items() if v}, total_frames=total)


def frame_folds(table: FrameTable, groups: np.ndarray | None, *, scheme: str, n_splits: int | None,
                seed: int, group_name: str | None) -> tuple[Folds, Folds]:
    """Folds over items (grouped by speaker), expanded to their frames.

    Items are stratified by their most frequent frame label. Every fold's training frames must
    hold every class.

    Args:
        table: the labelled frames.
        groups: ``(num_items,)`` speaker of every item of ``table.items``, or ``None``.
        scheme, n_splits, seed, group_name: as in :func:`embedx.probing.cv.make_folds`.

    Returns:
        ``(item_folds, frame_folds)``.

    Raises:
        DataError: too few items or speakers, or a fold whose training frames lack a class.
    """
    k = len(table.classes)
    per_item = np.zeros((len(table.items), k), dtype=np.int64)
    np.add.at(per_item, (table.item, table.y), 1)
    item_y = per_item.argmax(axis=1)  # (num_items,) the majority label, for stratification only
    with warnings.catch_warnings():  # a rare majority label is no problem: frames are checked below
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = make_folds(item_y, scheme=scheme, n_splits=n_splits, seed=seed, groups=groups,
                           task=CLASSIFICATION, group_name=group_name)
    splits = []
    for fi, (train, test) in enumerate(folds.splits):
        tr = np.flatnonzero(np.isin(table.item, train))
        te = np.flatnonzero(np.isin(table.item, test))
        missing = np.setdiff1d(np.arange(k), table.y[tr])
        if len(missing):
            raise DataError(f"fold {fi} has no training frame of label {table.classes[missing[0]]!r}; "
                            "use fewer ", Param("folds"), " or drop that label from the alignments")
        splits.append((tr, te))
    return folds, Folds(scheme=folds.scheme, splits=splits, seed=folds.seed, notes=folds.notes,
                        reason=folds.reason)


def cap_training(train: np.ndarray, y: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """A seeded, class-stratified sample of at most ``cap`` training frames.

    Every class keeps its share of the frames (rounded down, at least one frame), so the
    sample has the class proportions of the training part.

    Args:
        train: ``(n,)`` training frame positions.
        y: ``(num_frames,)`` class codes of all frames.
        cap: most frames, or ``None`` for all.
        seed: seed of the sample.

    Returns:
        The sorted sample (all of ``train`` when it has at most ``cap`` frames).
    """
    if cap is None or len(train) <= cap:
        return train
    rng = np.random.default_rng(seed)
    labels = y[train]
    parts = []
    for c in np.unique(labels):
        members = train[labels == c]
        take = max(1, int(cap * len(members) / len(train)))
        parts.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(parts))
