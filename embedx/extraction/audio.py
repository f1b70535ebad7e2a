"""Audio decoding: any file libsndfile reads -> float32 mono at the backend's rate.

Decoding uses soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3, aiff, ...); channels are
averaged; resampling uses soxr (libsoxr's "HQ" band-limited resampler, the one librosa and HF
``datasets`` use). Every problem with one
file raises :class:`~embedx.errors.AudioError` with a one-line reason, so the extractor can
record the item as failed and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedx.errors import AudioError, one_line

#: file endings collected when a folder is scanned (lower case, without the dot)
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au", "w64", "caf")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one file.

    Attributes:
        num_samples: samples per channel.
        sample_rate: original rate in Hz.
        channels: channel count.
    """

    num_samples: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.num_samples / self.sample_rate if self.sample_rate else float("nan")


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header without decoding it.

    Args:
        path: audio file.

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioError: the file is missing, unreadable, not audio, or empty.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        kind = "broken symlink" if p.is_symlink() else "no such file"
        raise AudioError(f"{kind}: {path}")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError/OSError
        raise AudioError(f"cannot read audio header: {one_line(exc)}") from None
    if info.frames <= 0:
        raise AudioError("file contains no samples")
    return AudioInfo(num_samples=int(info.frames), sample_rate=int(info.samplerate),
                     channels=int(info.channels))


#: the resampler, as recorded in every feature set's config: it is part of what defines the
#: stored values (stores written before it was recorded used torchaudio's sinc resampler)
RESAMPLER = "soxr-hq"


def resampled_length(num_samples: int, orig_rate: int, new_rate: int) -> int:
    """Length of ``num_samples`` after :func:`resample`.

    soxr's one-shot resampler returns ``round(num_samples * new_rate / orig_rate)`` samples,
    halves rounded up (checked on every common rate pair in the tests); the frame layout of a
    store is planned from headers with this formula, so it must match decoding exactly.

    Args:
        num_samples: input length.
        orig_rate: input rate in Hz.
        new_rate: output rate in Hz.

    Returns:
        The output length in samples.
    """
    if orig_rate == new_rate:
        return int(num_samples)
    # integer form of floor(n * new / orig + 1/2): no float rounding at any length
    return (2 * int(num_samples) * int(new_rate) + int(orig_rate)) // (2 * int(orig_rate))


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a mono float32 signal with soxr (quality "HQ", linear phase).

    Args:
        wave: ``(num_samples,)`` float32.
        orig_rate: its rate in Hz.
        new_rate: wanted rate in Hz.

    Returns:
        ``(resampled_length(num_samples, orig_rate, new_rate),)`` float32.
    """
    if orig_rate == new_rate:
        return wave
    import soxr

    out = soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), orig_rate, new_rate,
                        quality="HQ")
    return np.asarray(out, dtype=np.float32)


def _read_plain_wav(path: Path) -> tuple[np.ndarray, int] | None:
    """The samples of a plain 16-bit PCM wav file, read without libsndfile; None for any other file.

    Most speech corpora are such files, and for a file of a few seconds opening it through
    libsndfile costs as much as decoding it: one read and a header walk here cost ~40% of
    :func:`soundfile.read`. Only the canonical layout is taken (little-endian ``RIFF``/``WAVE``,
    a ``fmt`` chunk of format 1 with 16 bits per sample before an even-sized ``data`` chunk that
    lies wholly in the file); anything else (extensible format, RF64, truncated or odd files)
    returns None and goes to libsndfile.

    Returns:
        ``(num_samples, channels)`` int16 samples and the rate in Hz, or None.
    """
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        blob = head + f.read()
    pos, fmt = 12, None
    while pos + 8 <= len(blob):
        chunk, size = blob[pos:pos + 4], int.from_bytes(blob[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt " and size >= 16:
            # format tag, channels, rate, bytes per second, block align, bits per sample
            fmt = struct.unpack_from("<HHIIHH", blob, body)
        elif chunk == b"data":
            if fmt is None or fmt[0] != 1 or fmt[5] != 16 or fmt[1] < 1 or fmt[4] != 2 * fmt[1]:
                return None
            if size % fmt[4] or body + size > len(blob):
                return None
            # (num_samples * channels,) -> (num_samples, channels), interleaved
            return np.frombuffer(blob, "<i2", count=size // 2, offset=body).reshape(-1, fmt[1]), int(fmt[2])
        pos = body + size + (size & 1)  # chunks are padded to an even size
    return None


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono at its own rate.

    Args:
        path: audio file.

    Returns:
        ``(num_samples,)`` float32 mono signal and the file's rate in Hz.

    Raises:
        AudioError: unreadable, not audio, empty, or holding NaN/inf samples.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        kind = "broken symlink" if p.is_symlink() else "no such file"
        raise AudioError(f"{kind}: {path}")
    try:
        plain = _read_plain_wav(p)
        if plain is not None:
            raw, rate = plain
            pcm16 = True
        else:
            with sf.SoundFile(str(p)) as f:
                rate, pcm16 = f.samplerate, f.subtype == "PCM_16"
                # 16-bit PCM: reading the integers and scaling them here costs ~40% less than
                # libsndfile's own conversion to float
                raw = f.read(dtype="int16" if pcm16 else "float32", always_2d=True)  # (num_samples, channels)
    except Exception as exc:
        raise AudioError(f"cannot decode audio: {one_line(exc)}") from None
    # int16 * 2**-15 is exact in float32: the very values libsndfile's float conversion gives
    data = np.multiply(raw, np.float32(2.0**-15), dtype=np.float32) if pcm16 else raw
    if data.shape[0] == 0:
        raise AudioError("file contains no samples")
    if not pcm16 and not np.isfinite(data).all():  # integers are always finite
        raise AudioError("audio contains NaN or infinite samples")
    # (num_samples, channels) -> (num_samples,): the average keeps the level of a dual-mono file
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(wave), int(rate)


def load(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file to float32 mono at ``sample_rate``: :func:`decode`, then :func:`resample`.

    Args:
        path: audio file.
        sample_rate: target rate in Hz.

    Returns:
        ``(num_samples,)`` float32 mono signal.

    Raises:
        AudioError: unreadable, not audio, empty, or holding NaN/inf samples.
    """
    wave, rate = decode(path)
    return resample(wave, rate, sample_rate)
