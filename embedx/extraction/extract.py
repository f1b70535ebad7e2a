"""Stage 1: items -> length-sorted batches -> backend -> pooling -> store.

The run is resumable: items whose ``done`` flag is set are skipped, and a re-run with other
settings into the same feature set is refused (unless ``overwrite``). A file that cannot be
decoded, or a batch item the model cannot process, is recorded under ``/failed`` and the run
goes on.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.backends import create_backend
from embedx.backends.base import Backend
from embedx.errors import (
    ConfigError,
    NothingExtractedError,
    Param,
)
from embedx.extraction.audio import resampled_length
from embedx.extraction.batching import make_batches
from embedx.extraction.config import (
    DATA_KEYS,
    ExtractConfig,
    batch_seconds,
)
from embedx.extraction.disk import check_free_space, stop_on_write_error
from embedx.extraction.forward import Budget, run_long, run_short
from embedx.extraction.layers import parse_layers
from embedx.extraction.loader import Loader
from embedx.extraction.pooling import chunk_poolings
from embedx.extraction.run_stats import (
    ExtractSummary,
    Meter,
    children_cpu,
    failure_breakdown,
    peak_memory,
    reset_peak_memory,
    run_profile,
)
from embedx.extraction.scan import Scanned, scan_items
from embedx.extraction.transfer import DeviceOps, ops_for
from embedx.extraction.writes import StoreQueue
from embedx.progress import progress_bar
from embedx.text import plural


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM or container cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decoding workers: every available core but one, which runs the model and the writes.

    Decoding and resampling scale with cores (one core decodes ~2,000 audio-s/s of 16/22 kHz
    wav), and a GPU forward needs far more than one core can decode, so there is no cap.
    """
    return max(0, available_cores() - 1)


def _model_lengths(items: pd.DataFrame, backend: Backend) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths at the model's rate, before and after the short-item policy, and frame counts.

    Returns:
        Three ``(num_items,)`` int64 arrays: samples after decoding and resampling, samples
        after the short-item policy (what batching plans with), and frames (0 for unreadable
        items and for short items under ``short="fail"``).
    """
    decoded = np.zeros(len(items), dtype=np.int64)
    padded = np.zeros(len(items), dtype=np.int64)
    frames = np.zeros(len(items), dtype=np.int64)
    for i, (n, sr) in enumerate(zip(items["num_samples"], items["sample_rate"], strict=True)):
        if n <= 0:
            continue
        decoded[i] = m = resampled_length(int(n), int(sr), backend.sample_rate)
        if m < backend.min_samples and backend.short == "pad":
            m = backend.min_samples
        padded[i] = m
        frames[i] = backend.num_frames(m) if m >= backend.min_samples else 0
    return decoded, padded, frames


#: signals that stop a run cleanly; the process then exits with 128 + the signal's number
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


def install_stop_handlers(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """``handler`` for every :data:`STOP_SIGNALS` this platform has (main thread only).

    Returns:
        The handlers replaced, by signal, for :func:`restore_handlers`.
    """
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                saved[sig] = signal.signal(sig, handler)
    return saved


def restore_handlers(saved: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_stop_handlers` replaced."""
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def leave_stop_line_to_parent() -> None:
    """In a shard process of ``--devices``: a stop before the store is open ends it without its
    own line; the parent, which forwarded the signal, says in one line how many items are done
    (one line per shard plus the parent's read as three stops)."""
    _StopRequest.announce = False


class _StopRequest:
    """SIGTERM, SIGINT and SIGHUP, turned into a request to stop after the batch in flight.

    Schedulers (SLURM time limits and preemption, Kubernetes, ``timeout``) send SIGTERM and
    wait a while before SIGKILL; a terminal sends SIGINT or SIGHUP. While :attr:`graceful` is
    False (before the store is open: nothing to flush) a signal ends the process at once with
    one line; afterwards the first signal is recorded for the loop to stop at the next batch
    boundary, and a second one ends the process at once (everything marked done is already on
    disk, so that is as safe as a kill -9). Handlers are only installed in the main thread.
    """

    #: print the line of a stop that ends the process at once (see :func:`leave_stop_line_to_parent`)
    announce = True

    def __init__(self) -> None:
        self.signal: str | None = None
        self.graceful = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        self._saved = install_stop_handlers(self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        restore_handlers(self._saved)
        self._saved.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.graceful and self.signal is None:
            self.signal = name
            return
        what = "second " if self.signal else ""
        when = "before the store was opened" if not self.graceful else "at once"
        if self.announce:
            os.write(2, f"embedx: stopped by {what}{name} {when}; re-run the same command to resume\n".encode())
        os._exit(128 + signum)


def extract(inputs: Sequence[str | Path], output: str | Path, config: ExtractConfig,
            *, command: str | None = None, log: Callable[[str], None] | None = None,
            scanned: Scanned | None = None) -> ExtractSummary:
    """Run stage 1: extract one feature set from audio into an HDF5 store.

    Args:
        inputs: folders, audio files or file lists; with ``config.manifest``, at most the folder
            its relative paths are relative to.
        output: the HDF5 store; created, or extended/resumed when it exists.
        config: the extraction settings.
        command: the command line, stored in the file's attributes.
        log: where to send progress notes (default: nowhere).
        scanned: the full item table and its header errors, as :func:`scan_items` returns them
            for ``inputs`` and ``config`` (a multi-device run scans once for all its shards).

    Returns:
        The run's :class:`ExtractSummary`.

    Raises:
        NothingExtractedError: every item of the feature set failed, none is done (exit code
            1; the failures are in the store, the summary is the error's ``summary``).
        EmbedxError: bad options, inputs, model or store (one clear line each). Problems of a
            single item are recorded in the store, not raised.
    """
    with _StopRequest() as stop:
        summary = _extract(inputs, output, config, command, log, stop, scanned)
    if summary.all_failed:
        raise NothingExtractedError(summary.all_failed_line(), summary)
    return summary


def _extract(inputs: Sequence[str | Path], output: str | Path, config: ExtractConfig,
             command: str | None, log: Callable[[str], None] | None, stop: _StopRequest,
             scanned: Scanned | None = None) -> ExtractSummary:
    """The body of :func:`extract`; ``stop`` turns stop signals into a clean end of the loop."""
    from embedx.store import StoreWriter, check_store_path

    note = log or (lambda _msg: None)
    config.validate()
    check_store_path(output)  # a typo in -o must not cost a model download
    # the headers, read here or once by the process that started this one (a multi-device run)
    items, probe_errors = scanned if scanned is not None else scan_items(inputs, config, note)
    shard = None
    if config.shard:
        from embedx.extraction.shard import take

        # this process's part of the items, balanced by duration; global order kept
        items, probe_errors, shard = take(items, probe_errors, config.shard)
        note(f"shard {shard.label}: {len(items)} of {plural(shard.total_items, 'item')}")
    note(f"{plural(len(items), 'item')}, {np.nansum(items['duration']):.1f} s of audio, "
         f"{len(probe_errors)} unreadable")

    backend = create_backend(config.backend, **config.backend_kwargs())
    layers = parse_layers(config.layers, backend.num_layers)
    if config.frames and backend.frame_rate is None:
        raise ConfigError(Param("frames"), f" needs frame-level features, but '{backend.name}' has one "
                          "vector per item (openSMILE functionals); use ", Param("opensmile_level", "lld"),
                          " for frames")
    decoded, lengths, num_frames = _model_lengths(items, backend)
    spec = _feature_set_spec(config, backend, layers)
    check_free_space(output, spec, num_frames)  # before the store is opened: a refused run writes nothing

    with StoreWriter(output, command=command) as store:
        stop.graceful = True  # from here on a stop signal ends the loop cleanly
        store.write_items(items)
        if shard is not None:
            store.set_shard(shard.index, shard.count, shard.indices, shard.total_items,
                            shard.items_digest)
        spec = _without_inert_settings(store, spec, backend)
        store.create_feature_set(spec, num_frames=num_frames if config.frames else None,
                                 overwrite=config.overwrite)
        name = spec.name
        done = store.done(name)
        failed_before = store.failed(name)
        skip = np.zeros(len(items), dtype=bool)
        if len(failed_before):
            if config.retry_failed:
                store.clear_failures(name)
            else:
                skip[failed_before["index"].to_numpy(dtype=np.int64)] = True
        todo = np.flatnonzero(~done & ~skip)
        summary = ExtractSummary(output=Path(output), name=name, num_items=len(items))
        for i in todo[np.isin(todo, list(probe_errors))]:
            store.record_failure(name, int(i), "probe", probe_errors[int(i)])
            summary.failed += 1
        todo = todo[~np.isin(todo, list(probe_errors))]
        if len(todo) and stop.signal is None:
            with stop_on_write_error(store, name, len(items)):
                _run_batches(store, name, backend, layers, config, items, todo, decoded, lengths,
                             summary, note, stop)
        if summary.processed:
            store.set_run_profile(name, run_profile(summary, backend, config))
        summary.done_total = int(store.done(name).sum())
        failures = store.failed(name)
        summary.failed_total = len(failures)
        if summary.failed_total and not summary.done_total:  # all failed: say why in the error
            summary.failures = failure_breakdown(failures)
        summary.stopped = stop.signal
    return summary


def _feature_set_spec(config: ExtractConfig, backend: Backend, layers: list[int]) -> Any:
    """The :class:`~embedx.store.FeatureSetSpec` a run of ``config`` with ``backend`` writes."""
    from embedx.store import FeatureSetSpec
    from embedx.store.spec import random_name

    stored_config = {k: getattr(config, k) for k in DATA_KEYS}
    # the backend's resolved options (e.g. opensmile 'egemaps' -> 'eGeMAPSv02'); stored only
    # when there are any, so stores written before the key existed still resume
    options = dict(backend.options or config.backend_options)
    if options:
        stored_config["backend_options"] = options
    else:
        del stored_config["backend_options"]
    stored_config.update(
        # a name given is the twin's name too: --name X --random-init stores X-random
        name=backend.name if config.name is None else random_name(
            config.name, bool(config.backend_options.get("random_init")), explicit=True),
        layers=",".join(map(str, layers)),
        poolings=list(config.poolings),
        precision=backend.precision,
    )
    spec = FeatureSetSpec(
        name=stored_config["name"],
        backend=config.backend,
        layers=tuple(layers),
        dim=backend.dim,
        poolings=tuple(config.poolings),
        frames=config.frames,
        dtype=config.dtype,
        frame_rate=backend.frame_rate,
        heads={k: tuple(v) for k, v in backend.head_names.items()},
        feature_names=tuple(backend.feature_names) if backend.feature_names else None,
        # the spec's own fields (backend, layers, dim, ...) are stored by the store itself
        attrs={k: v for k, v in backend.metadata().items() if k not in FeatureSetSpec.__dataclass_fields__
               and k not in ("embedx_version", "created", "command")},
        config=stored_config,
    )
    return spec


def _without_inert_settings(store: Any, spec: Any, backend: Backend) -> Any:
    """Keep settings that cannot change the values out of the resume check.

    ``max_chunk_seconds`` does nothing for a backend that never chunks (openSMILE computes
    whole items): a new feature set stores None, and an existing one keeps what it stored, so a
    resume with another ``--max-chunk-seconds`` is not refused.
    """
    if backend.hop_samples is not None:
        return spec
    config = dict(spec.config)
    config["max_chunk_seconds"] = None
    if spec.name in store.feature_sets():
        stored = store.spec(spec.name).config
        if "max_chunk_seconds" in stored:
            config["max_chunk_seconds"] = stored["max_chunk_seconds"]
        else:
            del config["max_chunk_seconds"]
    return dataclasses.replace(spec, config=config)


def _plan(config: ExtractConfig, backend: Backend, todo: np.ndarray, lengths: np.ndarray,
          summary: ExtractSummary, note: Callable[[str], None]) -> tuple[int, list[list[int]], list[int], int]:
    """Batches of the items in ``todo``: ``(budget in samples, batches, long items, workers)``."""
    summary.batch_seconds = batch_seconds(config, backend)  # resolved once: the plan and the record
    budget = int(summary.batch_seconds * backend.sample_rate)
    max_chunk = _max_chunk_samples(config, backend)
    is_long = lengths[todo] > max_chunk if max_chunk else np.zeros(len(todo), dtype=bool)
    plan = make_batches(todo[~is_long], lengths[todo[~is_long]], budget, config.max_batch_items)
    # long items come first and alone: the decoder hands over the whole prepared item, the
    # loop runs its chunks; failing early on them beats failing after hours
    long_first = sorted(todo[is_long].tolist(), key=lambda i: -lengths[i])
    batches = [[i] for i in long_first] + plan.batches
    summary.padded_fraction = plan.padded_fraction
    workers = default_workers() if config.workers is None else config.workers
    workers = min(workers, len(batches))  # a worker with no batch to decode only costs its start
    summary.workers = workers
    note(f"{plural(len(todo), 'item')} to process in {plural(len(batches), 'batch', 'batches')} "
         f"({plan.padded_fraction:.1%} padding, {plural(len(long_first), 'long item')} in chunks), "
         f"{plural(workers, 'decoding worker')}")
    return budget, batches, long_first, workers


@dataclasses.dataclass
class _Step:
    """One batch of the loop: hand-over accounting, the forward (short or chunked), the writes."""

    writes: StoreQueue
    store: Any
    name: str
    backend: Backend
    layers: list[int]
    config: ExtractConfig
    budget: int
    meter: Meter
    ops: DeviceOps
    limit: Budget  # shrinks when the device runs out of memory, for the rest of the run

    def run(self, loader: Loader, batch: Any, workers: int, long_set: set[int],
            summary: ExtractSummary, mark: Any) -> tuple[list[Any], list[int]]:
        """Process ``batch`` (received at ``mark``); returns its ``(index, wave, error)`` items
        and the written indices."""
        meter, writes, store, name = self.meter, self.writes, self.store, self.name
        # decoded in the main process (no workers), the decoding parts ran inside the
        # loader's step: what is left of the step is the hand-over
        in_step = sum(batch.cpu.values()) if workers == 0 else 0.0
        meter.cpu["receive"] -= in_step
        for part, seconds in batch.cpu.items():
            meter.cpu[part] += seconds
        batch_items = loader.items(batch)
        good = [(i, w) for i, w, err in batch_items if err is None]
        for i, _w, err in batch_items:
            if err is not None:
                writes.put(store.record_failure, name, i, "decode", err)
                summary.failed += 1
        meter.add("receive", mark)
        args = (writes, store, name, self.backend, self.layers, self.config)
        if len(good) == 1 and good[0][0] in long_set:
            written, errors = run_long(*args, *good[0], self.budget, meter, self.ops, self.limit,
                                       _max_chunk_samples(self.config, self.backend))
        else:
            written, errors = run_short(*args, good, meter, self.ops, self.limit)
        del good
        loader.release(batch)  # the forward has consumed the waves: the worker may refill the slot
        for i, err in errors.items():
            writes.put(store.record_failure, name, i, "forward", err)
            summary.failed += 1
        return batch_items, written


def _run_batches(store: Any, name: str, backend: Backend, layers: list[int], config: ExtractConfig,
                 items: pd.DataFrame, todo: np.ndarray, decoded: np.ndarray, lengths: np.ndarray,
                 summary: ExtractSummary, note: Callable[[str], None], stop: _StopRequest) -> None:
    """The processing loop of :func:`extract` over the items in ``todo``.

    ``decoded`` are the items' lengths as decoded at the model's rate, ``lengths`` after the
    short-item policy (what the batches are planned with). Store calls run on a writer thread
    (:class:`StoreQueue`), overlapped with the next batch's forward; the thread is drained and
    joined before the loop returns, whether it ends, is stopped or fails. The loop publishes its
    progress in the store's lock record after every batch and ends after the batch in flight
    when ``stop`` has caught a signal. ``summary.timings`` gets where the main thread's time
    went (seconds): ``first_batch``, ``wait`` (for decoded data), ``forward`` (padding, the copy
    to the device and the model; on CUDA only queuing it), ``pool`` (pooling and starting the
    copy back, :mod:`~embedx.extraction.transfer`), ``write_wait`` (blocked on a full write
    queue), and ``write`` (the writer thread: waiting for a batch's copy to the host, then its
    store calls; overlapped with the next batches' forwards).
    ``summary.cpu`` gets CPU seconds per part, whichever process or thread spent them: the
    decoding parts of :data:`embedx.extraction.loader.WORKER_PARTS` (in the workers, or in the main process
    without workers), ``receive`` (the main thread's hand-over: receiving and unpacking
    batches), ``forward``, ``pool``, ``write_wait``, ``write`` (the writer thread), and the
    totals ``main_total`` (every thread of the main process during the loop) and
    ``workers_total`` (the workers, start-up and sending included).
    """
    budget, batches, long_first, workers = _plan(config, backend, todo, lengths, summary, note)
    # a backend's small picklable preparer, so workers never need the model itself
    prep = backend.preparer or backend
    loader = Loader(items["path"].tolist(), decoded, backend.sample_rate, prep.prepare, prep.fit_length,
                    batches, workers, budget)
    durations = items["duration"].to_numpy(dtype=np.float64)
    long_set = set(long_first)
    if long_set:
        chunk_poolings(tuple(config.poolings))  # refuse poolings that cannot combine, up front
    # items done or failed before this loop, for the progress published to `embedx info`
    before = len(items) - len(todo) - summary.failed  # this run's probe failures count below
    store.set_progress(name, before, len(items))
    meter = Meter()
    summary.timings, summary.cpu = meter.wall, meter.cpu
    reset_peak_memory(backend)
    writes = StoreQueue()
    start = time.perf_counter()
    cpu_start, children_start = time.process_time(), children_cpu()
    try:
        with progress_bar(config.progress, rate=True) as progress:
            task = progress.add_task(f"extract {name}", total=len(todo), rate="")
            step = _Step(writes, store, name, backend, layers, config, budget, meter, ops_for(backend), Budget())
            mark = meter.mark()
            for batch in loader:
                mark = meter.add("wait", mark, cpu_part="receive")
                if not meter.wall["first_batch"]:
                    meter.wall["first_batch"] = mark[0] - start
                batch_items, written = step.run(loader, batch, workers, long_set, summary, mark)
                summary.processed += len(written)
                summary.audio_seconds += float(np.nansum(durations[written]))
                elapsed = time.perf_counter() - start
                progress.update(task, advance=len(batch_items), rate=(
                    f"{summary.processed / elapsed:.1f} items/s "
                    f"{summary.audio_seconds / elapsed:.1f} audio-s/s"))
                writes.put(store.set_progress, name, before + summary.processed + summary.failed,
                           len(items))
                mark = meter.mark()
                if stop.signal is not None:
                    break
    finally:
        loader.close()  # ends the workers now, before the store is closed
        # the batches already computed are written (and marked done) before the store closes,
        # also when the loop is stopped by a signal or fails; a writer error is raised here
        writes.close()
        meter.wall["write"], meter.cpu["write"] = writes.busy, writes.busy_cpu
        meter.cpu["main_total"] = time.process_time() - cpu_start
        meter.cpu["workers_total"] = children_cpu() - children_start
    summary.elapsed = time.perf_counter() - start
    summary.peak_memory = peak_memory(backend)


def _max_chunk_samples(config: ExtractConfig, backend: Backend) -> int | None:
    """Longest item (in samples) run in one piece; ``None`` when items are never chunked."""
    if backend.hop_samples is None:
        return None
    # a backend with a fixed input window (Whisper: 30 s) runs longer items in chunks anyway
    limit = backend.max_samples
    if config.max_chunk_seconds is None:
        return limit
    wanted = int(config.max_chunk_seconds * backend.sample_rate)
    return min(wanted, limit) if limit else wanted


__all__ = [
    "extract",
]

