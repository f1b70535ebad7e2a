"""Inputs -> items: a folder (recursive), audio files, a file list, or a CSV manifest.

An item is one row of a table with a stable ``id`` (the path relative to the input root, or
the manifest's ``id`` column), the ``path`` to decode, and every extra manifest column (label,
speaker, split, ...). The row order is fixed: sorted ids for folders, file order for lists and
manifests. That order is the order of ``/items`` in the store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from embedx.errors import InputError, one_line
from embedx.extraction.audio import AUDIO_EXTENSIONS

#: columns the extractor fills in itself; a manifest column of that name is kept as ``<name>_manifest``
RESERVED_COLUMNS = ("id", "path", "duration", "sample_rate", "num_samples")
#: manifest columns tried, in order, when no path column is named
PATH_COLUMN_CANDIDATES = ("path", "file", "filename", "file_path", "filepath", "audio", "wav")
#: file endings read as a list of paths, one per line
LIST_EXTENSIONS = ("txt", "lst", "list", "scp")


def _is_audio(p: Path) -> bool:
    return p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


def _scan(folder: Path) -> list[Path]:
    # os.walk with followlinks so corpora assembled from symlinked folders are found
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_audio(Path(f)))
    return sorted(found)


def _read_list(list_file: Path) -> list[Path]:
    base = list_file.parent
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            paths.append(p if p.is_absolute() else base / p)
    return paths


def _common_root(paths: Sequence[Path]) -> Path:
    parents = [os.path.abspath(p.parent) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def _rel_id(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def _check_unique(items: pd.DataFrame) -> pd.DataFrame:
    dup = items["id"][items["id"].duplicated()]
    if len(dup):
        raise InputError(f"{len(dup)} duplicate item ids, first {dup.iloc[0]!r}; ids must be unique")
    return items.reset_index(drop=True)


def from_paths(inputs: Sequence[str | Path]) -> pd.DataFrame:
    """Items from folders (scanned recursively), audio files and list files.

    Args:
        inputs: folders, audio files, or ``.txt/.lst/.scp`` files listing one path per line.

    Returns:
        DataFrame with columns ``id`` and ``path``; ids are posix paths relative to the folder
        (one folder given) or to the common parent of all inputs.

    Raises:
        InputError: an input does not exist, or no audio file was found.
    """
    if not inputs:
        raise InputError("no input given; pass audio folders, files, a file list or --manifest CSV")
    roots: list[Path] = []
    files: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            roots.append(p)
            files.extend(_scan(p))
        elif p.suffix.lower().lstrip(".") in LIST_EXTENSIONS and p.is_file():
            listed = _read_list(p)
            files.extend(listed)
            roots.append(_common_root(listed) if listed else p.parent)
        elif p.exists() or p.is_symlink():
            # an explicitly named file is taken whatever its ending; decoding decides
            roots.append(p.parent)
            files.append(p)
        else:
            raise InputError(f"input {str(raw)!r} does not exist")
    if not files:
        exts = ", ".join(AUDIO_EXTENSIONS)
        raise InputError(f"no audio files found in {', '.join(map(str, inputs))} (looked for: {exts})")
    root = roots[0] if len(roots) == 1 else Path(os.path.commonpath([os.path.abspath(r) for r in roots]))
    items = pd.DataFrame({"id": [_rel_id(f, root) for f in files], "path": [str(f) for f in files]})
    return _check_unique(items)


def _delimiter(path: Path) -> str:
    # csv.Sniffer guesses letters as delimiters on one-column files; only consider real ones
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    for sep in ("\t", ";", "|"):
        if sep in header and "," not in header:
            return sep
    return ","


def from_manifest(
    manifest: str | Path,
    root: str | Path | None = None,
    path_column: str | None = None,
) -> pd.DataFrame:
    """Items from a CSV with a path column and any other columns.

    Relative paths are taken relative to ``root`` when given, else to the CSV's folder. The
    ``id`` is the manifest's ``id`` column if it has one, else the path as written relative to
    that root. Rows keep the manifest's order; a row whose file is missing stays an item (the
    extractor records it as failed).

    Args:
        manifest: CSV file, UTF-8; comma, tab, semicolon or pipe separated.
        root: folder that relative paths are relative to.
        path_column: name of the path column; default the first of
            :data:`PATH_COLUMN_CANDIDATES` present.

    Returns:
        DataFrame with ``id``, ``path`` and the other manifest columns.

    Raises:
        InputError: unreadable CSV, no path column, empty paths, or duplicate ids.
    """
    mpath = Path(manifest)
    if not mpath.is_file():
        raise InputError(f"manifest {str(manifest)!r} does not exist")
    try:
        table = pd.read_csv(mpath, sep=_delimiter(mpath), encoding="utf-8")
    except Exception as exc:
        raise InputError(f"cannot read manifest {str(manifest)!r}: {one_line(exc)}") from None
    columns = list(table.columns)
    if path_column is None:
        lower = {c.lower(): c for c in columns}
        path_column = next((lower[c] for c in PATH_COLUMN_CANDIDATES if c in lower), None)
        if path_column is None:
            raise InputError(
                f"manifest {mpath.name} has no path column; columns: {', '.join(map(str, columns))}; "
                f"name one with --path-column (default: one of {', '.join(PATH_COLUMN_CANDIDATES)})"
            )
    elif path_column not in table.columns:
        raise InputError(f"--path-column {path_column!r} not in manifest; columns: {', '.join(map(str, columns))}")
    if table.empty:
        raise InputError(f"manifest {str(manifest)!r} has no rows")
    raw = table[path_column]
    if raw.isna().any():
        row = int(raw.isna().to_numpy().nonzero()[0][0]) + 2  # +1 header, +1 one-based
        raise InputError(f"manifest {mpath.name} has an empty {path_column!r} on line {row}")
    base = Path(root) if root is not None else mpath.parent
    given = [Path(str(v)) for v in raw]
    paths = [p if p.is_absolute() else base / p for p in given]
    if "id" in table.columns and path_column != "id":
        ids = table["id"].astype(str)
    else:
        ids = pd.Series([p.as_posix() if not p.is_absolute() else _rel_id(p, base) for p in given])
    extra = table.drop(columns=[c for c in (path_column, "id") if c in table.columns])
    extra = extra.rename(columns={c: f"{c}_manifest" for c in extra.columns if c in RESERVED_COLUMNS})
    items = pd.concat(
        [pd.DataFrame({"id": ids.to_numpy(), "path": [str(p) for p in paths]}), extra.reset_index(drop=True)],
        axis=1,
    )
    return _check_unique(items)


#: a CSV with this name at the root of the one input folder is used as its manifest when no
#: --manifest is given, so `embedx extract --model M wavs/` stores the corpus's labels too
DEFAULT_MANIFEST = "labels.csv"


def find_manifest(inputs: Sequence[str | Path]) -> Path | None:
    """The folder's own manifest: ``<folder>/labels.csv`` when ``inputs`` is one folder having it.

    Args:
        inputs: the extraction's inputs.

    Returns:
        The CSV's path, or ``None``.
    """
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        return None
    candidate = Path(inputs[0]) / DEFAULT_MANIFEST
    return candidate if candidate.is_file() else None


def build_items(
    inputs: Sequence[str | Path] = (),
    manifest: str | Path | None = None,
    path_column: str | None = None,
) -> pd.DataFrame:
    """Resolve the CLI's inputs into the item table.

    Args:
        inputs: folders/files/lists; with ``manifest``, at most one folder that relative
            manifest paths are relative to.
        manifest: optional CSV with a path column and label/group columns.
        path_column: the manifest's path column.

    Returns:
        DataFrame with ``id``, ``path`` and extra columns, in the items' fixed order.

    Raises:
        InputError: see :func:`from_paths` and :func:`from_manifest`.
    """
    if manifest is not None:
        if len(inputs) > 1:
            raise InputError("with --manifest give at most one folder (the root of its relative paths)")
        root = None
        if inputs:
            root = Path(inputs[0])
            if not root.is_dir():
                raise InputError(f"with --manifest the input must be a folder; {str(root)!r} is not")
        return from_manifest(manifest, root=root, path_column=path_column)
    return from_paths(inputs)
