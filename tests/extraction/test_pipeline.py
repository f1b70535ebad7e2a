"""The extraction data path: the writer thread, the run profile and CPU accounting, workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import StoreError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.extraction.writes import StoreQueue
from embedx.store import StoreReader, StoreWriter
from embedx.testing.synth import noise
from tests.clirun import run_embedx
from tests.storecheck import assert_same_features

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wavs(write_audio):
    for i, (seconds, rate) in enumerate([(1.3, 16000), (0.7, 22050), (2.1, 16000), (1.0, 16000),
                                         (0.9, 22050), (1.6, 16000)]):
        path = write_audio(f"wavs/w{i}.wav", noise(seconds, rate, seed=i), rate)
    return path.parent


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "embedx-store-writer"]


def test_store_queue_runs_calls_in_order_and_raises_a_failed_call_on_the_main_thread():
    seen: list[int] = []
    q = StoreQueue(depth=2)
    for k in range(20):
        q.put(seen.append, k)
    q.close()
    assert seen == list(range(20)) and not _writer_threads()

    def boom(k: int) -> None:
        if k == 3:
            raise StoreError("disk full")
        seen.append(k)

    seen.clear()
    q = StoreQueue(depth=1)
    with pytest.raises(StoreError, match="disk full"):
        for k in range(50):
            q.put(boom, k)
        q.close()
    with pytest.raises(StoreError, match="disk full"):
        q.close()  # still failing; the thread is joined
    assert seen == [0, 1, 2] and not _writer_threads()  # nothing written after the failure


def test_a_failed_write_stops_the_run_joins_the_writer_and_resume_completes(tiny_model, wavs, tmp_path, monkeypatch):
    config = dict(model=str(tiny_model("hubert")), layers="all", device="cpu", workers=0, progress=False,
                  batch_seconds=1.5)
    extract([str(wavs)], tmp_path / "full.h5", ExtractConfig(**config))
    original = StoreWriter.write
    batches: list[list[int]] = []  # the items of every batch handed to the store, in order

    def failing(self, name, indices, **kwargs):
        batches.append(sorted(int(i) for i in indices))
        if len(batches) == 3:
            raise StoreError("write failed")
        return original(self, name, indices, **kwargs)

    monkeypatch.setattr(StoreWriter, "write", failing)
    with pytest.raises(StoreError, match="write failed"):
        extract([str(wavs)], tmp_path / "part.h5", ExtractConfig(**config))
    assert not _writer_threads()
    # the third write failed and none was tried after it; the 6 items make more than 3 batches
    assert len(batches) == 3 and all(batches) and sum(map(len, batches)) < 6
    with StoreReader(tmp_path / "part.h5") as r:
        done = np.flatnonzero(r.done(r.feature_sets()[0])).tolist()
    # exactly the first two batches were flushed and marked done, nothing of the third
    assert done == sorted(batches[0] + batches[1])
    partial = len(done)
    monkeypatch.setattr(StoreWriter, "write", original)
    summary = extract([str(wavs)], tmp_path / "part.h5", ExtractConfig(**config))
    assert summary.processed == 6 - partial
    with StoreReader(tmp_path / "full.h5") as a, StoreReader(tmp_path / "part.h5") as b:
        name = a.feature_sets()[0]
        assert b.done(name).all()
        for layer in a.spec(name).layers:
            np.testing.assert_array_equal(a.pooled(name, "mean", layer), b.pooled(name, "mean", layer))


def test_the_run_profile_is_stored_and_shown_by_info(tiny_model, wavs, tmp_path):
    out = tmp_path / "f.h5"
    summary = extract([str(wavs)], out, ExtractConfig(model=str(tiny_model("hubert")), device="cpu", workers=1,
                                                      progress=False, batch_seconds=2.0))
    assert set(summary.timings) == {"first_batch", "wait", "forward", "pool", "write_wait", "write"}
    assert summary.timings["forward"] > 0 and summary.timings["write"] > 0
    with StoreReader(out) as r:
        attrs = r.spec(summary.name).attrs
    assert attrs["run_items"] == 6 and attrs["run_workers"] == 1 and attrs["run_precision"] == "fp32"
    assert attrs["run_device"] == "cpu" and attrs["run_batch_seconds"] == 2.0
    assert attrs["run_audio_per_s"] == pytest.approx(summary.audio_seconds / summary.elapsed, rel=1e-9)
    assert attrs["run_peak_memory_bytes"] > 2**20 and 0 <= attrs["run_data_wait_share"] <= 1
    shown = CliRunner().invoke(app, ["info", str(out)], terminal_width=400)
    assert shown.exit_code == 0, shown.output
    assert f"{attrs['run_audio_per_s']:,.1f} audio-s/s" in shown.output and "1 decoding worker," in shown.output


def _embedx_on_cores(cores: list[int], *args: str) -> subprocess.CompletedProcess:
    """``python -m embedx ARGS`` in a child process allowed to run on ``cores`` only."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "embedx", *args], env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))


def _run_workers(path: Path) -> int:
    with StoreReader(path) as r:
        return int(r.spec(r.feature_sets()[0]).attrs["run_workers"])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity masks are Linux-only")
def test_default_workers_use_every_core_of_the_affinity_mask_but_one(tiny_model, wavs, tmp_path):
    # the real default of the CLI, run on 1 and on 2 of this machine's cores (a SLURM or container
    # cpuset): one core decodes in the main process whatever the machine has; two give one worker.
    # 6 items of 0.7-2.1 s in 0.5-s batches are 6 batches, so the batch count caps nothing
    cores = sorted(os.sched_getaffinity(0))
    for mask in ([cores[0]], cores[:2]) if len(cores) >= 2 else ([cores[0]],):
        out = tmp_path / f"on{len(mask)}.h5"
        done = _embedx_on_cores(mask, "extract", "--model", str(tiny_model("hubert")), str(wavs), "-o", str(out),
                                "--batch-seconds", "0.5", "--quiet")
        assert done.returncode == 0, done.stderr[-2000:]
        assert _run_workers(out) == len(mask) - 1, mask


def test_features_decoded_through_the_worker_slots_equal_a_workers_0_run(tiny_model, write_audio, tmp_path):
    # 14 items of 0.3-1.2 s (half at 22.05 kHz, resampled in the workers) and 2 of 4.5 s, in 3-s
    # batches: short items share a batch (several waves packed into one slot, and a worker
    # reuses its few slots), a long one exceeds a slot and travels in a tensor of its own. The
    # default workers and 2 workers (batches from two processes) must store what the main
    # process alone stores, bit for bit and in the same item order
    rng = np.random.default_rng(0)
    for i in range(16):
        rate = 22050 if i % 2 else 16000
        seconds = 4.5 if i in (5, 12) else float(rng.uniform(0.3, 1.2))
        write_audio(f"corpus/u{i:02d}.wav", noise(seconds, rate, seed=i), rate)
    args = ["extract", "--model", str(tiny_model("hubert")), str(tmp_path / "corpus"), "--pooling", "mean,std",
            "--frames", "--batch-seconds", "3", "--quiet"]
    ref = run_embedx(*args, "--workers", "0", "-o", tmp_path / "w0.h5")
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert _run_workers(tmp_path / "w0.h5") == 0
    for label, extra in (("default", []), ("w2", ["--workers", "2"])):
        out = tmp_path / f"{label}.h5"
        done = run_embedx(*args, *extra, "-o", out)
        assert done.returncode == 0, done.stderr[-2000:]
        if extra:
            assert _run_workers(out) == 2
        else:  # the default decodes in workers wherever there is more than one core
            assert _run_workers(out) >= min(1, len(os.sched_getaffinity(0)) - 1)
        assert_same_features(tmp_path / "w0.h5", out)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_run_accounts_cpu_per_part_in_the_process_that_spent_it(tiny_model, wavs, tmp_path, workers):
    summary = extract([str(wavs)], tmp_path / "f.h5", ExtractConfig(model=str(tiny_model("hubert")), device="cpu",
                                                                    workers=workers, progress=False, batch_seconds=2.0))
    cpu = summary.cpu
    assert cpu["decode"] > 0 and cpu["resample"] > 0 and cpu["forward"] > 0 and cpu["write"] > 0
    decoding = cpu["decode"] + cpu["resample"] + cpu["prepare"] + cpu["pack"]
    if workers:
        # the workers' own clocks account for part of what the kernel charged them (start-up,
        # sending); the main process only received
        assert cpu["pack"] > 0 and 0 < decoding <= cpu["workers_total"] + 0.01
        assert cpu["main_total"] >= cpu["forward"] + cpu["pool"] + cpu["receive"]
    else:
        assert cpu["pack"] == 0 and cpu["workers_total"] < 0.01
        assert cpu["main_total"] >= decoding + cpu["forward"] + cpu["pool"]


def test_gpu_benchmark_gives_each_card_its_own_peak():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # the names torch.cuda.get_device_name reports; the SXM H100 does not say "SXM"
    assert bench.peak_for_name("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_for_name("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_for_name("NVIDIA H100 NVL") == 835.0
    assert bench.peak_for_name("NVIDIA H200") == 989.0
    assert bench.peak_for_name("NVIDIA A100-SXM4-80GB") == bench.peak_for_name("NVIDIA A100 80GB PCIe") == 312.0
    assert bench.peak_for_name("Some Future GPU") is None


def test_gpu_benchmark_smoke_runs_on_the_cpu(tmp_path):
    # --device cpu --quick: the script a GPU user runs, end to end (base model only: the large
    # one costs a 1.2-GB checkpoint to build)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--device", "cpu",
                           "--quick", "--models", "base", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| base | fp32 | 14." in done.stdout  # the base model's GFLOP per audio-second
    with StoreReader(tmp_path / "base-fp32.h5") as r:
        name = r.feature_sets()[0]
        assert r.done(name).all() and r.spec(name).attrs["run_items"] == 6
