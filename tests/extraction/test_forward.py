"""The batch loop's device side: copies overlapped with the next forward, out-of-memory handling.

The overlap is shown on a slowed fake device: its copies to the host complete only once the
next batch's forward has begun (or after a timeout that the test counts as a failure), and it
records the order of events. The out-of-memory cases wrap the tiny model's forward in one that
raises ``torch.OutOfMemoryError`` above a padded size, as a CUDA device would.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

import embedx.extraction.extract as ex
from embedx.errors import NothingExtractedError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.extraction.forward import padded_samples
from embedx.extraction.transfer import DeviceOps, HostCopy
from embedx.store import StoreReader, StoreWriter
from embedx.testing.synth import noise
from tests.killrun import compare_stores


def corpus(folder, n=9, seed=4, long_seconds=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        sf.write(folder / f"s{i}.wav", noise(float(rng.uniform(0.3, 0.6)), 16000, seed=i), 16000)
    if long_seconds:
        sf.write(folder / "long.wav", noise(long_seconds, 16000, seed=99), 16000)
    return folder


class SlowDevice(DeviceOps):
    """A device whose copy of batch k reaches the host only when forward k + 1 has begun."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.forwards = 0
        self.begun = [threading.Event() for _ in range(100)]  # forward k has begun

    def to_host(self, tensors):
        k = self.forwards
        self.log.append(("copy started", k))
        return SlowCopy(self, k, {name: t.clone() for name, t in tensors.items()})


class SlowCopy(HostCopy):
    def __init__(self, device: SlowDevice, k: int, arrays) -> None:
        super().__init__(arrays)
        self.device, self.k = device, k

    def wait(self):
        # the last batch has no successor: its copy completes after the timeout
        released = self.device.begun[self.k + 1].wait(timeout=3.0)
        self.device.log.append(("copy done", self.k, released))
        return super().wait()


def with_backend(monkeypatch, wrap):
    """Make extract() build the real backend, then ``wrap(backend)``."""
    real_create = ex.create_backend

    def create(name, **kwargs):
        backend = real_create(name, **kwargs)
        wrap(backend)
        return backend

    monkeypatch.setattr(ex, "create_backend", create)


def test_the_next_batch_is_staged_before_the_last_copy_completes(tiny_model, tmp_path, monkeypatch):
    wavs = corpus(tmp_path / "wavs")
    config = ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False, batch_seconds=1.2,
                           layers="0,2", poolings=("mean", "std"), frames=True)
    extract([str(wavs)], tmp_path / "clean.h5", config)
    log: list = []

    def slow(backend):
        device = SlowDevice(log)
        real_forward = backend.forward

        def forward(waves, layers):
            device.forwards += 1
            log.append(("staged", device.forwards))
            device.begun[device.forwards].set()
            return real_forward(waves, layers)

        backend.transfer_ops = device
        backend.forward = forward

    real_write = StoreWriter.write

    def write(self, name, indices, **kwargs):
        log.append(("written", len(indices)))
        return real_write(self, name, indices, **kwargs)

    with_backend(monkeypatch, slow)
    monkeypatch.setattr(StoreWriter, "write", write)
    summary = extract([str(wavs)], tmp_path / "slow.h5", config)
    batches = max(e[1] for e in log if e[0] == "staged")
    assert summary.processed == 9 and batches >= 3
    done = {e[1]: (i, e[2]) for i, e in enumerate(log) if e[0] == "copy done"}
    staged = {e[1]: i for i, e in enumerate(log) if e[0] == "staged"}
    for k in range(1, batches):
        position, released = done[k]
        assert released and staged[k + 1] < position, log  # batch k+1 staged before copy k completed
    # every write comes after its copy: the n-th write follows the n-th completed copy
    writes = [i for i, e in enumerate(log) if e[0] == "written"]
    assert len(writes) == batches and all(w > done[k][0] for k, w in zip(range(1, batches + 1), writes, strict=True))
    equal, worst = compare_stores(tmp_path / "clean.h5", tmp_path / "slow.h5")
    assert equal, worst  # the same batches: bit for bit


def out_of_memory_above(limit: int, calls: list):
    """A wrapper making the forward raise torch.OutOfMemoryError on batches above ``limit`` samples."""

    def wrap(backend):
        real_forward = backend.forward

        def forward(waves, layers):
            size = padded_samples(waves)
            calls.append((len(waves), size > limit))
            if size > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_forward(waves, layers)

        backend.forward = forward

    return wrap


def test_out_of_memory_shrinks_the_budget_for_the_rest_of_the_run(tiny_model, tmp_path, monkeypatch):
    wavs = corpus(tmp_path / "wavs")
    config = ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False, batch_seconds=2.5,
                           layers="0,2")
    extract([str(wavs)], tmp_path / "clean.h5", config)
    longest = max(sf.info(p).frames for p in wavs.glob("*.wav"))
    calls: list = []
    with_backend(monkeypatch, out_of_memory_above(2 * longest, calls))
    summary = extract([str(wavs)], tmp_path / "f.h5", config)
    assert (summary.processed, summary.failed) == (9, 0)
    assert sum(oom for _n, oom in calls) == 1, calls  # the later batches were split before their forward
    assert max(n for n, _oom in calls[1:]) <= 2 and len({n for n, _ in calls[:1]}) == 1
    with StoreReader(tmp_path / "f.h5") as r, StoreReader(tmp_path / "clean.h5") as c:
        name = r.feature_sets()[0]
        for layer in (0, 2):
            # other batch compositions: equal within float rounding
            np.testing.assert_allclose(r.pooled(name, "mean", layer), c.pooled(name, "mean", layer),
                                       rtol=1e-4, atol=1e-5)


def test_a_long_item_out_of_memory_halves_its_chunks_per_forward(tiny_model, tmp_path, monkeypatch):
    wavs = corpus(tmp_path / "wavs", n=2, long_seconds=4.0)
    config = ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False, batch_seconds=8.0,
                           layers="0,2", max_chunk_seconds=1.0, frames=True)
    extract([str(wavs)], tmp_path / "clean.h5", config)
    calls: list = []
    with_backend(monkeypatch, out_of_memory_above(16000 + 400, calls))  # one chunk fits, two do not
    summary = extract([str(wavs)], tmp_path / "f.h5", config)
    assert (summary.processed, summary.failed) == (3, 0)
    long_calls = [n for n, _ in calls[:calls.index((1, False))]]
    assert long_calls[0] >= 4 and long_calls == sorted(long_calls, reverse=True)  # halved down to 1
    assert all(not oom for n, oom in calls if n == 1)
    with StoreReader(tmp_path / "f.h5") as r, StoreReader(tmp_path / "clean.h5") as c:
        name = r.feature_sets()[0]
        i = r.items["id"].tolist().index("long.wav")
        np.testing.assert_allclose(r.frames(name, i), c.frames(name, i), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r.pooled(name, "mean", 2), c.pooled(name, "mean", 2), rtol=1e-4, atol=1e-5)


def test_an_item_out_of_memory_alone_is_recorded_and_a_fatal_device_error_ends_the_run(
        tiny_model, tmp_path, monkeypatch):
    wavs = corpus(tmp_path / "wavs", n=3)
    config = ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False, layers="0")
    with monkeypatch.context() as m:
        with_backend(m, out_of_memory_above(0, []))
        with pytest.raises(NothingExtractedError):
            extract([str(wavs)], tmp_path / "oom.h5", config)
    with StoreReader(tmp_path / "oom.h5") as r:
        failed = r.failed()
        assert len(failed) == 3 and failed["message"].str.startswith("out of device memory alone").all()

    def fatal(backend):
        def forward(waves, layers):
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

        backend.forward = forward

    with_backend(monkeypatch, fatal)
    with pytest.raises(torch.AcceleratorError):
        extract([str(wavs)], tmp_path / "fatal.h5", config)


class FakeCudaBackend:  # what batch_seconds reads of a backend
    device = "cuda:0"
    activation_bytes_per_second = 40e6


@pytest.mark.parametrize(("free", "want"), [(40e9, 400.0), (2e9, 60.0), (400e9, 480.0)])
def test_the_cuda_budget_is_sized_from_free_memory(monkeypatch, free, want):
    from embedx.extraction.config import batch_seconds

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 80e9))
    # 0.4 of the free memory over 40 MB per second, between 60 and 480 s
    assert batch_seconds(ExtractConfig(model="m"), FakeCudaBackend()) == pytest.approx(want)
    assert batch_seconds(ExtractConfig(model="m", batch_seconds=7.0), FakeCudaBackend()) == 7.0


def test_the_cuda_budget_falls_back_when_free_memory_cannot_be_read(monkeypatch):
    from embedx.extraction.config import CUDA_BATCH_SECONDS, batch_seconds

    def no_driver(device):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_driver)
    assert batch_seconds(ExtractConfig(model="m"), FakeCudaBackend()) == CUDA_BATCH_SECONDS


def test_the_estimate_of_a_base_model_is_near_the_measured_2_gb_per_minute(tiny_model):
    from embedx.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model("hubert")), device="cpu")
    per_second = backend.activation_bytes_per_second
    # tiny: conv_dim[0] x 16000/5 positions x 4 bytes x 6 copies dominates
    conv0 = int(backend.config.conv_dim[0])
    assert per_second >= 16000 / 5 * conv0 * 4 * 6
