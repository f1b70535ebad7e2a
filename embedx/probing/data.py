"""Stage-2 data: feature matrices, labels, groups and split from an embedx store.

A *block* is one stored matrix: (feature set, layer, pooling) -> ``(num_items, dim)``. A
*feature configuration* is what one probe is trained on: one block, or several blocks
concatenated (``--concat``: e.g. HuBERT layer 9 + eGeMAPS).

Feature selection, per ``--set`` value::

    NAME                 every layer of --layers, the pooling(s) of --pooling
    NAME@LAYERS          this set's own layer spec (all, last, 9, 0,6,12, -1, 4:9)
    NAME@LAYERS/POOLING  and its own pooling(s), comma-separated
    NAME/POOLING         its own pooling(s), the global layers

Without ``--pooling`` a set uses ``mean`` when stored, else its first stored pooling. Layer
numbers are model layer numbers (``spec.layers``); ``all`` means every stored layer, ``-1`` the
last stored one.

Only items that are ``done`` in every used feature set and have a label are used; how many
were skipped, and why, is kept in :attr:`Dataset.skipped`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, Param, StoreError
from embedx.extraction.layers import ALL_LAYERS, select_layers
from embedx.extraction.pooling import split_poolings
from embedx.probing.columns import (
    MISSING,
    SPEAKER_COLUMNS,
    column,
    item_columns,
    join_labels,
    label_text,
    speaker_column,
)
from embedx.probing.tasks import CLASSIFICATION, REGRESSION, TASKS
from embedx.text import plural

__all__ = [
    "Block",
    "Dataset",
    "FeatureConfig",
    "MISSING",
    "SPEAKER_COLUMNS",
    "TASKS",
    "detect_task",
    "encode_labels",
    "item_columns",
    "join_labels",
    "load_dataset",
    "read_block",
    "resolve_layers",
    "select_features",
    "weighted_configs",
]

#: a numeric label with more distinct values than this is a regression target under auto
REGRESSION_MIN_UNIQUE = 20


@dataclass(frozen=True)
class Block:
    """One stored feature matrix.

    Attributes:
        feature_set: feature-set name.
        layer: model layer number.
        pooling: pooling name.
    """

    feature_set: str
    layer: int
    pooling: str

    @property
    def label(self) -> str:
        """``set@layer/pooling``, the syntax ``--set`` accepts."""
        return f"{self.feature_set}@{self.layer}/{self.pooling}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for JSON and model bundles)."""
        return {"feature_set": self.feature_set, "layer": self.layer, "pooling": self.pooling}


@dataclass(frozen=True)
class FeatureConfig:
    """The features one probe is trained on: one block or a concatenation.

    Attributes:
        blocks: the blocks, concatenated along the feature axis in this order.
        weighted: the blocks are the layers of one set and pooling, stacked as
            ``(num_items, num_layers, dim)`` for the weighted-layer probe
            (:mod:`embedx.probing.weighted`).
    """

    blocks: tuple[Block, ...]
    weighted: bool = False

    @property
    def name(self) -> str:
        """Unique readable name: the block labels joined with ``+`` (``set@weighted/pooling``)."""
        if self.weighted:
            return f"{self.blocks[0].feature_set}@weighted/{self.blocks[0].pooling}"
        return "+".join(b.label for b in self.blocks)

    @property
    def concat(self) -> bool:
        """Whether this configuration fuses several blocks (a weighted one mixes, not fuses)."""
        return len(self.blocks) > 1 and not self.weighted

    @property
    def feature_set(self) -> str:
        """The feature set, or the sets joined with ``+`` for a fusion."""
        return "+".join(dict.fromkeys(b.feature_set for b in self.blocks))

    @property
    def layer(self) -> int | None:
        """The layer of a single block (``None`` for a fusion or a weighted-layer mix)."""
        return None if self.concat or self.weighted else self.blocks[0].layer

    @property
    def pooling(self) -> str:
        """The pooling, or the poolings joined with ``+`` for a fusion."""
        return "+".join(dict.fromkeys(b.pooling for b in self.blocks))


@dataclass
class Dataset:
    """Everything a study needs, for the items it uses.

    Attributes:
        configs: feature configurations, in study order.
        X: configuration name -> ``(num_items, dim)`` float32 features.
        y: ``(num_items,)`` int64 class codes (classification) or float64 targets.
        task: ``classification`` or ``regression``.
        classes: class names (classification), code k is ``classes[k]``.
        groups: ``(num_items,)`` group of every item, or ``None``.
        split: ``(num_items,)`` split values (train/dev/test), or ``None``.
        ids: ``(num_items,)`` item ids; paths: their source paths.
        rows: ``(num_items,)`` row of every item in the store.
        label: label column name; group: group column; split_col: split column.
        group_auto: True when ``group`` was found among :data:`SPEAKER_COLUMNS` rather than
            named by the user.
        store: path of the store.
        specs: feature-set name -> its stored spec (as returned by the reader).
        skipped: reason -> number of store items not used.
        cross_groups: ``(num_items,)`` a second group crossed with ``groups`` (e.g. sentence),
            for two-way folds, or ``None``; cross_group: its column.
    """

    configs: list[FeatureConfig]
    X: dict[str, np.ndarray]
    y: np.ndarray
    task: str
    classes: list[str] | None
    groups: np.ndarray | None
    split: np.ndarray | None
    ids: np.ndarray
    paths: np.ndarray
    rows: np.ndarray
    label: str
    group: str | None = None
    group_auto: bool = False
    split_col: str | None = None
    store: str = ""
    specs: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    cross_groups: np.ndarray | None = None
    cross_group: str | None = None

    @property
    def num_items(self) -> int:
        """Number of items used."""
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes) if self.classes else 0

    def counts(self) -> dict[str, int]:
        """Items per class (classification)."""
        if not self.classes:
            return {}
        return {c: int(n) for c, n in zip(self.classes, np.bincount(self.y, minlength=len(self.classes)), strict=True)}


# ------------------------------------------------------------------------------ selection


def resolve_layers(text: str, stored: Sequence[int], set_name: str = "") -> list[int]:
    """Resolve a layer spec against a feature set's stored layers (the grammar of :mod:`embedx.extraction.layers`).

    Args:
        text: ``all``, ``last``, a comma list (``0,6,12``), negative numbers (``-1`` = last
            stored layer) or half-open ranges (``4:9``: the stored layers among 4..8) of model
            layer numbers.
        stored: the set's stored layer numbers (``spec.layers``).
        set_name: for messages.

    Returns:
        Sorted stored layer numbers.

    Raises:
        StoreError: a requested layer is not stored (the message lists the stored ones).
        ConfigError: a malformed spec.
    """
    return select_layers(str(text).strip(), stored, set_name)


def weighted_configs(configs: Sequence[FeatureConfig]) -> list[FeatureConfig]:
    """One weighted configuration per (feature set, pooling) of the single-layer configurations.

    The configurations the weighted-layer probe (:mod:`embedx.probing.weighted`) is fitted on; they
    are feature selection, so they live with :func:`select_features`.

    Args:
        configs: the study's :class:`FeatureConfig` list.

    Returns:
        The weighted configurations (each stacks that set's selected layers, in layer order).

    Raises:
        ConfigError: with ``--concat``, or when no set has two or more layers selected.
    """
    if any(c.concat for c in configs):
        raise ConfigError(Param("weighted_layers", switch=True), " learns its own mix of layers; it cannot be combined with ",
                          Param("concat", switch=True))
    blocks: dict[tuple[str, str], list[Block]] = {}
    for config in configs:
        block = config.blocks[0]
        blocks.setdefault((block.feature_set, block.pooling), []).append(block)
    out = [FeatureConfig(tuple(sorted(found, key=lambda b: b.layer)), weighted=True)
           for found in blocks.values() if len({b.layer for b in found}) > 1]
    if not out:
        raise ConfigError(Param("weighted_layers", switch=True), " needs at least 2 layers of a feature set; "
                          f"selected: {', '.join(c.name for c in configs)}")
    return out


def _parse_set(text: str, available: list[str]) -> tuple[str, str | None, str | None]:
    """Split ``NAME[@LAYERS][/POOLING]`` -> (name, layers or None, poolings or None)."""
    if text in available:
        return text, None, None
    rest, slash, pooling = text.partition("/")
    name, at, layers = rest.partition("@")
    if name not in available:
        raise StoreError(
            f"the store has no feature set {name!r}; available: {', '.join(available) or 'none'}"
        )
    return name, (layers if at else None), (pooling if slash else None)


def select_features(
    reader: Any,
    sets: Sequence[str] | None = None,
    layers: str = ALL_LAYERS,
    pooling: str | None = None,
    concat: bool = False,
) -> list[FeatureConfig]:
    """Turn the feature options into feature configurations.

    Args:
        reader: an open :class:`embedx.store.StoreReader`.
        sets: ``--set`` values (``NAME[@LAYERS][/POOLING]``); ``None`` or empty: every set.
        layers: global layer spec.
        pooling: global pooling(s), comma-separated; ``None``: ``mean`` or the first stored.
        concat: fuse every selected block into one configuration.

    Returns:
        The configurations: one per block, or one fusion of all blocks.

    Raises:
        StoreError: a feature set, layer or pooling not in the store.
    """
    available = reader.feature_sets()
    if not available:
        raise StoreError(f"{reader.path} has no feature sets; run embedx extract first")
    blocks: list[Block] = []
    for text in sets or available:
        name, set_layers, set_pooling = _parse_set(str(text).strip(), available)
        spec = reader.spec(name)
        if not spec.poolings:
            raise StoreError(f"feature set {name!r} has no pooled features (frames only)")
        chosen = set_pooling or pooling
        if chosen is None:
            poolings = ["mean"] if "mean" in spec.poolings else [spec.poolings[0]]
        else:
            poolings = list(split_poolings(chosen, every=spec.poolings))  # stage 1's grammar
        for p in poolings:
            if p not in spec.poolings:
                raise StoreError(
                    f"feature set {name!r} has no pooling {p!r}; stored: {', '.join(spec.poolings)}"
                )
        for layer in resolve_layers(set_layers or layers, spec.layers, name):
            for p in poolings:
                blocks.append(Block(name, layer, p))
    blocks = list(dict.fromkeys(blocks))
    if concat:
        return [FeatureConfig(tuple(blocks))]
    return [FeatureConfig((b,)) for b in blocks]


def read_block(reader: Any, block: Block, rows: np.ndarray) -> np.ndarray:
    """Read one block for some store rows.

    Args:
        reader: an open store reader.
        block: what to read.
        rows: ``(num_items,)`` store rows.

    Returns:
        ``(num_items, dim)`` float32.
    """
    return np.ascontiguousarray(reader.pooled(block.feature_set, block.pooling, block.layer)[rows])


def check_finite(X: np.ndarray, what: str, ids: np.ndarray) -> None:
    """Raise if ``X`` holds NaN or inf.

    Raises:
        DataError: naming the block, the number of bad items and the first id.
    """
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        first = ids[np.flatnonzero(bad)[0]]
        raise DataError(
            f"features {what} hold NaN/inf values for {int(bad.sum())} item(s), first {first!r}; "
            "re-extract those items or drop them from the store"
        )


def detect_task(values: pd.Series, task: str = "auto") -> str:
    """Decide classification vs regression.

    Auto: numeric labels with more than :data:`REGRESSION_MIN_UNIQUE` distinct values, or with
    any non-integer value (a 1-5 rating in 0.5 steps is a scale, not 9 classes), are a
    regression target; everything else is classification.

    Raises:
        ConfigError: unknown task name.
        DataError: regression asked for a non-numeric label.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
    if task == "auto":
        if not numeric:
            return CLASSIFICATION
        finite = values.dropna().to_numpy(dtype=np.float64)
        fractional = bool(np.any(finite != np.round(finite)))
        return REGRESSION if fractional or values.nunique() > REGRESSION_MIN_UNIQUE else CLASSIFICATION
    if task == REGRESSION and not numeric:
        raise DataError(
            f"label column {values.name!r} is not numeric (e.g. {values.iloc[0]!r}); "
            "regression needs numbers"
        )
    return task


def encode_labels(values: pd.Series, task: str) -> tuple[np.ndarray, list[str] | None]:
    """Encode labels.

    Args:
        values: labels of the used items (no missing values).
        task: ``classification`` or ``regression``.

    Returns:
        ``(y, classes)``: int64 codes and sorted class names, or float64 targets and ``None``.

    Raises:
        DataError: a single class, or non-numeric / non-finite regression targets.
    """
    if task == REGRESSION:
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            first = values[bad.to_numpy()].iloc[0]
            raise DataError(
                f"label column {values.name!r} is not numeric for regression: {int(bad.sum())} "
                f"value(s) like {first!r}; use ", Param("task", "classification"), " or fix the labels"
            )
        return numeric.to_numpy(dtype=np.float64), None
    uniques = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(uniques) < 2:
        only = repr(str(uniques[0])) if uniques else "none"
        raise DataError(
            f"label column {values.name!r} has a single class ({only}) among {len(values)} items; "
            "classification needs at least 2 classes"
        )
    lookup = {v: k for k, v in enumerate(uniques)}
    y = np.array([lookup[v] for v in values.tolist()], dtype=np.int64)
    names = [label_text(v) for v in uniques]
    return y, names


# ---------------------------------------------------------------------------------- load


def _usable_rows(reader: Any, used_sets: list[str], labels: pd.Series, groups: pd.Series | None,
                 split: pd.Series | None, crossed: pd.Series | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """The items done in every used set with a label (and group, split), and why others were skipped.

    Raises:
        DataError: fewer than 2 usable items.
    """
    done = np.ones(len(labels), dtype=bool)
    failed = np.zeros(len(labels), dtype=bool)
    for name in used_sets:
        done &= reader.done(name)
        failed[reader.failed(name)["index"].to_numpy(dtype=np.int64)] = True
    has_label = labels.notna().to_numpy()
    if labels.dtype == object:
        has_label &= labels.astype(str).str.strip().ne("").to_numpy()
    keep = done & has_label
    if groups is not None:
        keep &= groups.notna().to_numpy()
    if split is not None:
        keep &= split.notna().to_numpy()
    if crossed is not None:
        keep &= crossed.notna().to_numpy()
    skipped = {
        "failed in extraction": int((~done & failed).sum()),
        # a stopped or killed extraction: its re-run finishes these
        "not extracted yet (re-run the extraction to finish)": int((~done & ~failed).sum()),
        "no label": int((done & ~has_label).sum()),
    }
    if groups is not None:
        skipped["no group"] = int((done & has_label & groups.isna().to_numpy()).sum())
    if split is not None:
        skipped["no split"] = int((done & has_label & split.isna().to_numpy()).sum())
    if crossed is not None:
        skipped[f"no {crossed.name}"] = int((done & has_label & crossed.isna().to_numpy()).sum())
    skipped = {k: v for k, v in skipped.items() if v}
    rows = np.flatnonzero(keep)
    if len(rows) < 2:
        why = "; ".join(f"{v} {k}" for k, v in skipped.items()) or "empty store"
        raise DataError(f"only {plural(len(rows), 'usable item')} of {len(labels)} ({why})")
    return rows, skipped


def _read_features(reader: Any, configs: list[FeatureConfig], rows: np.ndarray, ids: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Every configuration's features of the items in ``rows``; each block is read once."""
    X: dict[str, np.ndarray] = {}
    cache: dict[Block, np.ndarray] = {}
    for config in configs:
        parts = []
        for block in config.blocks:
            if block not in cache:
                cache[block] = read_block(reader, block, rows)  # (num_items, dim)
                check_finite(cache[block], block.label, ids)
            parts.append(cache[block])
        if config.weighted:
            X[config.name] = np.stack(parts, axis=1)  # (num_items, num_layers, dim)
        else:
            X[config.name] = parts[0] if len(parts) == 1 else np.hstack(parts)
    return X


def load_dataset(
    path: str | Path,
    *,
    label: str = "label",
    sets: Sequence[str] | None = None,
    layers: str = ALL_LAYERS,
    pooling: str | None = None,
    concat: bool = False,
    group: str | None = "auto",
    labels_csv: str | Path | None = None,
    split_col: str | None = None,
    task: str = "auto",
    weighted_layers: bool = False,
    cross_group: str | None = None,
) -> Dataset:
    """Read a study's data from a store.

    Args:
        path: the HDF5 store.
        label: label column (of the store's items or of ``labels_csv``).
        sets: ``--set`` values (see :func:`select_features`); ``None``: every set.
        layers: layer spec.
        pooling: pooling(s).
        concat: fuse all selected blocks into one configuration.
        group: group (speaker) column; ``"auto"``: the first of :data:`SPEAKER_COLUMNS` the
            items have (none when they have none), so folds are speaker-independent by
            default; ``None``: no groups.
        labels_csv: CSV joined on id/path whose columns add to/replace the items' columns.
        split_col: split column (train/dev/test), or ``None``.
        task: ``auto``, ``classification`` or ``regression``.
        weighted_layers: add one weighted-layer configuration per set and pooling (its
            features are the selected layers stacked as ``(num_items, num_layers, dim)``).
        cross_group: a second group column crossed with ``group`` (e.g. ``sentence``): the
            study's folds become two-way (:mod:`embedx.probing.twoway`); ``None``: none.

    Returns:
        The :class:`Dataset`.

    Raises:
        StoreError: unreadable store, unknown set/layer/pooling.
        DataError: unknown column, a single class, NaN/inf features, no usable item.
    """
    from embedx.store import StoreReader

    with StoreReader(path) as reader:
        configs = select_features(reader, sets, layers, pooling, concat)
        if weighted_layers:
            configs = configs + weighted_configs(configs)
        items = join_labels(reader.items, labels_csv)
        labels = column(items, label, "label")
        group_auto = group == "auto"
        if group_auto:
            group = speaker_column([c for c in items.columns if c != label])
        groups = column(items, group, "group") if group else None
        split = column(items, split_col, "split") if split_col else None
        crossed = column(items, cross_group, "cross-group") if cross_group else None
        used_sets = sorted({b.feature_set for c in configs for b in c.blocks})
        rows, skipped = _usable_rows(reader, used_sets, labels, groups, split, crossed)
        used = items.iloc[rows]
        resolved = detect_task(used[label], task)
        y, classes = encode_labels(used[label], resolved)
        ids = used["id"].astype(str).to_numpy()
        X = _read_features(reader, configs, rows, ids)
        specs = {name: reader.spec(name) for name in used_sets}
    return Dataset(
        configs=configs, X=X, y=y, task=resolved, classes=classes,
        groups=None if groups is None else used[group].astype(str).to_numpy(),
        split=None if split is None else used[split_col].astype(str).to_numpy(),
        ids=ids, paths=used["path"].astype(str).to_numpy(), rows=rows,
        label=label,
        group=group,
        group_auto=group_auto and group is not None,
        split_col=split_col,
        store=str(path),
        specs=specs,
        skipped=skipped,
        cross_groups=None if crossed is None else used[cross_group].astype(str).to_numpy(),
        cross_group=cross_group,
    )


# public names for other stage-2 readers of a store (embedx.probing.frames)
parse_set = _parse_set
