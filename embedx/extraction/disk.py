"""Disk space of a run: the bytes it will write, checked against the free space before it starts,
and a write error mid-run (a full disk, an I/O error, a vanished mount) turned into one line that
says how far the run got and how to resume.

The check runs once the model's shape is known (layers, dim, frame rate) and before the store is
opened, so a refused run writes nothing. Where the free space a file system reports cannot be
trusted (some network file systems and quotas), ``EMBEDX_SKIP_SPACE_CHECK=1`` skips it; a write
error mid-run still stops the run cleanly.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from embedx.errors import DiskSpaceError, Param, StoreError, StoreWriteError, one_line
from embedx.text import plural, size

__all__ = ["SKIP_ENV", "check_free_space", "planned_bytes", "stop_on_write_error", "write_failure"]

#: environment variable that skips the free-space check before a run
SKIP_ENV = "EMBEDX_SKIP_SPACE_CHECK"
#: HDF5's bytes beyond the data (object headers, chunk index, item table): a fixed part plus a
#: fraction of the data; measured: a 40-item tiny-model store with frames holds 2-3 % more than
#: its arrays
OVERHEAD_BYTES = 256 << 10
OVERHEAD_FRACTION = 0.05


def planned_bytes(num_items: int, todo_frames: int, num_layers: int, dim: int, num_poolings: int,
                  frames: bool, itemsize: int, new_set: bool, head_columns: int = 0) -> int:
    """Bytes a run will add to its store, HDF5's overhead included.

    A new feature set allocates (and fills) its pooled arrays, heads and flags when it is
    created; frames take their space as they are written, so only the frames of the items still
    to do count for a resumed set.

    Args:
        num_items: items of the feature set.
        todo_frames: frames of the items this run will write.
        num_layers: layers stored.
        dim: values per layer and frame.
        num_poolings: pooled arrays.
        frames: whether frames are stored.
        itemsize: bytes per stored value (4: float32, 2: float16).
        new_set: whether the feature set is created by this run.
        head_columns: float32 head outputs per item.

    Returns:
        The bytes.
    """
    data = int(todo_frames) * num_layers * dim * itemsize if frames else 0
    if new_set:
        # (poolings, num_layers, num_items, dim) + heads (num_items, columns) + done flags
        data += num_poolings * num_layers * num_items * dim * itemsize + num_items * (4 * head_columns + 1)
    return int(data * (1 + OVERHEAD_FRACTION)) + OVERHEAD_BYTES


def _done_flags(output: Path, name: str) -> np.ndarray | None:
    """The done flags of feature set ``name`` in an existing store; None for a new set (or a store
    the writer will have to report on itself)."""
    if not output.is_file():
        return None
    from embedx.store import StoreReader

    try:
        with StoreReader(output) as reader:
            return reader.done(name) if name in reader.feature_sets() else None
    except StoreError:  # locked, damaged, another schema: opening it for writing says why
        return None


def check_free_space(output: str | os.PathLike[str], spec: Any, num_frames: np.ndarray) -> None:
    """Refuse a run whose store would not fit in the free space of its file system.

    Args:
        output: the store path.
        spec: the :class:`~embedx.store.FeatureSetSpec` the run writes.
        num_frames: ``(num_items,)`` frames per item at the model's frame rate.

    Raises:
        DiskSpaceError: the run would write more than is free; the message names both sizes and
            which of ``dtype='float16'``, fewer layers and no frames would fit.
    """
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    output = Path(output)
    done = _done_flags(output, spec.name)
    todo_frames = int(num_frames.sum() if done is None or len(done) != len(num_frames) else num_frames[~done].sum())
    heads = sum(len(v) for v in spec.heads.values())

    def need(layers: int = len(spec.layers), itemsize: int = np.dtype(spec.dtype).itemsize,
             frames: bool = spec.frames) -> int:
        return planned_bytes(len(num_frames), todo_frames, layers, spec.dim, len(spec.poolings), frames,
                             itemsize, done is None, heads)

    free = shutil.disk_usage(output.parent).free
    wanted = need()
    if wanted <= free:
        return
    fits: list[object] = []
    if np.dtype(spec.dtype).itemsize == 4 and need(itemsize=2) <= free:
        fits += [Param("dtype", "float16"), f" ({size(need(itemsize=2))}), "]
    fewer = [k for k in range(1, len(spec.layers)) if need(layers=k) <= free]
    if fewer:
        fits += [Param("layers"), f" with at most {fewer[-1]} of the {len(spec.layers)} layers "
                 f"({size(need(layers=fewer[-1]))}), "]
    if spec.frames and need(frames=False) <= free:
        fits += ["without ", Param("frames"), f" ({size(need(frames=False))}), "]
    tail: list[object] = ["what would fit: ", *fits[:-1], fits[-1].rstrip(", ")] if fits else \
        ["neither float16, fewer layers nor no frames would fit"]
    raise DiskSpaceError(f"the run would write about {size(wanted)} to {output} but {output.parent} has "
                         f"{size(free)} free; ", *tail, "; free space or choose another -o")


_ERRNO = re.compile(r"errno = (\d+)")


def write_failure(exc: OSError) -> StoreWriteError:
    """A store write's OSError (h5py's or the OS's) as a :class:`StoreWriteError` naming its cause.

    Args:
        exc: the error a store call raised.

    Returns:
        The error, its message the cause in a few words (``No space left on device``).
    """
    code = exc.errno
    if code is None and (m := _ERRNO.search(str(exc))):  # h5py puts the OS's errno in its message
        code = int(m.group(1))
    cause = os.strerror(code) if code else one_line(exc)[:200]
    return StoreWriteError(cause, errno=code)


@contextmanager
def stop_on_write_error(store: Any, name: str, total: int) -> Iterator[None]:
    """Turn a failed store write in the block into one line: the cause, how far the run got, and
    how to resume. The store itself is closed by its own context afterwards.

    Args:
        store: the open :class:`~embedx.store.StoreWriter`.
        name: the feature set written.
        total: its items.

    Raises:
        StoreWriteError: a store call in the block failed.
    """
    try:
        yield
    except StoreWriteError as exc:
        try:  # what is marked done is on disk: written and flushed before its flag
            done = f"{int(store.done(name).sum())} of {plural(total, 'item')} done and safe in the store"
        except Exception:  # noqa: BLE001 - a vanished mount cannot even be read: say so, still one line
            done = "the items marked done are safe in the store"
        raise StoreWriteError(f"cannot write {store.path}: {exc} ({done}); free space (or fix the disk) and "
                              "re-run the same command to resume", errno=exc.errno) from None
