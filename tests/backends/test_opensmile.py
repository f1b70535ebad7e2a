"""The openSMILE backend: names, the LLD frame formula, parity with opensmile itself, stage 1.

References are ``opensmile.Smile.process_file`` on 16 kHz mono PCM files (exact equality: embedx
decodes the same int16 samples) and ``process_signal`` on embedx's own decoded and resampled
signal for other rates.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import opensmile
import pytest
import torch

from embedx.backends import create_backend
from embedx.backends.opensmile import (
    FEATURE_SETS,
    MIN_SAMPLES,
    OpenSmileBackend,
    lld_frames,
    resolve_feature_set,
)
from embedx.errors import AudioError, ConfigError
from embedx.extraction.audio import load
from embedx.extraction.config import ExtractConfig, config_from_spec
from embedx.extraction.extract import extract
from embedx.store import StoreReader

SR = 16000


def smile(feature_set: str, level: str = "Functionals") -> opensmile.Smile:
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[level]
    )


def rows(s: opensmile.Smile, x: np.ndarray) -> int:
    """Rows openSMILE really produced (its wrapper fills one NaN row when there are none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = s.process_signal(x, SR).to_numpy()
    return 0 if np.isnan(a).all() else a.shape[0]


def speechy(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def corpus(write_audio, tmp_path):
    """16 kHz PCM files (exact parity), one 44.1 kHz file, one shorter than 60 ms."""
    write_audio("wavs/a.wav", speechy(1.3, 0), SR, subtype="PCM_16")
    write_audio("wavs/b.wav", speechy(0.45, 1), SR, subtype="PCM_16")
    write_audio("wavs/c/short.wav", speechy(0.03, 2), SR, subtype="PCM_16")
    write_audio("wavs/c/rate44k.wav", speechy(0.8, 3), 44100, subtype="PCM_16")
    return tmp_path / "wavs"


def run(corpus, tmp_path, workers=0, **kwargs):
    options = {"feature_set": kwargs.pop("feature_set", "egemaps"),
               "level": kwargs.pop("level", "functionals")}
    config = ExtractConfig(backend="opensmile", backend_options=options, device="cpu",
                           workers=workers, progress=False, **kwargs)
    out = tmp_path / "f.h5"
    return extract([str(corpus)], out, config), out


# --- names and options --------------------------------------------------------------------------


def test_feature_set_names_and_levels():
    assert {k: resolve_feature_set(k) for k in FEATURE_SETS} == {
        "egemaps": "eGeMAPSv02", "gemaps": "GeMAPSv01b", "compare": "ComParE_2016",
        "emobase": "emobase"}
    assert resolve_feature_set("EGEMAPSV02") == "eGeMAPSv02" and resolve_feature_set("is09") == "IS09"
    with pytest.raises(ConfigError, match="unknown openSMILE feature set 'mfcc'.*egemaps.*IS13"):
        resolve_feature_set("mfcc")
    with pytest.raises(ConfigError, match="unknown openSMILE level 'deltas'; accepted: functionals, lld"):
        OpenSmileBackend("egemaps", "deltas")
    with pytest.raises(ConfigError, match="takes no model"):
        create_backend("opensmile", model="facebook/hubert-base-ls960")
    with pytest.raises(ConfigError, match="short-item policy"):
        OpenSmileBackend(short="drop")
    functionals = create_backend("opensmile", device="cuda", precision="bf16", short="pad")
    assert functionals.name == "egemaps" and functionals.precision == "fp32"
    assert functionals.num_layers == 1 and functionals.frame_rate is None and functionals.dim == 88
    assert functionals.hop_samples is None and functionals.head_names == {}
    assert functionals.feature_names == smile("eGeMAPSv02").feature_names
    lld = OpenSmileBackend("eGeMAPSv02", "LowLevelDescriptors")
    assert lld.name == "egemaps-lld" and lld.level == "lld" and lld.frame_rate == 100.0
    assert lld.feature_names == smile("eGeMAPSv02", "LowLevelDescriptors").feature_names
    assert OpenSmileBackend("IS09", name="x").name == "x" and OpenSmileBackend("IS09").name == "is09"
    meta = lld.metadata()
    assert meta["feature_set"] == "eGeMAPSv02" and meta["feature_level"] == "lld"
    assert meta["opensmile_version"] == opensmile.__version__
    assert "device" not in meta and "precision" not in meta
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())


def test_preparer_is_small_and_picklable():
    backend = OpenSmileBackend("emobase", "lld")
    blob = pickle.dumps(backend.preparer)
    assert len(blob) < 300
    x = speechy(0.3, 5)
    assert np.array_equal(pickle.loads(blob).prepare(x), backend.prepare(x))


# --- frame counts -------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_set", ["eGeMAPSv02", "emobase", "IS09"])
def test_lld_frame_formula_equals_opensmile(feature_set):
    m = MIN_SAMPLES[feature_set]
    s = smile(feature_set, "LowLevelDescriptors")
    base = 0.1 * np.random.default_rng(0).standard_normal(40000).astype(np.float32)
    lengths = [m - 1, m, m + 1, m + 159, m + 160, m + 161, 1234, 4800, 16000, 16001, 39999]
    backend = OpenSmileBackend(feature_set, "lld")
    for n in lengths:
        assert rows(s, base[:n]) == lld_frames(n, m) == backend.num_frames(n), (feature_set, n)
    assert lld_frames(16000, m) == (16000 - m) // 160 + 2
    assert rows(smile(feature_set), base[: m - 1]) == 0 and rows(smile(feature_set), base[:m]) == 1


# --- parity with opensmile ----------------------------------------------------------------------


def test_functionals_equal_process_file(corpus, tmp_path):
    summary, out = run(corpus, tmp_path)
    assert summary.processed == 4 and summary.failed == 0
    ref = smile("eGeMAPSv02")
    with StoreReader(out) as r:
        spec = r.spec("egemaps")
        assert spec.layers == (0,) and spec.dim == 88 and spec.frame_rate is None
        assert spec.feature_names == tuple(ref.feature_names)
        assert spec.config["backend_options"] == {"feature_set": "eGeMAPSv02", "level": "functionals"}
        x = r.pooled("egemaps", "mean", 0)
        for idx, path in enumerate(r.items["path"]):
            if path.endswith(("a.wav", "b.wav")):  # 16 kHz mono PCM: bit-identical to opensmile
                assert np.array_equal(x[idx], ref.process_file(path).to_numpy()[0])
            elif path.endswith("rate44k.wav"):  # resampled by embedx, then the same computation
                assert np.array_equal(x[idx], ref.process_signal(load(path, SR), SR).to_numpy()[0])
            else:  # 30 ms < 60 ms: zero-padded to the set's minimum (the short policy)
                wave = np.pad(load(path, SR), (0, 960 - 480))
                assert np.array_equal(x[idx], ref.process_signal(wave, SR).to_numpy()[0])
        rebuilt = config_from_spec(dict(spec.config), workers=0, progress=False)
        assert rebuilt.backend == "opensmile" and rebuilt.backend_options == spec.config["backend_options"]


def test_lld_frames_and_poolings_equal_process_file(corpus, tmp_path):
    summary, out = run(corpus, tmp_path, workers=1, level="lld", frames=True,
                       poolings=("mean", "std", "max"))
    assert summary.processed == 4
    ref = smile("eGeMAPSv02", "LowLevelDescriptors")
    with StoreReader(out) as r:
        spec = r.spec("egemaps-lld")
        assert spec.frame_rate == 100.0 and spec.feature_names == tuple(ref.feature_names)
        for idx, path in enumerate(r.items["path"]):
            if not path.endswith(("a.wav", "b.wav")):
                continue
            expected = ref.process_file(path).to_numpy()  # (num_frames, 25)
            frames = r.frames("egemaps-lld", idx)[:, 0, :]  # (num_frames, 1 layer, 25) -> (num_frames, 25)
            assert np.array_equal(frames, expected)
            n = int(r.items["num_samples"][idx])
            assert frames.shape[0] == lld_frames(n, 960)
            np.testing.assert_allclose(r.pooled("egemaps-lld", "mean", 0)[idx], expected.mean(0),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(r.pooled("egemaps-lld", "std", 0)[idx], expected.std(0),
                                       rtol=1e-4, atol=1e-5)
            assert np.array_equal(r.pooled("egemaps-lld", "max", 0)[idx], expected.max(0))


def test_compare_on_one_short_file(write_audio, tmp_path):
    path = write_audio("one/x.wav", speechy(0.4, 7), SR, subtype="PCM_16")
    summary, out = run(tmp_path / "one", tmp_path, feature_set="compare")
    assert summary.processed == 1
    with StoreReader(out) as r:
        x = r.pooled("compare", "mean", 0)
        assert x.shape == (1, 6373)
        assert np.array_equal(x[0], smile("ComParE_2016").process_file(str(path)).to_numpy()[0])


# --- the backend contract -----------------------------------------------------------------------


def test_forward_pads_feature_matrices_and_accepts_waves():
    backend = OpenSmileBackend("egemaps", "lld")
    waves = [speechy(0.5, 1), speechy(0.2, 2)]
    features = [backend.fit_length(backend.prepare(w)) for w in waves]
    out = backend.forward(features, [0])
    assert out.hidden.shape == (1, 2, features[0].shape[0], 25) and out.hidden.dtype == torch.float32
    assert out.lengths.tolist() == [backend.num_frames(w.size) for w in waves]
    assert np.array_equal(out.hidden[0, 1, : out.lengths[1]].numpy(), features[1])
    assert not out.hidden[0, 1, out.lengths[1]:].any()
    again = backend.forward(waves, [0])  # raw waveforms are computed on the spot
    assert torch.equal(again.hidden, out.hidden)
    with pytest.raises(ConfigError, match="one layer"):
        backend.forward(features, [0, 1])
    with pytest.raises(AudioError, match=r"expected \(num_frames, 25\)"):
        backend.forward([np.zeros((3, 7), dtype=np.float32)], [0])


def test_short_items_and_clipping():
    fail = OpenSmileBackend("egemaps", short="fail")
    with pytest.raises(AudioError, match="too short: 500 samples.*960"):
        fail.prepare(speechy(0.5, 0)[:500])
    pad = OpenSmileBackend("egemaps", "lld")
    assert pad.prepare(speechy(0.5, 0)[:500]).shape == (2, 25)
    # openSMILE casts x * 32768 to int16; out-of-range samples are clipped, not wrapped around
    loud = 3.0 * speechy(0.3, 4)
    clipped = np.clip(loud, -1.0, 32767 / 32768)
    expected = smile("eGeMAPSv02").process_signal(clipped, SR).to_numpy()[0]
    assert np.array_equal(OpenSmileBackend("egemaps").prepare(loud)[0], expected)


def test_frames_of_functionals_are_refused_and_failures_recorded(corpus, tmp_path):
    with pytest.raises(ConfigError, match="frames needs frame-level features.*opensmile_level='lld'"):
        run(corpus, tmp_path, frames=True)
    (corpus / "broken.wav").write_bytes(b"RIFF....not audio")
    fail_short = run(corpus, tmp_path, short="fail")[0]
    assert fail_short.processed == 3 and fail_short.failed == 2  # broken.wav and short.wav
    with StoreReader(tmp_path / "f.h5") as r:
        failed = r.failed()
        assert sorted(failed["stage"]) == ["decode", "probe"]
        assert any("too short" in m for m in failed["message"])
    again = run(corpus, tmp_path, short="fail")[0]
    assert again.nothing_to_do and again.failed_total == 2


def test_max_chunk_seconds_is_inert_for_opensmile_and_never_refuses_a_resume(corpus, tmp_path):
    import h5py
    import yaml

    summary, out = run(corpus, tmp_path, max_chunk_seconds=60.0)
    assert summary.processed == 4
    with StoreReader(out) as r:
        assert r.spec("egemaps").config["max_chunk_seconds"] is None  # it had no effect
    summary, _ = run(corpus, tmp_path, max_chunk_seconds=5.0)  # would have been refused before
    assert summary.nothing_to_do
    # a set written before this rule stored 60: a resume with another value keeps that, not refused
    with h5py.File(out, "r+") as f:
        attrs = f["features/egemaps"].attrs
        config = yaml.safe_load(attrs["config"])
        config["max_chunk_seconds"] = 60.0
        attrs["config"] = yaml.safe_dump(config)
        f["features/egemaps/done"][1] = False
    summary, _ = run(corpus, tmp_path, max_chunk_seconds=None)
    assert summary.processed == 1
    with StoreReader(out) as r:
        assert r.spec("egemaps").config["max_chunk_seconds"] == 60.0
