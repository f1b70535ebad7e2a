"""Kill/stop matrix harness: run ``embedx extract`` as a real process, stop it at chosen points,
check that no process of the run survives, resume, and compare with an uninterrupted run.

Used by ``tests/test_crash.py`` and ``benchmarks/kill_matrix.py``. Linux only (it reads /proc).

Each run of the chain resumes the store the previous one left, so one uninterrupted run's worth
of work covers every point. A run is launched either as ``python -m embedx`` or, to spare the
~10 s of importing torch and transformers per run on a busy 2-core machine, forked from a
"zygote": a process that imported embedx's CLI once and forks one fresh CLI process per run. The
forked process is a real, separate CLI process (own pid, own DataLoader workers, own signals);
only the imports are shared.

Where a run stops is keyed to what it has durably done, never to timing alone: a stop point
``done>=+K`` fires once the run has published (in the store's lock record, after the writes of
those items) K more items done than the store held when it was launched. So that the stop also
lands before the end however slowly the harness is scheduled, a stopped run is *gated*: inside
the launched process (:func:`install_gate`) the main thread waits before unpacking its batch
number K + 2 until the harness has sent its signal. Up to that batch the run is in motion (the
writer thread still writing batch K + 1), so a kill lands mid-write or at the gate; either way
after K items are durable, with the decoding workers alive (the loop has not received every
batch) and items left to do. Nothing else of the run is changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

#: seconds after a stop within which every process of the run must be gone
GRACE_SECONDS = 10.0


def write_corpus(folder: Path, num_items: int, seed: int = 0) -> Path:
    """``num_items`` speech-like files of 0.3-1.6 s at 16 kHz."""
    from embedx.testing.synth import EMOTIONS, utterance

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_items):
        seconds = float(rng.uniform(0.3, 1.6))
        wave = utterance(list(EMOTIONS)[i % 4], 110 + 7 * i, 1.0, seconds, 16000, rng)
        sf.write(folder / f"u{i:03d}.wav", wave, 16000)
    return folder


# ------------------------------------------------------------------------------ processes


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a process, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every living descendant of ``pid``: pid -> start time."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                table[int(entry)] = st
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (_state, ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def living(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` (pid -> start time) still running (zombies hold nothing)."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[2] == start:
            out.append(pid)
    return out


def holders(*paths: Path) -> list[int]:
    """Pids of processes (other than this one) that have any of ``paths`` open."""
    wanted = set()
    for p in paths:
        try:
            st = os.stat(p)
            wanted.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                pids.append(int(entry))
                break
    return pids


# ------------------------------------------------------------------------------ launching


def install_gate(batch: int, release: str, timeout: float = 300.0) -> None:
    """Make this process's extraction wait before unpacking its batch number ``batch`` (1-based)
    until the file ``release`` exists (or ``timeout`` seconds passed).

    Called inside a launched CLI process before the CLI runs (never by embedx itself). The wait
    is in the main thread at a batch boundary: signal handlers run during it, the writer thread
    finishes the writes queued before it, and the decoding workers stay alive.

    Raises:
        RuntimeError: the loader no longer has the method the gate wraps (the harness must follow).
    """
    from embedx.extraction.loader import Loader

    real_items = getattr(Loader, "items", None)
    if real_items is None:
        raise RuntimeError("kill harness: embedx.extraction.loader.Loader.items is gone; update install_gate")
    seen = 0

    def items(self: Loader, b: object) -> object:
        nonlocal seen
        seen += 1
        if seen == batch:
            deadline = time.monotonic() + timeout
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.01)
        return real_items(self, b)

    Loader.items = items  # type: ignore[method-assign]


class Run:
    """One launched CLI process."""

    pid: int

    def poll(self) -> int | None:
        """Exit code (negative: killed by that signal), None while it runs."""
        raise NotImplementedError

    def wait(self, timeout: float) -> int:
        """Wait for the exit code."""
        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {self.pid} still alive after {timeout} s")
            time.sleep(0.02)
        return rc

    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        """What the run printed (stdout, stderr)."""
        return (self.stdout_path.read_text(errors="replace"), self.stderr_path.read_text(errors="replace"))


#: gate = (batch, release file): see :func:`install_gate`
Gate = tuple[int, str] | None
_ROOT = str(Path(__file__).resolve().parents[1])


class _PopenRun(Run):
    def __init__(self, args: list[str], logs: Path, gate: Gate) -> None:
        self.stdout_path, self.stderr_path = logs.with_suffix(".out"), logs.with_suffix(".err")
        head = ["-m", "embedx"]
        if gate is not None:  # the same entry point, after installing the gate
            head = ["-c", f"import sys; sys.path.insert(0, {_ROOT!r}); from tests.killrun import install_gate; "
                          f"install_gate({gate[0]}, {gate[1]!r}); sys.argv[0] = 'embedx'; "
                          "from embedx.cli import main; main()"]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen([sys.executable, *head, *args], stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL)
        self.pid = self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()


class SubprocessLauncher:
    """Runs ``python -m embedx ARGS``: exactly what a user runs."""

    #: the process that adopts a run's orphans (None: the init process, which the harness cannot see)
    root: int | None = None

    def __call__(self, args: list[str], logs: Path, gate: Gate = None) -> Run:
        return _PopenRun(args, logs, gate)

    def close(self) -> None:
        """Nothing to release."""


_ZYGOTE = r"""
import ctypes, json, os, sys
sys.path.insert(0, ROOT)
import embedx.cli, embedx.extraction.extract, embedx.store, embedx.backends.hf, torch.utils.data  # the slow imports, once
from tests.killrun import install_gate
# a child subreaper: a process a run leaves behind is re-parented here, where the harness finds it
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        pid, status = os.waitpid(req["wait"], os.WNOHANG)
        rc = None if pid == 0 else (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
        print(json.dumps({"rc": rc}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:  # a fresh CLI process: its own stdio, argv and exit
        code = 1
        try:
            fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.close(fd)
            for target, path in ((1, req["stdout"]), (2, req["stderr"])):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.dup2(fd, target); os.close(fd)
            sys.stdin = open(os.devnull)
            sys.stdout = open(1, "w", closefd=False); sys.stderr = open(2, "w", closefd=False)
            sys.argv = ["embedx", *req["args"]]
            if req.get("gate"):
                install_gate(*req["gate"])
            try:
                embedx.cli.app(prog_name="embedx")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
""".replace("ROOT", repr(_ROOT))


class _ZygoteRun(Run):
    def __init__(self, zygote: ZygoteLauncher, pid: int, logs: Path) -> None:
        self._zygote, self.pid, self._rc = zygote, pid, None
        self.stdout_path, self.stderr_path = logs.with_suffix(".out"), logs.with_suffix(".err")

    def poll(self) -> int | None:
        if self._rc is None:
            self._rc = self._zygote._ask({"wait": self.pid})["rc"]
        return self._rc


class ZygoteLauncher:
    """Forks each CLI process from one interpreter that imported embedx's CLI once.

    The zygote is a child subreaper: whatever a run leaves alive is re-parented to it, so
    :attr:`root`'s descendants after a run are exactly what that run left behind.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
        self.root: int | None = self._proc.pid

    def _ask(self, request: dict) -> dict:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit code {self._proc.poll()})")
        return json.loads(line)

    def __call__(self, args: list[str], logs: Path, gate: Gate = None) -> Run:
        pid = self._ask({"args": args, "stdout": str(logs.with_suffix(".out")),
                         "stderr": str(logs.with_suffix(".err")), "gate": gate})["pid"]
        return _ZygoteRun(self, pid, logs)

    def close(self) -> None:
        """End the zygote."""
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


# ------------------------------------------------------------------------------ the matrix


@dataclass
class Point:
    """Where to stop a run.

    Attributes:
        name: a label for the table.
        sig: the signal sent.
        when: ``"start+S"`` (S seconds after launch), ``"locked"`` (the run took the store's
            lock), ``"done>=+K"`` (the run published K more items done or failed than the store
            held when it was launched), ``"done=all"``.
        gate: the run's batch before which it waits until the signal is sent (see
            :func:`install_gate`); None: the run is not held anywhere.
    """

    name: str
    sig: signal.Signals
    when: str
    gate: int | None = None


@dataclass
class Row:
    """One stopped run of the matrix."""

    point: str
    signal: str
    done_at_start: int
    done_at_stop: int
    done_in_store: int
    exit_code: int
    workers_seen: int
    survivors: int
    store_holders: int
    seconds_to_gone: float
    seconds: float
    message: str


#: new items a mid-run stop waits for: durable before the signal is sent
STEP = 2


def default_points(num_items: int) -> list[Point]:
    """Ten kill -9 points across a run's life, with a SIGTERM and a SIGINT mid-run among them.

    The chain's runs resume each other. Every run but the last is gated at batch STEP + 2, so
    it cannot finish before its signal, and a mid-run stop comes after STEP more items are
    durable: a run advances the store by 0 to STEP + 2 items (STEP + 1 for a kill -9), at most
    ``7 * (STEP + 1) + 2 * (STEP + 2) + 2 * (STEP + 1)`` = 35 before the last point. For every
    mid-run stop to have items (and so decoding workers) left, ``num_items`` must exceed that by
    more than STEP + 2.
    """
    gate = STEP + 2
    most = 9 * (STEP + 1) + 2 * (STEP + 2)
    if num_items <= most + gate:
        raise ValueError(f"the kill matrix needs more than {most + gate} items, got {num_items}")
    mid = f"done>=+{STEP}"
    points = [Point("startup (+0.3 s)", signal.SIGKILL, "start+0.3", gate),
              Point("lock taken", signal.SIGKILL, "locked", gate)]
    points += [Point(f"{mid} ({k})", signal.SIGKILL, mid, gate) for k in range(1, 7)]
    points += [Point(f"{mid} (7)", signal.SIGTERM, mid, gate), Point(f"{mid} (8)", signal.SIGINT, mid, gate),
               Point(f"{mid} (9)", signal.SIGKILL, mid, gate),
               Point("all done, before exit", signal.SIGKILL, "done=all")]
    return points


def _progress(store: Path, pid: int) -> int | None:
    """Items done (or failed) as run ``pid`` last published; None before it holds the lock."""
    from embedx.store import writer_status

    status = writer_status(store)
    if status is None or status.pid != pid:
        return None
    return status.done if status.done is not None else -1


def _reached(point: Point, store: Path, pid: int, started: float, total: int, before: int) -> bool:
    if point.when.startswith("start+"):
        return time.monotonic() - started >= float(point.when[6:])
    done = _progress(store, pid)
    if point.when == "locked":
        return done is not None
    if done is None:
        return False
    if point.when == "done=all":
        return done >= total
    return done >= before + int(point.when.split(">=+")[1])


def stop_run(launch: Callable[..., Run], args: list[str], store: Path, point: Point,
             total: int, logs: Path, timeout: float = 300.0, root: int | None = None) -> Row:
    """Launch one run, stop it at ``point``, and measure what is left of it.

    ``root`` is the launcher's subreaper (see :class:`ZygoteLauncher`): its living descendants
    once the run is gone are processes the run left behind, found whether or not a poll saw them.
    """
    before = max(_done_in_store(store), 0)
    release = logs.with_suffix(".release")
    gate = (point.gate, str(release)) if point.gate else None
    run = launch(args, logs, gate) if gate else launch(args, logs)
    started = time.monotonic()
    procs: dict[int, int] = {}
    workers = 0
    try:
        while run.poll() is None and not _reached(point, store, run.pid, started, total, before):
            if time.monotonic() - started > timeout:
                os.kill(run.pid, signal.SIGKILL)
                raise TimeoutError(f"{point.name}: never reached in {timeout} s")
            kids = descendants(run.pid)
            procs.update(kids)
            workers = max(workers, len(kids))
            time.sleep(0.005)
        done_at_stop = max(_progress(store, run.pid) or 0, 0)
        if run.poll() is None:
            kids = descendants(run.pid)
            procs.update(kids)
            workers = max(workers, len(kids))
            os.kill(run.pid, point.sig)
    finally:
        release.touch()  # after the signal: a stopped run finishes its batch, a killed one is gone
    st = _stat(run.pid)
    if st is not None:
        procs[run.pid] = st[2]
    stopped = time.monotonic()

    def left() -> list[int]:
        adopted = [p for p in descendants(root) if p != run.pid] if root else []
        return sorted(set(living(procs)) | set(adopted))

    while left() and time.monotonic() - stopped < GRACE_SECONDS:
        time.sleep(0.05)
    gone = time.monotonic() - stopped
    survivors = left()
    left_holding = holders(store, Path(f"{store}.lock"))
    rc = run.wait(timeout=GRACE_SECONDS + 30) if not survivors else run.poll() or 0
    return Row(point=point.name, signal=point.sig.name, done_at_start=before, done_at_stop=done_at_stop,
               done_in_store=_done_in_store(store), exit_code=rc,
               workers_seen=workers, survivors=len(survivors), store_holders=len(left_holding),
               seconds_to_gone=round(gone, 2), seconds=round(time.monotonic() - started, 1),
               message=_last_line(run))


def _last_line(run: Run) -> str:
    """The run's last line of standard output, else of standard error."""
    for text in run.output():
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return ""


def _done_in_store(store: Path) -> int:
    """Items done or failed in the store's (first) feature set; -1 before there is one."""
    from embedx.errors import StoreError
    from embedx.store import StoreReader

    try:
        with StoreReader(store) as r:
            sets = r.feature_sets()
            return int(r.done(sets[0]).sum()) + len(r.failed(sets[0])) if sets else -1
    except StoreError:  # killed before the item table was written
        return -1


def run_matrix(launch: Callable[..., Run], args: list[str], store: Path,
               points: list[Point], total: int, logs: Path) -> tuple[list[Row], int, str]:
    """Run the chain: one run per point, each resuming the last, then a final resume.

    Returns:
        The rows, the final run's exit code and its last line of output.
    """
    logs.mkdir(parents=True, exist_ok=True)
    root = getattr(launch, "root", None)
    rows = [stop_run(launch, [*args, "-o", str(store)], store, point, total, logs / f"run{k:02d}", root=root)
            for k, point in enumerate(points)]
    final = launch([*args, "-o", str(store)], logs / "final")
    rc = final.wait(timeout=300)
    return rows, rc, _last_line(final)


def compare_stores(a_path: Path, b_path: Path) -> tuple[bool, float]:
    """Whether two complete stores hold bitwise equal features, and the largest difference."""
    from embedx.store import StoreReader

    equal, worst = True, 0.0
    with StoreReader(a_path) as a, StoreReader(b_path) as b:
        if a.items["id"].tolist() != b.items["id"].tolist():
            return False, float("inf")
        for name in a.feature_sets():
            if not (a.done(name).all() and b.done(name).all()):
                return False, float("inf")
            spec = a.spec(name)
            pairs = [(a.pooled(name, p, layer), b.pooled(name, p, layer))
                     for p in spec.poolings for layer in spec.layers]
            if spec.frames:
                if not np.array_equal(a.frame_offsets(name), b.frame_offsets(name)):
                    return False, float("inf")
                pairs += [(a.frames(name, i), b.frames(name, i)) for i in range(a.num_items)]
            for x, y in pairs:
                equal &= bool(np.array_equal(x, y))
                worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0)))
    return equal, worst


__all__ = ["GRACE_SECONDS", "STEP", "Point", "Row", "SubprocessLauncher", "ZygoteLauncher", "compare_stores",
           "default_points", "descendants", "holders", "install_gate", "living", "run_matrix", "stop_run", "write_corpus"]
