"""Whisper encoders (``openai/whisper-*``) as a backend: hidden states of the audio encoder.

Whisper's encoder only runs on 30-second windows: the checkpoint's ``WhisperFeatureExtractor``
zero-pads every item to 30 s before computing its log-mel spectrogram (hop 160 samples), and
the encoder (two convolutions, the second with stride 2, then 1500 positions) attends over the
whole window, padding included. So "exact batching" means here: an item in a batch gives the
states of the item run alone, padded to 30 s — the only way Whisper runs. Every item is a
window of its own, so nothing in a batch depends on the other items.

Frames: encoder frame ``t`` stands for samples ``320 t .. 320 (t + 1)`` (50 frames per second),
and an item of ``n`` samples has ``n // 320`` valid frames — the frames whose 20-ms step lies
wholly inside the real audio. Only those are pooled and stored; the frames of the 30-s padding
are dropped. Items shorter than 320 samples follow the short-item policy.

Long items: an item longer than the window runs in consecutive 30-s windows starting at
multiples of 320 samples, whose valid frames tile the item's ``n // 320`` frames in order (stage
1 does this through its chunking, with chunks of at most 30 s: :attr:`WhisperBackend.max_samples`;
:meth:`WhisperBackend.forward` does it itself for longer inputs). Each window attends only to its
own 30 s, as Whisper itself does for long audio; nothing is truncated.

Layers are numbered like transformers' ``hidden_states`` for the Whisper encoder: layer 0 is the
input of block 1 (convolutions + positional embedding), layer ``k`` the output of block ``k``,
and layer ``L`` (the last) is the encoder's ``last_hidden_state``, *after* its final LayerNorm —
transformers 5.x returns it so for Whisper (unlike stable-layer-norm wav2vec2 models).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperModel

from embedx.backends.base import Backend, BackendOutput
from embedx.backends.capture import autocast, capture_layers
from embedx.backends.framing import conv_timing
from embedx.backends.loading import checkpoint_metadata, open_checkpoint, quiet_loading
from embedx.backends.padding import WavePreparer
from embedx.errors import AudioError, ConfigError, ModelError
from embedx.extraction.batching import chunk_spans

__all__ = ["WhisperBackend"]


class WhisperBackend(Backend):
    """Hidden states of a Whisper encoder, on the real audio's frames only.

    Args:
        model: hub id (resolved through the HF cache) or local directory of a Whisper checkpoint
            (``WhisperForConditionalGeneration`` or ``WhisperModel``); only the encoder is kept.
        revision: branch, tag or commit of a hub model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only) via ``torch.autocast``, or
            ``"auto"`` (fp32 on CPU, bf16/fp16 on CUDA).
        short: items shorter than one frame (320 samples): ``"pad"`` or ``"fail"``.
        attn: ``"auto"`` (sdpa), ``"sdpa"`` or ``"eager"``.
        name: feature-set name; defaults to the last component of ``model``.
        max_windows: most 30-s windows one encoder call runs; a larger batch runs in several
            calls (every window costs a full 30 s of compute, however short its item).

    Attributes:
        model: the encoder (``WhisperEncoder``, ``eval()`` mode, on :attr:`device`).
        extractor: the checkpoint's ``WhisperFeatureExtractor``.
        max_samples: samples in one window (480000); stage 1 chunks longer items to this.
        preparer: the picklable :class:`~embedx.backends.padding.WavePreparer` (no normalisation;
            pads short items to 320 samples).

    Raises:
        ModelError: the checkpoint cannot be loaded or is not a Whisper model.
        ConfigError: a bad device, precision, attn, short policy or max_windows.
    """

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        short: str = "pad",
        attn: str = "auto",
        name: str | None = None,
        max_windows: int = 16,
    ) -> None:
        if not isinstance(max_windows, int) or max_windows < 1:
            raise ConfigError(f"max_windows must be a positive integer, got {max_windows!r}")
        path, config = open_checkpoint(self, model, revision, device, precision, short, attn)
        self.attn = "sdpa" if attn == "auto" else attn
        self.max_windows = max_windows
        if getattr(config, "model_type", None) != "whisper":
            raise ModelError(
                f"model {self.model_id!r} is of model_type {getattr(config, 'model_type', None)!r}; "
                "the whisper backend accepts: whisper"
            )
        self.extractor, self.extractor_source = _load_extractor(
            path, int(config.num_mel_bins)
        )
        self.model = _load_encoder(path, self.model_id, config, self.attn)
        self.model.to(self.device).eval()
        self.config = config

        stride = int(self.model.conv1.stride[0]) * int(self.model.conv2.stride[0])
        window_frames = int(config.max_source_positions) * stride  # mel frames the encoder takes
        if window_frames != int(self.extractor.nb_max_frames):
            raise ModelError(
                f"model {self.model_id!r}: the encoder takes {window_frames} mel frames but the "
                f"feature extractor makes {self.extractor.nb_max_frames}; not a consistent checkpoint"
            )
        self.name = name or Path(self.model_id.rstrip("/\\")).name or self.model_id
        self.sample_rate = int(self.extractor.sampling_rate)
        self.num_layers = int(config.encoder_layers) + 1
        self.dim = int(config.d_model)
        self.hop_samples = int(self.extractor.hop_length) * stride  # 320
        self.min_samples = self.hop_samples
        self.max_samples = int(self.extractor.n_samples)  # 30 s
        self.frame_rate = self.sample_rate / self.hop_samples
        self.head_names = {}
        self.short = short
        self.preparer = WavePreparer(
            do_normalize=False, min_samples=self.min_samples, short=short,
            sample_rate=self.sample_rate,
        )

    # --- the Backend contract -------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """Valid encoder frames of an item: ``num_samples // 320`` (0 below one frame).

        Args:
            num_samples: item length at :attr:`sample_rate`.

        Returns:
            The frames whose 320-sample step lies inside the item.
        """
        return int(num_samples) // self.hop_samples

    def forward(self, waves: Sequence[np.ndarray], layers: Sequence[int]) -> BackendOutput:
        """Run every item as its own zero-padded 30-s window and keep its valid frames.

        Args:
            waves: ``(num_samples_i,)`` float32 waveforms, each at least :attr:`min_samples`
                long; longer than :attr:`max_samples` runs in consecutive windows.
            layers: layer numbers in ``0..num_layers-1``, returned in this order.

        Returns:
            ``hidden`` ``(len(layers), num_items, num_frames, dim)`` float32 on :attr:`device`
            (``num_frames`` of the longest item) and ``lengths`` ``(num_items,)`` int64.

        Raises:
            AudioError: an item is not one-dimensional or shorter than :attr:`min_samples`.
            ConfigError: a layer is out of range.
            ValueError: ``waves`` is empty.
        """
        layer_list = [int(k) for k in layers]
        if not layer_list:
            raise ConfigError("no layer requested")
        bad = [k for k in layer_list if not 0 <= k < self.num_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range; accepted: 0..{self.num_layers - 1}")
        items = [np.asarray(w, dtype=np.float32) for w in waves]
        if not items:
            raise ValueError("forward() needs at least one waveform")
        windows: list[np.ndarray] = []
        owners: list[tuple[int, int, int]] = []  # (item, first frame, frames) of every window
        for i, x in enumerate(items):
            if x.ndim != 1:
                raise AudioError(f"item {i}: expected shape (num_samples,), got {x.shape}")
            if x.shape[0] < self.min_samples:
                raise AudioError(
                    f"item {i}: {x.shape[0]} samples < the model's minimum of {self.min_samples}; "
                    "apply fit_length() first"
                )
            for span in chunk_spans(x.shape[0], self.max_samples, self.hop_samples, self.hop_samples):
                windows.append(x[span.start : span.stop])
                owners.append((i, span.first_frame, span.num_frames))
        lengths = [self.num_frames(x.shape[0]) for x in items]
        hidden = torch.zeros(
            (len(layer_list), len(items), max(lengths), self.dim), dtype=torch.float32,
            device=self.device,
        )
        for start in range(0, len(windows), self.max_windows):
            part = slice(start, start + self.max_windows)
            states = self._encode(windows[part], layer_list)  # (layers, windows, 1500, dim)
            for w, (i, first, count) in enumerate(owners[part]):
                hidden[:, i, first : first + count] = states[:, w, :count]
        return BackendOutput(
            hidden=hidden, lengths=torch.tensor(lengths, dtype=torch.int64, device=self.device)
        )

    def metadata(self) -> dict[str, Any]:
        """Describe the model for the store (str, int, float and bool values only)."""
        return {
            "backend": "whisper",
            **checkpoint_metadata(self, "whisper", self.config.encoder_layers),
            "encoder_only": True,
            "last_layer_after_final_norm": True,
            "window_seconds": self.max_samples / self.sample_rate,
            "valid_frames": f"num_samples // {self.hop_samples}",
            "num_mel_bins": int(self.config.num_mel_bins),
            "feature_extractor_source": self.extractor_source,
            "dither": float(getattr(self.extractor, "dither", 0.0)),
            # frame i stands for [hop * i, hop * (i + 1)) of the real audio
            **conv_timing(self.hop_samples, self.hop_samples, self.sample_rate).attrs(),
        }

    # --- internals --------------------------------------------------------------------------

    def _encode(self, windows: list[np.ndarray], layer_list: list[int]) -> torch.Tensor:
        """States of windows of at most 30 s, each zero-padded to 30 s by the feature extractor.

        Returns:
            ``(len(layer_list), len(windows), max_source_positions, dim)`` float32.
        """
        device = str(self.device) if self.device.type == "cuda" else "cpu"
        # (windows, num_mel_bins, 3000) log-mels, every window padded to 30 s on its own
        features = self.extractor(
            windows, sampling_rate=self.sample_rate, return_tensors="pt", device=device
        )["input_features"].to(self.device)
        last = self.num_layers - 1
        num_blocks = max(max(layer_list), 1)
        with (
            self._capture(set(layer_list), num_blocks) as states,
            torch.inference_mode(),
            self._autocast(),
        ):
            output = self.model(features)
            if last in layer_list:  # after the final LayerNorm, as transformers' hidden_states
                states[last] = output.last_hidden_state
            # num_layers x (windows, frames, dim) -> (num_layers, windows, frames, dim)
            return torch.stack([states[k] for k in layer_list]).float()

    def _capture(self, wanted: set[int], num_blocks: int) -> contextlib.AbstractContextManager:
        """Run the first ``num_blocks`` blocks and record layer 0 and the outputs of blocks
        ``1..L-1`` that are ``wanted`` (layer ``L`` is the encoder's output)."""
        return capture_layers(self.model, wanted, num_blocks, max_block=len(self.model.layers) - 1)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)


def _load_extractor(path: str, num_mel_bins: int) -> tuple[WhisperFeatureExtractor, str]:
    """The checkpoint's feature extractor, or Whisper's defaults when it has none."""
    try:
        return (
            WhisperFeatureExtractor.from_pretrained(path),
            "preprocessor_config.json",
        )
    except (OSError, ValueError):
        return WhisperFeatureExtractor(feature_size=num_mel_bins), "default"


def _load_encoder(
    path: str, model: str, config: transformers.PretrainedConfig, attn: str
) -> nn.Module:
    with quiet_loading(model):
        loaded = WhisperModel.from_pretrained(
            path,
            config=config,
            attn_implementation=attn,
            dtype=torch.float32,
        )
    return loaded.get_encoder()
