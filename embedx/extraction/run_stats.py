"""What an extraction run did and what it cost: its summary (items, audio, failures, the signal
that stopped it), the wall-clock and CPU seconds of each part of the loop, and the run profile
stored with the feature set (``run_*`` attrs, shown by ``embedx info``).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedx.extraction.config import ExtractConfig
from embedx.extraction.loader import WORKER_PARTS
from embedx.text import plural, shorten

if TYPE_CHECKING:
    import pandas as pd

    from embedx.backends.base import Backend

__all__ = ["CPU_PARTS", "WALL_PARTS", "ExtractSummary", "Meter", "children_cpu", "failure_breakdown", "peak_memory",
           "reset_peak_memory", "run_profile"]


#: wall-clock parts of the loop in :attr:`ExtractSummary.timings` (measured by the loop of :mod:`embedx.extract`)
WALL_PARTS = ("first_batch", "wait", "forward", "pool", "write_wait", "write")
#: CPU parts of the loop in :attr:`ExtractSummary.cpu` (measured by the loop of :mod:`embedx.extract`)
CPU_PARTS = (*WORKER_PARTS, "receive", "forward", "pool", "write_wait", "write", "main_total",
             "workers_total")


@dataclass
class ExtractSummary:
    """What one run did.

    Attributes:
        output: the store.
        name: the feature set written.
        num_items: items in the store.
        processed: items written by this run.
        failed: items that failed in this run.
        failed_total: items recorded as failed in the store for this set.
        done_total: items done in the store for this set.
        audio_seconds: audio processed by this run.
        elapsed: wall-clock seconds of the processing loop.
        padded_fraction: share of padding in the batches.
        stopped: name of the signal that stopped the run early (SIGTERM, SIGINT, SIGHUP).
        workers: decoding workers the loop ran with.
        batch_seconds: the batch budget the loop ran with (padded seconds; the configured one
            or the device's default, resolved once by the loop).
        peak_memory: peak accelerator memory of the loop in bytes (CUDA), else the process's
            peak resident memory.
        timings: where the loop's time went, in seconds (measured by the loop of :mod:`embedx.extract`).
        cpu: where the run's CPU time went, in CPU seconds, whichever process spent it (see
            :func:`_run_batches`).
        failures: ``[(stage, count, first id, first reason), ...]`` of the set's failures,
            filled when none of its items is done (see :meth:`all_failed_line`).
    """

    output: Path
    name: str
    num_items: int
    processed: int = 0
    failed: int = 0
    failed_total: int = 0
    done_total: int = 0
    audio_seconds: float = 0.0
    elapsed: float = 0.0
    padded_fraction: float = 0.0
    stopped: str | None = None
    workers: int = 0
    batch_seconds: float = 0.0
    peak_memory: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, int, str, str]] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """True when the run ended (not stopped) with every item of the set failed, none done."""
        return self.stopped is None and self.done_total == 0 and self.failed_total > 0

    @property
    def nothing_to_do(self) -> bool:
        """True when the store was already complete."""
        return self.processed == 0 and self.failed == 0 and self.stopped is None

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal's number when a signal stopped the run (143 for SIGTERM)."""
        return 128 + int(getattr(signal, self.stopped)) if self.stopped else 0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        if self.stopped:
            return (f"stopped by {self.stopped} after {self.done_total + self.failed_total} of "
                    f"{self.num_items} items; re-run the same command to resume")
        if self.nothing_to_do:
            return (f"nothing to do: {self.done_total}/{plural(self.num_items, 'item')} of '{self.name}' already "
                    f"in {self.output} ({self.failed_total} failed earlier; --retry-failed retries them)")
        done = f"extracted {plural(self.processed, 'item')}"
        if self.processed and self.elapsed > 0:  # no rate of nothing (it would read "nan items/s")
            done += (f" ({self.audio_seconds:.1f} s of audio) in {self.elapsed:.1f} s: "
                     f"{self.processed / self.elapsed:.2f} items/s, "
                     f"{self.audio_seconds / self.elapsed:.1f} audio-s/s")
        return (f"{done}; {self.failed} failed; '{self.name}' now {self.done_total}/{self.num_items} "
                f"done -> {self.output}")

    def all_failed_line(self) -> str:
        """The one line that says every item failed (when :attr:`all_failed`), and where to look.

        Returns:
            e.g. ``all 12 items failed (12 could not be read, first: a.mp3: cannot read audio
            header: ...); nothing was written; see `embedx info feats.h5 --failed```.
        """
        parts = [f"{count} {_STAGE_WORDS.get(stage, f'failed at {stage}')}, first: {first}: "
                 f"{shorten(reason, _MAX_REASON)}" for stage, count, first, reason in self.failures]
        who = f"all {self.failed_total} items" if self.failed_total > 1 else "the only item"
        when, retry = ("", "") if self.failed else (" in an earlier run", "; --retry-failed retries them")
        why = f" ({'; '.join(parts)})" if parts else ""
        return (f"{who} of '{self.name}' failed{when}{why}; nothing was written{retry}; see "
                f"`embedx info {self.output} --failed`")


#: what a failure at each stage of :mod:`embedx.extract` means, for :meth:`ExtractSummary.all_failed_line`
_STAGE_WORDS = {"probe": "could not be read", "decode": "could not be decoded", "forward": "failed in the model"}
#: characters of the first reason quoted in :meth:`ExtractSummary.all_failed_line` (the rest: embedx info --failed)
_MAX_REASON = 200


def failure_breakdown(failed: pd.DataFrame) -> list[tuple[str, int, str, str]]:
    """The failures of a feature set per stage, in the order the stages first occur.

    Args:
        failed: the store's failure table (columns ``id``, ``stage``, ``message``, ...).

    Returns:
        ``[(stage, count, id of the first, its reason), ...]``.
    """
    out = []
    for stage, rows in failed.groupby("stage", sort=False):
        out.append((str(stage), len(rows), str(rows["id"].iloc[0]), str(rows["message"].iloc[0])))
    return out


class Meter:
    """Wall-clock and CPU seconds (the main thread's CPU clock) per part of the loop.

    CPU time is what tells the parts' costs apart on a machine shared with other work, where
    waiting and wall-clock time mostly measure the neighbours.
    """

    def __init__(self) -> None:
        self.wall = dict.fromkeys(WALL_PARTS, 0.0)
        self.cpu = dict.fromkeys(CPU_PARTS, 0.0)

    @staticmethod
    def mark() -> tuple[float, float]:
        """Now, as ``(wall, cpu)`` seconds."""
        return time.perf_counter(), time.thread_time()

    def add(self, part: str, since: tuple[float, float], cpu_part: str | None = None) -> tuple[float, float]:
        """Add the time since ``since`` to ``part`` (its CPU time to ``cpu_part``, default
        ``part``); returns now (the next part's start)."""
        now = self.mark()
        cpu_part = cpu_part or part
        if part in self.wall:
            self.wall[part] += now[0] - since[0]
        if cpu_part in self.cpu:
            self.cpu[cpu_part] += now[1] - since[1]
        return now


def children_cpu() -> float:
    """CPU seconds of this process's ended and waited-for children (the decoding workers)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_profile(summary: ExtractSummary, backend: Backend, config: ExtractConfig) -> dict[str, Any]:
    """What a run achieved and on what, for the feature set's ``run_*`` attrs.

    Returns:
        ``audio_per_s`` (loop audio-seconds per second), ``items``, ``audio_seconds``,
        ``device`` and ``device_name`` (the GPU's name, else the CPU's), ``precision``,
        ``peak_memory_bytes`` (GPU memory on CUDA, else the process's peak RSS),
        ``batch_seconds``, ``workers``, ``data_wait_share`` (share of the loop spent waiting
        for decoded data) and ``finished`` (UTC time).
    """
    import datetime
    import platform

    device = str(backend.device)
    if device.startswith("cuda"):
        import torch

        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine() or "cpu"
    elapsed = summary.elapsed or float("nan")
    return {
        "audio_per_s": float(summary.audio_seconds / elapsed),
        "items": summary.processed,
        "audio_seconds": round(summary.audio_seconds, 1),
        "device": device,
        "device_name": device_name,
        "precision": str(backend.precision),
        "peak_memory_bytes": int(summary.peak_memory),
        "batch_seconds": float(summary.batch_seconds),
        "workers": int(summary.workers),
        "data_wait_share": round(summary.timings.get("wait", 0.0) / elapsed, 3),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def reset_peak_memory(backend: Backend) -> None:
    device = str(backend.device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(backend: Backend) -> int:
    """Peak accelerator memory of the loop in bytes (CUDA), else the process's peak RSS."""
    device = str(backend.device)
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except ImportError:  # Windows
        return 0
