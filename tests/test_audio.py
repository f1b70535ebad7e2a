import numpy as np
import pytest

from embedx.audio import load, probe, resample, resampled_length
from embedx.errors import AudioError
from embedx.synth import chirp, tone


def test_stereo_44k_equals_its_16k_mono_equivalent(write_audio):
    left = chirp(200, 3000, 1.5, 44100, amplitude=0.4)
    right = 0.5 * left
    path = write_audio("st.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    got = load(path, 16000)
    # downmix is the channel mean, then torchaudio resampling: exactly that chain
    expected = resample(((left + right) / 2).astype(np.float32), 44100, 16000)
    assert got.dtype == np.float32 and got.shape == (resampled_length(len(left), 44100, 16000),)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # and it is the same signal as synthesising the chirp at 16 kHz (band-limited; skip the edges)
    direct = 0.75 * chirp(200, 3000, 1.5, 16000, amplitude=0.4)
    n = min(len(got), len(direct))
    assert np.abs(got[200:n - 200] - direct[200:n - 200]).max() < 0.01


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_integer_and_float_encodings_decode_to_float32(write_audio, subtype):
    x = tone(440, 0.5, 16000, amplitude=0.5)
    path = write_audio(f"t_{subtype}.wav", x, 16000, subtype=subtype)
    got = load(path, 16000)
    assert got.dtype == np.float32
    tol = 1e-2 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(got, x, atol=tol)


def test_probe_reads_header(write_audio):
    path = write_audio("a.flac", tone(100, 1.25, 22050), 22050)
    info = probe(path)
    assert (info.num_samples, info.sample_rate, info.channels) == (27562, 22050, 1)
    assert info.duration == pytest.approx(27562 / 22050)


@pytest.mark.parametrize("n,orig,new", [(16000, 16000, 16000), (44100, 44100, 16000), (12345, 22050, 16000),
                                        (1000, 8000, 16000), (77, 48000, 16000)])
def test_resampled_length_matches_torchaudio(n, orig, new):
    x = np.zeros(n, dtype=np.float32)
    assert resample(x, orig, new).shape[0] == resampled_length(n, orig, new)


def test_bad_files_raise_one_line_audio_errors(tmp_path, write_audio):
    (tmp_path / "fake.wav").write_text("this is not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    for name in ["fake.wav", "empty.wav", "missing.wav"]:
        with pytest.raises(AudioError) as err:
            load(tmp_path / name, 16000)
        assert "\n" not in str(err.value)
    nan = write_audio("nan.wav", np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), 16000, "FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load(nan, 16000)
    (tmp_path / "link.wav").symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(AudioError, match="broken symlink"):
        probe(tmp_path / "link.wav")
