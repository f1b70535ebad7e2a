"""Where each frame of a feature source lies in time: hop, analysis window and offset.

A frame-level feature set stores ``frame_rate`` (a spec field) and the three
attrs ``frame_hop``, ``frame_window`` and ``frame_offset`` (seconds) that place frame ``i``
exactly (new stores; older ones lack them): it covers ``[offset + i * hop, offset + i * hop + window)`` of the item's audio, and
its centre is ``offset + i * hop + window / 2``. The conventions, per family:

- wav2vec2 / HuBERT / WavLM / data2vec (``hf``): frame ``i`` is the output of the convolutional
  front end over samples ``[320 i, 320 i + 400)`` at 16 kHz (hop = product of the conv strides,
  window = its receptive field), so hop 20 ms, window 25 ms, centre ``(320 i + 200) / 16000`` s.
- Whisper: 50 encoder frames per second of real audio (two mel hops of 10 ms each); frame ``i``
  stands for ``[0.02 i, 0.02 (i + 1))``: hop = window = 20 ms, centre ``(i + 0.5) * 0.02`` s.
- openSMILE LLDs: hop 10 ms, frame ``i`` starts at ``0.01 i`` (IS11/IS12: at ``0.01 (i + 1)``
  from frame 1 on) with the set's window as openSMILE's own frame timestamps give it
  (:data:`OPENSMILE_LLD_TIMING`); the last row is openSMILE's end-of-input flush, whose
  timestamps openSMILE clips to the end of the signal.

Stores written before these attrs existed get the same values derived from what they do record
(:func:`stored_timing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OPENSMILE_LLD_TIMING", "FrameTiming", "conv_timing", "opensmile_timing", "stored_timing"]

#: openSMILE feature set -> (window, offset) in seconds of its LLD frames, hop 10 ms. Measured
#: from ``opensmile.Smile(...).process_signal``'s start/end timestamps (opensmile 2.6): every row
#: but the last spans ``[offset + 0.01 i, offset + 0.01 i + window)``. The GeMAPS family's pitch,
#: jitter and shimmer use 60-ms windows that start at the same times; openSMILE stamps the rows
#: with the 20-ms window of its energy and spectral descriptors, and so does embedx.
OPENSMILE_LLD_TIMING: dict[str, tuple[float, float]] = {
    "ComParE_2016": (0.060, 0.0),
    "GeMAPS": (0.020, 0.0),
    "GeMAPSv01a": (0.020, 0.0),
    "GeMAPSv01b": (0.020, 0.0),
    "eGeMAPS": (0.020, 0.0),
    "eGeMAPSv01a": (0.020, 0.0),
    "eGeMAPSv01b": (0.020, 0.0),
    "eGeMAPSv02": (0.020, 0.0),
    "emobase": (0.025, 0.0),
    "IS09": (0.025, 0.0),
    "IS10": (0.025, 0.0),
    # the first row spans 0-70 ms, every later row i starts at 0.01 (i + 1)
    "IS11": (0.060, 0.010),
    "IS12": (0.060, 0.010),
    "IS13": (0.060, 0.0),
}
#: seconds between openSMILE LLD frames
OPENSMILE_HOP = 0.010


@dataclass(frozen=True)
class FrameTiming:
    """Where the frames of a feature set lie: frame ``i`` covers
    ``[offset + i * hop, offset + i * hop + window)`` seconds of its item.

    Attributes:
        hop: seconds between frame starts.
        window: seconds of audio one frame stands for.
        offset: start of frame 0, in seconds.
        source: how the values were found: ``"stored"`` (the feature set's attrs), ``"derived"``
            (from the attrs of a store written before they were recorded) or ``"assumed"``
            (an unknown backend: ``hop = window = 1 / frame_rate``, no offset).
    """

    hop: float
    window: float
    offset: float = 0.0
    source: str = "stored"

    def centres(self, num_frames: int) -> np.ndarray:
        """Centre of every frame, in seconds.

        Args:
            num_frames: frames of the item.

        Returns:
            ``(num_frames,)`` float64 ``offset + i * hop + window / 2``.
        """
        return self.offset + np.arange(int(num_frames), dtype=np.float64) * self.hop + self.window / 2

    def attrs(self) -> dict[str, float]:
        """The feature-set attrs that record this timing."""
        return {"frame_hop": float(self.hop), "frame_window": float(self.window),
                "frame_offset": float(self.offset)}


def conv_timing(hop_samples: int, window_samples: int, sample_rate: int) -> FrameTiming:
    """The timing of a convolutional front end: frame ``i`` sees samples
    ``[i * hop_samples, i * hop_samples + window_samples)``.

    Args:
        hop_samples: samples between frames (product of the conv strides; Whisper: 320).
        window_samples: samples one frame sees (receptive field; Whisper: the hop itself).
        sample_rate: rate of those samples in Hz.

    Returns:
        The :class:`FrameTiming`, in seconds.
    """
    return FrameTiming(hop=hop_samples / sample_rate, window=window_samples / sample_rate)


def opensmile_timing(feature_set: str) -> FrameTiming:
    """The timing of an openSMILE feature set's LLD frames.

    Args:
        feature_set: ``opensmile.FeatureSet`` member name (``"eGeMAPSv02"``).

    Returns:
        The :class:`FrameTiming` of :data:`OPENSMILE_LLD_TIMING`; an unknown set gets a 20-ms
        window at offset 0.
    """
    window, offset = OPENSMILE_LLD_TIMING.get(str(feature_set), (0.020, 0.0))
    return FrameTiming(hop=OPENSMILE_HOP, window=window, offset=offset)


def stored_timing(backend: str, frame_rate: float, attrs: Mapping[str, Any]) -> FrameTiming:
    """The timing of a stored feature set, from its attrs.

    New stores record ``frame_hop``/``frame_window``/``frame_offset``. For older ones they are
    derived from what those record: ``hf``/``whisper`` store ``sample_rate`` and ``min_samples``
    (the receptive field; Whisper's is its hop), openSMILE its ``feature_set``.

    Args:
        backend: the feature set's backend name.
        frame_rate: its frames per second.
        attrs: its free attrs (``FeatureSetSpec.attrs``).

    Returns:
        The :class:`FrameTiming`; ``source`` says whether it was stored, derived or assumed.
    """
    if all(k in attrs for k in ("frame_hop", "frame_window")):
        return FrameTiming(hop=float(attrs["frame_hop"]), window=float(attrs["frame_window"]),
                           offset=float(attrs.get("frame_offset", 0.0)), source="stored")
    hop = 1.0 / float(frame_rate)
    if backend in ("hf", "whisper") and "min_samples" in attrs and "sample_rate" in attrs:
        window = float(attrs["min_samples"]) / float(attrs["sample_rate"])
        return FrameTiming(hop=hop, window=window, source="derived")
    if backend == "opensmile" and "feature_set" in attrs:
        t = opensmile_timing(str(attrs["feature_set"]))
        return FrameTiming(hop=t.hop, window=t.window, offset=t.offset, source="derived")
    return FrameTiming(hop=hop, window=hop, source="assumed")
