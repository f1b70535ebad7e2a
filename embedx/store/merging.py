"""Merging shards: :func:`merge` combines the files of one ``embedx extract --shard K/N`` split
into one store equal to an unsharded run.

It reads the shards through :class:`StoreReader` and writes through the public seam of
:class:`StoreWriter` (``write_item_columns``, ``set_merged_from``, ``create_feature_set`` with
``fill=False``, ``set_origin``, ``dataset``, ``mark_done``, ``append_failures``). The module is
named ``merging`` because ``embedx.store.merge`` is the function.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from embedx.errors import OVERWRITE, Param, StoreConflictError, StoreError
from embedx.store.reader import StoreReader
from embedx.store.spec import RUN_ATTR_PREFIX, FeatureSetSpec, ShardInfo
from embedx.store.writer import StoreWriter
from embedx.text import size as text_size

#: the extract option that writes shard files
SHARD = Param("shard", "K/N")

#: most bytes of one block :func:`merge` holds in memory while copying a dataset
MERGE_BLOCK_BYTES = 16 << 20
#: feature-set attrs that name the model: shards that disagree on them hold other models' data
_IDENTITY_ATTRS = ("model_id", "model", "revision", "commit", "commit_hash")


@dataclass
class MergeSummary:
    """What :func:`merge` did.

    Attributes:
        output: the merged store.
        inputs: the shard files, as given.
        num_items: items of the merged store.
        feature_sets: names of the merged feature sets.
        failed: failure rows carried over (all sets).
        seconds: wall-clock time of the merge.
        size_bytes: size of the merged file.
        notes: differences between shards that do not change the data (library versions,
            device); the merged file keeps shard 0's values. The ``run_*`` attrs (each shard's own
            run: throughput, finish time) differ in every merge and are kept from shard 0
            without a note.
    """

    output: Path
    inputs: list[Path]
    num_items: int
    feature_sets: list[str]
    failed: int
    seconds: float
    size_bytes: int
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        sets = ", ".join(self.feature_sets) or "none"
        return (
            f"merged {len(self.inputs)} shards into {self.output}: {self.num_items} items, "
            f"{len(self.feature_sets)} feature set(s) ({sets}), {self.failed} failed, "
            f"{text_size(self.size_bytes)} in {self.seconds:.1f} s"
        )


@dataclass
class _Shard:
    path: Path
    reader: StoreReader
    info: ShardInfo

    @property
    def where(self) -> str:
        return f"shard {self.info.label} ({self.path})"


def _open_shard(path: Path, stack: Any) -> _Shard:
    reader = stack.enter_context(StoreReader(path))
    info = reader.shard
    if info is None:
        what = "a merged store" if reader.merged_from is not None else "a whole store"
        raise StoreError(
            f"{path} is not a shard file ({what}, no shard_index attr); merge combines the "
            "files written by an extraction with ", SHARD
        )
    if len(info.indices) != reader.num_items:
        raise StoreError(
            f"{path} is damaged: {reader.num_items} items but {len(info.indices)} shard indices"
        )
    return _Shard(path, reader, info)


def _ensure_open_files(count: int) -> None:
    """Make room for ``count`` files open at once (a merge holds every shard open)."""
    import resource

    needed = count + 64  # the output, the interpreter's own files, libraries
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    raise StoreError(
        f"merging {count} shard files needs about {needed} open files but the hard limit is "
        f"{hard} (ulimit -Hn); raise it (ulimit -n {needed} as root or in limits.conf)"
    )


def _check_split(shards: list[_Shard]) -> list[_Shard]:
    """Same N and item list everywhere, every K exactly once; returns the shards by K."""
    first = shards[0]
    for s in shards[1:]:
        if s.info.count != first.info.count:
            raise StoreError(
                f"the files are shards of different splits: {first.path} is shard "
                f"{first.info.label} but {s.path} is shard {s.info.label}; merge the N files of "
                "one run with ", SHARD
            )
        if (s.info.total_items, s.info.items_digest) != (
            first.info.total_items,
            first.info.items_digest,
        ):
            raise StoreError(
                f"{s.where} was split from another item list than {first.where}: "
                f"{s.info.total_items} items (digest {s.info.items_digest[:12]}) vs "
                f"{first.info.total_items} items (digest {first.info.items_digest[:12]}); "
                "extract every shard from the same inputs"
            )
    n = first.info.count
    by_k: dict[int, list[_Shard]] = {}
    for s in shards:
        by_k.setdefault(s.info.index, []).append(s)
    for k in sorted(by_k):
        if len(by_k[k]) > 1:
            files = ", ".join(str(s.path) for s in by_k[k])
            raise StoreError(f"shard {k}/{n} is given {len(by_k[k])} times: {files}; give each once")
    missing = [k for k in range(n) if k not in by_k]
    if missing:
        names = ", ".join(f"{k}/{n}" for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        given = ", ".join(f"{k}/{n} {by_k[k][0].path}" for k in sorted(by_k)[:10])
        raise StoreError(
            f"shard{'s' if len(missing) > 1 else ''} {names} missing ({len(missing)} of {n}; "
            f"given: {given}{' ...' if len(by_k) > 10 else ''}); extract "
            f"{'them' if len(missing) > 1 else 'it'} first"
        )
    return [by_k[k][0] for k in range(n)]


def _merged_items(shards: list[_Shard]) -> dict[str, np.ndarray]:
    """Item columns (in stored column order) in global item order, checked against the digest."""
    from embedx.extraction.shard import items_digest

    first = shards[0]
    total = first.info.total_items
    owner = np.full(total, -1, dtype=np.int64)
    for s in shards:
        idx = s.info.indices
        if len(idx) and (idx.min() < 0 or idx.max() >= total):
            raise StoreError(f"{s.where} is damaged: shard indices outside 0..{total - 1}")
        clash = idx[owner[idx] >= 0]
        if len(clash):
            i = int(clash[0])
            raise StoreError(
                f"item {i} is in {shards[int(owner[i])].where} and in {s.where}; "
                "the files do not come from one split"
            )
        owner[idx] = s.info.index
    if (owner < 0).any():
        raise StoreError(
            f"{int((owner < 0).sum())} items are in no shard (first: item "
            f"{int(np.flatnonzero(owner < 0)[0])}); the shard files do not cover their item list"
        )
    cols = first.reader.item_columns()
    for s in shards[1:]:
        other = s.reader.item_columns()
        if other != cols:
            raise StoreError(
                f"item columns differ: {first.where} has {cols}, {s.where} has {other}; "
                "extract every shard with the same manifest"
            )
    columns: dict[str, np.ndarray] = {}
    for c in cols:
        parts = [s.reader.item_column(c) for s in shards]
        kinds = {p.dtype == object for p in parts}
        if len(kinds) > 1:
            raise StoreError(
                f"item column {c!r} holds text in some shards and numbers in others; "
                "extract every shard with the same manifest"
            )
        # a column with missing values in one shard only is float64 there (NaN), int64 or bool
        # elsewhere: promote, as the unsharded run stored it
        dtype = np.dtype(object) if kinds == {True} else np.result_type(*parts)
        column = np.empty(total, dtype=dtype)
        for s, part in zip(shards, parts, strict=True):
            column[s.info.indices] = part
        columns[c] = column
    if items_digest(columns["id"].tolist()) != first.info.items_digest:
        raise StoreError(
            "the shards' item ids in global order do not match the item list they were split "
            f"from (digest {first.info.items_digest[:12]}); the shard files are damaged"
        )
    return columns


def _merged_sets(shards: list[_Shard]) -> tuple[dict[str, FeatureSetSpec], list[str]]:
    """Specs of the feature sets (equal in every shard, every item done or failed) and notes."""
    first = shards[0]
    names = first.reader.feature_sets()
    for s in shards[1:]:
        other = s.reader.feature_sets()
        if other != names:
            name = sorted(set(names) ^ set(other))[0]
            has, lacks = (first, s) if name in names else (s, first)
            raise StoreError(
                f"feature set {name!r} is in {has.where} but not in {lacks.where}; "
                "extract it into every shard"
            )
    specs: dict[str, FeatureSetSpec] = {}
    notes: list[str] = []
    for name in names:
        spec = first.reader.spec(name)
        specs[name] = spec
        for s in shards[1:]:
            other = s.reader.spec(name)
            diffs = spec.differences(other)
            if diffs:
                a, b = f"shard {first.info.label}", f"shard {s.info.label}"
                lines = [
                    d.replace(": stored ", f": {a} ", 1).replace(" vs requested ", f" vs {b} ", 1)
                    for d in diffs
                ]
                raise StoreError(
                    f"feature set {name!r} was extracted with other settings in {s.where} than in "
                    f"{first.where}: " + "; ".join(lines)
                )
            for key in sorted(set(spec.attrs) | set(other.attrs)):
                x, y = spec.attrs.get(key), other.attrs.get(key)
                # every shard is a run of its own: its run_* attrs always differ (shard 0's are kept)
                if x == y or key.startswith(RUN_ATTR_PREFIX):
                    continue
                if key in _IDENTITY_ATTRS:
                    raise StoreError(
                        f"feature set {name!r}: {key} is {x!r} in {first.where} but {y!r} in "
                        f"{s.where}; the shards hold features of different models"
                    )
                notes.append(
                    f"feature set {name!r}: attr {key} is {x!r} in shard {first.info.label} but "
                    f"{y!r} in shard {s.info.label}; the merged file keeps {x!r}"
                )
        for s in shards:
            pending = ~s.reader.done(name)
            pending[s.reader.failed(name)["index"].to_numpy(dtype=np.int64)] = False
            count = int(pending.sum())
            if count:
                raise StoreError(
                    f"{s.where} has {count} items neither done nor failed in feature set "
                    f"{name!r}; finish it first (re-run the same command)"
                )
    return specs, notes


def _merge_rows(
    dst: h5py.Dataset,
    sources: list[h5py.Dataset],
    parts: list[np.ndarray],
    n: int,
    row_bytes: int,
    lead: tuple[int, ...] = (),
) -> None:
    """Copy rows (axis ``len(lead)``) of the shards' datasets into global order, block by block.

    ``sources[k][(*lead, j)]`` is the row of global item ``parts[k][j]``. A block of global
    rows ``[a, b)`` takes a contiguous slice of every shard (its indices are increasing), so
    each read is one contiguous read and each write one contiguous write.
    """
    rows = max(1, MERGE_BLOCK_BYTES // max(1, row_bytes))
    for a in range(0, n, rows):
        b = min(n, a + rows)
        buf = None
        for src, idx in zip(sources, parts, strict=True):
            lo, hi = (int(x) for x in np.searchsorted(idx, [a, b]))
            if hi > lo:
                block = src[(*lead, slice(lo, hi))]  # (hi - lo, *row shape)
                if buf is None:
                    buf = np.empty((b - a, *block.shape[1:]), dtype=block.dtype)
                buf[idx[lo:hi] - a] = block
        dst[(*lead, slice(a, b))] = buf  # (b - a, *row shape)


def _merge_frames(
    dst: h5py.Dataset,
    sources: list[h5py.Dataset],
    parts: list[np.ndarray],
    part_offsets: list[np.ndarray],
    offsets: np.ndarray,
    row_bytes: int,
) -> None:
    """Copy the shards' frames/data into global item order, a block of items at a time.

    Item ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``dst``; item ``parts[k][j]`` owns
    rows ``part_offsets[k][j]:part_offsets[k][j + 1]`` of ``sources[k]``.
    """
    n = len(offsets) - 1
    budget = max(1, MERGE_BLOCK_BYTES // max(1, row_bytes))  # frame rows per block
    a = 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + budget, side="right")) - 1
        b = min(n, max(b, a + 1))
        base, stop = int(offsets[a]), int(offsets[b])
        if stop > base:
            buf = None
            for src, idx, off in zip(sources, parts, part_offsets, strict=True):
                lo, hi = (int(x) for x in np.searchsorted(idx, [a, b]))
                s0, s1 = int(off[lo]), int(off[hi])
                if s1 <= s0:
                    continue
                block = src[s0:s1]  # (frames of the shard's items in [a, b), num_layers, dim)
                if buf is None:
                    buf = np.empty((stop - base, *block.shape[1:]), dtype=block.dtype)
                # source row r of shard item j goes to offsets[idx[j]] - base + (r - off[j])
                delta = offsets[idx[lo:hi]] - base - off[lo:hi]
                dest = np.arange(s0, s1) + np.repeat(delta, np.diff(off[lo : hi + 1]))
                buf[dest] = block
            dst[base:stop] = buf  # (frames of items [a, b), num_layers, dim)
        a = b


def _write_merged(
    w: StoreWriter,
    shards: list[_Shard],
    columns: dict[str, np.ndarray],
    specs: dict[str, FeatureSetSpec],
    failed: pd.DataFrame,
    merged_from: list[str],
) -> None:
    """Write the checked, merged items, feature sets and failures into the new store ``w``."""
    w.set_merged_from(merged_from)
    w.write_item_columns(columns)  # in the shards' column order

    n = len(columns["id"])
    parts = [s.info.indices for s in shards]
    for name, spec in specs.items():
        readers = [s.reader for s in shards]
        counts = None
        part_offsets: list[np.ndarray] = []
        if spec.frames:
            counts = np.zeros(n, dtype=np.int64)
            for r, idx in zip(readers, parts, strict=True):
                off = r.frame_offsets(name)
                part_offsets.append(off)
                counts[idx] = np.diff(off)
        w.create_feature_set(spec, num_frames=counts, fill=False)
        w.set_origin(name, readers[0].origin(name))  # of the run that extracted it
        itemsize = np.dtype(spec.dtype).itemsize
        for p in spec.poolings:
            key = f"pooled/{p}"
            for axis in range(len(spec.layers)):
                _merge_rows(
                    w.dataset(name, key),
                    [r.dataset(name, key) for r in readers],
                    parts,
                    n,
                    spec.dim * itemsize,
                    lead=(axis,),
                )
        for h, names in spec.heads.items():
            key = f"heads/{h}"
            _merge_rows(
                w.dataset(name, key), [r.dataset(name, key) for r in readers], parts, n, 4 * len(names)
            )
        if spec.frames and counts is not None and counts.sum() > 0:
            _merge_frames(
                w.dataset(name, "frames/data"),
                [r.dataset(name, "frames/data") for r in readers],
                parts,
                part_offsets,
                w.frame_offsets(name),
                len(spec.layers) * spec.dim * itemsize,
            )
        done = np.zeros(n, dtype=bool)
        for r, idx in zip(readers, parts, strict=True):
            done[idx] = r.done(name)
        w.mark_done(name, done)
    w.append_failures(failed)


def _check_paths(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                 overwrite: bool) -> tuple[list[Path], Path]:
    """The shard paths and the output path, checked before any shard is opened."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise StoreError(
            "no shard files to merge; give the N files written by an extraction with ", SHARD
        )
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise StoreError(f"{p} is given twice (as {seen[key]} and {p}); give each shard once")
        seen[key] = p
    out = Path(output)
    if out.resolve() in seen:
        raise StoreError(f"output {out} is one of the shard files; merge into a new file")
    if out.is_dir():
        raise StoreError(f"output {out} is a directory, expected a file name")
    if out.exists() and not overwrite:
        raise StoreConflictError(f"{out} exists; use ", OVERWRITE, " to replace it")
    if not out.parent.is_dir():
        raise StoreError(f"cannot create {out}: directory {out.parent} does not exist")
    return paths, out


def _merged_failures(shards: list[_Shard], names: list[str]) -> pd.DataFrame:
    """Every shard's failure rows with global item indices, by feature set (in ``names``
    order, sets not among them last), then item."""
    failures = []
    for s in shards:
        df = s.reader.failed()
        df["index"] = s.info.indices[df["index"].to_numpy(dtype=np.int64)]
        failures.append(df)
    order = {name: i for i, name in enumerate(names)}
    failed = pd.concat(failures, ignore_index=True)
    return (
        failed.assign(_set=failed["set"].map(order).fillna(len(order)))
        .sort_values(["_set", "set", "index"], kind="stable")
        .drop(columns="_set")
        .reset_index(drop=True)
    )


def merge(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    command: str | None = None,
) -> MergeSummary:
    """Combine the shard files of one ``extract --shard K/N`` split into one store.

    Checks first, writes second: every input must be a shard of the same N and item list
    (digest), each K present once, every feature set present in every shard with the same
    spec, the same model (model id, revision, commit) and every item done or recorded failed.
    Then the items are written in global order with all columns, every feature set's pooled,
    frames (offsets recomputed in global order), heads and done are copied block by block
    (at most :data:`MERGE_BLOCK_BYTES` per block in memory), and the failures are carried
    over with global indices. The result equals an unsharded run (same items, values bit for
    bit, failures, specs); its root attrs name the inputs (``merged_from``) and carry no shard
    attrs. It is written to a hidden temporary file next to ``output`` and renamed, so a failed
    merge leaves no half-written store.

    Args:
        inputs: the shard files (any order).
        output: the merged store to create.
        overwrite: replace an existing ``output``.
        command: the command line, recorded in the root attrs.

    Returns:
        A :class:`MergeSummary`.

    Raises:
        StoreConflictError: ``output`` exists and ``overwrite`` is not given.
        StoreError: no inputs, a file given twice, the output among the inputs, or a check
            above failing (the message names the shard, file, set or difference).
    """
    from contextlib import ExitStack
    from time import perf_counter

    start = perf_counter()
    paths, out = _check_paths(inputs, output, overwrite)
    _ensure_open_files(len(paths))
    with ExitStack() as stack:
        shards = _check_split([_open_shard(p, stack) for p in paths])
        columns = _merged_items(shards)
        specs, notes = _merged_sets(shards)
        failed = _merged_failures(shards, list(specs))
        tmp = out.with_name(f".{out.name}.merging-{os.getpid()}")
        try:
            with StoreWriter(tmp, command=command) as w:
                _write_merged(w, shards, columns, specs, failed, [str(p) for p in paths])
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return MergeSummary(
        output=out,
        inputs=paths,
        num_items=len(columns["id"]),
        feature_sets=list(specs),
        failed=len(failed),
        seconds=perf_counter() - start,
        size_bytes=out.stat().st_size,
        notes=notes,
    )
