"""Time-aligned labels for frame-level probing: reading them, and placing frames in time.

Alignments say which label holds over which stretch of an item (a phone, a word, a speaker,
an event). :func:`read_alignments` reads them from

- Praat TextGrids (``.TextGrid``), one per item: the file's path relative to the alignments
  folder, without its extension, names the item (``spk00/a.TextGrid`` aligns ``spk00/a.wav``;
  a bare stem ``a`` does too when only one item has it). One interval tier is read.
- CTM (``.ctm``): ``utt channel start duration word [conf]`` per line, the word being the label.
- RTTM (``.rttm``): ``SPEAKER file chan start dur <NA> <NA> name <NA> <NA>``, the speaker name
  being the label; other record types are skipped.
- CSV (``.csv``): columns ``id`` (or ``path``), ``start``, ``end`` (seconds) and ``label``.

CTM, RTTM and CSV records name their item themselves (its id, path, or their stem), so one file
can hold every item, or a folder can hold one file per item (or any split). Empty labels mean
"no label" and are dropped. Everything is checked before any fitting: a malformed line, an id
that matches no item, overlapping segments of one item, or a segment outside its item is an
error naming the file and line; items without any segment are listed, never dropped silently.

:func:`frame_centres` gives the time of every stored frame (see
:mod:`embedx.backends.framing` for each family's convention) and :func:`frame_labels` the label
of the segment covering each frame's centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.backends.framing import FrameTiming, stored_timing
from embedx.errors import DataError, Param, one_line
from embedx.text import plural

__all__ = [
    "ALIGNMENT_FORMATS",
    "END_TOLERANCE",
    "Alignments",
    "frame_centres",
    "frame_labels",
    "frame_timing",
    "read_alignments",
]

#: file ending (lower case) -> format name; ``fmt="auto"`` picks the format from it
ALIGNMENT_FORMATS: dict[str, str] = {".textgrid": "textgrid", ".ctm": "ctm", ".rttm": "rttm",
                                      ".csv": "csv"}
#: seconds a segment may end after its item's duration (TextGrids round their end times)
END_TOLERANCE = 0.05
#: RTTM record types (NIST RT-09); only SPEAKER turns carry labels, the rest are skipped
_RTTM_TYPES = frozenset({"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX",
                         "NON-SPEECH", "FILLER", "EDIT", "IP", "CB", "A/P", "SU", "SPEAKER",
                         "SPKR-INFO"})
_SHOWN = 3  # unknown ids named in a message


@dataclass(frozen=True)
class Alignments:
    """Segments of the store's items, checked and sorted.

    Attributes:
        segments: columns ``item`` (int, row index into the store's items), ``start`` and
            ``end`` (float seconds, ``start < end``) and ``label`` (str); sorted by item and
            start, no two segments of an item overlap.
        unaligned: ids of the store's items that have no segment at all.
        source: what was read, for the report (``"12 TextGrid files, tier 'phones'"``).
    """

    segments: pd.DataFrame
    unaligned: tuple[str, ...]
    source: str

    def segments_of(self, item: int) -> pd.DataFrame:
        """The segments of one item (row ``item`` of the store's items), sorted by start.

        Args:
            item: row index into the store's items.

        Returns:
            The rows of :attr:`segments` of that item (empty when it is unaligned).
        """
        column = self.segments["item"].to_numpy()
        lo, hi = np.searchsorted(column, [item, item + 1])
        return self.segments.iloc[lo:hi]


# ---------------------------------------------------------------------------------------------
# frames in time
# ---------------------------------------------------------------------------------------------


def frame_timing(spec: Any) -> FrameTiming:
    """Where the frames of a stored feature set lie in time.

    Args:
        spec: the feature set's :class:`~embedx.store.FeatureSetSpec` (its ``backend``,
            ``frame_rate`` and ``attrs``).

    Returns:
        The :class:`~embedx.backends.framing.FrameTiming`: stored with the set, derived from
        the attrs of a store written before it was recorded, or assumed from ``frame_rate``.

    Raises:
        DataError: the set has no frame rate (one vector per item).
    """
    if spec.frame_rate is None:
        raise DataError(f"feature set {spec.name!r} has one vector per item (no frame rate); "
                        "frame-level alignments need frame-level features")
    return stored_timing(spec.backend, spec.frame_rate, spec.attrs)


def frame_centres(spec: Any, num_frames: int) -> np.ndarray:
    """Centre of every frame of an item, in seconds from the item's start.

    Args:
        spec: the feature set's :class:`~embedx.store.FeatureSetSpec`.
        num_frames: the item's stored frames.

    Returns:
        ``(num_frames,)`` float64 ``offset + i * hop + window / 2`` (see :func:`frame_timing`).

    Raises:
        DataError: the set has no frame rate.
    """
    return frame_timing(spec).centres(num_frames)


def frame_labels(segments_of_item: pd.DataFrame, centres: np.ndarray) -> np.ndarray:
    """The label of every frame: that of the segment whose ``[start, end)`` holds its centre.

    Args:
        segments_of_item: one item's segments (``start``, ``end``, ``label``), sorted by start
            and not overlapping, as :class:`Alignments` holds them.
        centres: ``(num_frames,)`` frame centres in seconds (:func:`frame_centres`).

    Returns:
        ``(num_frames,)`` object array of labels, ``None`` where no segment covers the centre.
    """
    centres = np.asarray(centres, dtype=np.float64)
    out = np.full(centres.shape[0], None, dtype=object)
    if len(segments_of_item) == 0:
        return out
    starts = segments_of_item["start"].to_numpy(dtype=np.float64)
    ends = segments_of_item["end"].to_numpy(dtype=np.float64)
    labels = segments_of_item["label"].to_numpy(dtype=object)
    # the last segment starting at or before each centre; it covers the centre if it ends after
    k = np.searchsorted(starts, centres, side="right") - 1
    inside = (k >= 0) & (centres < ends[np.maximum(k, 0)])
    out[inside] = labels[k[inside]]
    return out


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """One segment as read, before it is matched to an item."""

    key: str  # what names the item: an id, a path or a stem
    start: float
    end: float
    label: str
    where: str  # "FILE, line N" or "FILE, tier 'T'", for messages


def read_alignments(path: str | Path, items: pd.DataFrame, *, tier: str | None = None,
                    fmt: str = "auto") -> Alignments:
    """Read time-aligned labels of a store's items and check them against the items.

    Args:
        path: one alignment file, or a folder of them (searched recursively).
        items: the store's item table (``id``, ``path``, ``duration``, ...; row i = item i).
        tier: the TextGrid interval tier to read; may be left out when every TextGrid has
            exactly one interval tier.
        fmt: ``"auto"`` (from each file's ending) or one of ``textgrid``, ``ctm``, ``rttm``,
            ``csv``.

    Returns:
        The :class:`Alignments`.

    Raises:
        DataError: a missing path or unknown format, no alignment files, a malformed file or
            line, a missing or ambiguous tier, ids that match no item (or several), overlapping
            segments, or a segment outside its item.
    """
    root = Path(path)
    if fmt != "auto" and fmt not in ALIGNMENT_FORMATS.values():
        raise DataError(f"unknown alignment format {fmt!r}; accepted: auto, "
                        f"{', '.join(ALIGNMENT_FORMATS.values())}")
    if not root.exists():
        raise DataError(f"alignments {str(root)!r} do not exist")
    files = _alignment_files(root, fmt)
    records: list[_Record] = []
    tiers_used: set[str] = set()
    for file, kind in files:
        if kind == "textgrid":
            key = (file.relative_to(root) if root.is_dir() else Path(file.name)).with_suffix("")
            got, used = _read_textgrid(file, key.as_posix(), tier)
            records.extend(got)
            tiers_used.add(used)
        else:
            records.extend(_PARSERS[kind](file))
    segments = _match(records, items, root)
    aligned = set(segments["item"].tolist())
    ids = items["id"].astype(str).tolist()
    unaligned = tuple(ids[i] for i in range(len(ids)) if i not in aligned)
    return Alignments(segments=segments, unaligned=unaligned, source=_source(files, tiers_used))


def _alignment_files(root: Path, fmt: str) -> list[tuple[Path, str]]:
    """The files to read, with their format: ``root`` itself, or every alignment file under it."""
    if root.is_file():
        kind = fmt if fmt != "auto" else ALIGNMENT_FORMATS.get(root.suffix.lower())
        if kind is None:
            raise DataError(f"alignments {str(root)!r}: cannot tell the format from the ending "
                            f"{root.suffix!r}; accepted endings: .TextGrid, .ctm, .rttm, .csv")
        return [(root, kind)]
    found = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in ALIGNMENT_FORMATS)
    if fmt != "auto":
        found = [p for p in found if ALIGNMENT_FORMATS[p.suffix.lower()] == fmt]
    kinds = sorted({ALIGNMENT_FORMATS[p.suffix.lower()] for p in found})
    if not found:
        what = "alignment files (.TextGrid, .ctm, .rttm, .csv)" if fmt == "auto" else f"{fmt} files"
        raise DataError(f"alignments folder {str(root)!r} holds no {what}")
    if len(kinds) > 1:
        raise DataError(f"alignments folder {str(root)!r} holds files of several formats "
                        f"({', '.join(kinds)}); keep one format per folder or name the format")
    return [(p, kinds[0]) for p in found]


def _source(files: list[tuple[Path, str]], tiers: set[str]) -> str:
    name = {"textgrid": "TextGrid", "ctm": "CTM", "rttm": "RTTM", "csv": "CSV"}[files[0][1]]
    text = plural(len(files), f"{name} file")
    if tiers:
        text += (f", tier {next(iter(tiers))!r}" if len(tiers) == 1
                 else f", tiers {', '.join(map(repr, sorted(tiers)))}")
    return text


def _bad(where: str, what: str) -> DataError:
    return DataError(f"alignments {where}: {what}")


def _number(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(where, f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(where, f"{name} {text!r} is not a finite number")
    return value


def _lines(file: Path) -> Iterable[tuple[int, list[str]]]:
    """Numbered, split lines of a text file, without blank and comment (``;;``, ``#``) lines."""
    try:
        with open(file, encoding="utf-8") as fh:
            for n, raw in enumerate(fh, 1):
                line = raw.strip()
                if line and not line.startswith((";;", "#")):
                    yield n, line.split()
    except UnicodeDecodeError as exc:
        raise _bad(str(file), f"not UTF-8 text ({one_line(exc)})") from None


def _read_ctm(file: Path) -> list[_Record]:
    """CTM: ``utt channel start duration word [conf]``."""
    out = []
    for n, parts in _lines(file):
        where = f"{file}, line {n}"
        if len(parts) not in (5, 6):
            raise _bad(where, f"expected 'utt channel start duration word [conf]', got "
                       f"{plural(len(parts), 'field')}")
        start = _number(parts[2], where, "start")
        out.append(_Record(parts[0], start, start + _number(parts[3], where, "duration"),
                           parts[4], where))
    return out


def _read_rttm(file: Path) -> list[_Record]:
    """RTTM: ``SPEAKER file chan start dur <NA> <NA> name <NA> <NA>``; other types skipped."""
    out = []
    for n, parts in _lines(file):
        where = f"{file}, line {n}"
        if parts[0] not in _RTTM_TYPES:
            raise _bad(where, f"unknown RTTM record type {parts[0]!r}; expected SPEAKER "
                       "(or another NIST RTTM type, which is skipped)")
        if parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise _bad(where, "expected 'SPEAKER file chan start dur <NA> <NA> name <NA> <NA>', "
                       f"got {plural(len(parts), 'field')}")
        start = _number(parts[3], where, "start")
        out.append(_Record(parts[1], start, start + _number(parts[4], where, "duration"),
                           parts[7], where))
    return out


def _read_csv(file: Path) -> list[_Record]:
    """CSV: ``id`` (or ``path``), ``start``, ``end``, ``label``; other columns ignored."""
    try:
        table = pd.read_csv(file, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # pandas' parser errors name the line: keep them
        raise _bad(str(file), f"not a readable CSV ({one_line(exc)})") from None
    key = "id" if "id" in table.columns else "path" if "path" in table.columns else None
    missing = [c for c in ("start", "end", "label") if c not in table.columns]
    if key is None or missing:
        need = ([] if key else ["id (or path)"]) + missing
        raise _bad(str(file), f"missing column {', '.join(need)}; columns: "
                   f"{', '.join(map(str, table.columns))}")
    out = []
    for n, row in enumerate(table[[key, "start", "end", "label"]].itertuples(index=False), 2):
        where = f"{file}, line {n}"  # +1 for the header, +1 one-based
        name, start, end, label = (str(v).strip() for v in row)
        if not name:
            raise _bad(where, f"empty {key}")
        out.append(_Record(name, _number(start, where, "start"), _number(end, where, "end"),
                           label, where))
    return out


def _read_textgrid(file: Path, key: str, tier: str | None) -> tuple[list[_Record], str]:
    """The labelled intervals of one tier of a TextGrid, keyed by ``key``."""
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(file), includeEmptyIntervals=False,
                                     reportingMode="silence")
    except Exception as exc:  # praatio raises many types on malformed text
        raise _bad(str(file), f"not a readable TextGrid ({one_line(exc, first_line=True)})") from None
    names = list(grid.tierNames)
    intervals = [n for n in names if grid.getTier(n).tierType == textgrid.INTERVAL_TIER]
    listed = ", ".join(repr(n) for n in names) or "none"
    if tier is None:
        if len(intervals) != 1:
            raise DataError(f"alignments {file}: {plural(len(intervals), 'interval tier')} "
                            f"(tiers: {listed}); name the tier to read with ", Param("tier", "NAME"))
        tier = intervals[0]
    elif tier not in names:
        raise DataError(f"alignments {file}: no tier {tier!r}; tiers: {listed}")
    elif tier not in intervals:
        raise DataError(f"alignments {file}: tier {tier!r} is a point tier; interval tiers: "
                        f"{', '.join(map(repr, intervals)) or 'none'}")
    where = f"{file}, tier {tier!r}"
    out = [_Record(key, float(e.start), float(e.end), e.label.strip(), where)
           for e in grid.getTier(tier).entries]
    return out, tier


_PARSERS = {"ctm": _read_ctm, "rttm": _read_rttm, "csv": _read_csv}


# ---------------------------------------------------------------------------------------------
# matching and checking
# ---------------------------------------------------------------------------------------------


class _ItemKeys:
    """Finds the item a record names: its id, its path, either without the extension, or the
    bare file name or stem when only one item has it (a stem of several items is refused)."""

    def __init__(self, items: pd.DataFrame) -> None:
        ids = [str(v).replace("\\", "/") for v in items["id"]]
        paths = [str(v).replace("\\", "/") for v in items["path"]] if "path" in items else ids
        self.ids = ids
        ways = (
            lambda s: s,
            lambda s: _drop_suffix(s),
            lambda s: s.rsplit("/", 1)[-1],
            lambda s: _drop_suffix(s.rsplit("/", 1)[-1]),
        )
        # most specific first: a full id beats a stem shared by several items
        self.tables: list[dict[str, list[int]]] = []
        for way in ways:
            for column in (ids, paths):
                table: dict[str, list[int]] = {}
                for i, value in enumerate(column):
                    hits = table.setdefault(way(value), [])
                    if i not in hits:
                        hits.append(i)
                self.tables.append(table)

    def find(self, key: str, where: str) -> int | None:
        key = key.replace("\\", "/")
        for table in self.tables:
            hits = table.get(key)
            if hits is None:
                continue
            if len(hits) > 1:
                shown = ", ".join(repr(self.ids[i]) for i in hits[:_SHOWN])
                raise _bad(where, f"{key!r} matches {len(hits)} store items ({shown}); name the "
                           "item by its id")
            return hits[0]
        return None


def _drop_suffix(name: str) -> str:
    head, _, tail = name.rpartition("/")
    stem = tail.rsplit(".", 1)[0] if "." in tail.lstrip(".") else tail
    return f"{head}/{stem}" if head else stem


def _match(records: list[_Record], items: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Records -> the checked, sorted segments table (empty labels dropped)."""
    keys = _ItemKeys(items)
    index, unknown = [], {}
    for r in records:
        i = keys.find(r.key, r.where)
        if i is None:
            unknown.setdefault(r.key, r.where)
        index.append(i)
    if unknown:
        first, where = next(iter(unknown.items()))
        shown = ", ".join(repr(k) for k in list(unknown)[:_SHOWN])
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        example = f" (store ids look like {keys.ids[0]!r})" if keys.ids else ""
        raise DataError(f"alignments {root}: {plural(len(unknown), 'id')} "
                        f"{'matches' if len(unknown) == 1 else 'match'} no store item: "
                        f"{shown}{more}; first at {where}{example}")
    durations = pd.to_numeric(items["duration"], errors="coerce").to_numpy(dtype=np.float64) \
        if "duration" in items else np.full(len(items), np.nan)
    kept = [(i, r) for i, r in zip(index, records, strict=True) if r.label]
    for i, r in kept:
        _check_range(r, keys.ids[i], durations[i])
    kept.sort(key=lambda t: (t[0], t[1].start, t[1].end))
    for (i, a), (j, b) in zip(kept, kept[1:], strict=False):
        if i == j and b.start < a.end:
            raise _bad(b.where, f"segment {b.start:.3f}-{b.end:.3f} s {b.label!r} of item "
                       f"{keys.ids[i]!r} overlaps {a.start:.3f}-{a.end:.3f} s {a.label!r} "
                       f"({a.where}); frame labels need segments that do not overlap")
    # (num_segments,) columns, sorted by item then start
    return pd.DataFrame({
        "item": np.array([i for i, _ in kept], dtype=np.int64),
        "start": np.array([r.start for _, r in kept], dtype=np.float64),
        "end": np.array([r.end for _, r in kept], dtype=np.float64),
        "label": pd.Series([r.label for _, r in kept], dtype=object),
    })


def _check_range(r: _Record, item_id: str, duration: float) -> None:
    """A segment must start at or after 0, end after its start and not after its item."""
    if r.start < 0:
        raise _bad(r.where, f"segment {r.label!r} of item {item_id!r} starts before 0 "
                   f"({r.start:g} s)")
    if r.end <= r.start:
        raise _bad(r.where, f"segment {r.label!r} of item {item_id!r} ends at or before its "
                   f"start ({r.start:g} s to {r.end:g} s)")
    if math.isfinite(duration) and r.end > duration + END_TOLERANCE:
        raise _bad(r.where, f"segment {r.label!r} of item {item_id!r} ends at {r.end:.3f} s, "
                   f"after the item's end ({duration:.3f} s)")
