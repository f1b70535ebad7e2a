"""The items' columns a study reads: labels, groups, splits, domains and subgroups.

The store's items, optionally joined with a ``--labels`` CSV (:func:`join_labels`), are where
every column comes from: the label, the group (speaker) column found automatically
(:func:`speaker_column`), and the columns named by ``--domain`` and ``--by``
(:func:`item_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedx.errors import DataError, Param, one_line

if TYPE_CHECKING:
    from embedx.probing.data import Dataset

__all__ = ["MISSING", "SPEAKER_COLUMNS", "column", "item_columns", "join_labels", "label_text", "speaker_column"]


def label_text(value: Any) -> str:
    """A label or column value as text (``1.0`` reads ``"1"``, as the labels' class names do)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def join_labels(items: pd.DataFrame, labels_csv: str | Path | None) -> pd.DataFrame:
    """Add the columns of a labels CSV to the store's items.

    The CSV is joined on ``id`` when it has an ``id`` column, else on ``path`` (or, when no
    path matches, its paths against the ids, which are relative paths); its columns replace
    item columns of the same name. Items absent from the CSV get missing values.

    Args:
        items: the store's items.
        labels_csv: path of the CSV, or ``None``.

    Returns:
        The items, same rows in the same order.

    Raises:
        DataError: unreadable CSV, no id/path column, or duplicate keys.
    """
    if labels_csv is None:
        return items
    path = Path(labels_csv)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"labels file {str(path)!r} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {str(path)!r}: {one_line(exc, first_line=True)}") from None
    key = "id" if "id" in table.columns else "path" if "path" in table.columns else None
    if key is None:
        raise DataError(
            f"labels file {str(path)!r} needs an 'id' or 'path' column to join on; "
            f"columns: {', '.join(map(str, table.columns))}"
        )
    table[key] = table[key].astype(str)
    dup = table[key][table[key].duplicated()]
    if len(dup):
        raise DataError(f"labels file {str(path)!r} has duplicate {key} {dup.iloc[0]!r}")
    table = table.set_index(key)
    keys = items[key].astype(str)
    if key == "path" and not keys.isin(table.index).any():
        keys = items["id"].astype(str)  # a CSV of relative paths matches the ids
    joined = items.drop(columns=[c for c in table.columns if c in items.columns])
    for c in table.columns:
        joined[c] = table[c].reindex(keys).to_numpy()
    if len(table.columns) and not keys.isin(table.index).any():
        raise DataError(
            f"no item of the store matches the {key} column of {str(path)!r} "
            f"(first store {key}: {keys.iloc[0]!r}, first CSV {key}: {table.index[0]!r})"
        )
    return joined


#: group columns :func:`embedx.probing.data.load_dataset` uses when none is named: folds are then speaker-independent
SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk")


def column(items: pd.DataFrame, name: str, what: str) -> pd.Series:
    """The items' column ``name`` (``what``: label, group or split, for the message).

    Raises:
        DataError: no such column, naming the available ones (and, for the label, how to add one).
    """
    if name not in items.columns:
        available = ", ".join(map(str, items.columns))
        if what == "label":
            raise DataError(
                f"no label column {name!r} among the items' columns ({available}); name one with ",
                Param("label", "COLUMN"), ", join a CSV of id (or path) and labels with ", Param("labels", "labels.csv"),
                ", or store the labels at extraction (embedx extract with ", Param("manifest", "labels.csv"), ")"
            )
        raise DataError(f"unknown {what} column {name!r}; available: {available}")
    return items[name]


def item_columns(dataset: Dataset, names: Sequence[str], *, labels_csv: str | Path | None = None,
                 option: str = "by") -> dict[str, np.ndarray]:
    """Values of item columns for the items a study uses, as strings.

    Reads the store's items again (plus ``labels_csv``, joined as :func:`embedx.probing.data.load_dataset` joins
    it), so any column can name domains or subgroups without the study carrying every column.

    Args:
        dataset: the study's data (``rows`` selects its items).
        names: column names.
        labels_csv: the ``--labels`` CSV of the study, if any.
        option: the option that named the columns (its Python name), for messages.

    Returns:
        Column name -> ``(num_items,)`` str values; a missing value becomes ``"(missing)"``.

    Raises:
        DataError: a column the items do not have, naming the available columns.
    """
    from embedx.store import StoreReader

    with StoreReader(dataset.store) as reader:
        items = join_labels(reader.items, labels_csv)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in items.columns:
            available = ", ".join(map(str, items.columns))
            raise DataError(Param(option), f" {name!r}: no such item column; available: {available}")
        values = items[name].iloc[dataset.rows]
        out[name] = np.array([MISSING if pd.isna(v) else label_text(v) for v in values.tolist()], dtype=object)
    return out


#: the value of an item whose ``--by`` / ``--domain`` column is empty
MISSING = "(missing)"


def speaker_column(columns: Sequence[str]) -> str | None:
    """The first of :data:`SPEAKER_COLUMNS` (case-insensitive) among ``columns``, if any."""
    lower = {str(c).lower(): str(c) for c in columns}
    return next((lower[c] for c in SPEAKER_COLUMNS if c in lower), None)
