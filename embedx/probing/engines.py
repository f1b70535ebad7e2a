"""Where stage 2's joblib grid runs: loky on this machine, or a Dask or Ray cluster.

The study (:func:`embedx.probing.study.run_study`) builds the same ``joblib.Parallel`` calls for
every engine; this module only opens the engine around them:

* ``loky`` (and joblib's other local backends): ``parallel_config(backend, n_jobs=jobs)``.
* ``dask``: a ``distributed.Client`` connected to ``scheduler`` (``tcp://host:8786``), or, when
  no scheduler is given, a ``LocalCluster`` of ``jobs`` single-threaded worker processes
  started for the duration of the study. Needs ``pip install 'embedx[dask]'``.
* ``ray``: ``ray.util.joblib.register_ray()``; with a scheduler, ``ray.init(address=scheduler)``
  (``ray://host:10001`` or ``auto``), else Ray's own default (``$RAY_ADDRESS`` or a local Ray).
  Needs ``pip install 'embedx[ray]'``.

dask and ray are imported only when asked for.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from embedx.errors import ConfigError, Param, one_line

__all__ = ["CLUSTER_ENGINES", "ENGINES", "check_engine", "engine"]

#: the joblib backends ``fit --engine`` accepts
ENGINES = ("loky", "threading", "multiprocessing", "sequential", "dask", "ray")
#: engines that run on a cluster, and the module each needs
CLUSTER_ENGINES = {"dask": "distributed", "ray": "ray.util.joblib"}
#: how long to try to reach a dask scheduler
CONNECT_TIMEOUT = "30s"


def check_engine(backend: str, scheduler: str | None = None) -> None:
    """Check, before any work, that ``backend`` can run here.

    Args:
        backend: joblib backend name (``loky``, ``dask``, ``ray``, ...).
        scheduler: cluster address (dask or ray only).

    Raises:
        ConfigError: a scheduler for a local backend, or the optional extra of dask / ray is
            not installed (the message says what to install).
    """
    if scheduler is not None and backend not in CLUSTER_ENGINES:
        raise ConfigError(
            Param("scheduler"), f" {scheduler!r} is for a cluster; it needs ", Param("engine", "dask"),
            f" or ray, not {backend!r}"
        )
    if scheduler is not None and not str(scheduler).strip():
        raise ConfigError(Param("scheduler"), " is empty; expected an address such as tcp://host:8786")
    module = CLUSTER_ENGINES.get(backend)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            Param("engine", backend), f" needs the optional extra: pip install 'embedx[{backend}]'"
        ) from None


def _workers(jobs: int) -> int:
    """joblib's n_jobs as a worker count (-1: all cores, -2: all but one, ...)."""
    cores = os.cpu_count() or 1
    return jobs if jobs > 0 else max(1, cores + 1 + jobs)


@contextmanager
def engine(
    backend: str = "loky",
    jobs: int = 1,
    scheduler: str | None = None,
    *,
    processes: bool = True,
) -> Iterator[str]:
    """Run the joblib calls of the ``with`` block on ``backend``.

    Args:
        backend: joblib backend name; ``dask`` and ``ray`` use a cluster.
        jobs: workers (joblib's n_jobs; -1 all cores). With dask and no scheduler, the number
            of local worker processes; with a dask scheduler every worker of the cluster is used.
        scheduler: address of a running dask scheduler or ray cluster.
        processes: dask without a scheduler: worker processes (``False``: threads of this
            process, for tests).

    Yields:
        The ``return_as`` to give ``joblib.Parallel`` inside the block:
        ``"generator_unordered"`` (results as they finish), or ``"list"`` where the backend
        cannot stream results (ray and multiprocessing are pool based).

    Raises:
        ConfigError: see :func:`check_engine`; a dask scheduler that cannot be reached.
    """
    from joblib import parallel_config

    check_engine(backend, scheduler)
    if backend == "dask":
        with _dask_client(scheduler, _workers(jobs), processes) as client:
            # the backend uses every worker of the cluster, whatever n_jobs says
            with parallel_config(backend="dask", client=client, n_jobs=-1):
                yield _return_as()
    elif backend == "ray":
        import ray
        from ray.util.joblib import register_ray

        started = False
        if scheduler is not None and not ray.is_initialized():
            ray.init(address=scheduler)
            started = True
        register_ray()
        try:
            with parallel_config(backend="ray", n_jobs=jobs):
                yield _return_as()
        finally:
            if started:
                ray.shutdown()
    else:
        with parallel_config(backend=backend, n_jobs=jobs):
            yield _return_as()


def _return_as() -> str:
    """``return_as`` for the active joblib backend: stream results where it can."""
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return "generator_unordered" if getattr(backend, "supports_return_generator", False) else "list"


@contextmanager
def _dask_client(scheduler: str | None, workers: int, processes: bool) -> Iterator[object]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                Param("scheduler"), f" {scheduler!r}: cannot reach the dask scheduler "
                f"({one_line(exc)}); expected a running "
                "scheduler's address such as tcp://host:8786"
            ) from None
        with client:
            yield client
        return
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster, set_as_default=False) as client:
        yield client
