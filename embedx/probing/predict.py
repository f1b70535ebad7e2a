"""Save a refitted model and apply it to a feature store or to new audio.

A model file (``model.skops``) is a dict written by :func:`save_model`; it is saved and loaded
by :mod:`embedx.probing.modelfile` (skops, trusted types only; an embedx 0.2 pickled
``model.joblib`` loads only with ``trust_pickle=True``). The bundle:

* ``pipeline`` – the fitted scikit-learn Pipeline (scaler inside);
* ``task``, ``classes`` (label names, code k is ``classes[k]``), ``label``, ``model``,
  ``params`` (tuned hyper-parameters), ``metric`` and ``cv_score``;
* ``blocks`` – the feature recipe: ``[{feature_set, layer, pooling}, ...]`` concatenated in
  this order (one block unless ``concat``);
* ``feature_sets`` – per set: backend, dim, layers, poolings, the extraction ``config``
  (rebuilds the :class:`~embedx.extraction.extract.ExtractConfig` for new audio) and ``attrs`` (model id,
  revision, ...);
* ``speaker_norm`` and ``group`` – whether features are standardised per group, and the column;
* ``format``, ``format_version``, ``embedx_version``, ``created``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, Param, StoreError
from embedx.probing.modelfile import FORMAT, FORMAT_VERSION, load_model, save_model
from embedx.probing.tasks import CLASSIFICATION

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "features_for",
    "load_model",
    "predict",
    "predict_audio",
    "predict_store",
    "save_model",
    "summary_line",
]

#: attrs that identify the model behind a feature set; a store whose set differs is refused
IDENTITY_ATTRS = ("model_id", "model", "revision", "commit", "commit_hash")


def _check_set(bundle: dict[str, Any], reader: Any, name: str) -> None:
    if name not in reader.feature_sets():
        raise StoreError(
            f"{reader.path} has no feature set {name!r}, which the model needs; available: "
            f"{', '.join(reader.feature_sets()) or 'none'}"
        )
    want = bundle["feature_sets"][name]
    spec = reader.spec(name)
    if spec.backend != want["backend"] or spec.dim != want["dim"]:
        raise StoreError(
            f"feature set {name!r} of {reader.path} is {spec.backend} dim {spec.dim}; the model "
            f"was trained on {want['backend']} dim {want['dim']}"
        )
    for key in IDENTITY_ATTRS:
        a, b = spec.attrs.get(key), want["attrs"].get(key)
        if a is not None and b is not None and str(a) != str(b):
            raise StoreError(
                f"feature set {name!r} of {reader.path} has {key} {a!r}; the model was trained "
                f"on {key} {b!r}"
            )


def features_for(bundle: dict[str, Any], reader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Read the model's feature recipe from an open store.

    Args:
        bundle: a model bundle.
        reader: an open :class:`embedx.store.StoreReader`.

    Returns:
        ``(X, rows)``: ``(num_done, dim)`` float32 features of the items done in every needed
        set, and their store rows.

    Raises:
        StoreError: a needed set, layer or pooling is missing or of another model.
        DataError: NaN/inf features in done items.
    """
    from embedx.probing.data import Block, check_finite, read_block

    blocks = [Block(b["feature_set"], int(b["layer"]), b["pooling"]) for b in bundle["blocks"]]
    done = np.ones(reader.num_items, dtype=bool)
    for name in dict.fromkeys(b.feature_set for b in blocks):
        _check_set(bundle, reader, name)
        done &= reader.done(name)
    rows = np.flatnonzero(done)
    ids = reader.items["id"].astype(str).to_numpy()[rows]
    parts = []
    for block in blocks:
        part = read_block(reader, block, rows)  # (num_done, dim)
        check_finite(part, block.label, ids)
        parts.append(part)
    X = parts[0] if len(parts) == 1 else np.hstack(parts)
    return X, rows


def predict(bundle: dict[str, Any], X: np.ndarray, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Apply a bundle's pipeline to features.

    Args:
        bundle: a model bundle.
        X: ``(num_items, dim)`` features in the bundle's recipe.
        groups: ``(num_items,)`` groups, required when the model uses speaker normalisation.

    Returns:
        DataFrame with ``prediction`` and, when the model gives probabilities,
        ``prob_<class>`` columns.

    Raises:
        DataError: speaker normalisation without groups.
    """
    from embedx.probing.speaker_norm import group_standardize

    if bundle.get("speaker_norm"):
        if groups is None:
            raise DataError(
                "the model was trained with speaker normalisation; give ", Param("group", "COLUMN"),
                " naming each item's speaker"
            )
        X = group_standardize(X, groups)
    pipe = bundle["pipeline"]
    pred = pipe.predict(X)
    out = pd.DataFrame()
    if bundle["task"] == CLASSIFICATION:
        classes = bundle["classes"]
        out["prediction"] = [classes[int(k)] for k in pred]
        if hasattr(pipe, "predict_proba"):
            try:
                proba = pipe.predict_proba(X)  # (num_items, num_classes)
            except AttributeError:  # e.g. SVC without probability=True
                proba = None
            if proba is not None:
                for k, cls in zip(pipe.classes_, np.asarray(proba).T, strict=True):
                    out[f"prob_{classes[int(k)]}"] = cls
    else:
        out["prediction"] = np.asarray(pred, dtype=np.float64)
    return out


def summary_line(table: pd.DataFrame, bundle: dict[str, Any]) -> str:
    """One line about a prediction table: items per class, or the range of a regression's values.

    Args:
        table: as returned by :func:`predict_store` (a ``prediction`` column).
        bundle: the model bundle (task, class names in training order, label).

    Returns:
        e.g. ``predicted classes: high 12, low 8`` (every class of the model, in its order) or
        ``predicted arousal: mean 0.12, range -1.3 to 2.05``.
    """
    from embedx.text import number

    pred = table["prediction"]
    if bundle["task"] != CLASSIFICATION:
        return (f"predicted {bundle.get('label') or 'value'}: mean {number(pred.mean())}, "
                f"range {number(pred.min())} to {number(pred.max())}")
    counts = pred.astype(str).value_counts()
    classes = [str(c) for c in bundle.get("classes") or counts.index]
    return "predicted classes: " + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in classes)


def predict_store(
    bundle: dict[str, Any],
    store: str | os.PathLike[str],
    *,
    group: str | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Predict every done item of a feature store.

    Args:
        bundle: a model bundle.
        store: an HDF5 store with the model's feature sets.
        group: group column for speaker normalisation (default: the column used in training).
        labels_csv: CSV joined on id/path that can supply the group column.

    Returns:
        ``(predictions, skipped)``: a table with id, path, prediction and probabilities, and
        the number of items not predicted because they are not done.

    Raises:
        StoreError: missing set/layer/pooling, or a set of another model.
        DataError: NaN features, or no group column for a speaker-normalised model.
    """
    from embedx.probing.columns import join_labels
    from embedx.store import StoreReader

    with StoreReader(store) as reader:
        X, rows = features_for(bundle, reader)
        items = reader.items
        num_items = reader.num_items
    if len(rows) == 0:
        raise DataError(f"no item of {store} has all the features the model needs (none done)")
    items = join_labels(items, labels_csv).iloc[rows]
    groups = None
    if bundle.get("speaker_norm"):
        column = group or bundle.get("group")
        if column is None or column not in items.columns:
            raise DataError(
                f"the model was trained with speaker normalisation and needs a group column "
                f"({column!r} is not among {', '.join(map(str, items.columns))}); give ",
                Param("group", "COLUMN"), " or ", Param("labels", "CSV")
            )
        if items[column].isna().any():
            raise DataError(f"group column {column!r} has missing values")
        groups = items[column].astype(str).to_numpy()
    table = predict(bundle, X, groups)
    table.insert(0, "path", items["path"].astype(str).to_numpy())
    table.insert(0, "id", items["id"].astype(str).to_numpy())
    return table, int(num_items - len(rows))


def predict_audio(
    bundle: dict[str, Any],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    workdir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    group: str | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Extract the model's features from audio with the stored configs, then predict.

    Args:
        bundle: a model bundle.
        inputs: audio folders, files or lists (as ``embedx extract`` takes them).
        workdir: folder for the temporary store (default: a temporary directory, removed).
        overrides: run options for every extraction (device, workers, progress, ...).
        group: group column (speaker normalisation), e.g. from a manifest CSV input.
        labels_csv: CSV joined on id/path that can supply the group column.
        log: where to send progress notes.

    Returns:
        As :func:`predict_store`.

    Raises:
        EmbedxError: from the extraction (bad inputs, model) or the prediction.
    """
    from embedx.extraction.config import config_from_spec
    from embedx.extraction.extract import extract

    def run(folder: Path) -> tuple[pd.DataFrame, int]:
        store = folder / "features.h5"
        for name, info in bundle["feature_sets"].items():
            if not info.get("config"):
                raise ConfigError(
                    f"the model's feature set {name!r} has no stored extraction config; extract "
                    "the features with embedx extract and predict on the .h5 file"
                )
            config = config_from_spec(dict(info["config"]), **(overrides or {}))
            config.overwrite = False
            extract([str(p) for p in inputs], store, config, log=log)
        return predict_store(bundle, store, group=group, labels_csv=labels_csv)

    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return run(Path(workdir))
    with tempfile.TemporaryDirectory(prefix="embedx-predict-") as tmp:
        return run(Path(tmp))
