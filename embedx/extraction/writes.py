"""Store writes on a writer thread, so they overlap the next batch's forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["StoreQueue"]


class StoreQueue:
    """Store writes on a writer thread, behind a bounded queue, so they overlap the next forward.

    The main thread hands over finished host arrays; the thread runs the store calls in order.
    ``store.write`` flushes an item's data before it sets ``done``, on whichever thread it runs,
    so resume semantics do not change. The queue holds at most ``depth`` pending calls (the
    main thread blocks beyond that): memory stays bounded when the disk is slower than the
    model. An error on the thread stops further writes and is raised on the main thread at the
    next :meth:`put` or at :meth:`close` (an ``OSError`` as a
    :class:`~embedx.errors.StoreWriteError`); :meth:`close` always joins the thread.

    Args:
        depth: pending calls allowed before :meth:`put` blocks.
    """

    _STOP = object()

    def __init__(self, depth: int = 4) -> None:
        import queue

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.busy = 0.0  # seconds the thread spent in store calls
        self.busy_cpu = 0.0  # CPU seconds of the thread in store calls
        self._thread = threading.Thread(target=self._run, name="embedx-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is self._STOP:
                return
            if self._error is not None:
                continue  # drain without writing: the run is failing
            fn, args, kwargs = job
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                fn(*args, **kwargs)
            except OSError as exc:  # a full disk, an I/O error, a vanished mount: the run stops
                from embedx.extraction.disk import write_failure

                self._error = write_failure(exc)
            except BaseException as exc:  # handed to the main thread, which raises it
                self._error = exc
            self.busy += time.perf_counter() - t0
            self.busy_cpu += time.thread_time() - c0

    def put(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; raise a failed earlier call's error first."""
        self._raise()
        self._queue.put((fn, args, kwargs))

    def close(self) -> None:
        """Finish the queued calls, join the thread, and raise a call's error if one failed."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:  # kept: every later put and close fails too
            raise self._error
