"""The Whisper encoder backend: dispatch, exactness, the valid-frame rule, long items.

The reference is the stock pipeline run on one item alone: the checkpoint's
``WhisperFeatureExtractor`` (which pads to 30 s) and ``WhisperModel``'s encoder with
``output_hidden_states=True``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from embedx.backends import create_backend
from embedx.backends.whisper import WhisperBackend
from embedx.errors import AudioError, ConfigError, ModelError
from embedx.extraction.batching import chunk_spans
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.store import StoreReader
from embedx.testing.tiny import save_tiny_model

SR = 16000
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model("whisper", tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.fixture(scope="module")
def backend(tiny):
    return create_backend("hf", model=str(tiny), device="cpu")


@pytest.fixture(scope="module")
def stock(tiny):
    extractor = WhisperFeatureExtractor.from_pretrained(tiny)
    encoder = WhisperModel.from_pretrained(tiny).get_encoder().eval()

    def states(wave: np.ndarray) -> torch.Tensor:
        """(num_layers, 1500, dim) of one item (<= 30 s) alone, padded to 30 s."""
        x = extractor(wave, sampling_rate=SR, return_tensors="pt")["input_features"]
        with torch.inference_mode():
            return torch.stack(encoder(x, output_hidden_states=True).hidden_states)[:, 0]

    states.extractor = extractor
    states.encoder = encoder
    return states


def signals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(2.3 * SR)) / SR
    return [
        (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        (0.05 * rng.standard_normal(int(0.71 * SR))).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 90 * t[:1000])).astype(np.float32),
    ]


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_hf_dispatches_whisper_checkpoints(tiny, backend):
    assert isinstance(backend, WhisperBackend)
    assert isinstance(create_backend("whisper", model=str(tiny), device="cpu"), WhisperBackend)
    assert backend.name == "tiny-whisper" and backend.num_layers == 3 and backend.dim == 32
    assert backend.frame_rate == 50.0 and backend.hop_samples == backend.min_samples == 320
    assert backend.max_samples == 30 * SR and backend.head_names == {}
    meta = backend.metadata()
    assert meta["backend"] == "whisper" and meta["architectures"] == "WhisperForConditionalGeneration"
    assert meta["last_layer_after_final_norm"] is True and meta["valid_frames"] == "num_samples // 320"
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())
    assert type(backend.model).__name__ == "WhisperEncoder"


def test_batch_equals_each_item_alone_padded_to_30_s(backend, stock):
    waves = signals()
    out = backend.forward([backend.fit_length(backend.prepare(w)) for w in waves],
                          list(range(backend.num_layers)))
    assert out.lengths.tolist() == [w.size // 320 for w in waves] == [115, 35, 3]
    assert out.hidden.shape == (3, 3, 115, 32)
    for i, wave in enumerate(waves):
        ref = stock(wave)
        n = int(out.lengths[i])
        for layer in range(backend.num_layers):
            assert rel_err(out.hidden[layer, i, :n], ref[layer, :n]) < TOL, (i, layer)
    # layer L is the encoder's output, after its final LayerNorm (as transformers returns it)
    with torch.inference_mode():
        x = stock.extractor(waves[1], sampling_rate=SR, return_tensors="pt")["input_features"]
        last = stock.encoder(x).last_hidden_state[0, :35]
    assert rel_err(out.hidden[-1, 1, :35], last) < TOL


def test_early_stop_and_window_splitting_change_nothing(tiny, backend):
    waves = signals()[:2]
    full = backend.forward(waves, [0, 1, 2])
    assert torch.equal(backend.forward(waves, [1, 0]).hidden, full.hidden[[1, 0]])
    one_by_one = WhisperBackend(str(tiny), device="cpu", max_windows=1).forward(waves, [0, 1, 2])
    assert rel_err(one_by_one.hidden, full.hidden) < 1e-5


def test_valid_frames_are_those_whose_step_lies_in_the_audio(backend, stock):
    assert [backend.num_frames(n) for n in (319, 320, 639, 640, 16000, 480000)] == [0, 1, 1, 2, 50, 1500]
    # encoder frame t convolves mel frames 2t-1..2t+1; every valid frame's three mel frames
    # carry the item's audio (above the log-mel floor of the zero padding), and the window's
    # frames past the valid ones are dropped
    n = 5 * 320 + 100
    wave = 0.5 * np.ones(n, dtype=np.float32)
    mel = stock.extractor(wave, sampling_rate=SR, return_tensors="np")["input_features"][0]
    floor = mel[:, -1].max()  # (num_mel_bins, 3000): the last frame is pure padding
    energetic = mel.max(axis=0) > floor + 1e-3
    valid = backend.num_frames(n)
    assert valid == 5
    assert all(energetic[max(2 * t - 1, 0):2 * t + 2].all() for t in range(valid))
    assert not energetic[2 * (valid + 2) - 1:].any()  # frame valid+2 on sees no audio at all


def test_a_40_s_item_runs_in_30_s_windows_with_frames_stitched_in_order(backend, stock, write_audio,
                                                                        tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(40 * SR) / SR
    long = (0.2 * np.sin(2 * np.pi * (100 + 5 * t) * t) + 0.01 * rng.standard_normal(t.size))
    path = write_audio("w/long.wav", long.astype(np.float32), SR, subtype="FLOAT")
    write_audio("w/short.wav", signals()[1], SR, subtype="FLOAT")
    wave = long.astype(np.float32)
    spans = chunk_spans(wave.size, 30 * SR, 320, 320)
    assert [(s.start, s.stop, s.first_frame, s.num_frames) for s in spans] == [
        (0, 480000, 0, 1500), (480000, 640000, 1500, 500)]
    ref = torch.cat([stock(wave[s.start:s.stop])[:, : s.num_frames] for s in spans], dim=1)
    direct = backend.forward([wave], [0, 2])
    assert direct.lengths.tolist() == [2000]
    assert rel_err(direct.hidden[:, 0], ref[[0, 2]]) < TOL
    # through stage 1: --max-chunk-seconds 60 is capped at Whisper's 30-s window
    config = ExtractConfig(model=str(backend.model_id), layers="0,2", poolings=("mean", "last"),
                           frames=True, device="cpu", workers=0, progress=False)
    assert extract([str(tmp_path / "w")], tmp_path / "f.h5", config).processed == 2
    with StoreReader(tmp_path / "f.h5") as r:
        name = r.feature_sets()[0]
        assert r.spec(name).frame_rate == 50.0 and r.spec(name).config["max_chunk_seconds"] == 60.0
        idx = r.items["path"].tolist().index(str(path))
        frames = r.frames(name, idx)  # (2000, 2 layers, 32)
        assert frames.shape == (2000, 2, 32)
        stored = torch.from_numpy(frames.transpose(1, 0, 2))
        assert rel_err(stored, ref[[0, 2]]) < TOL
        assert rel_err(torch.from_numpy(r.pooled(name, "mean", 2)[idx]), ref[2].mean(0)) < TOL
        assert rel_err(torch.from_numpy(r.pooled(name, "last", 0)[idx]), ref[0, -1]) < TOL


def test_short_items_and_errors(tiny, backend, tmp_path):
    assert backend.fit_length(backend.prepare(np.ones(100, dtype=np.float32))).shape == (320,)
    with pytest.raises(AudioError, match="minimum"):
        backend.forward([np.ones(100, dtype=np.float32)], [0])
    with pytest.raises(AudioError, match="too short"):
        WhisperBackend(str(tiny), device="cpu", short="fail").fit_length(np.ones(100, np.float32))
    with pytest.raises(ConfigError, match="out of range"):
        backend.forward(signals()[:1], [3])
    with pytest.raises(ConfigError, match="max_windows"):
        WhisperBackend(str(tiny), device="cpu", max_windows=0)
    hubert = save_tiny_model("hubert", tmp_path / "hubert", num_hidden_layers=1)
    with pytest.raises(ModelError, match="'hubert'.*accepts: whisper"):
        WhisperBackend(str(hubert), device="cpu")
