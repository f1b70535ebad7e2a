"""The shards of ``extract --engine ray --shards N`` as Ray tasks.

One task per shard, with one GPU where the cluster has GPUs (Ray then shows the task only its
own GPU, so ``--device auto`` is that GPU) and the cluster's CPUs per GPU for its decoding
workers; without GPUs one CPU each. A task writes its shard store (``extract --shard K/N``)
on storage every node and this process share, so a task that is lost (its worker or node
dies) is retried (:data:`MAX_RETRIES` times) and resumes the shard where the lost one stopped.
A user error inside a task (a bad model, a full disk) is returned, not retried.

Ray is imported only here, and only when ``--engine ray`` is asked for.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

from embedx.errors import ConfigError, NothingExtractedError, Param, ShardError, one_line
from embedx.extraction.config import ExtractConfig
from embedx.extraction.run_stats import ExtractSummary

__all__ = ["MAX_RETRIES", "RayShards", "kill_marker"]

#: times a lost shard task is started again
MAX_RETRIES = 3
#: test hook: a shard task's first attempt kills its own worker (SIGKILL) once it has written
#: this many items, as a node or worker lost mid-shard would end it; the folder in
#: :data:`KILL_MARKERS_ENV` keeps one file per killed shard (:func:`kill_marker`)
KILL_AFTER_ENV = "EMBEDX_TEST_KILL_SHARD_AFTER"
KILL_MARKERS_ENV = "EMBEDX_TEST_KILL_MARKERS"

class RayShards:
    """Run the shards as tasks on the Ray cluster at ``config.scheduler`` (or Ray's default).

    Args:
        config: the run's settings (``shards``, ``scheduler``, ``workers``).

    Raises:
        ConfigError: ray not installed, the cluster cannot be reached, or no ``shards`` on a
            cluster without GPUs.
    """

    def __init__(self, config: ExtractConfig) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(Param("engine", "ray"), " needs the optional extra: pip install 'embedx[ray]'") from None
        self.started = not ray.is_initialized()
        if self.started:
            try:
                ray.init(address=config.scheduler, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(Param("scheduler", config.scheduler or "auto"),
                                  f": cannot start or reach Ray ({one_line(exc)[:300]})") from None
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        # a GPU task takes its node's share of CPUs for decoding; a CPU task one core
        self.cpus = max(1, cpus // self.gpus) if self.gpus else 1
        self.workers = config.workers
        if config.shards is None and not self.gpus:
            self.close()
            raise ConfigError(Param("engine", "ray"), " on a cluster without GPUs needs ", Param("shards"),
                              f" (its {cpus} CPUs could run {cpus} shards)")
        self.count = config.shards or self.gpus

    def where(self, count: int) -> str:
        """Where the shards run, for the note."""
        per = f"1 GPU and {self.cpus} CPUs" if self.gpus else "1 CPU"
        return f"Ray tasks of {per} each, up to {MAX_RETRIES} retries"

    def close(self) -> None:
        """Disconnect from (or stop) the Ray this object started."""
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()

    def run(self, inputs: list[str], paths: list[Path], configs: list[ExtractConfig], scanned: Any,
            command: str | None, progress: Any) -> tuple[list[ExtractSummary], str | None]:
        """Submit every shard and wait for them, polling the progress; returns the summaries."""
        import ray

        try:
            task = ray.remote(_shard_task).options(
                num_gpus=1 if self.gpus else 0, num_cpus=self.cpus, max_retries=MAX_RETRIES,
                retry_exceptions=False, name="embedx-shard")
            workers = self.workers if self.workers is not None else max(0, self.cpus - 1)
            table = ray.put(scanned)
            refs = [task.remote(inputs, str(path), dataclasses.replace(config, workers=workers), table,
                                command) for path, config in zip(paths, configs, strict=True)]
            results = self._wait(refs, progress)
        finally:
            self.close()
        return results, None

    def _wait(self, refs: list[Any], progress: Any) -> list[ExtractSummary]:
        import ray

        results: list[Any] = [None] * len(refs)
        pending = dict(zip(refs, range(len(refs)), strict=True))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=progress.every)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ShardError(f"shard {k}/{len(refs)} failed on Ray after {MAX_RETRIES} retries "
                                     f"({one_line(exc, first_line=True)[:300]}); re-run the same command "
                                     "to resume") from None
                if isinstance(results[k], BaseException):
                    raise results[k]
            progress.poll([k for k, r in enumerate(results) if r is not None])
        return results


def _shard_task(inputs: list[str], output: str, config: ExtractConfig, scanned: Any,
                command: str | None) -> Any:
    """One shard in a Ray worker: its summary, or the EmbedxError it raised."""
    from embedx.errors import EmbedxError
    from embedx.extraction.extract import extract as one_process

    _kill_hook(output)
    try:
        return one_process(inputs, output, config, command=command, scanned=scanned)
    except NothingExtractedError as exc:  # only this shard's items all failed: the merge decides
        return exc.summary
    except EmbedxError as exc:
        return exc


def kill_marker(output: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """The file the test hook leaves in ``folder`` when it kills the shard writing ``output``."""
    import hashlib

    return Path(folder) / (hashlib.sha1(str(output).encode()).hexdigest()[:16] + ".killed")


def _kill_hook(output: str) -> None:
    """Under :data:`KILL_AFTER_ENV` (tests), the first attempt at a shard SIGKILLs its worker
    process once that many items are written and marked done (its :func:`kill_marker` says it did)."""
    after, folder = os.environ.get(KILL_AFTER_ENV), os.environ.get(KILL_MARKERS_ENV)
    if not after or not folder or kill_marker(output, folder).exists():
        return
    from embedx.store import StoreWriter

    marker = kill_marker(output, folder)
    write = StoreWriter.write
    written = [0]

    def write_then_die(self: Any, name: str, indices: Any, *args: Any, **kwargs: Any) -> Any:
        result = write(self, name, indices, *args, **kwargs)  # data and done flags flushed
        written[0] += len(indices)
        if written[0] >= int(after):
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    StoreWriter.write = write_then_die  # type: ignore[method-assign]
