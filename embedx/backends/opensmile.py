"""openSMILE feature sets (eGeMAPS, GeMAPS, ComParE, emobase, ...) as a backend.

openSMILE is CPU-bound, so the features are computed in :meth:`SmilePreparer.prepare`, which
stage 1 runs inside its DataLoader worker processes; :meth:`OpenSmileBackend.forward` only pads
the finished feature matrices into a batch. Two levels:

- ``functionals``: one vector per item (``frame_rate=None``, one "frame" per item), so the
  pooling ``mean`` of that single frame *is* the functional vector (stored bit for bit).
- ``lld``: the set's low-level descriptors at 100 frames per second; poolings (mean, std, ...)
  run over an item's LLD frames, and ``--frames`` stores them. Only the main LLD stream is
  offered: the delta stream (``LowLevelDescriptors_Deltas``, ComParE/emobase/IS sets only) has
  other frame counts than the LLDs themselves (e.g. emobase: 100 delta rows vs 98 LLD rows for
  one second), so it cannot share their frame layout.

Frame counts (measured with opensmile 2.6 on noise, sines and silence over thousands of
lengths, and checked by a test): at 16 kHz an item of ``n`` samples gives no output below the
set's minimum ``m`` (openSMILE's python wrapper then fills one NaN row) and
``(n - m) // 160 + 2`` LLD rows from ``m`` on, with ``m`` = 960 samples (60 ms) for the GeMAPS
family, ComParE_2016 and IS13, 640 (40 ms) for emobase, 400 for IS09 and 1120 for IS10-IS12.
Functionals are defined from the same ``m`` on. Items shorter than ``m`` follow the short-item
policy (zero-padded to ``m``, or recorded as failed).

Audio is decoded and resampled to 16 kHz by embedx before openSMILE sees it, and openSMILE
quantises its input to 16 bit (``x * 32768`` as int16); samples are clipped to the int16 range
first, which changes nothing for audio read from integer PCM files. For a 16 kHz mono PCM file
the features therefore equal ``opensmile.Smile(...).process_file`` exactly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import opensmile
import torch

from embedx.backends.base import SHORT_POLICIES, Backend, BackendOutput
from embedx.backends.framing import opensmile_timing
from embedx.errors import AudioError, ConfigError, Param

__all__ = [
    "FEATURE_SETS",
    "LEVELS",
    "MIN_SAMPLES",
    "OpenSmileBackend",
    "SmilePreparer",
    "lld_frames",
    "resolve_feature_set",
]

#: short names -> openSMILE feature set
FEATURE_SETS: dict[str, str] = {
    "egemaps": "eGeMAPSv02",
    "gemaps": "GeMAPSv01b",
    "compare": "ComParE_2016",
    "emobase": "emobase",
}
#: feature levels: embedx name -> openSMILE FeatureLevel member
LEVELS: dict[str, str] = {"functionals": "Functionals", "lld": "LowLevelDescriptors"}
#: fewest 16 kHz samples that give openSMILE output, per feature set (measured, see above)
MIN_SAMPLES: dict[str, int] = {
    "ComParE_2016": 960,
    "GeMAPS": 960,
    "GeMAPSv01a": 960,
    "GeMAPSv01b": 960,
    "eGeMAPS": 960,
    "eGeMAPSv01a": 960,
    "eGeMAPSv01b": 960,
    "eGeMAPSv02": 960,
    "emobase": 640,
    "IS09": 400,
    "IS10": 1120,
    "IS11": 1120,
    "IS12": 1120,
    "IS13": 960,
}
SAMPLE_RATE = 16000
#: samples between LLD frames (10 ms at 16 kHz)
HOP_SAMPLES = 160
_INT16_MAX = 32767 / 32768


def resolve_feature_set(feature_set: str) -> str:
    """The openSMILE feature-set name for a short name or an openSMILE name (any case).

    Args:
        feature_set: ``egemaps``, ``gemaps``, ``compare``, ``emobase``, or an
            ``opensmile.FeatureSet`` member name such as ``eGeMAPSv02`` or ``IS09``.

    Returns:
        The ``opensmile.FeatureSet`` member name.

    Raises:
        ConfigError: when the name is neither.
    """
    key = str(feature_set).strip().lower()
    if key in FEATURE_SETS:
        return FEATURE_SETS[key]
    for member in opensmile.FeatureSet.__members__:
        if member.lower() == key and member in MIN_SAMPLES:
            return member
    accepted = ", ".join([*FEATURE_SETS, *MIN_SAMPLES])
    raise ConfigError(f"unknown openSMILE feature set {feature_set!r}; accepted: {accepted}")


def _resolve_level(level: str) -> str:
    key = str(level).strip().lower()
    for name, member in LEVELS.items():
        if key in (name, member.lower()):
            return name
    raise ConfigError(
        f"unknown openSMILE level {level!r}; accepted: functionals, lld (low-level descriptors)"
    )


def lld_frames(num_samples: int, min_samples: int) -> int:
    """LLD rows openSMILE returns for ``num_samples`` samples at 16 kHz.

    Args:
        num_samples: item length at 16 kHz.
        min_samples: the feature set's :data:`MIN_SAMPLES`.

    Returns:
        ``(n - min_samples) // 160 + 2`` from ``min_samples`` on, else 0.
    """
    if num_samples < min_samples:
        return 0
    return (int(num_samples) - min_samples) // HOP_SAMPLES + 2


@functools.lru_cache(maxsize=8)
def _smile(feature_set: str, level: str) -> opensmile.Smile:
    """One ``opensmile.Smile`` per process and setting (built lazily in each worker)."""
    with warnings.catch_warnings():  # deprecated sets warn on every construction
        warnings.simplefilter("ignore", UserWarning)
        return opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set],
            feature_level=opensmile.FeatureLevel[LEVELS[level]],
        )


@dataclass(frozen=True)
class SmilePreparer:
    """Computes one item's openSMILE features; small and picklable (for DataLoader workers).

    Attributes:
        feature_set: ``opensmile.FeatureSet`` member name.
        level: ``"functionals"`` or ``"lld"``.
        min_samples: fewest samples openSMILE gives output for.
        short: shorter items: ``"pad"`` (zeros at the end to :attr:`min_samples`) or ``"fail"``.
    """

    feature_set: str
    level: str
    min_samples: int
    short: str = "pad"

    def num_frames(self, num_samples: int) -> int:
        """Rows of the feature matrix of an item of ``num_samples`` (after the short policy)."""
        if num_samples < self.min_samples:
            return 0
        return 1 if self.level == "functionals" else lld_frames(num_samples, self.min_samples)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Apply the short-item policy to a 16 kHz item and compute its features.

        Args:
            wave: ``(num_samples,)`` mono audio at 16 kHz.

        Returns:
            ``(num_frames, dim)`` float32: one row of functionals, or the LLD rows.

        Raises:
            AudioError: the item is not one-dimensional, or shorter than :attr:`min_samples`
                under ``short="fail"``.
            RuntimeError: openSMILE returned another number of rows than :meth:`num_frames`.
        """
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1:
            raise AudioError(f"expected mono audio of shape (num_samples,), got shape {x.shape}")
        n = x.shape[0]
        if n < self.min_samples:
            if self.short == "fail":
                raise AudioError(
                    f"item too short: {n} samples ({n / SAMPLE_RATE:.3f} s) < openSMILE "
                    f"{self.feature_set}'s minimum of {self.min_samples} samples "
                    f"({self.min_samples / SAMPLE_RATE:.3f} s); use short='pad' to zero-pad such items"
                )
            x = np.pad(x, (0, self.min_samples - n))
        # openSMILE casts x * 32768 to int16: keep the product in range instead of wrapping
        x = np.clip(x, -1.0, _INT16_MAX)
        frame = _smile(self.feature_set, self.level).process_signal(x, SAMPLE_RATE)
        features = frame.to_numpy(dtype=np.float32)  # (num_frames, dim)
        expected = self.num_frames(x.shape[0])
        if features.shape[0] != expected:
            raise RuntimeError(
                f"openSMILE {self.feature_set} returned {features.shape[0]} rows for "
                f"{x.shape[0]} samples where {expected} were expected"
            )
        return np.ascontiguousarray(features)

    def fit_length(self, features: np.ndarray) -> np.ndarray:
        """Pass :meth:`prepare`'s features through (the short policy ran on the wave)."""
        return features

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """:meth:`prepare`."""
        return self.prepare(wave)


class OpenSmileBackend(Backend):
    """openSMILE functionals (one vector per item) or low-level descriptors (100 frames/s).

    Args:
        feature_set: ``egemaps`` (eGeMAPSv02), ``gemaps`` (GeMAPSv01b), ``compare``
            (ComParE_2016), ``emobase``, or an ``opensmile.FeatureSet`` name (any case).
        level: ``functionals`` or ``lld``.
        short: items shorter than the set's minimum (:data:`MIN_SAMPLES`): ``pad`` or ``fail``.
        name: feature-set name; default the short name (``egemaps``), with ``-lld`` for LLDs.
        device: accepted for a uniform interface and ignored (openSMILE runs on the CPU).
        precision: accepted and ignored: openSMILE computes in single precision, recorded as
            ``fp32``.
        **ignored: other options stage 1 passes to every backend; ``model`` and ``revision``
            are refused.

    Attributes:
        feature_set: the ``opensmile.FeatureSet`` member name.
        level: ``functionals`` or ``lld``.
        preparer: the picklable :class:`SmilePreparer` that computes the features.
        options: the resolved backend options, as stored with the feature set.

    Raises:
        ConfigError: unknown set, level or short policy, or a model given.
    """

    def __init__(
        self,
        feature_set: str = "egemaps",
        level: str = "functionals",
        *,
        short: str = "pad",
        name: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        **ignored: Any,
    ) -> None:
        for key in ("model", "revision"):
            if ignored.get(key) is not None:
                raise ConfigError(
                    f"the opensmile backend takes no {key} (got {ignored[key]!r}); choose the "
                    "feature set with ", Param("opensmile"), " instead"
                )
        if short not in SHORT_POLICIES:
            raise ConfigError(
                f"unknown short-item policy {short!r}; accepted: {', '.join(SHORT_POLICIES)}"
            )
        self.feature_set = resolve_feature_set(feature_set)
        self.level = _resolve_level(level)
        self.short = short
        self.precision = "fp32"
        short_name = next(
            (k for k, v in FEATURE_SETS.items() if v == self.feature_set), self.feature_set.lower()
        )
        self.name = name or (short_name if self.level == "functionals" else f"{short_name}-lld")
        self.sample_rate = SAMPLE_RATE
        self.num_layers = 1
        self.min_samples = MIN_SAMPLES[self.feature_set]
        self.hop_samples = None  # features of a whole item: never chunked
        self.frame_rate = None if self.level == "functionals" else SAMPLE_RATE / HOP_SAMPLES
        self.head_names = {}
        smile = _smile(self.feature_set, self.level)
        self.feature_names = list(smile.feature_names)
        self.dim = len(self.feature_names)
        self.preparer = SmilePreparer(self.feature_set, self.level, self.min_samples, short)
        self.options = {"feature_set": self.feature_set, "level": self.level}

    def num_frames(self, num_samples: int) -> int:
        """Rows openSMILE gives for ``num_samples`` samples (1 for functionals).

        Args:
            num_samples: item length at 16 kHz, after the short-item policy.

        Returns:
            1 for functionals, ``(n - min_samples) // 160 + 2`` LLD rows; 0 below
            :attr:`min_samples`.
        """
        return self.preparer.num_frames(num_samples)

    def forward(self, waves: Sequence[np.ndarray], layers: Sequence[int]) -> BackendOutput:
        """Pad the items' feature matrices into one batch.

        Args:
            waves: per item the ``(num_frames_i, dim)`` features from :meth:`prepare`, or a
                ``(num_samples,)`` waveform, whose features are computed here.
            layers: ``[0]`` (openSMILE has one layer).

        Returns:
            ``hidden`` ``(1, num_items, num_frames, dim)`` float32 on the CPU, zero-padded to
            the longest item, and ``lengths`` ``(num_items,)`` int64.

        Raises:
            ConfigError: a layer other than 0.
            AudioError: a malformed item.
            ValueError: no items.
        """
        layer_list = [int(k) for k in layers]
        if layer_list != [0]:
            raise ConfigError(f"layers {layer_list} out of range; openSMILE has one layer: 0")
        if not waves:
            raise ValueError("forward() needs at least one item")
        matrices = []
        for i, x in enumerate(waves):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim == 1:
                x = self.prepare(x)
            if x.ndim != 2 or x.shape[1] != self.dim:
                raise AudioError(
                    f"item {i}: expected (num_frames, {self.dim}) openSMILE features or a "
                    f"waveform, got shape {x.shape}"
                )
            matrices.append(x)
        lengths = [m.shape[0] for m in matrices]
        batch = np.zeros((1, len(matrices), max(lengths), self.dim), dtype=np.float32)
        for b, m in enumerate(matrices):
            batch[0, b, : m.shape[0]] = m
        return BackendOutput(
            hidden=torch.from_numpy(batch), lengths=torch.tensor(lengths, dtype=torch.int64)
        )

    def metadata(self) -> dict[str, Any]:
        """Describe the source for the store (str, int, float and bool values only)."""
        return {
            "backend": "opensmile",
            "model": f"openSMILE {self.feature_set} {LEVELS[self.level]}",
            "opensmile_version": opensmile.__version__,
            "feature_set": self.feature_set,
            "feature_level": self.level,
            "opensmile_level": LEVELS[self.level],
            "sample_rate": self.sample_rate,
            "min_samples": self.min_samples,
            "short": self.short,
            **({} if self.level == "functionals" else opensmile_timing(self.feature_set).attrs()),
        }
