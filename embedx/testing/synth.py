"""Synthetic speech-like audio and the built-in example corpus (no downloads).

The example corpus has four "emotions" that differ the way acted emotions roughly do (pitch
level and contour, loudness, spectral tilt, speaking rate) and speakers that differ in pitch and
vowel formants, so a probe can learn the label and speaker-independent folds matter. Files come
at several sample rates and channel counts to exercise decoding and resampling.

The example's tiny HuBERT (:func:`make_example`) is random-weight, no training, no labels seen,
but its layers are built to differ (:data:`DEMO_BOTTLENECK`, no label involved):
layer 0 (the convolutional feature encoder's output, projected) keeps everything the random
filters pick up of pitch, spectral tilt and tempo, and each deeper block writes through a
narrower random subspace (16, 8, 4, then 2 of the 32 dimensions, with a gain that outweighs
the residual path), so the deeper a layer, the fewer directions of layer 0 it keeps and the less
of the emotion a linear probe can read from it. The layer curve of `make demo` therefore falls
from layer 0 (UAR about 0.6, chance 0.25) towards chance at layer 4, and the deeper layers come
out significantly worse than the best one. Real models are not built like this: their layer
curves come from training; the example only makes the curve's shape and its statistics visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: (f0 scale, f0 slope per second, level dB, spectral tilt, syllables per second)
EMOTIONS: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (1.00, 0.00, -18.0, 1.0, 4.0),
    "happy": (1.30, 0.25, -12.0, 0.8, 5.0),
    "sad": (0.85, -0.15, -24.0, 1.5, 3.0),
    "angry": (1.20, -0.05, -8.0, 0.6, 5.5),
}
#: (F1, F2, F3) in Hz of a few vowels
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
#: ranks of the example model's 4 transformer blocks (see :func:`embedx.testing.tiny.narrow_blocks`)
DEMO_BOTTLENECK = (16, 8, 4, 2)
#: a name of each of :data:`VOWELS`, the labels of the example's alignments
VOWEL_NAMES = ("a", "i", "u", "e", "o")
#: the example's TextGrid tier: one interval per syllable, labelled with its vowel
ALIGNMENT_TIER = "vowels"
#: the share of a syllable labelled with its vowel: the middle half, where its Hann envelope is
#: above half its peak (the edges are quiet transitions, left unlabelled)
_LABELLED = (0.25, 0.75)


def tone(freq: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A sine tone, float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A linear chirp from ``f0`` to ``f1`` Hz, float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-9)))
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise(seconds: float, sample_rate: int = 16000, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    """White Gaussian noise, float32."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(round(seconds * sample_rate)))).astype(np.float32)


def mixed_item(k: int, seconds: float, sample_rate: int, rng: np.random.Generator, *, f0: float = 120.0,
               f0_step: float = 20.0, chirp_top: float = 2500.0, noise_amplitude: float = 0.5) -> np.ndarray:
    """Item ``k`` of a mixed test corpus, by ``k % 3``: a speech-like utterance (emotion ``k % 4``,
    pitch ``f0 + f0_step·k``), a chirp in light noise, or plain noise; float32."""
    if k % 3 == 0:
        return utterance(list(EMOTIONS)[k % 4], f0 + f0_step * k, 1.0, seconds, sample_rate, rng)
    if k % 3 == 1:
        return chirp(150, chirp_top, seconds, sample_rate) + noise(seconds, sample_rate, 0.02, seed=k)
    return noise_amplitude * noise(seconds, sample_rate, seed=k)


def vowel(f0: np.ndarray | float, formants: tuple[float, ...], seconds: float, sample_rate: int = 16000,
          tilt: float = 1.0) -> np.ndarray:
    """A vowel-like harmonic signal: harmonics of ``f0`` shaped by formant resonances.

    Args:
        f0: fundamental in Hz, constant or one value per sample.
        formants: formant centre frequencies in Hz.
        seconds: duration.
        sample_rate: rate in Hz.
        tilt: spectral tilt exponent (higher = darker voice).

    Returns:
        ``(num_samples,)`` float32, peak-normalised to 1.
    """
    n = int(round(seconds * sample_rate))
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    out = np.zeros(n)
    for k in range(1, int(sample_rate / 2 / f0.max())):
        fk = k * f0
        gain = sum(1.0 / (1.0 + ((fk - fc) / (0.08 * fc + 50)) ** 2) for fc in formants) / k**tilt
        out += gain * np.sin(k * phase)
    peak = np.abs(out).max()
    return (out / peak if peak > 0 else out).astype(np.float32)


def utterance(emotion: str, speaker_f0: float, speaker_shift: float, seconds: float, sample_rate: int,
              rng: np.random.Generator, events: list[tuple[float, float, str]] | None = None) -> np.ndarray:
    """A speech-like utterance: syllables of vowels with an emotion's prosody.

    Args:
        emotion: a key of :data:`EMOTIONS`.
        speaker_f0: the speaker's mean pitch in Hz.
        speaker_shift: the speaker's formant scale (vocal-tract length).
        seconds: duration.
        sample_rate: rate in Hz.
        rng: random generator.
        events: when given, ``(start, end, vowel)`` in seconds is appended for the middle half
            of every syllable (see :data:`VOWEL_NAMES`); the audio does not depend on it.

    Returns:
        ``(num_samples,)`` float32.
    """
    scale, slope, level_db, tilt, rate = EMOTIONS[emotion]
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = speaker_f0 * scale * (1 + slope * t / max(seconds, 1e-9)) * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    out = np.zeros(n, dtype=np.float32)
    syllable = int(sample_rate / rate)
    for start in range(0, n, syllable):
        stop = min(n, start + syllable)
        which = int(rng.integers(len(VOWELS)))
        formants = tuple(f * speaker_shift for f in VOWELS[which])
        if events is not None:
            lo, hi = (start + share * (stop - start) for share in _LABELLED)
            events.append((lo / sample_rate, hi / sample_rate, VOWEL_NAMES[which]))
        seg = vowel(f0[start:stop], formants, (stop - start) / sample_rate, sample_rate, tilt)
        env = np.hanning(stop - start).astype(np.float32)
        out[start:stop] += seg[: stop - start] * env
    out += 0.003 * rng.standard_normal(n).astype(np.float32)
    return (out * 10 ** (level_db / 20)).astype(np.float32)


@dataclass(frozen=True)
class Example:
    """Where :func:`make_example` put things.

    Attributes:
        audio_dir: folder of audio files.
        manifest: CSV with path, label, speaker, split, corpus, sex and sentence columns.
        model_dir: a tiny random-weight HuBERT with narrowing blocks (:data:`DEMO_BOTTLENECK`),
            saved with ``save_pretrained``.
        num_items: number of audio items.
        alignments: folder of one Praat TextGrid per audio file (same relative path, ending
            ``.TextGrid``), tier :data:`ALIGNMENT_TIER`: the vowel of every syllable.
    """

    audio_dir: Path
    manifest: Path
    model_dir: Path
    num_items: int
    alignments: Path | None = None


def make_example(folder: str | Path, num_items: int = 128, num_speakers: int = 16, seed: int = 0,
                 model_family: str = "hubert",
                 bottleneck: tuple[int, ...] | None = DEMO_BOTTLENECK) -> Example:
    """Write the built-in example corpus and a tiny model.

    Items go round the speakers, and each speaker's items round the four emotions, so 128 items
    of 16 speakers give every speaker two items per emotion. The model's blocks narrow with depth
    (:data:`DEMO_BOTTLENECK`, see the module docstring), so its layer curve has a shape: 16
    speakers keep the speaker-grouped CIs tight enough for the deeper layers to come out
    significantly worse than layer 0.

    Args:
        folder: destination (created).
        num_items: number of utterances.
        num_speakers: number of speakers (a speaker-independent split needs >= 3; fewer than the
            default widen the CIs until no layer differs significantly).
        seed: random seed (files are identical for the same seed).
        model_family: family of the tiny model (see :mod:`embedx.testing.tiny`).
        bottleneck: ranks of the model's narrowing blocks; ``None``: plain random weights, whose
            layers barely differ (a flat layer curve).

    Returns:
        The :class:`Example`.
    """
    import pandas as pd
    import soundfile as sf

    from embedx.testing.tiny import save_tiny_model

    folder = Path(folder)
    audio_dir = folder / "wavs"
    audio_dir.mkdir(parents=True, exist_ok=True)
    alignments = folder / "alignments"
    rng = np.random.default_rng(seed)
    emotions = list(EMOTIONS)
    speakers = [(f"spk{s:02d}", float(rng.uniform(100, 230)), float(rng.uniform(0.85, 1.2)))
                for s in range(num_speakers)]
    # formats cycle so the example exercises resampling and downmixing
    formats = [(16000, 1, "wav", "PCM_16"), (22050, 1, "flac", "PCM_16"), (44100, 2, "wav", "PCM_24"),
               (16000, 1, "flac", "PCM_16"), (8000, 1, "wav", "PCM_16"), (48000, 2, "flac", "PCM_16")]
    rows = []
    for i in range(num_items):
        spk, f0, shift = speakers[i % num_speakers]
        emotion = emotions[(i // num_speakers) % len(emotions)]
        rate, channels, ext, subtype = formats[i % len(formats)]
        seconds = float(rng.uniform(1.0, 3.0))
        events: list[tuple[float, float, str]] = []
        wave = utterance(emotion, f0, shift, seconds, rate, rng, events)
        data = np.stack([wave, 0.9 * wave], axis=1) if channels == 2 else wave
        rel = Path(spk) / f"{spk}_{i:04d}_{emotion}.{ext}"
        (audio_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio_dir / rel, data, rate, subtype=subtype)
        write_textgrid(alignments / rel.with_suffix(".TextGrid"), events, len(wave) / rate)
        split = "test" if i % num_speakers == 0 else ("dev" if i % num_speakers == 1 else "train")
        # two corpora and two sexes, both in each corpus (with >= 4 speakers), for `fit --domain
        # corpus` and `fit --by sex`; assigned by speaker index so every seed has both
        s = i % num_speakers
        # every speaker reads the same sentences, each in every emotion (as in EmoDB), for
        # `fit --cross-group sentence`: the speaker's k-th item is sentence k // 4 in emotion k % 4
        rows.append({"path": rel.as_posix(), "label": emotion, "speaker": spk, "split": split,
                     "corpus": ("corpusA", "corpusB")[s % 2], "sex": ("female", "male")[(s // 2) % 2],
                     "sentence": f"sent{i // num_speakers // len(emotions)}"})
    # beside the audio: `embedx extract --model M wavs/` finds it without --manifest
    manifest = audio_dir / "labels.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    model_dir = save_tiny_model(model_family, folder / "tiny-hubert", seed=seed,
                                bottleneck=bottleneck)
    return Example(audio_dir=audio_dir, manifest=manifest, model_dir=Path(model_dir), num_items=num_items,
                   alignments=alignments)


def write_textgrid(path: Path, events: list[tuple[float, float, str]], seconds: float,
                   tier: str = ALIGNMENT_TIER) -> None:
    """Write labelled intervals as a Praat TextGrid with one interval tier.

    Args:
        path: the ``.TextGrid`` file (its folder is created).
        events: ``(start, end, label)`` in seconds, sorted and not overlapping.
        seconds: duration of the audio (the tier's end).
        tier: the tier's name.
    """
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    grid = textgrid.Textgrid()
    grid.addTier(IntervalTier(tier, [(a, b, label) for a, b, label in events], 0.0, seconds))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
