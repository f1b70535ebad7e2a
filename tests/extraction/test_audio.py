import numpy as np
import pytest

from embedx.errors import AudioError
from embedx.extraction.audio import load, probe, resample, resampled_length
from embedx.testing.synth import chirp, tone


def test_stereo_44k_equals_its_16k_mono_equivalent(write_audio):
    left = chirp(200, 3000, 1.5, 44100, amplitude=0.4)
    right = 0.5 * left
    path = write_audio("st.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    got = load(path, 16000)
    # downmix is the channel mean, then soxr resampling: exactly that chain
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


#: every common recording rate; each is resampled to the models' 16 kHz
COMMON_RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 96000)


@pytest.mark.parametrize("orig", COMMON_RATES)
def test_planned_length_equals_resampled_length(orig):
    """The store plans frame counts from headers with resampled_length: it must equal soxr's
    output length exactly, at every length (1..400 and 40 random lengths up to 2 minutes)."""
    rng = np.random.default_rng(orig)
    lengths = [*range(1, 401), *rng.integers(401, 120 * orig, 40).tolist()]
    for n in lengths:
        x = np.zeros(n, dtype=np.float32)  # the length does not depend on the content
        assert resample(x, orig, 16000).shape[0] == resampled_length(n, orig, 16000), (orig, n)
    assert resampled_length(12345, 16000, 16000) == 12345


@pytest.mark.parametrize("orig", COMMON_RATES)
def test_decoded_file_length_equals_plan_from_header(write_audio, orig):
    """End to end: a file's header -> planned length == what load() decodes."""
    for n in (1, 399, orig + 1, 3 * orig + 17):
        path = write_audio(f"r{orig}_{n}.flac", np.full(n, 0.1, dtype=np.float32), orig)
        info = probe(path)
        assert load(path, 16000).shape[0] == resampled_length(info.num_samples, orig, 16000)


def _tones(rate: int, n: int) -> np.ndarray:
    """Three tones below 3.6 kHz: inside every rate's passband (soxr HQ passes 91% of the lower
    Nyquist frequency; 8 kHz input has 4 kHz), so resampling must reproduce them exactly."""
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t + 0.1) + 0.2 * np.sin(2 * np.pi * 1234.5 * t + 1.0)
            + 0.1 * np.sin(2 * np.pi * 3000 * t + 2.0)).astype(np.float32)


@pytest.mark.parametrize("orig", COMMON_RATES)
def test_resampling_reproduces_a_tone_synthesised_at_16k(orig):
    """Independent reference: the same band-limited signal synthesised directly at 16 kHz.

    Tolerance 2e-6: soxr's HQ setting is specified to 20-bit precision (2^-20 ~ 1e-6 of full
    scale) and float32 rounding of a 0.6-peak signal is ~6e-8; measured here <= 3.6e-7. The
    first and last 25 ms are skipped: a tone switched on abruptly is not band-limited there.
    """
    x = _tones(orig, orig + 7)
    y = resample(x, orig, 16000)
    ref = _tones(16000, len(y))
    inner = slice(400, len(y) - 400)
    np.testing.assert_allclose(y[inner], ref[inner], atol=2e-6, rtol=0)


@pytest.mark.parametrize("orig", COMMON_RATES)
def test_resampling_agrees_with_scipy_polyphase(orig):
    """A second, independent resampler: scipy's polyphase FIR (Kaiser window, beta 5).

    scipy's shorter filter droops in the passband: against the 16 kHz reference it is off by up
    to 9.4e-4 (8 kHz input) and soxr by < 1e-6, so the two agree to 2e-3, and scipy is the less
    exact of the two (asserted, so a regression in ours cannot hide behind scipy's error).
    """
    from math import gcd

    from scipy.signal import resample_poly

    x = _tones(orig, orig + 7)
    y = resample(x, orig, 16000)
    g = gcd(orig, 16000)
    poly = resample_poly(x.astype(np.float64), 16000 // g, orig // g)[: len(y)]
    ref = _tones(16000, len(y)).astype(np.float64)
    inner = slice(400, len(y) - 400)
    np.testing.assert_allclose(y[inner], poly[inner], atol=2e-3, rtol=0)
    assert np.abs(y - ref)[inner].max() < np.abs(poly - ref)[inner].max()


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


@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_decodes_to_exactly_libsndfiles_float_conversion(tmp_path, channels):
    import soundfile as sf

    from embedx.extraction.audio import decode

    # every 16-bit value, in both channels (reversed in the second)
    values = np.arange(-32768, 32768, dtype=np.int16)
    data = values[:, None] if channels == 1 else np.stack([values, values[::-1]], axis=1)
    path = tmp_path / "all.wav"
    sf.write(path, data, 16000, subtype="PCM_16")
    wave, rate = decode(path)
    reference = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)
    assert rate == 16000 and wave.dtype == np.float32 and wave.flags.c_contiguous
    np.testing.assert_array_equal(wave, reference)
    if channels == 1:
        assert wave[0] == -1.0 and wave[-1] == np.float32(32767 / 32768)


def _with_chunk_before_data(path, chunk: bytes, payload: bytes) -> None:
    """Insert a chunk (odd sizes padded) between a wav file's fmt and data chunks."""
    blob = bytearray(path.read_bytes())
    at = blob.index(b"data")
    extra = chunk + len(payload).to_bytes(4, "little") + payload + (b"\0" if len(payload) % 2 else b"")
    blob[at:at] = extra
    blob[4:8] = (len(blob) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("case", ["mono-odd", "stereo", "extra-chunk", "wavex", "pcm24", "truncated"])
def test_wav_files_decode_exactly_as_libsndfile_reads_them(tmp_path, case):
    import soundfile as sf

    from embedx.extraction.audio import _read_plain_wav, decode

    rng = np.random.default_rng(1)
    channels = 2 if case == "stereo" else 1
    data = (0.3 * rng.standard_normal((16001, channels))).astype(np.float32)
    path = tmp_path / f"{case}.wav"
    fmt = "WAVEX" if case == "wavex" else "WAV"
    sf.write(path, data, 16000, format=fmt, subtype="PCM_24" if case == "pcm24" else "PCM_16")
    if case == "extra-chunk":
        _with_chunk_before_data(path, b"junk", b"abc")  # an odd-sized chunk: padded to 4 bytes
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-1001])  # the data chunk claims more than the file holds
    reference, rate = sf.read(path, dtype="float32", always_2d=True)
    wave, got_rate = decode(path)
    np.testing.assert_array_equal(wave, reference.mean(axis=1, dtype=np.float32))
    assert got_rate == rate == 16000
    plain = case in ("mono-odd", "stereo", "extra-chunk")
    assert (_read_plain_wav(path) is not None) == plain  # the others go through libsndfile


def _decoder_stderr(path) -> list[str]:
    """What libsndfile's decoders print on fd 2 when soundfile opens ``path`` in a fresh process
    (the independent reference: embedx is not involved)."""
    import subprocess
    import sys

    code = "import soundfile, sys\ntry:\n    soundfile.info(sys.argv[1])\nexcept Exception:\n    pass\n"
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in res.stderr.splitlines() if line.strip()]


def test_a_text_file_named_mp3_records_the_decoders_own_reason_and_prints_nothing(tmp_path, capfd):
    from embedx.extraction.audio import decode

    path = tmp_path / "a.mp3"
    path.write_text("hello, this is a text file\nnot audio\n")
    said = _decoder_stderr(path)
    assert said and any("MPEG" in line for line in said)  # mpg123's notes, printed past Python
    capfd.readouterr()
    for read in (probe, decode):
        with pytest.raises(AudioError) as err:
            read(path)
        reason = str(err.value)
        # the decoder's own words, in order, and not libsndfile's "does not exist" (it does)
        assert f"the decoder said: {' '.join(said)}" in reason, reason
        assert "does not exist" not in reason and "\n" not in reason
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_damaged_mp3_that_decodes_keeps_the_decoders_notes_off_the_terminal(tmp_path, capfd):
    import soundfile as sf

    from embedx.extraction.audio import decode

    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    path = tmp_path / "damaged.mp3"
    sf.write(path, tone(440, 2.0, 16000, amplitude=0.5), 16000, format="MP3")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2:len(blob) // 2 + 200] = bytes(200)  # zeros where MPEG frames were
    path.write_bytes(bytes(blob))
    said = _decoder_stderr(path)  # the header reads fine: nothing said
    capfd.readouterr()
    notes: list[str] = []
    wave, rate = decode(path, notes)
    reference = sf.read(path, dtype="float32")[0]  # prints the notes itself (captured)
    np.testing.assert_allclose(wave, reference, rtol=0, atol=1e-6)  # one float32 step apart at most
    printed = [line.strip() for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert not said and printed and notes == printed  # decode() caught exactly what soundfile printed


def test_decoder_notes_restores_fd2_when_the_block_raises(capfd):
    import os

    from embedx.extraction.audio import decoder_notes

    with pytest.raises(ValueError), decoder_notes() as notes:
        os.write(2, b"Note: chatter one\n\nNote: chatter two\n")
        os.write(2, b"\x1b[2Kprogress bar\n")  # another thread's terminal drawing passes through
        raise ValueError("in the block")
    os.write(2, b"after\n")
    assert notes == ["Note: chatter one", "Note: chatter two"]
    assert capfd.readouterr().err == "\x1b[2Kprogress bar\nafter\n"
    with decoder_notes() as again:  # the scratch file was emptied: nothing from before
        pass
    assert again == []
