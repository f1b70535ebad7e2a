"""The extraction data path: the writer thread, the run profile and CPU accounting, workers."""

from __future__ import annotations

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
from embedx.extraction.extract import available_cores, default_workers, extract
from embedx.extraction.writes import StoreQueue
from embedx.store import StoreReader, StoreWriter
from embedx.testing.synth import noise

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
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("write failed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write", failing)
    with pytest.raises(StoreError, match="write failed"):
        extract([str(wavs)], tmp_path / "part.h5", ExtractConfig(**config))
    assert not _writer_threads()
    with StoreReader(tmp_path / "part.h5") as r:
        partial = int(r.done(r.feature_sets()[0]).sum())
    assert 0 < partial < 6  # the first two batches were flushed and marked done, nothing after
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


def test_default_workers_use_every_core_but_one():
    assert default_workers() == max(0, available_cores() - 1)


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
