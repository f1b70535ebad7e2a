"""Inputs -> the probed item table: every item with its duration, rate and length from its header.

Reading every file's header is the first thing a run does; a run over several devices or a
cluster does it once, in the process that starts the shards, and hands the table to each of
them (:func:`embedx.extraction.extract.extract`'s ``scanned``), so N shards do not read N
times every header of the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import AudioError
from embedx.extraction.audio import AudioInfo, probe
from embedx.extraction.manifest import build_items, find_manifest

__all__ = ["Scanned", "probe_items", "scan_items"]

#: the full item table (``probe_items``' columns) and item index -> header error
Scanned = tuple[pd.DataFrame, dict[int, str]]


def probe_items(items: pd.DataFrame) -> Scanned:
    """Add ``duration``, ``sample_rate`` and ``num_samples`` from the files' headers.

    Args:
        items: table with a ``path`` column.

    Returns:
        The table with the three columns after ``path`` (NaN/0 for unreadable files), and
        item index -> reason for every file whose header could not be read.
    """
    infos: list[AudioInfo | None] = []
    errors: dict[int, str] = {}
    for i, path in enumerate(items["path"]):
        try:
            infos.append(probe(path))
        except AudioError as exc:
            infos.append(None)
            errors[i] = str(exc)
    out = items[["id", "path"]].copy()
    out["duration"] = np.array([x.duration if x else np.nan for x in infos], dtype=np.float32)
    out["sample_rate"] = np.array([x.sample_rate if x else 0 for x in infos], dtype=np.int64)
    out["num_samples"] = np.array([x.num_samples if x else 0 for x in infos], dtype=np.int64)
    rest = items.drop(columns=["id", "path"])
    return pd.concat([out, rest], axis=1), errors


def scan_items(inputs: Sequence[str | Path], config: Any, note: Callable[[str], None]) -> Scanned:
    """The items of a run (manifest or folders) with their headers read.

    Args:
        inputs: the run's folders, files or lists.
        config: its :class:`~embedx.extraction.config.ExtractConfig` (``manifest``, ``path_column``).
        note: where to say which manifest was found.

    Returns:
        See :func:`probe_items`.

    Raises:
        InputError: no inputs, no audio, or a bad manifest.
    """
    manifest = config.manifest
    if manifest is None and (manifest := find_manifest(inputs)) is not None:
        note(f"items and their columns from {manifest} (found in the input folder; --manifest "
             "names another CSV)")
    return probe_items(build_items(inputs, manifest, config.path_column))
