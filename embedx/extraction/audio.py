"""Audio decoding: any file libsndfile reads -> float32 mono at the backend's rate.

Decoding uses soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3, aiff, ...); channels are
averaged; resampling uses soxr (libsoxr's "HQ" band-limited resampler, the one librosa and HF
``datasets`` use). Every problem with one
file raises :class:`~embedx.errors.AudioError` with a one-line reason, so the extractor can
record the item as failed and go on.

libsndfile's decoders write their complaints straight to file descriptor 2 (mpg123 prints
``Note: Illegal Audio-MPEG-Header ...`` for a file that is not MP3), past Python's
``sys.stderr``; :func:`decoder_notes` catches them around every libsndfile call, so they end
up in the failed item's reason instead of the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedx.errors import AudioError, one_line
from embedx.text import shorten

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


#: libsndfile's error code SFE_BAD_FILE, "File does not exist or is not a regular file (possibly
#: a pipe?)"; its MP3 reader also gives it for a regular file that holds no MPEG audio
_SFE_BAD_FILE = 7
#: characters of a decoder's notes kept in a reason (a long garbage file makes mpg123 print on)
_MAX_NOTES = 300
#: bytes of notes read back (the rest is dropped: it would not be kept anyway)
_MAX_NOTES_READ = 1 << 16
#: ``(pid, fd)`` of this process's scratch file for decoder notes; a forked worker opens its own,
#: as one shared between processes would share its offset too
_scratch: tuple[int, int] | None = None


def _scratch_fd() -> int:
    """This process's scratch file for :func:`decoder_notes` (unlinked at once, reused)."""
    global _scratch
    if _scratch is None or _scratch[0] != os.getpid():
        import tempfile

        fd, name = tempfile.mkstemp(prefix="embedx-decoder-notes-")
        os.unlink(name)
        _scratch = (os.getpid(), fd)
    return _scratch[1]


@contextmanager
def decoder_notes() -> Iterator[list[str]]:
    """Catch what C code writes to file descriptor 2 while the block runs.

    fd 2 points at a scratch file for the block and is restored however the block ends. A
    worker process decodes one file at a time; in the main process (``--workers 0``) another
    thread may draw the progress bar meanwhile: lines holding terminal control codes are
    written on to the real fd 2, so the bar is not lost.

    Yields:
        A list that holds, once the block is left, the non-empty lines written (stripped).
    """
    import sys

    notes: list[str] = []
    try:
        sys.stderr.flush()  # Python's own buffered text goes where it was meant to go
    except (AttributeError, OSError, ValueError):
        pass
    try:
        scratch = _scratch_fd()  # empty: emptied after every use that wrote to it
        saved = os.dup(2)
    except OSError:  # no fd 2, or no descriptors left: the notes go where they would have gone
        saved = None
    if saved is None:
        yield notes
        return
    os.dup2(scratch, 2)
    try:
        yield notes
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.fstat(scratch).st_size
        text = ""
        if size:
            text = os.pread(scratch, min(size, _MAX_NOTES_READ), 0).decode(errors="replace")
            os.ftruncate(scratch, 0)
            os.lseek(scratch, 0, os.SEEK_SET)
        for line in text.splitlines():
            if "\x1b" in line:
                os.write(2, (line + "\n").encode())
            elif line.strip():
                notes.append(line.strip())


def _open_failure(exc: Exception, path: Path, notes: list[str]) -> str:
    """Why libsndfile could not read ``path``, in one line, with its decoder's own words.

    Args:
        exc: what soundfile raised.
        path: the file (it exists: the callers checked).
        notes: what the decoder wrote to fd 2 meanwhile (see :func:`decoder_notes`).

    Returns:
        The reason, without soundfile's ``Error opening 'path':`` (the record names the item).
    """
    reason = one_line(exc).removeprefix(f"Error opening {str(path)!r}: ")
    if getattr(exc, "code", None) == _SFE_BAD_FILE and path.is_file():
        # "File does not exist or is not a regular file": it is one; the decoder that libsndfile
        # picked by its content (mpg123 for anything not in a format with a header) found no audio
        reason = "libsndfile found no audio stream it can decode"
    return reason.rstrip(".") + decoder_said(notes) if notes else reason


def decoder_said(notes: list[str]) -> str:
    """``notes`` (see :func:`decoder_notes`) as the tail of a reason: ``; the decoder said: ...``.

    Args:
        notes: the decoder's lines.

    Returns:
        The tail, cut to :data:`_MAX_NOTES` characters of notes, or ``""`` without notes.
    """
    return f"; the decoder said: {shorten(' '.join(notes), _MAX_NOTES)}" if notes else ""


def _existing(path: str | Path) -> Path:
    """``path`` as a Path; a missing file or a broken link is refused in one line."""
    p = Path(path)
    if not p.exists():
        kind = "broken symlink" if p.is_symlink() else "no such file"
        raise AudioError(f"{kind}: {path}")
    return p


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

    p = _existing(path)
    notes: list[str] = []
    try:
        with decoder_notes() as notes:
            info = sf.info(str(p))
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError/OSError
        raise AudioError(f"cannot read audio header: {_open_failure(exc, p, notes)}") from None
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


def decode(path: str | Path, notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono at its own rate.

    Args:
        path: audio file.
        notes: a list to extend with what the decoder said meanwhile (mpg123's notes on a
            damaged MP3 that still decodes); they are never printed.

    Returns:
        ``(num_samples,)`` float32 mono signal and the file's rate in Hz.

    Raises:
        AudioError: unreadable, not audio, empty, or holding NaN/inf samples.
    """
    import soundfile as sf

    p = _existing(path)
    said: list[str] = []
    try:
        plain = _read_plain_wav(p)
        if plain is not None:
            raw, rate = plain
            pcm16 = True
        else:
            with decoder_notes() as said, sf.SoundFile(str(p)) as f:
                rate, pcm16 = f.samplerate, f.subtype == "PCM_16"
                # 16-bit PCM: reading the integers and scaling them here costs ~40% less than
                # libsndfile's own conversion to float
                raw = f.read(dtype="int16" if pcm16 else "float32", always_2d=True)  # (num_samples, channels)
    except Exception as exc:
        raise AudioError(f"cannot decode audio: {_open_failure(exc, p, said)}") from None
    if notes is not None:
        notes.extend(said)
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
