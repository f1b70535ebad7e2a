"""One extraction over several shards at once: the devices of one host, or a Ray cluster.

``extract --devices cuda:0,cuda:1`` (or ``all``) starts one process per device; ``extract
--engine ray --shards N`` one Ray task per shard (:mod:`embedx.extraction.cluster`). Either way
this process reads every file's header once (:func:`~embedx.extraction.scan.scan_items`) and
hands the table to the shards, each shard writes its own store (``<output>.shards/shard-K-of-N.h5``,
``extract --shard K/N``: resumable, the same split a hand-made ``--shard`` run takes), the
progress shown is the sum of the shards' (read from their lock records), and once every shard
is done they are merged into ``output`` (:func:`embedx.store.merge`: the store equals a
one-process run) and removed. A stopped or failed run leaves the shard stores; the same
command resumes them.

The host's cores are shared: the decoding workers of all processes together are what one
process would start (``workers``, default every core but one), split evenly, and each process
gets its share of torch's threads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedx.errors import ConfigError, NothingExtractedError, Param, ShardError, StoreConflictError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.run_stats import ExtractSummary, failure_breakdown
from embedx.text import plural

__all__ = ["ENGINES", "check_scale", "extract", "parse_devices", "shard_paths"]

#: where the shards of ``extract`` run: this host (``--devices``), or a Ray cluster
ENGINES = ("local", "ray")
#: seconds between two looks at the shards' progress
POLL_SECONDS = 0.5
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def parse_devices(spec: str) -> list[str]:
    """The devices of ``--devices``: a comma list, or ``all`` (every visible GPU).

    Args:
        spec: e.g. ``"cuda:0,cuda:1"``, ``"all"``, ``"cpu,cpu"`` (two CPU processes).

    Returns:
        One device per process.

    Raises:
        ConfigError: an unknown device, an empty list, or ``all`` without a GPU.
    """
    text = str(spec).strip().lower()
    if text == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(Param("devices", "all"), " found no CUDA device; name the devices, e.g. ",
                              Param("devices", "cuda:0,cuda:1"), " (or cpu,cpu)")
        return [f"cuda:{i}" for i in range(count)]
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if not _DEVICE.match(d)]
    if bad or not devices:
        raise ConfigError(Param("devices", spec), f" is not a device list ({bad[0] if bad else 'empty'}); "
                          "expected a comma list of cpu, cuda or cuda:N, or all")
    if any(d.startswith("cuda") for d in devices):  # before any shard starts, as --device is
        import torch

        count = torch.cuda.device_count()
        missing = [d for d in devices if d.startswith("cuda") and int(d.partition(":")[2] or 0) >= count]
        if missing:
            have = f"cuda:0 to cuda:{count - 1}" if count else "cpu (no CUDA device is visible)"
            raise ConfigError(Param("devices", spec), f": device {missing[0]!r} is not here; this machine has {have}")
    return devices


def check_scale(config: ExtractConfig) -> None:
    """Check the options that spread a run over shards, before any work.

    Raises:
        ConfigError: an unknown engine, ray not installed, or options that contradict each other (``devices`` with
            ``shard``, ``device`` or the Ray engine; ``shards`` or ``scheduler`` without it).
    """
    if config.engine not in ENGINES:
        raise ConfigError(Param("engine", config.engine), f" is not an engine; accepted: {', '.join(ENGINES)}")
    ray = config.engine == "ray"
    if ray and importlib.util.find_spec("ray") is None:  # before the headers are read
        raise ConfigError(Param("engine", "ray"), " needs the optional extra: pip install 'embedx[ray]'")
    if config.devices is not None:
        parse_devices(config.devices)
        if ray:
            raise ConfigError(Param("devices"), " runs processes on this host; with ", Param("engine", "ray"),
                              " Ray places the shards: give ", Param("shards"), " instead")
        if config.device != "auto":
            raise ConfigError(Param("devices"), " and ", Param("device", config.device),
                              " contradict; give one of them")
    if (config.devices is not None or ray) and config.shard is not None:
        raise ConfigError(Param("shard", config.shard), " runs one shard by hand; ",
                          Param("devices") if not ray else Param("engine", "ray"),
                          " runs every shard and merges them: give one of them")
    for name in ("shards", "scheduler"):
        if getattr(config, name) is not None and not ray:
            raise ConfigError(Param(name), " is for ", Param("engine", "ray"), f"; the engine is {config.engine!r}")
    if config.shards is not None and (isinstance(config.shards, bool) or config.shards < 1):
        raise ConfigError(Param("shards"), f" must be at least 1, got {config.shards!r}")


def shard_paths(output: str | os.PathLike[str], count: int) -> list[Path]:
    """The shard stores of a run into ``output``: ``<output>.shards/shard-K-of-N.h5``."""
    folder = Path(f"{output}.shards")
    return [folder / f"shard-{k}-of-{count}.h5" for k in range(count)]


def extract(inputs: Sequence[str | Path], output: str | Path, config: ExtractConfig,
            *, command: str | None = None, log: Callable[[str], None] | None = None) -> ExtractSummary:
    """Run an extraction: in this process, or over shards merged into ``output``.

    Args:
        inputs: folders, audio files or file lists (see :func:`embedx.extraction.extract.extract`).
        output: the HDF5 store; with ``devices`` or the Ray engine a new file.
        config: the settings; ``devices``, ``engine``, ``shards`` and ``scheduler`` say where
            the shards run.
        command: the command line, stored in the file's attributes.
        log: where to send progress notes.

    Returns:
        The run's summary (for a sharded run: the shards' sums, the merged store's totals).

    Raises:
        NothingExtractedError: every item failed.
        ShardError: a shard's process died, or its Ray task failed every retry.
        EmbedxError: bad options, inputs, model or store, in one line.
    """
    from embedx.extraction.extract import extract as one_process

    check_scale(config)
    if config.devices is None and config.engine == "local":
        return one_process(inputs, output, config, command=command, log=log)
    return _sharded(inputs, output, config, command, log or (lambda _msg: None))


def _sharded(inputs: Sequence[str | Path], output: str | Path, config: ExtractConfig,
             command: str | None, note: Callable[[str], None]) -> ExtractSummary:
    """Scan once, run the shards where ``config`` says, merge them into ``output``."""
    from embedx.extraction.scan import scan_items
    from embedx.extraction.shard import select
    from embedx.store import check_store_path

    config.validate()
    check_store_path(output)
    if Path(output).exists():
        raise StoreConflictError(f"{output} exists; a run over shards (", Param("devices"), ", ",
                                 Param("engine", "ray"), ") merges them into a new store: give another ",
                                 Param("output"), ", or extend this one in one process")
    scanned = scan_items(inputs, config, note)
    items = scanned[0]
    if config.engine == "ray":
        from embedx.extraction.cluster import RayShards

        runner: Any = RayShards(config)
    else:
        runner = LocalShards(config)
    count = min(runner.count, len(items))
    if count < runner.count:
        note(f"{plural(len(items), 'item')}: {count} shards, not {runner.count}")
    durations = items["duration"].to_numpy(dtype="float64", na_value=float("nan"))
    sizes = [len(select(durations, k, count)) for k in range(count)]
    paths = shard_paths(output, count)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    configs = [dataclasses.replace(config, devices=None, engine="local", shards=None, scheduler=None,
                                   shard=f"{k}/{count}", progress=False) for k in range(count)]
    note(f"{plural(len(items), 'item')} in {count} shards ({runner.where(count)}) -> {paths[0].parent}")
    start = time.perf_counter()
    progress = ShardProgress(paths, sizes, config.progress)
    with progress:
        summaries, stopped = runner.run(list(map(str, inputs)), paths, configs, scanned, command, progress)
    summary = _combined(output, summaries, time.perf_counter() - start, stopped)
    if stopped is None:
        _merge(paths, output, command, summary, note)
    if summary.all_failed:
        raise NothingExtractedError(summary.all_failed_line(), summary)
    return summary


def _combined(output: str | Path, summaries: list[ExtractSummary], elapsed: float,
              stopped: str | None) -> ExtractSummary:
    """The summary of a sharded run: the shards' sums (totals until the merge sets them)."""
    def total(attr: str) -> Any:
        return sum(getattr(s, attr) for s in summaries)

    return ExtractSummary(
        output=Path(output), name=next((s.name for s in summaries if s.name), ""), num_items=total("num_items"),
        processed=total("processed"), failed=total("failed"), failed_total=total("failed_total"),
        done_total=total("done_total"), audio_seconds=total("audio_seconds"), elapsed=elapsed,
        stopped=stopped or next((s.stopped for s in summaries if s.stopped), None),
        workers=total("workers"), batch_seconds=summaries[0].batch_seconds,
        peak_memory=max(s.peak_memory for s in summaries),
    )


def _merge(paths: list[Path], output: str | Path, command: str | None, summary: ExtractSummary,
           note: Callable[[str], None]) -> None:
    """Merge the finished shards into ``output``, read its totals, remove the shards."""
    from embedx.store import StoreReader, merge

    merged = merge(paths, output, command=command)
    with StoreReader(output) as r:
        summary.done_total = int(r.done(summary.name).sum())
        failures = r.failed(summary.name)
    summary.failed_total = len(failures)
    if summary.failed_total and not summary.done_total:
        summary.failures = failure_breakdown(failures)
    shutil.rmtree(paths[0].parent)
    note(f"merged {len(paths)} shards in {merged.seconds:.1f} s -> {output}")


class ShardProgress:
    """One progress bar for every shard: the sum of what their lock records say is done.

    Args:
        paths: the shard stores.
        sizes: items of each shard.
        show: draw the bar (else only track).

    Attributes:
        every: seconds between two looks at the shards.
    """

    every = POLL_SECONDS

    def __init__(self, paths: list[Path], sizes: list[int], show: bool) -> None:
        self.paths, self.sizes, self.show = paths, sizes, show
        self.done = [0] * len(paths)

    def __enter__(self) -> ShardProgress:
        from embedx.progress import progress_bar

        self._bar = progress_bar(self.show, rate=False)
        progress = self._bar.__enter__()
        self._task = progress.add_task(f"extract {len(self.paths)} shards", total=sum(self.sizes))
        self._progress = progress
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def poll(self, finished: Sequence[int] = ()) -> None:
        """Read every shard's lock record; ``finished`` shards count as complete."""
        from embedx.store import writer_status

        for k, path in enumerate(self.paths):
            if k in finished:
                self.done[k] = self.sizes[k]
                continue
            status = writer_status(path)
            if status is not None and status.done is not None and status.total == self.sizes[k]:
                self.done[k] = max(self.done[k], status.done)
        self._progress.update(self._task, completed=sum(self.done))


class LocalShards:
    """The shards as processes of this host, one per device of ``config.devices``."""

    def __init__(self, config: ExtractConfig) -> None:
        from embedx.extraction.extract import available_cores, default_workers

        self.devices = parse_devices(str(config.devices))
        self.count = len(self.devices)
        self.cores = available_cores()
        self.workers = default_workers() if config.workers is None else config.workers

    def share(self, count: int) -> tuple[int, int]:
        """Each of ``count`` processes' share of the host: ``(decoding workers, torch threads)``."""
        return self.workers // count, max(1, self.cores // count)

    def where(self, count: int) -> str:
        """Where the shards run, for the note."""
        workers, threads = self.share(count)
        return (f"{', '.join(self.devices[:count])}; {plural(workers, 'decoding worker')} "
                f"and {plural(threads, 'thread')} each")

    def run(self, inputs: list[str], paths: list[Path], configs: list[ExtractConfig], scanned: Any,
            command: str | None, progress: ShardProgress) -> tuple[list[ExtractSummary], str | None]:
        """Run every shard in a process of its own; returns their summaries and the signal
        that stopped the run (forwarded to the shards as SIGTERM), if any."""
        import multiprocessing

        count = len(paths)
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        workers, threads = self.share(count)
        running: list[tuple[Any, Any]] = []
        procs: list[Any] = []
        # the handlers first: a signal while the shards start stops those started, no more start
        with _Forward(procs) as forward:
            for k, (path, config) in enumerate(zip(paths, configs, strict=True)):
                if forward.signal is not None:
                    break
                config = dataclasses.replace(config, device=self.devices[k], workers=workers)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_shard_process, name=f"embedx-shard-{k}", args=(
                    send, inputs, str(path), config, scanned, command, threads))
                proc.start()
                send.close()
                procs.append(proc)
                running.append((proc, receive))
            if forward.signal is not None:  # came while one was starting: it is stopped too
                forward.forward()
            results = _collect(running, progress) + [None] * (count - len(running))
        for k in range(count):
            if results[k] is None and forward.signal is not None:  # stopped before its store was open
                results[k] = ExtractSummary(output=paths[k], name="", num_items=progress.sizes[k],
                                            done_total=progress.done[k], stopped=forward.signal)
            if results[k] is None:
                raise ShardError(f"shard {k}/{count} on {self.devices[k]} ended with exit code {procs[k].exitcode} "
                                 "(its output is above); re-run the same command to resume")
            if isinstance(results[k], BaseException):
                raise results[k]
        return results, forward.signal


def _collect(running: list[tuple[Any, Any]], progress: ShardProgress) -> list[Any]:
    """Wait for every shard process, polling the progress; each one's result or None."""
    results: list[Any] = [None] * len(running)
    pending = set(range(len(running)))
    while pending:
        for k in list(pending):
            proc, receive = running[k]
            if receive.poll():
                try:
                    results[k] = receive.recv()
                except EOFError:  # died before sending
                    results[k] = None
            if results[k] is not None or not proc.is_alive():
                proc.join()
                pending.discard(k)
        progress.poll([k for k, r in enumerate(results) if isinstance(r, ExtractSummary)])
        time.sleep(POLL_SECONDS if pending else 0)
    return results


def _shard_process(send: Any, inputs: list[str], output: str, config: ExtractConfig, scanned: Any,
                   command: str | None, threads: int) -> None:
    """One shard in its own process: sends back its summary, or the EmbedxError it raised."""
    import torch

    from embedx.errors import EmbedxError
    from embedx.extraction.extract import extract as one_process
    from embedx.extraction.extract import leave_stop_line_to_parent

    os.setpgrp()  # a terminal's Ctrl-C reaches the parent, which asks each shard to stop once
    leave_stop_line_to_parent()
    torch.set_num_threads(threads)
    try:
        result: Any = one_process(inputs, output, config, command=command, scanned=scanned)
    except NothingExtractedError as exc:  # only this shard's items all failed: the merge decides
        result = exc.summary
    except EmbedxError as exc:
        result = exc
    send.send(result)
    send.close()


class _Forward:
    """Stop signals of this process, forwarded once to the shard processes as SIGTERM (they
    end after the batch in flight); a second signal kills them."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs
        self.signal: str | None = None
        self._saved: dict[int, Any] = {}
        self._told: set[int] = set()

    def __enter__(self) -> _Forward:
        from embedx.extraction.extract import install_stop_handlers

        self._saved = install_stop_handlers(self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        from embedx.extraction.extract import restore_handlers

        restore_handlers(self._saved)
        if exc[0] is not None:  # a failure here: the shards must not outlive this process
            for proc in self.procs:
                proc.kill()

    def _handle(self, signum: int, _frame: Any) -> None:
        second = self.signal is not None
        self.signal = self.signal or signal.Signals(signum).name
        self.forward(kill=second)

    def forward(self, kill: bool = False) -> None:
        """Ask every started shard to stop (SIGTERM, once each: a second would end it at once),
        or kill it."""
        for proc in self.procs:
            if proc.is_alive() and (kill or proc.pid not in self._told):
                proc.kill() if kill else proc.terminate()
                self._told.add(proc.pid)
