"""Decoding workers and the hand-over of their batches to the main process.

A :class:`Decoder` turns a batch of item indices into prepared waveforms (decode, resample,
the backend's preparation) in DataLoader worker processes, so that work stays off the
forward's critical path. A worker hands a batch over through a :class:`SlotRing`: every worker
owns a few preallocated shared-memory buffers (created once, before the workers start), writes
the batch's waveforms into a free one and sends only the slot's number and the items' offsets;
the main process reads the waveforms in place and releases the slot once the batch is done.
A fresh shared-memory segment per batch (``shm_open``, ``mmap``, page faults on both sides,
one more copy) cost ~0.13 CPU-ms per audio-second in the worker, a third of its decoding.

Every batch carries the CPU seconds its decoding parts took (:data:`WORKER_PARTS`), measured
with the thread's CPU clock in whichever process decoded it, so a run can say where the CPU
went however busy the machine is (:attr:`embedx.extraction.run_stats.ExtractSummary.cpu`).

Workers die with the main process (``PR_SET_PDEATHSIG``) and leave stop signals to it; the
ring's memory is unlinked at creation, so nothing stays in ``/dev/shm`` after a kill.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedx.errors import AudioError, EmbedxError
from embedx.extraction.audio import decode, decoder_said, resample

#: CPU parts of a batch's preparation, accounted per batch: decoding the file, resampling to
#: the model's rate, the backend's preparation (normalisation, short-item policy), and packing
#: the batch for the hand-over
WORKER_PARTS = ("decode", "resample", "prepare", "pack")
#: batches each worker decodes ahead of the loop
PREFETCH = 4
#: shared slots per worker: the batches in flight, the one the loop holds, and one spare
SLOTS_PER_WORKER = PREFETCH + 2


@dataclass
class Batch:
    """One decoded batch, as a worker hands it over (or the main process decodes it).

    Attributes:
        items: ``[(index, wave or None, error or None), ...]`` when decoded in the main process;
            empty in transit from a worker (the waves are in the ring or in ``flat``).
        entries: in transit: ``[(index, offset, length, other, error), ...]``, a 1-D float32
            wave being ``data[offset:offset + length]`` of the slot (or of ``flat``), ``other``
            anything else (a CPU backend's features) as its own tensor.
        slot: ``(worker, slot)`` of the ring buffer holding the waves, or None.
        flat: ``(total_samples,)`` float32 tensor holding the waves when no slot was free or
            the batch is larger than a slot (one shared-memory segment for the batch).
        cpu: CPU seconds of this batch's :data:`WORKER_PARTS`.
    """

    items: list[tuple[int, Any, str | None]] = field(default_factory=list)
    entries: list[tuple[int, int, int, Any, str | None]] = field(default_factory=list)
    slot: tuple[int, int] | None = None
    flat: Any = None
    cpu: dict[str, float] = field(default_factory=dict)


class SlotRing:
    """Preallocated shared-memory buffers, a few per worker, reused batch after batch.

    A slot is free (state 0) or taken (1). Only its worker takes a free slot and only the main
    process frees a taken one, so the two never race on a slot without a lock.

    Args:
        workers: decoding workers.
        slots: slots per worker.
        slot_samples: float32 samples per slot (the batch budget: a batch's waves sum to at
            most its padded length).
    """

    def __init__(self, workers: int, slots: int, slot_samples: int) -> None:
        import torch

        # created before the workers start: forked workers inherit the mapping, spawned ones get
        # it through torch's shared-memory pickling; either way nothing is mapped per batch
        self.data = _shared_empty((workers, slots, slot_samples))
        self.state = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()
        self.slot_samples = slot_samples

    def take(self, worker: int) -> int | None:
        """A free slot of ``worker``, now taken; None when all are in flight (in a worker)."""
        free = np.flatnonzero(self.state[worker].numpy() == 0)
        if not len(free):
            return None
        slot = int(free[0])
        self.state[worker, slot] = 1
        return slot

    def release(self, slot: tuple[int, int]) -> None:
        """Free a slot whose waves the main process no longer reads."""
        self.state[slot] = 0

    def view(self, slot: tuple[int, int]) -> np.ndarray:
        """The slot's ``(slot_samples,)`` buffer as numpy (no copy)."""
        return self.data[slot].numpy()


def _shared_empty(shape: tuple[int, int, int]) -> Any:
    """An uninitialised float32 tensor in shared memory, its pages untouched until written.

    ``torch.empty(...).share_memory_()`` copies the whole buffer into the new segment, which
    faults in every page at once (0.3 s and the full size in ``/dev/shm`` for 200 MiB, although
    most slots are rarely all in use); a storage made shared from the start is not touched.
    """
    import math

    import torch

    make = getattr(torch.UntypedStorage, "_new_shared", None)
    if make is None:  # a torch without it: allocated and copied at once
        return torch.empty(shape, dtype=torch.float32).share_memory_()
    storage = make(4 * math.prod(shape))  # float32: 4 bytes
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


class _CpuClock:
    """Adds the thread's CPU time since the last mark to a part's total."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.thread_time()

    def __call__(self, part: str) -> None:
        now = time.thread_time()
        self.into[part] += now - self.last
        self.last = now


def _is_wave(w: Any) -> bool:
    return isinstance(w, np.ndarray) and w.ndim == 1 and w.dtype == np.float32


class Decoder:
    """Map-style dataset whose batches (``__getitems__``) are decoded, prepared and packed.

    Errors are returned with the item, not raised, so one bad file never stops a run.

    Args:
        paths: the items' files.
        expected: ``(num_items,)`` decoded lengths at ``sample_rate`` the store was planned with.
        sample_rate: the model's rate.
        prepare: the backend's per-item preparation (picklable, free of model state).
        fit_length: the backend's short-item policy.
        ring: the workers' shared buffers (None: every batch in its own shared segment).
    """

    def __init__(self, paths: Sequence[str], expected: np.ndarray, sample_rate: int,
                 prepare: Callable[[np.ndarray], np.ndarray],
                 fit_length: Callable[[np.ndarray], np.ndarray], ring: SlotRing | None = None) -> None:
        self.paths = list(paths)
        self.expected = expected
        self.sample_rate = sample_rate
        self.prepare = prepare
        self.fit_length = fit_length
        self.ring = ring

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int, clock: _CpuClock) -> tuple[int, np.ndarray | None, str | None]:
        """Decode, resample and prepare one item; its error message instead when that fails."""
        try:
            notes: list[str] = []
            wave, rate = decode(self.paths[index], notes)
            clock("decode")
            wave = resample(wave, rate, self.sample_rate)
            clock("resample")
            if wave.shape[0] != self.expected[index]:
                # the header promised another length (some mp3 encoders, a damaged file); the
                # frame layout in the store was planned from the header, so refuse rather than
                # misplace frames; the decoder's notes say what it skipped
                raise AudioError(f"decoded {wave.shape[0]} samples but the header implies "
                                 f"{self.expected[index]}; re-encode the file as wav/flac"
                                 + decoder_said(notes))
            # prepare may be heavy (a CPU-bound backend computes its features here, in workers)
            out = self.fit_length(self.prepare(wave))
            clock("prepare")
            return index, out, None
        except EmbedxError as exc:
            return index, None, str(exc)
        except Exception as exc:  # a decoder bug must not end a long run; record it instead
            return index, None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        return self.item(index, _CpuClock(dict.fromkeys(WORKER_PARTS, 0.0)))

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """One batch: decoded in place in the main process, packed for the hand-over in a worker."""
        import torch.utils.data

        cpu = dict.fromkeys(WORKER_PARTS, 0.0)
        clock = _CpuClock(cpu)
        items = [self.item(int(i), clock) for i in indices]
        info = torch.utils.data.get_worker_info()
        if info is None:  # decoding in the main process: nothing to hand over
            return Batch(items=items, cpu=cpu)
        batch = pack(items, self.ring, info.id)
        clock("pack")
        batch.cpu = cpu
        return batch


def pack(items: list[tuple[int, Any, str | None]], ring: SlotRing | None, worker: int) -> Batch:
    """Pack a worker's decoded items for the hand-over (see :class:`Batch`).

    The 1-D float32 waves go, one after another, into a free slot of ``ring``; without a free
    slot that holds them, into one new tensor (which torch moves through a shared-memory
    segment of its own). Anything else (a CPU backend's features) travels as its own tensor.

    Args:
        items: ``[(index, wave or None, error or None), ...]``.
        ring: the shared buffers, or None.
        worker: this worker's number (its slots in ``ring``).

    Returns:
        The :class:`Batch` in transit (``cpu`` left empty).
    """
    import torch

    waves = [w for _, w, _ in items if _is_wave(w)]
    total = sum(w.shape[0] for w in waves)
    slot = ring.take(worker) if ring is not None and total <= ring.slot_samples else None
    if slot is not None:
        data = ring.view((worker, slot))
        flat = None
    else:
        flat = torch.empty(total, dtype=torch.float32)
        data = flat.numpy()
    entries = []
    offset = 0
    for i, w, err in items:
        if _is_wave(w):
            data[offset:offset + w.shape[0]] = w
            entries.append((i, offset, w.shape[0], None, err))
            offset += w.shape[0]
        else:
            other = torch.from_numpy(np.ascontiguousarray(w)) if isinstance(w, np.ndarray) else w
            entries.append((i, 0, 0, other, err))
    return Batch(entries=entries, slot=None if slot is None else (worker, slot), flat=flat)


def unpack(batch: Batch, ring: SlotRing | None) -> list[tuple[int, np.ndarray | None, str | None]]:
    """A batch's items as ``[(index, wave or None, error or None), ...]``.

    The waves are numpy views of the slot or the shared tensor (no copy): they stay valid until
    :func:`release`.
    """
    if not batch.entries:
        return batch.items
    data = ring.view(batch.slot) if batch.slot is not None else batch.flat.numpy()
    return [(i, other.numpy() if hasattr(other, "numpy") else data[offset:offset + length]
             if err is None else None, err)
            for i, offset, length, other, err in batch.entries]


#: prctl option that sends the caller a signal when its parent dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1


def worker_init(parent: int | None, worker_id: int) -> None:
    """Set up a decoding worker: it dies with the main process, and leaves stop signals to it.

    Args:
        parent: pid the worker's parent must have (the main process when workers are forked
            or spawned from it; None when a fork server is the parent).
        worker_id: the DataLoader's worker number (unused).
    """
    deathsig = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            # the kernel SIGKILLs this worker the moment its parent dies, whatever killed the
            # parent (kill -9, OOM killer): no orphan can outlive the run
            libc = ctypes.CDLL(None, use_errno=True)
            deathsig = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            deathsig = False
    if parent is not None and os.getppid() != parent:
        os._exit(0)  # the parent died before the death signal was armed
    # a terminal's Ctrl-C, a hangup and a scheduler's SIGTERM reach the whole process group; the
    # main process stops the run cleanly and ends its workers. Without the death signal a worker
    # keeps SIGTERM, so that it can still be ended when its parent is gone.
    for name in ("SIGINT", "SIGHUP", "SIGTERM") if deathsig else ("SIGINT",):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _as_is(batch: Batch) -> Batch:
    """The collate function: :meth:`Decoder.__getitems__` already built the batch."""
    return batch


class Loader:
    """The batches of a run, decoded by ``workers`` processes (0: in the main process).

    Iterate it for :class:`Batch` objects; :meth:`items` gives a batch's items and
    :meth:`release` hands its slot back once the loop no longer reads the waves. :meth:`close`
    ends the workers (and is what makes their CPU time visible to ``RUSAGE_CHILDREN``).

    Args:
        paths, expected, sample_rate, prepare, fit_length: see :class:`Decoder`.
        batches: the item indices of every batch, in order.
        workers: decoding worker processes.
        slot_samples: samples of a slot (the batch budget); batches of more samples (long items
            run in chunks) travel in their own segment.
    """

    def __init__(self, paths: Sequence[str], expected: np.ndarray, sample_rate: int,
                 prepare: Callable[[np.ndarray], np.ndarray], fit_length: Callable[[np.ndarray], np.ndarray],
                 batches: list[list[int]], workers: int, slot_samples: int) -> None:
        import functools
        import multiprocessing

        import torch.utils.data

        self.ring = SlotRing(workers, SLOTS_PER_WORKER, slot_samples) if workers > 0 else None
        decoder = Decoder(paths, expected, sample_rate, prepare, fit_length, self.ring)
        parent = None
        if workers > 0 and multiprocessing.get_start_method() in ("fork", "spawn"):
            parent = os.getpid()
        self._loader = torch.utils.data.DataLoader(
            decoder,
            batch_sampler=batches,
            collate_fn=_as_is,
            num_workers=workers,
            prefetch_factor=PREFETCH if workers > 0 else None,
            worker_init_fn=functools.partial(worker_init, parent) if workers > 0 else None,
        )
        self._iter: Iterator[Batch] | None = None

    def __iter__(self) -> Iterator[Batch]:
        self._iter = iter(self._loader)
        return self._iter

    def items(self, batch: Batch) -> list[tuple[int, np.ndarray | None, str | None]]:
        """See :func:`unpack`."""
        return unpack(batch, self.ring)

    def release(self, batch: Batch) -> None:
        """Hand the batch's slot back to its worker; its waves must not be read afterwards."""
        if batch.slot is not None and self.ring is not None:
            self.ring.release(batch.slot)

    def close(self) -> None:
        """End the workers now (joined, so their CPU time is counted)."""
        self._iter = None  # the DataLoader iterator shuts its workers down when collected
        self._loader = None
