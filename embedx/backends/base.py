"""The backend contract: what stage 1 needs from a feature source.

A backend turns a batch of mono float32 waveforms at its own ``sample_rate`` into hidden
states of the requested layers, with the number of valid frames of every item, so that pooling
and the store never see padding. Layers are numbered ``0..num_layers-1``; for transformer models
layer 0 is the transformer's input and layer k the output of block k (see docs/architecture.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from embedx.errors import AudioError, Param

if TYPE_CHECKING:  # torch is heavy; only the type checker needs it here
    import torch

#: what to do with an item shorter than a backend's ``min_samples`` (``--short``): zero-pad it
#: to one frame, or record it as failed
SHORT_POLICIES: tuple[str, ...] = ("pad", "fail")
#: default seed of ``--random-init``'s weights: 1, not 0, because models built in code are
#: often seeded 0 (the demo's tiny-hubert is), and a control rebuilt with the same seed has
#: the same initial weights as the model (the demo's layer 0 came out identical)
RANDOM_INIT_SEED = 1


@dataclass
class BackendOutput:
    """Result of one batched forward.

    Attributes:
        hidden: ``(num_layers, batch, num_frames, dim)`` states of the requested layers, in the
            order they were requested; frames past ``lengths[i]`` are padding and undefined.
        lengths: ``(batch,)`` int64 number of valid frames of every item.
        heads: head name -> ``(batch, k)`` float32 outputs (logits, probabilities, A/D/V).
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    heads: dict[str, np.ndarray] = field(default_factory=dict)


class Backend(ABC):
    """A feature source: a speech model or a signal-processing toolkit.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`forward`. They are
    everything stage 1 reads of a backend; the ones with a default here may be left as they are.

    Attributes:
        name: default feature-set name in the store (e.g. ``"hubert-base-ls960"``).
        sample_rate: rate in Hz that :meth:`forward` expects.
        num_layers: number of layers the model exposes (``num_hidden_layers + 1`` for
            transformers; 1 for a functionals extractor).
        dim: feature dimension of every layer.
        frame_rate: output frames per second (``None`` for utterance-level features).
        min_samples: fewest samples that produce one frame.
        hop_samples: samples between frames when frame ``t`` covers samples
            ``t * hop_samples .. t * hop_samples + min_samples`` (convolutional front ends);
            ``None`` when frames are not laid out that way. Long items are chunked only when set.
        short: policy for items shorter than ``min_samples``: ``"pad"`` (zero-pad at the end
            to ``min_samples``) or ``"fail"`` (record the item as failed).
        head_names: head name -> names of its ``k`` outputs (empty when there is no head).
        feature_names: names of the ``dim`` features, when they have names (openSMILE).
        preparer: optional picklable object with ``prepare``/``fit_length`` that the DataLoader
            workers run (see :meth:`prepare`).
        device: where :meth:`forward` computes (a ``torch.device``, or ``"cpu"``); decides the
            default batch budget and where peak memory is measured.
        precision: the precision :meth:`forward` computes in (``"fp32"``, ``"bf16"``,
            ``"fp16"``), as resolved from the requested one; stored with the feature set.
        options: the backend's resolved options (openSMILE: ``feature_set``, ``level``), stored
            with the feature set; empty when the requested options are stored as given.
        max_samples: longest item :meth:`forward` runs in one piece (Whisper: its 30-s window);
            stage 1 chunks longer items to it. ``None``: no limit of the backend's own.
        activation_bytes_per_second: device memory a forward holds per padded audio-second (an
            over-estimate); on CUDA the default batch budget is sized from it and the free
            memory. ``None``: the fixed CUDA default.
        transfer_ops: the :class:`~embedx.extraction.transfer.DeviceOps` that bring results to
            the host; ``None``: chosen by :attr:`device` (a side CUDA stream, else synchronous).
    """

    name: str
    sample_rate: int
    num_layers: int
    dim: int
    frame_rate: float | None
    min_samples: int = 1
    hop_samples: int | None = None
    short: str = "pad"
    head_names: dict[str, list[str]]
    feature_names: list[str] | None = None
    preparer: Any = None
    device: torch.device | str = "cpu"
    precision: str = "fp32"
    options: Mapping[str, Any] = MappingProxyType({})
    max_samples: int | None = None
    activation_bytes_per_second: float | None = None
    transfer_ops: Any = None

    def num_frames(self, num_samples: int) -> int:
        """Number of frames :meth:`forward` returns for an item of ``num_samples`` samples.

        Args:
            num_samples: length of the item at :attr:`sample_rate` (after any short-item padding).

        Returns:
            The number of valid frames (at least 1 when ``num_samples >= min_samples``).
        """
        return 1

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Per-item preprocessing that must see the unpadded item (input normalisation).

        Runs in DataLoader workers. A backend with per-item work sets :attr:`preparer`, a small
        picklable object (no model) whose ``prepare``/``fit_length`` this delegates to, so
        workers never need the model itself.

        Args:
            wave: ``(num_samples,)`` float32 mono audio at :attr:`sample_rate`.

        Returns:
            The prepared item (a waveform, or a backend's per-item features).
        """
        return wave if self.preparer is None else self.preparer.prepare(wave)

    def fit_length(self, wave: np.ndarray) -> np.ndarray:
        """Apply the short-item policy to a prepared waveform.

        Args:
            wave: ``(num_samples,)`` prepared float32 waveform.

        Returns:
            ``wave`` itself, or zero-padded at the end to ``min_samples`` under ``short="pad"``.

        Raises:
            AudioError: the item is shorter than ``min_samples`` and ``short="fail"``.
        """
        if self.preparer is not None:
            return self.preparer.fit_length(wave)
        return apply_short_policy(wave, self.min_samples, self.short, self.sample_rate)

    @abstractmethod
    def forward(self, waves: Sequence[np.ndarray], layers: Sequence[int]) -> BackendOutput:
        """Run a batch.

        Args:
            waves: prepared ``(num_samples_i,)`` float32 waveforms of one batch, each at least
                ``min_samples`` long.
            layers: layer numbers to return, each in ``0..num_layers-1``.

        Returns:
            The states of ``layers`` for every item, see :class:`BackendOutput`.
        """

    def metadata(self) -> dict[str, Any]:
        """Attributes describing the source, stored with the feature set (model id, revision,
        commit hash, architecture, normalisation, ...). Values are str, int, float or bool."""
        return {}


def apply_short_policy(wave: np.ndarray, min_samples: int, short: str, sample_rate: int) -> np.ndarray:
    """Zero-pad an item shorter than ``min_samples`` at the end, or refuse it.

    Args:
        wave: ``(num_samples,)`` prepared audio.
        min_samples: the backend's minimum (one frame).
        short: one of :data:`SHORT_POLICIES`.
        sample_rate: rate of ``wave``, for the message.

    Returns:
        ``wave`` as float32, zero-padded to ``min_samples`` when shorter under ``"pad"``.

    Raises:
        AudioError: under ``"fail"``, when the item is shorter than ``min_samples``.
    """
    x = np.asarray(wave, dtype=np.float32)
    n = x.shape[0]
    if n >= min_samples:
        return x
    if short == "fail":
        raise AudioError(
            f"item too short: {n} samples ({n / sample_rate:.3f} s) < the model's minimum of "
            f"{min_samples} samples ({min_samples / sample_rate:.3f} s); use ", Param("short", "pad"), " to zero-pad"
        )
    return np.pad(x, (0, min_samples - n))
