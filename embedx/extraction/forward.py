"""One batch through the backend: failure isolation, the device-memory budget, results to the store.

:func:`run_short` runs a batch of whole items, :func:`run_long` one long item in chunks. A batch
that fails is split in halves until only the items that fail alone are lost. Running out of
device memory (``torch.OutOfMemoryError``, nothing broader) also shrinks a :class:`Budget` for
the rest of the run, so later batches of that size are split before their forward instead of
failing again; an unrecoverable accelerator error ends the run. Results leave the device through
:mod:`embedx.extraction.transfer`: the copy to the host is started here and waited for on the
writer thread (:func:`write_copied`), so the next batch's forward overlaps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedx.backends.base import Backend
from embedx.errors import EmbedxError, one_line
from embedx.extraction.batching import chunk_spans
from embedx.extraction.pooling import chunk_poolings, combine_chunks, get_pooling
from embedx.extraction.transfer import DeviceOps, HostCopy

__all__ = ["Budget", "run_long", "run_short", "start_copy", "write_copied"]


@dataclass
class Budget:
    """The largest padded batch the forward is given, in samples (items x longest item).

    Attributes:
        samples: the limit; ``None`` until the device first runs out of memory (the plan's
            batches are then run as planned). Shrinks to half the failed batch on every
            out-of-memory error, for the rest of the run.
    """

    samples: int | None = None

    def fits(self, waves: Sequence[np.ndarray]) -> bool:
        """Whether a batch of ``waves`` is within the limit."""
        return self.samples is None or padded_samples(waves) <= self.samples

    def shrink(self, waves: Sequence[np.ndarray]) -> None:
        """Lower the limit below a batch of ``waves`` that ran out of memory."""
        self.samples = max(1, padded_samples(waves) // 2)


def padded_samples(waves: Sequence[np.ndarray]) -> int:
    """Samples of the zero-padded batch of ``waves`` (items x longest)."""
    return len(waves) * max(w.shape[0] for w in waves)


def _errors() -> tuple[type[BaseException], tuple[type[BaseException], ...]]:
    """``(out-of-memory error, fatal accelerator errors)`` of the installed torch."""
    import torch

    fatal = getattr(torch, "AcceleratorError", None)  # torch >= 2.8: a sticky CUDA error
    return torch.OutOfMemoryError, (fatal,) if fatal is not None else ()


def free_device_memory() -> None:
    """Return cached blocks to the device (after the failed batch's tensors are released)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def forward_isolating(backend: Backend, indices: list[int], waves: list[np.ndarray], layers: list[int],
                      budget: Budget) -> tuple[list[tuple[list[int], Any]], dict[int, str]]:
    """Run a batch; on an error split it in halves so only the items that fail alone are lost.

    Returns:
        ``[(indices, BackendOutput), ...]`` for the parts that ran, and index -> error message
        for the items that failed on their own.

    Raises:
        RuntimeError: an unrecoverable accelerator error (``torch.AcceleratorError``).
    """
    oom, fatal = _errors()
    out_of_memory = False
    if len(indices) > 1 and not budget.fits(waves):
        pass  # split below, without trying: a batch this size ran out of memory before
    else:
        try:
            return [(indices, backend.forward(waves, layers))], {}
        except oom as exc:
            if len(indices) == 1:
                return [], {indices[0]: "out of device memory alone: " + one_line(exc)[:480]}
            budget.shrink(waves)
            out_of_memory = True
        except fatal:
            raise
        except (EmbedxError, RuntimeError, ValueError) as exc:
            if len(indices) == 1:
                return [], {indices[0]: one_line(exc)[:500]}
    if out_of_memory:  # outside the except block: the failed forward's tensors are released now
        free_device_memory()
    half = len(indices) // 2
    ok_a, bad_a = forward_isolating(backend, indices[:half], waves[:half], layers, budget)
    ok_b, bad_b = forward_isolating(backend, indices[half:], waves[half:], layers, budget)
    return ok_a + ok_b, {**bad_a, **bad_b}


def start_copy(ops: DeviceOps, output: Any, poolings: Sequence[str], frames: bool, dtype: str) -> HostCopy:
    """Pool on the device, cast to the storage dtype there, and start the copy of what is stored.

    Args:
        ops: the device's copy operations.
        output: the batch's :class:`~embedx.backends.base.BackendOutput`.
        poolings: poolings to store.
        frames: whether frames are stored (one copy of the whole padded batch: no per-item copy).
        dtype: the storage dtype (``float32`` or ``float16``).

    Returns:
        The copy; its arrays are ``pooled/<name>`` ``(num_layers, batch, dim)``, ``lengths``
        ``(batch,)`` and with ``frames`` ``frames`` ``(batch, num_frames, num_layers, dim)``.
    """
    import torch

    storage = getattr(torch, dtype)
    tensors = {
        # (num_layers, batch, num_frames, dim) -> (num_layers, batch, dim)
        f"pooled/{p}": get_pooling(p)(output.hidden, output.lengths).to(storage)
        for p in poolings
    }
    if frames:
        # (num_layers, batch, num_frames, dim) -> (batch, num_frames, num_layers, dim): the store's frame layout
        tensors["frames"] = output.hidden.permute(1, 2, 0, 3).to(storage).contiguous()
    tensors["lengths"] = output.lengths
    return ops.to_host(tensors)


def host_parts(copy: HostCopy, poolings: Sequence[str], frames: bool
               ) -> tuple[dict[str, np.ndarray], list[np.ndarray] | None]:
    """Wait for ``copy``; returns the pooled arrays and, with ``frames``, every item's valid frames."""
    arrays = copy.wait()
    pooled = {p: arrays[f"pooled/{p}"] for p in poolings}
    if not frames:
        return pooled, None
    # (batch, num_frames, num_layers, dim) -> per item a view of its (num_frames_i, num_layers, dim)
    return pooled, [arrays["frames"][b, :n] for b, n in enumerate(arrays["lengths"].tolist())]


def write_copied(store: Any, name: str, indices: np.ndarray, copy: HostCopy, poolings: Sequence[str],
                 frames: bool, heads: dict[str, np.ndarray] | None) -> None:
    """On the writer thread: wait for a batch's copy to the host, then write it (and mark it done)."""
    pooled, frame_list = host_parts(copy, poolings, frames)
    store.write(name, indices, pooled=pooled, frames=frame_list, heads=heads)


def run_short(writes: Any, store: Any, name: str, backend: Backend, layers: list[int], config: Any,
              good: list[tuple[int, np.ndarray]], meter: Any, ops: DeviceOps, budget: Budget
              ) -> tuple[list[int], dict[int, str]]:
    """Run one batch of items that fit in one piece and queue their writes.

    Returns:
        The indices queued for writing, and index -> error message of the items that failed.
    """
    if not good:
        return [], {}
    mark = meter.mark()
    parts, errors = forward_isolating(backend, [i for i, _ in good], [w for _, w in good], layers, budget)
    mark = meter.add("forward", mark)
    written: list[int] = []
    for indices, out in parts:
        copy = start_copy(ops, out, config.poolings, config.frames, config.dtype)
        mark = meter.add("pool", mark)
        writes.put(write_copied, store, name, np.asarray(indices), copy, tuple(config.poolings),
                   config.frames, out.heads or None)
        mark = meter.add("write_wait", mark)
        written.extend(indices)
    return written, errors


def _chunk_forward(backend: Backend, chunks: list[np.ndarray], layers: list[int]) -> tuple[Any, str]:
    """One forward of a long item's chunks: ``(output, "")``, ``(None, "oom")`` or ``(None, error)``."""
    oom, fatal = _errors()
    try:
        return backend.forward(chunks, layers), ""
    except oom:
        pass
    except fatal:
        raise
    except (EmbedxError, RuntimeError, ValueError) as exc:
        return None, one_line(exc)[:500]
    free_device_memory()  # outside the except block: the failed tensors are released
    return None, "oom"


def run_long(writes: Any, store: Any, name: str, backend: Backend, layers: list[int], config: Any,
             index: int, wave: np.ndarray, budget: int, meter: Any, ops: DeviceOps, limit: Budget,
             max_chunk: int) -> tuple[list[int], dict[int, str]]:
    """Run one long item in chunks, combine its pooled values, stream its frames to the store.

    Memory is bounded by the chunk size: frames go to the store chunk by chunk, and only the
    per-chunk pooled values are kept. Head outputs are the frame-weighted mean over chunks. Out
    of device memory, the chunks per forward are halved (and ``limit`` lowered) down to one.
    Chunks are copied in float32 whatever the storage dtype: they are combined before storing.
    """
    spans = chunk_spans(wave.shape[0], max_chunk or wave.shape[0],
                        backend.hop_samples or 1, backend.min_samples)
    wanted = chunk_poolings(tuple(config.poolings))
    longest = max(s.stop - s.start for s in spans)
    per_batch = max(1, min(budget, limit.samples or budget) // longest)
    parts: dict[str, list[np.ndarray]] = {p: [] for p in wanted}
    heads: dict[str, list[np.ndarray]] = {}
    counts: list[int] = []
    b = 0
    while b < len(spans):
        group = spans[b:b + per_batch]
        mark = meter.mark()
        out, error = _chunk_forward(backend, [wave[s.start:s.stop] for s in group], layers)
        if error == "oom" and per_batch > 1:
            per_batch //= 2
            limit.samples = max(1, per_batch * longest)
            continue
        if out is None:
            error = "out of device memory on one chunk" if error == "oom" else error
            return [], {index: f"chunk {b + 1}/{len(spans)}: {error}"}
        mark = meter.add("forward", mark)
        pooled, frames = host_parts(start_copy(ops, out, wanted, config.frames, "float32"), wanted,
                                    config.frames)
        meter.add("pool", mark)
        _check_chunk_frames(out, group)
        for p in wanted:
            parts[p].extend(pooled[p].transpose(1, 0, 2))  # (num_layers, chunks, dim) -> chunks x (num_layers, dim)
        for h, y in (out.heads or {}).items():
            heads.setdefault(h, []).extend(y)
        counts.extend(s.num_frames for s in group)
        for s, rows in zip(group, frames or [], strict=False):
            writes.put(store.write_frame_rows, name, index, s.first_frame, rows)
        b += len(group)
    _queue_long(writes, store, name, config, index, parts, heads, counts)
    return [index], {}


def _check_chunk_frames(out: Any, group: list[Any]) -> None:
    if out.lengths.tolist() != [s.num_frames for s in group]:
        raise RuntimeError(f"chunk frames {out.lengths.tolist()} differ from the plan "
                           f"{[s.num_frames for s in group]}")  # a backend bug, not bad input


def _queue_long(writes: Any, store: Any, name: str, config: Any, index: int, parts: dict[str, list[np.ndarray]],
                heads: dict[str, list[np.ndarray]], counts: list[int]) -> None:
    """Combine a long item's chunks and queue its write (which marks it done)."""
    weights = np.asarray(counts, dtype=np.float64)
    combined = combine_chunks({p: np.stack(v) for p, v in parts.items()}, weights,
                              tuple(config.poolings))
    writes.put(
        store.write, name, np.asarray([index]),
        pooled={p: v[:, None, :] for p, v in combined.items()},  # (num_layers, dim) -> (num_layers, 1, dim)
        heads={h: (np.stack(v) * (weights / weights.sum())[:, None]).sum(0, keepdims=True)
               for h, v in heads.items()} or None,
        frames_written=config.frames,
    )
