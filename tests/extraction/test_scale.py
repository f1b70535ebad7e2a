"""Tests of embedx.extraction.scale: `extract --devices` runs one process per device over shards
and leaves one merged store equal to a one-process run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx
from embedx.cli import app
from embedx.errors import ConfigError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import available_cores
from embedx.extraction.scale import check_scale, parse_devices, shard_paths
from embedx.store import StoreReader
from embedx.testing.synth import chirp, mixed_item, noise
from tests.test_merge import assert_identical

#: (file, seconds, rate): mixed lengths and rates, one file per speaker folder
FILES = [("a/0.wav", 0.9, 16000), ("a/1.wav", 0.4, 22050), ("b/2.wav", 1.3, 16000),
         ("b/3.wav", 0.6, 8000), ("c/4.wav", 0.25, 16000), ("c/5.wav", 1.1, 16000),
         ("c/6.wav", 0.7, 16000)]


@pytest.fixture
def corpus(write_audio, tmp_path):
    """Seven synthetic items, a broken file and a manifest with labels and speakers."""
    rng = np.random.default_rng(3)
    rows = []
    for k, (rel, seconds, rate) in enumerate(FILES):
        wave = mixed_item(k, seconds, rate, rng, f0=110, f0_step=15, chirp_top=2000, noise_amplitude=0.4)
        write_audio(f"wavs/{rel}", wave, rate)
        rows.append((rel, ["calm", "angry"][k % 2], rel[0]))
    (tmp_path / "wavs/c/broken.wav").write_bytes(b"RIFF no wav")
    rows.append(("c/broken.wav", "calm", "c"))
    pd.DataFrame(rows, columns=["path", "label", "speaker"]).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "wavs", tmp_path / "labels.csv"


def one_process_reference(wavs, labels, model, path, threads: int) -> None:
    """The same extraction as one `embedx extract` process with ``threads`` torch threads (what
    each shard gets: CPU float sums depend on the thread count, so equal values need equal threads)."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "embedx", "extract", str(wavs), "--manifest", str(labels), "-m",
                             model, "--pooling", "mean,max", "--frames", "--precision", "fp32", "--device", "cpu",
                             "--batch-seconds", "0.2", "--workers", "0", "-o", str(path), "--quiet"],
                            env={**os.environ, "PYTHONPATH": str(Path(embedx.__file__).parents[1]),
                                 "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def test_devices_cpu_cpu_equals_a_one_process_run(tiny_model, corpus, tmp_path):
    wavs, labels = corpus
    model = str(tiny_model("hubert"))
    out = tmp_path / "feats.h5"
    # one-item batches (0.2 s budget), so both runs do the same float operations
    args = ["extract", str(wavs), "--manifest", str(labels), "-m", model, "--pooling", "mean,max",
            "--frames", "--precision", "fp32", "--batch-seconds", "0.2", "--workers", "2"]
    result = CliRunner().invoke(app, [*args, "--devices", "cpu,cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    threads = max(1, available_cores() // 2)
    # the host's cores shared: 2 workers in all (1 each), half the cores' threads each
    assert (f"8 items in 2 shards (cpu, cpu; 1 decoding worker and {threads} thread"
            f"{'s' if threads > 1 else ''} each)") in " ".join(result.output.split())
    assert "merged 2 shards" in result.output
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("extracted 7 items") and "1 failed" in line and "now 7/8 done" in line
    assert not shard_paths(out, 2)[0].parent.exists()  # merged, then removed

    whole = tmp_path / "whole.h5"
    one_process_reference(wavs, labels, model, whole, threads)
    assert_identical(out, whole)  # items in order, ids, values bit for bit, the failure
    with StoreReader(out) as r:
        assert r.items["id"].tolist() == [rel for rel, _, _ in FILES] + ["c/broken.wav"]  # the manifest's order
        assert r.failed()["id"].tolist() == ["c/broken.wav"]

    # the same command again: the store exists, one line
    again = CliRunner().invoke(app, [*args, "--devices", "cpu,cpu", "-o", str(out)])
    assert again.exit_code == 2 and again.output.count("\n") == 1
    assert f"{out} exists; a run over shards (--devices, --engine ray)" in again.output


def test_an_interrupted_devices_run_resumes_its_shards(tiny_model, corpus, tmp_path):
    """A shard store left by an earlier (stopped) run is resumed, not redone, then merged."""
    from embedx.extraction.extract import extract

    wavs, labels = corpus
    model = str(tiny_model("hubert"))
    out = tmp_path / "feats.h5"
    first = shard_paths(out, 2)[0]
    first.parent.mkdir()
    config = dict(model=model, precision="fp32", device="cpu", workers=0, progress=False,
                  manifest=str(labels))
    extract([str(wavs)], first, ExtractConfig(**config, shard="0/2"))  # shard 0 finished earlier
    before = first.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["extract", str(wavs), "--manifest", str(labels), "-m", model,
                                      "--precision", "fp32", "--workers", "0", "--devices", "cpu,cpu",
                                      "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert before != 0 and not first.exists()
    with StoreReader(out) as r:
        assert r.num_items == 8 and r.done(r.feature_sets()[0]).sum() == 7 and r.shard is None


@pytest.mark.parametrize("options, says", [
    ({"devices": "cpu,tpu"}, "devices='cpu,tpu' is not a device list (tpu); expected a comma list of cpu"),
    ({"devices": " , "}, "is not a device list (empty)"),
    ({"devices": "cpu,cpu", "shard": "0/2"}, "shard='0/2' runs one shard by hand; devices runs every shard"),
    ({"devices": "cpu,cpu", "device": "cuda:1"}, "devices and device='cuda:1' contradict"),
    ({"devices": "cpu", "engine": "ray"}, "devices runs processes on this host; with engine='ray' Ray places"),
    ({"shards": 3}, "shards is for engine='ray'; the engine is 'local'"),
    ({"scheduler": "auto"}, "scheduler is for engine='ray'"),
    ({"engine": "ray", "shards": 0}, "shards must be at least 1, got 0"),
    ({"engine": "dask"}, "engine='dask' is not an engine; accepted: local, ray"),
])
def test_scale_options_are_checked_first(options, says):
    with pytest.raises(ConfigError) as err:
        check_scale(ExtractConfig(model="m", **options))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_ray_not_installed_is_said_before_any_work(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "missing"), "-m", "m", "--engine", "ray",
                                      "--shards", "2"])
    assert result.exit_code == 2 and result.output == ("embedx: invalid option: --engine ray needs the optional "
                                                       "extra: pip install 'embedx[ray]'\n")


def test_devices_all_and_the_cli_spelling(tmp_path):
    import torch

    if torch.cuda.device_count() == 0:
        with pytest.raises(ConfigError, match=r"devices='all' found no CUDA device; name the devices"):
            parse_devices("all")
    else:
        assert parse_devices("all") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigError, match=r"devices='cuda:0, cuda:1': device 'cuda:\d' is not here; this machine has "):
            parse_devices("cuda:0, cuda:1")
    else:
        assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    # a device this machine lacks is one line before any shard starts (no shard folder)
    missing = f"cuda:{torch.cuda.device_count() + 7}"
    result = CliRunner().invoke(app, ["extract", str(tmp_path), "-m", "m", "--devices", f"cpu,{missing}",
                                      "-o", str(tmp_path / "e.h5")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"--devices cpu,{missing}: device '{missing}' is not here; this machine has " in result.output
    assert not (tmp_path / "e.h5.shards").exists()
    result = CliRunner().invoke(app, ["extract", str(tmp_path), "-m", "m", "--devices", "cpu,cpu",
                                      "--shard", "0/2"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--shard 0/2 runs one shard by hand; --devices runs every shard" in result.output


def test_sigterm_stops_every_shard_and_the_same_command_resumes(tiny_model, write_audio, tmp_path):
    """SIGTERM to `extract --devices cpu,cpu` is passed to both shard processes, which stop after
    the batch in flight: exit 143, no merge, the shard stores kept; the same command finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from embedx.store import writer_status

    for k in range(40):
        write_audio(f"wavs/{k:02d}.wav", chirp(150 + 20 * k, 1800, 1.0, 16000) + noise(1.0, 16000, 0.01, seed=k))
    out = tmp_path / "feats.h5"
    args = [sys.executable, "-m", "embedx", "extract", str(tmp_path / "wavs"), "-m", str(tiny_model("hubert")),
            "--precision", "fp32", "--batch-seconds", "0.5", "--workers", "0", "--devices", "cpu,cpu",
            "-o", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(embedx.__file__).parents[1])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = shard_paths(out, 2)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # the shards under way
        if any((s := writer_status(p)) is not None and s.done for p in shards):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stdout + stderr
    assert stdout.startswith("stopped by SIGTERM after ") and "re-run the same command to resume" in stdout
    # no merge; the shard stores are kept (one still loading its model when stopped has none yet)
    assert not out.exists() and any(p.exists() for p in shards)
    done = []
    for path in (p for p in shards if p.exists()):
        with StoreReader(path) as r:
            done.append(int(r.done(r.feature_sets()[0]).sum()))
    assert 0 < sum(done) < 40, done  # stopped mid-way, what was done kept

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "now 40/40 done" in again.stdout and not shards[0].parent.exists()


def test_sigterm_before_the_shards_open_their_stores_is_one_line(tiny_model, write_audio, tmp_path):
    """SIGTERM as soon as `extract --devices cpu,cpu` has started its shards (each still importing
    or loading the model): one line says how many items are done and to re-run (each shard also
    printed its own 'stopped ... before the store was opened': three stop lines)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    for k in range(8):
        write_audio(f"wavs/{k:02d}.wav", chirp(150 + 20 * k, 1800, 1.0, 16000))
    out = tmp_path / "feats.h5"
    args = [sys.executable, "-m", "embedx", "extract", str(tmp_path / "wavs"), "-m", str(tiny_model("hubert")),
            "--workers", "0", "--devices", "cpu,cpu", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(embedx.__file__).parents[1])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def catches_sigterm(pid: str) -> bool:  # the shard's stop handler is installed (SigCgt)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except OSError:
            return False
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        return "spawn_main" in cmdline and bool(caught >> (signal.SIGTERM - 1) & 1)

    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        pids = children.read_text().split() if children.exists() else []
        if sum(map(catches_sigterm, pids)) == 2:
            break
        time.sleep(0.01)
    if not children.exists():
        pytest.skip("needs Linux's /proc/PID/task/PID/children")
    # both shards have their stop handler and are loading the model: no store is open yet
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stdout + stderr
    said = [line for line in (stdout + stderr).splitlines() if "stopped" in line]
    assert said == ["stopped by SIGTERM after 0 of 8 items; re-run the same command to resume"], stdout + stderr
    assert not out.exists()
