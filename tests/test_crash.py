"""Crash safety on the default path: kill -9 and stop signals with decoding workers, locks a crash
cannot wedge, readers during a write, and the failure paths inside a batch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import StoreError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import default_workers, extract
from embedx.store import StoreReader, StoreWriter, writer_status
from embedx.testing.synth import noise
from tests.killrun import (
    STEP,
    ZygoteLauncher,
    compare_stores,
    default_points,
    run_matrix,
    write_corpus,
)

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# ------------------------------------------------------------------------ the kill matrix


@linux_only
def test_kill_9_sigterm_and_sigint_with_default_workers_leave_nothing_behind(tiny_model, tmp_path):
    # every stop point is keyed to items the run has durably written, and every run but the last
    # is gated before its batch STEP + 2 until the signal is sent (tests/killrun.py): where each
    # stop lands is fixed, however slowly this machine schedules the harness
    num_items = 40
    wavs = write_corpus(tmp_path / "wavs", num_items)
    # one item per batch (0.5 s budget), so resumed runs batch like the uninterrupted one and the
    # stores can be compared bit for bit; workers: the default
    args = ["extract", "--model", str(tiny_model("hubert")), str(wavs), "--pooling", "mean,std", "--frames",
            "--batch-seconds", "0.5", "--quiet"]
    if default_workers() == 0:  # a one-core machine: still run the worker-process path
        args += ["--workers", "1"]
    launch = ZygoteLauncher()
    try:
        ref = launch([*args, "-o", str(tmp_path / "full.h5")], tmp_path / "full")
        assert ref.wait(timeout=300) == 0, ref.output()
        points = default_points(num_items)
        rows, rc, last = run_matrix(launch, args, tmp_path / "part.h5", points, num_items, tmp_path / "logs")
    finally:
        launch.close()
    assert sum(p.sig == signal.SIGKILL for p in points) >= 10
    for row in rows:
        context = f"{row.point} {row.signal}: {row}"
        # no process of the run is alive 10 s later (none adopted by the launcher either), and
        # none holds the store or its lock
        assert row.survivors == 0 and row.store_holders == 0, context
        if row.point == "all done, before exit":
            assert row.exit_code in (-9, 0), context  # the one ungated run: the kill races its exit
        elif row.signal == "SIGKILL":
            assert row.exit_code == -9, context  # gated: it cannot have finished
        else:
            code = 128 + int(getattr(signal, row.signal))
            assert row.exit_code == code, context
            m = re.fullmatch(rf"stopped by {row.signal} after (\d+) of {num_items} items; re-run the same "
                             r"command to resume", row.message)
            assert m, context
            # nothing written is lost: the store holds at least what was done when the signal
            # came, and at most the batch in flight more (the gate's batch)
            assert int(m.group(1)) == row.done_in_store, context
            assert row.done_at_start + STEP <= row.done_at_stop <= row.done_in_store <= row.done_at_start + STEP + 2, \
                context
    mid_run = [r for r in rows if r.point.startswith("done>=")]
    assert len(mid_run) == 9
    for row in mid_run:
        context = f"{row.point} {row.signal}: {row}"
        # the stop came after STEP more items were durable and before the end, with the
        # decoding workers alive: the kills land on the worker path
        assert row.done_at_start + STEP <= row.done_at_stop <= row.done_in_store < num_items, context
        assert row.workers_seen >= 1, context
        if row.signal == "SIGKILL":  # at most the batch after the stop point was written too
            assert row.done_in_store <= row.done_at_start + STEP + 1, context
    # every resume worked without a manual step; the last one completes the store
    assert rc == 0, last
    equal, worst = compare_stores(tmp_path / "full.h5", tmp_path / "part.h5")
    assert equal, worst
    assert not list(tmp_path.glob("*.lock"))


def test_a_second_stop_signal_exits_at_once(tmp_path):
    code = textwrap.dedent(
        """
        import os, signal, time
        from embedx.extraction.extract import _StopRequest
        with _StopRequest() as stop:
            stop.graceful = True
            os.kill(os.getpid(), signal.SIGTERM)
            print("first:", stop.signal, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("not reached", flush=True)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 143
    assert res.stdout == "first: SIGTERM\n"
    assert "stopped by second SIGTERM at once; re-run the same command to resume" in res.stderr


def test_stop_signal_before_the_store_is_open_exits_with_one_line(tmp_path):
    code = textwrap.dedent(
        """
        import os, signal, time
        from embedx.extraction.extract import _StopRequest
        with _StopRequest():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(30)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 129
    assert res.stderr.strip() == ("embedx: stopped by SIGHUP before the store was opened; re-run the same "
                                  "command to resume")


# ------------------------------------------------------------------------------- locks


def test_forked_children_hold_neither_the_store_nor_its_lock(tmp_path):
    store = tmp_path / "f.h5"
    with StoreWriter(store) as w:
        targets = {(os.stat(p).st_dev, os.stat(p).st_ino) for p in (store, Path(f"{store}.lock"))}
        assert len(w._fds) >= 2
        r, wr = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child reports how many of its descriptors point at the store or the lock
            held = 0
            for fd in os.listdir("/proc/self/fd"):
                try:
                    st = os.stat(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                held += (st.st_dev, st.st_ino) in targets
            os.write(wr, str(held).encode())
            os._exit(0)
        os.close(wr)
        held_by_child = int(os.read(r, 16).decode())
        os.waitpid(pid, 0)
        os.close(r)
        held_by_parent = sum(
            (os.stat(f"/proc/self/fd/{fd}").st_dev, os.stat(f"/proc/self/fd/{fd}").st_ino) in targets
            for fd in w._fds)
    assert held_by_child == 0
    assert held_by_parent >= 2  # the writer itself keeps them
    assert not Path(f"{store}.lock").exists()  # removed on close


def _killed_writer(store: Path, done: int, total: int) -> int:
    """A writer in another process that publishes its progress and is killed; returns its pid."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from embedx.store import StoreWriter
        w = StoreWriter({str(store)!r}, command="embedx extract killed")
        w.set_progress("toy", {done}, {total})
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == -9, res.stderr
    return int(res.stdout)


def test_a_dead_writers_lock_is_taken_over_with_a_one_line_notice(tmp_path):
    store = tmp_path / "f.h5"
    pid = _killed_writer(store, 3, 10)
    assert Path(f"{store}.lock").exists()  # what a kill -9 leaves
    status = writer_status(store)
    assert (status.pid, status.running, status.done, status.total) == (pid, False, 3, 10)
    notes: list[str] = []
    with StoreWriter(store, log=notes.append):
        pass
    assert len(notes) == 1
    assert f"pid {pid}" in notes[0] and "3/10 items of 'toy' done" in notes[0] and "taking it over" in notes[0]
    assert not Path(f"{store}.lock").exists()
    with StoreWriter(store, log=notes.append):  # a clean close leaves nothing to take over
        pass
    assert len(notes) == 1


def test_a_lock_held_on_another_host_names_the_host(tmp_path):
    store = tmp_path / "f.h5"
    with StoreWriter(store, command="embedx extract elsewhere") as w:
        # as a writer on another machine of a shared file system would have written it
        w._writer_lock._record.update(host="node-17", pid=4242)
        w.set_progress("toy", 5, 9)
        with pytest.raises(StoreError, match=r"by another embedx process \(lock .*, pid 4242 on host node-17, "
                                             r"5/9 items of 'toy' done\); wait for it"):
            StoreWriter(store)
        assert writer_status(store).running is None  # another host: cannot tell


def test_info_while_extracting_shows_progress_and_after_a_kill_the_summary(tiny_model, tmp_path):
    wavs = write_corpus(tmp_path / "wavs", 3)
    store = tmp_path / "f.h5"
    extract([str(wavs)], store, ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False))
    with StoreWriter(store, command="embedx extract now") as w:
        w.set_progress("toy", 2, 3)
        res = CliRunner().invoke(app, ["info", str(store)])
        assert res.exit_code == 0, res.output
        assert f"is being written by pid {os.getpid()}: 2/3 items of 'toy' done" in res.output
        assert "embedx extract now" in res.output
        # a reader in another process (stage 2) is refused, and told who writes and how far
        code = f"from embedx.store import StoreReader\nStoreReader({str(store)!r})"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert res.returncode != 0
        assert f"is open for writing by another process (pid {os.getpid()}, 2/3 items of 'toy' done)" in res.stderr
    pid = _killed_writer(store, 1, 3)
    res = CliRunner().invoke(app, ["info", str(store)])
    assert res.exit_code == 0, res.output
    assert f"was being written by pid {pid}, which was killed at 1/3 items of 'toy' done" in res.output
    assert "3 items" in res.output  # and the store's own summary follows


def test_fit_on_a_stopped_extraction_says_how_many_items_are_not_done_yet(tiny_model, tmp_path):
    import pandas as pd

    wavs = write_corpus(tmp_path / "wavs", 12)
    pd.DataFrame({"path": [f"u{i:03d}.wav" for i in range(12)], "label": ["a", "b"] * 6}).to_csv(
        tmp_path / "m.csv", index=False)
    store = tmp_path / "f.h5"
    extract([str(wavs)], store, ExtractConfig(model=str(tiny_model("hubert")), manifest=str(tmp_path / "m.csv"),
                                              workers=0, progress=False, layers="0"))
    with StoreWriter(store) as w:  # as a stopped run leaves it: 3 items not done, 1 failed
        name = w.feature_sets()[0]
        w._file[f"features/{name}/done"][[2, 5, 7, 9]] = False
        w.record_failure(name, 9, "decode", "cannot decode audio: test")
    res = CliRunner().invoke(app, ["fit", "-f", str(store), "-y", "label", "--cv", "2", "--bootstrap", "0",
                                   "--no-save-model", "--quiet", "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "3 not extracted yet (re-run the extraction to finish)" in text and "1 failed in extraction" in text


# ------------------------------------------------------------- failures inside a batch


def _poisoned(monkeypatch, poison):
    """Make every backend the extractor creates fail a forward for which ``poison(waves)`` is true.

    Returns:
        The list of batch sizes of every forward call.
    """
    import embedx.extraction.extract as ex

    calls: list[int] = []
    real_create = ex.create_backend

    def create(name, **kwargs):
        backend = real_create(name, **kwargs)
        real_forward = backend.forward

        def forward(waves, layers):
            calls.append(len(waves))
            if poison(waves, len(calls)):
                raise RuntimeError("boom: injected failure")
            return real_forward(waves, layers)

        backend.forward = forward
        return backend

    monkeypatch.setattr(ex, "create_backend", create)
    return calls


def _short_corpus(folder, n=8, seed=3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        sf.write(folder / f"s{i}.wav", noise(float(rng.uniform(0.3, 0.5)), 16000, seed=i), 16000)
    return folder


def test_a_forward_failing_inside_a_batch_loses_only_the_item_that_fails_alone(tiny_model, tmp_path, monkeypatch):
    wavs = _short_corpus(tmp_path / "wavs")
    bad_len = sf.info(wavs / "s5.wav").frames
    config = dict(model=str(tiny_model("hubert")), workers=0, progress=False, batch_seconds=8.0, layers="0,2")
    clean = tmp_path / "clean.h5"
    extract([str(wavs)], clean, ExtractConfig(**config))
    calls = _poisoned(monkeypatch, lambda waves, _k: any(len(w) == bad_len for w in waves))
    summary = extract([str(wavs)], tmp_path / "f.h5", ExtractConfig(**config))
    # one batch of 8: 8 fails, 4 + 4 (one fails), 2 + 2 (one fails), 1 + 1 (the poisoned one fails)
    assert sorted(calls) == [1, 1, 2, 2, 4, 4, 8]
    assert (summary.processed, summary.failed) == (7, 1)
    with StoreReader(tmp_path / "f.h5") as r, StoreReader(clean) as c:
        failed = r.failed()
        assert failed["id"].tolist() == ["s5.wav"] and failed["stage"].tolist() == ["forward"]
        assert failed["message"].iloc[0] == "boom: injected failure"
        done = r.done(r.feature_sets()[0])
        assert done.sum() == 7 and not done[r.items["id"].tolist().index("s5.wav")]
        name = r.feature_sets()[0]
        for layer in (0, 2):
            got, want = r.pooled(name, "mean", layer), c.pooled(name, "mean", layer)
            # the other items ran in other batch compositions: equal within float rounding
            np.testing.assert_allclose(got[done], want[done], rtol=1e-4, atol=1e-5)
            assert np.isnan(got[~done]).all()


def test_a_failing_chunk_fails_its_item_and_retry_failed_completes_it(tiny_model, tmp_path, monkeypatch):
    wavs = _short_corpus(tmp_path / "wavs", n=3)
    sf.write(wavs / "long.wav", noise(3.0, 16000, seed=9), 16000)
    args = ["extract", "--model", str(tiny_model("hubert")), str(wavs), "--layers", "0,2", "--frames",
            "--pooling", "mean,std,max", "--max-chunk-seconds", "1", "--batch-seconds", "1", "--workers", "0",
            "--quiet"]
    clean, out = tmp_path / "clean.h5", tmp_path / "f.h5"
    assert CliRunner().invoke(app, [*args, "-o", str(clean)]).exit_code == 0
    # long items run first, one chunk per forward at this budget: the second call is chunk 2
    with monkeypatch.context() as m:
        _poisoned(m, lambda _waves, k: k == 2)
        res = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 items" in res.output and "1 failed" in res.output
    with StoreReader(out) as r:
        row = r.failed().iloc[0]
        assert row["id"] == "long.wav" and row["stage"] == "forward"
        assert re.fullmatch(r"chunk 2/[34]: boom: injected failure", row["message"]), row["message"]
        assert r.done(r.feature_sets()[0]).sum() == 3
    # without --retry-failed the failure stands; with it the item is processed, /failed cleared
    res = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert res.exit_code == 0 and "nothing to do" in res.output and "1 failed earlier" in res.output
    res = CliRunner().invoke(app, [*args, "-o", str(out), "--retry-failed"])
    assert res.exit_code == 0, res.output
    assert "extracted 1 item " in res.output and "now 4/4 done" in res.output
    with StoreReader(out) as r:
        assert r.failed().empty
    equal, worst = compare_stores(clean, out)
    assert equal, worst  # the same single-item batches: bit for bit


def test_a_header_length_disagreeing_with_the_decoded_length_is_recorded(tiny_model, tmp_path, monkeypatch):
    import embedx.extraction.scan as ex  # where the headers are read

    wavs = _short_corpus(tmp_path / "wavs", n=3)
    real_probe = ex.probe

    def lying_probe(path):  # a header promising 160 samples more than the file decodes to (some mp3s)
        info = real_probe(path)
        if Path(path).name == "s1.wav":
            info = type(info)(num_samples=info.num_samples + 160, sample_rate=info.sample_rate,
                              channels=info.channels)
        return info

    monkeypatch.setattr(ex, "probe", lying_probe)
    decoded = sf.info(wavs / "s1.wav").frames
    for workers in (0, 1):
        out = tmp_path / f"f{workers}.h5"
        summary = extract([str(wavs)], out, ExtractConfig(model=str(tiny_model("hubert")), workers=workers,
                                                          frames=True, progress=False))
        assert (summary.processed, summary.failed) == (2, 1)
        with StoreReader(out) as r:
            row = r.failed().iloc[0]
            assert (row["id"], row["stage"]) == ("s1.wav", "decode")
            assert row["message"] == (f"decoded {decoded} samples but the header implies {decoded + 160}; "
                                      "re-encode the file as wav/flac")
