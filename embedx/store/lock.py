"""The writer's lock: ``<store>.lock``, a :mod:`filelock` lock with a JSON record of its holder.

One writer per store at a time. The mutual exclusion is ``flock`` (the kernel drops it when the
holder dies, whatever kills it); the file's content names the holder (pid, host, start time,
command) and its progress, for a refused writer, for ``embedx info`` (:func:`writer_status`)
and for a new writer taking over from a killed one. Descriptors registered here are closed in
every forked child (:func:`close_in_forked_children`), so a DataLoader worker that outlives a
killed parent can never keep the store locked.

This module does not touch h5py. Names with a leading underscore are private to the package.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedx.errors import StoreError
from embedx.store.spec import _now

#: bytes of the holder record in ``<store>.lock``: every update rewrites them in one pwrite, so
#: a reader never sees a shorter record spliced onto the tail of a longer one
_RECORD_BYTES = 2048
#: tries at taking the lock when the lock file is replaced between opening and locking it
_LOCK_TRIES = 3


def _stderr_line(message: str) -> None:
    print(f"embedx: {message}", file=sys.stderr, flush=True)


def _proc_state(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` of a process, from /proc (Linux only)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses; the fields after it are plain
    fields = text[text.rindex(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OverflowError:
        return False
    state = _proc_state(pid)
    if state is None:
        return True  # no /proc: kill(pid, 0) is all we know
    return state[0] != "Z" and (start is None or state[1] == start)


def _holders(path: Path) -> list[int]:
    """Pids of this host's other processes that have ``path`` open (Linux /proc; [] elsewhere)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(entry))
                break
    return sorted(pids)


def _read_record(lock_path: Path) -> dict[str, Any] | None:
    """The holder record of a lock file; None when there is no file or no (valid) record."""
    for _ in range(3):
        try:
            raw = lock_path.read_bytes()
        except OSError:
            return None
        try:
            record = json.loads(raw.decode("utf-8").strip() or "null")
        except (UnicodeDecodeError, ValueError):
            # caught between the holder's truncation and its rewrite (filelock < 4 truncates
            # the file as it opens it): ask again
            import time

            time.sleep(0.02)
            continue
        return record if isinstance(record, dict) and "pid" in record else None
    return None


@dataclass(frozen=True)
class WriterStatus:
    """Who writes a store (or wrote it, when a killed run left its lock file), and how far.

    Attributes:
        store: the store file.
        pid: the writing process.
        host: the host it runs on.
        started: when it took the lock (ISO 8601).
        command: its command line.
        running: True/False when ``host`` is this host; None on another host (cannot tell).
        set: the feature set being written, when the loop has started.
        done: items of ``set`` processed (written or failed).
        total: items of ``set``.
        updated: when ``done`` was last published.
    """

    store: Path
    pid: int
    host: str
    started: str
    command: str
    running: bool | None
    set: str | None = None
    done: int | None = None
    total: int | None = None
    updated: str | None = None

    @property
    def where(self) -> str:
        """``"pid P"`` or ``"pid P on host H"`` when H is not this host."""
        here = self.host == socket.gethostname()
        return f"pid {self.pid}" + ("" if here else f" on host {self.host}")

    @property
    def progress(self) -> str:
        """``"N/M items of 'set' done"``, or ``"starting"`` before the loop."""
        if self.set is None or self.done is None or self.total is None:
            return "starting"
        return f"{self.done}/{self.total} items of '{self.set}' done"

    def line(self) -> str:
        """One line for ``embedx info`` while the store is written."""
        since = f", last update {self.updated}" if self.updated else ""
        if self.running is False:
            return (f"{self.store} was being written by {self.where}, which was killed at "
                    f"{self.progress}; re-run its command to resume: {self.command or '?'}")
        return (f"{self.store} is being written by {self.where}: {self.progress} "
                f"(started {self.started}{since}; command: {self.command or '?'})")


def writer_status(path: str | os.PathLike[str]) -> WriterStatus | None:
    """The writer of a store as its lock file tells it, without opening the store.

    Args:
        path: the store file.

    Returns:
        The status, or None when no writer holds (or left) a lock file.
    """
    store = Path(path)
    record = _read_record(Path(f"{store}.lock"))
    if record is None:
        return None
    try:
        pid = int(record["pid"])
    except (TypeError, ValueError):
        return None
    host = str(record.get("host", ""))
    running = _alive(pid, record.get("start")) if host == socket.gethostname() else None

    def opt_int(key: str) -> int | None:
        value = record.get(key)
        return int(value) if isinstance(value, int) else None

    return WriterStatus(
        store=store, pid=pid, host=host, started=str(record.get("started", "")),
        command=str(record.get("command", "")), running=running,
        set=record.get("set") if isinstance(record.get("set"), str) else None,
        done=opt_int("done"), total=opt_int("total"),
        updated=record.get("updated") if isinstance(record.get("updated"), str) else None,
    )


def _busy_message(store: Path, lock_path: Path, status: WriterStatus | None) -> str:
    """Why the lock of ``store`` cannot be taken, naming the holder as well as it is known."""
    if status is None:
        return (f"{store} is being written by another embedx process (lock {lock_path}); "
                "wait for it or write another file")
    if status.running is False:
        # the recorded writer is gone but the lock is held: something inherited it
        holders = _holders(lock_path)
        who = f"process(es) {', '.join(map(str, holders))}" if holders else "another process"
        return (f"{store} is locked by {who}, left over from a killed writer (pid {status.pid}, "
                f"{status.progress}); end {'them' if len(holders) > 1 else 'it'} and re-run")
    return (f"{store} is being written by another embedx process (lock {lock_path}, {status.where}, "
            f"{status.progress}); wait for it or write another file")


class _WriterLock:
    """The exclusive lock of a store's writer: ``<store>.lock``, with a record of the holder.

    The mutual exclusion is :class:`filelock.FileLock` (``flock``: the kernel releases it when
    the holder dies, whatever kills it). The file's content is a JSON record (pid, host, start
    time, command, progress) that names the holder to a refused writer and to ``embedx info``,
    and tells a new writer that it takes over from a killed one. :meth:`release` removes the
    file; a writer that locked a file removed meanwhile sees so and tries again.
    """

    def __init__(self, store: Path, command: str) -> None:
        self.store = store
        self.path = Path(f"{store}.lock")
        self.command = command
        self._lock: Any = None
        self._fd: int | None = None
        self._record: dict[str, Any] = {}

    def acquire(self) -> str | None:
        """Take the lock; return a one-line notice when it is taken over from a killed writer.

        Raises:
            StoreError: another process holds it (naming pid and host when recorded), or the
                lock file cannot be created.
        """
        import filelock

        for _ in range(_LOCK_TRIES):
            # read before locking: filelock < 4 truncates the file as it opens it
            previous = writer_status(self.store)
            lock = filelock.FileLock(str(self.path), timeout=0, thread_local=False)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise StoreError(_busy_message(self.store, self.path, previous)) from None
            except OSError as exc:
                raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            try:
                # no O_CREAT: the file at the path must be the one that was locked
                fd = os.open(self.path, os.O_WRONLY)
            except FileNotFoundError:
                lock.release()
                continue
            if _same_file(lock, fd):
                self._lock, self._fd = lock, fd
                break
            os.close(fd)
            lock.release()
        else:
            raise StoreError(f"cannot lock {self.path}: other writers keep replacing it; try again")
        state = _proc_state(os.getpid())
        self._record = {"pid": os.getpid(), "host": socket.gethostname(),
                        "start": state[1] if state else None, "started": _now(),
                        "command": self.command}
        self.publish()
        if previous is not None and previous.pid != os.getpid():
            return (f"{self.path} was left by a writer that is gone ({previous.where}, "
                    f"{previous.progress}); taking it over, its finished items are kept")
        return None

    def publish(self, **progress: Any) -> None:
        """Rewrite the holder record with ``progress`` (set, done, total) and the time."""
        if self._fd is None:
            return
        self._record.update(progress, updated=_now() if progress else None)
        data = json.dumps(self._record).encode("utf-8")
        if len(data) > _RECORD_BYTES:  # a very long command line: keep the rest readable
            self._record["command"] = self._record["command"][: _RECORD_BYTES // 2] + "..."
            data = json.dumps(self._record).encode("utf-8")[:_RECORD_BYTES]
        try:
            os.pwrite(self._fd, data.ljust(_RECORD_BYTES), 0)
        except OSError:  # the record is informative only; a full disk shows in the store itself
            pass

    def fds(self) -> list[int]:
        """The descriptors this lock holds."""
        fd = _lock_fd(self._lock)
        return [f for f in (self._fd, fd) if f is not None]

    def release(self) -> None:
        """Remove the lock file, then unlock (idempotent)."""
        fd, lock = self._fd, self._lock
        self._fd = self._lock = None
        try:
            if fd is not None:
                # removed while still locked: a writer that opened the file meanwhile finds
                # the path gone once it gets the lock, and tries again
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                finally:
                    os.close(fd)
        finally:
            if lock is not None:
                lock.release()


def _lock_fd(lock: Any) -> int | None:
    """The descriptor filelock locked (a private attribute, present in filelock 3.x and 4.x)."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    return fd if isinstance(fd, int) else None


def _same_file(lock: Any, fd: int) -> bool:
    """Whether ``fd`` (opened by path after locking) is the file ``lock`` locked, still linked."""
    locked = _lock_fd(lock)
    if locked is None:
        return True  # cannot tell with this filelock version; the race needs two other writers
    a, b = os.fstat(locked), os.fstat(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and a.st_nlink > 0


#: owners open in this process (writers) -> the descriptors a forked child must not keep
_OPEN_FDS: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()


def close_in_forked_children(owner: Any, fds: list[int]) -> None:
    """Have every child forked from now on close ``fds`` (until :func:`keep_in_forked_children`).

    Args:
        owner: the object holding the descriptors (a writer); held weakly, so a writer that is
            garbage-collected without being closed is forgotten.
        fds: the descriptors (the store file's and the lock's).
    """
    _OPEN_FDS[owner] = fds


def keep_in_forked_children(owner: Any) -> None:
    """Forget ``owner``'s descriptors (it closed them); idempotent.

    Args:
        owner: an object given to :func:`close_in_forked_children`, or any other (no effect).
    """
    _OPEN_FDS.pop(owner, None)


def _close_in_child() -> None:
    """Close every open writer's store and lock descriptors in a freshly forked child.

    A DataLoader worker is forked while the store is open; if it kept the descriptors and
    outlived a killed parent, it would hold the lock (and HDF5's own lock on the file) forever.
    The child never uses the parent's writer: its h5py objects are left alone (touching HDF5
    here could deadlock on a lock another thread held at the fork), only the descriptors go.
    """
    for fds in list(_OPEN_FDS.values()):
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
    _OPEN_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
