"""A disk that fills: a run whose store would not fit is refused before it starts, and a write
that fails mid-run stops the run with one line, leaves the store consistent, and a resume after
freeing space gives the store of an uninterrupted run. Through the real CLI, on a small tmpfs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedx.extraction.config import ExtractConfig
from embedx.extraction.disk import OVERHEAD_BYTES, OVERHEAD_FRACTION, planned_bytes
from embedx.extraction.extract import extract
from embedx.store import writer_status
from embedx.text import size
from tests.clirun import run_embedx
from tests.killrun import SubprocessLauncher, compare_stores, write_corpus

NUM_ITEMS = 30
# one item per batch: a resumed run batches like an uninterrupted one, so stores compare bit for bit
ARGS = ["--frames", "--pooling", "mean", "--batch-seconds", "0.5", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tiny_model, tmp_path_factory):
    """``(model, wavs, clean store)``: the corpus and its store from an uninterrupted run."""
    root = tmp_path_factory.mktemp("disk")
    model = tiny_model("hubert")
    wavs = write_corpus(root / "wavs", NUM_ITEMS)
    clean = root / "clean.h5"
    extract([str(wavs)], clean, ExtractConfig(model=str(model), frames=True, poolings=("mean",),
                                               batch_seconds=0.5, progress=False))
    return model, wavs, clean


@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs of a given size on a fresh folder; skipped, with the reason, where one cannot."""
    mounted: list[Path] = []

    def mount(name: str, size_opt: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if not sys.platform.startswith("linux") or os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root on Linux")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_opt}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _expected_bytes(clean: Path, itemsize: int = 4, layers: int | None = None, frames: bool = True) -> int:
    """The estimate's formula, applied to the sizes a real store holds (frame counts from its file)."""
    with h5py.File(clean, "r") as f:
        g = next(iter(f["features"].values()))
        total_frames, num_layers, dim = g["frames/data"].shape
        num_items = len(g["done"])
    layers = num_layers if layers is None else layers
    data = num_items * layers * dim * itemsize + (total_frames * layers * dim * itemsize if frames else 0)
    data += num_items  # done flags
    return int(data * (1 + OVERHEAD_FRACTION)) + OVERHEAD_BYTES


def test_the_estimate_covers_what_a_run_writes_and_not_much_more(corpus):
    _model, _wavs, clean = corpus
    with h5py.File(clean, "r") as f:
        g = next(iter(f["features"].values()))
        total_frames, num_layers, dim = g["frames/data"].shape
    estimate = planned_bytes(NUM_ITEMS, total_frames, num_layers, dim, 1, True, 4, True)
    assert estimate == _expected_bytes(clean)
    on_disk = os.stat(clean).st_blocks * 512  # what the file occupies
    assert on_disk <= estimate <= 1.5 * on_disk, (on_disk, estimate)
    # a resumed set: only the frames still to do, nothing allocated at creation
    assert planned_bytes(NUM_ITEMS, 100, num_layers, dim, 1, True, 4, False) == \
        int(100 * num_layers * dim * 4 * (1 + OVERHEAD_FRACTION)) + OVERHEAD_BYTES


def test_a_run_that_would_not_fit_is_refused_in_one_line_before_it_writes(corpus, small_fs):
    model, wavs, clean = corpus
    mnt = small_fs("small", "1m")
    free = shutil.disk_usage(mnt).free
    wanted = _expected_bytes(clean)
    assert wanted > free > _expected_bytes(clean, itemsize=2)  # the sizes this test is built on
    res = run_embedx("extract", "--model", model, wavs, *ARGS, "-o", mnt / "f.h5")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("embedx: store: the run would write about ")
    assert f"about {size(wanted)} to {mnt / 'f.h5'} but {mnt} has {size(free)} free" in line
    # what would fit, with its size: half the bytes, fewer layers, no frames
    assert f"--dtype float16 ({size(_expected_bytes(clean, itemsize=2))})" in line
    fewer = max(k for k in range(1, 5) if _expected_bytes(clean, layers=k) <= free)
    assert f"--layers with at most {fewer} of the 5 layers ({size(_expected_bytes(clean, layers=fewer))})" in line
    assert f"without --frames ({size(_expected_bytes(clean, frames=False))})" in line
    assert list(mnt.iterdir()) == []  # refused before the store was created
    # the alternative it names runs
    res = run_embedx("extract", "--model", model, wavs, *ARGS, "--dtype", "float16", "-o", mnt / "f.h5")
    assert res.returncode == 0, res.stderr


def _fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system is full."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    return filler


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness reads /proc")
def test_a_disk_filling_mid_run_stops_in_one_line_and_the_resume_completes_the_store(corpus, small_fs, tmp_path):
    model, wavs, clean = corpus
    mnt = small_fs("fills", "2m")
    store = mnt / "f.h5"
    args = ["extract", "--model", str(model), str(wavs), *ARGS, "-o", str(store)]
    release = tmp_path / "release"
    # the run passes the free-space check, writes 3 items, and waits before its 4th batch (the
    # kill harness's gate) while the disk is filled by someone else; then it goes on
    run = SubprocessLauncher()(args, tmp_path / "run", gate=(4, str(release)))
    deadline = time.monotonic() + 300
    while run.poll() is None and not ((s := writer_status(store)) is not None and (s.done or 0) >= 3):
        assert time.monotonic() < deadline, run.output()
        time.sleep(0.05)
    filler = _fill(mnt)
    release.touch()
    assert run.wait(timeout=300) == 74, run.output()
    out, err = run.output()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0] == (f"embedx: store: cannot write {store}: No space left on device (3 of {NUM_ITEMS} items "
                        "done and safe in the store); free space (or fix the disk) and re-run the same command "
                        "to resume")
    assert not Path(f"{store}.lock").exists()  # closed cleanly
    # the store is consistent: it opens, and holds exactly the 3 items it says
    res = run_embedx("info", store)
    assert res.returncode == 0 and f"3/{NUM_ITEMS}" in res.stdout.replace(" ", ""), res.stdout + res.stderr
    filler.unlink()
    res = run_embedx(*args)
    assert res.returncode == 0, res.stderr
    assert f"now {NUM_ITEMS}/{NUM_ITEMS} done" in res.stdout
    equal, worst = compare_stores(clean, store)
    assert equal, worst
    with h5py.File(store, "r") as f:
        np.testing.assert_array_equal(next(iter(f["features"].values()))["done"][:], True)
