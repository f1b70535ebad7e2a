"""Exactness in padded batches: convolution arithmetic, per-item preparation, the masked GroupNorm.

A batched, zero-padded forward must give every item the hidden states it gets alone. This module
holds the model-free pieces that make it so (see docs/architecture.md, "Facts about the models"):

- :func:`conv_output_length` / :func:`receptive_field`: how many frames a convolutional front end
  gives an item, and how many samples one frame needs (the short-item minimum);
- :class:`WavePreparer`: the per-item input normalisation, run on the *unpadded* item in
  DataLoader workers (picklable, no model), and the short-item policy;
- :class:`MaskedGroupNorm`: a ``GroupNorm`` whose statistics cover each item's valid positions
  only (group-norm feature encoders would otherwise normalise over the padding);
- :func:`pad_batch`: the zero-padded batch and its sample-level attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from embedx.backends.base import apply_short_policy
from embedx.errors import AudioError

__all__ = ["MaskedGroupNorm", "WavePreparer", "conv_output_length", "pad_batch", "receptive_field"]


def conv_output_length(num_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Output length of a stack of unpadded 1-d convolutions.

    Args:
        num_samples: input length.
        kernels: kernel size of every layer.
        strides: stride of every layer.

    Returns:
        ``floor((n - kernel) / stride) + 1`` applied layer by layer, 0 when the input is shorter
        than the receptive field.
    """
    length = int(num_samples)
    for kernel, stride in zip(kernels, strides, strict=True):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Fewest input samples that give one output frame of a stack of convolutions.

    Args:
        kernels: kernel size of every layer.
        strides: stride of every layer.

    Returns:
        The receptive field (400 for the wav2vec2 feature encoder).
    """
    field_ = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        field_ = (field_ - 1) * stride + kernel
    return field_


@dataclass(frozen=True)
class WavePreparer:
    """The per-item preprocessing of a model, free of model state (cheap to pickle).

    Use it in DataLoader workers instead of the backend's bound methods, which would pickle the
    whole model under a ``spawn`` start method.

    Attributes:
        do_normalize: zero-mean unit-variance normalise every item (the checkpoint's
            ``preprocessor_config.json``).
        min_samples: fewest samples that give one frame.
        short: what to do with shorter items: ``"pad"`` (zeros at the end) or ``"fail"``.
        sample_rate: rate of the waveforms, for messages.
    """

    do_normalize: bool
    min_samples: int
    short: str = "pad"
    sample_rate: int = 16000

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Normalise one unpadded item like ``Wav2Vec2FeatureExtractor`` does.

        Args:
            wave: ``(num_samples,)`` mono audio.

        Returns:
            ``(num_samples,)`` float32: ``(x - mean) / sqrt(var + 1e-7)`` when
            :attr:`do_normalize`, else ``x`` unchanged (as float32).

        Raises:
            AudioError: when ``wave`` is not one-dimensional.
        """
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1:
            raise AudioError(f"expected mono audio of shape (num_samples,), got shape {x.shape}")
        if not self.do_normalize or x.size == 0:
            return x
        # the very expression of Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm (no mask)
        return (x - x.mean()) / np.sqrt(x.var() + 1e-7)

    def fit_length(self, wave: np.ndarray) -> np.ndarray:
        """Apply the short-item policy to a prepared item.

        Args:
            wave: ``(num_samples,)`` prepared audio.

        Returns:
            ``wave`` when it is at least :attr:`min_samples` long; under ``"pad"`` a shorter item
            zero-padded at the end to :attr:`min_samples` (exactly one frame).

        Raises:
            AudioError: under ``"fail"``, when the item is shorter than :attr:`min_samples`.
        """
        return apply_short_policy(wave, self.min_samples, self.short, self.sample_rate)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """:meth:`prepare`, then :meth:`fit_length`."""
        return self.fit_length(self.prepare(wave))


class MaskedGroupNorm(nn.GroupNorm):
    """A ``GroupNorm`` over ``(batch, channels, time)`` whose statistics cover valid positions only.

    While :attr:`valid_lengths` is set, item ``i`` is normalised over its first
    ``valid_lengths[i]`` positions exactly as ``nn.GroupNorm`` normalises the unpadded item
    (same kernel, same affine parameters); its padded positions are set to zero. With
    :attr:`valid_lengths` unset it is a plain ``nn.GroupNorm``.

    Args:
        norm: the ``nn.GroupNorm`` to replace; its parameters are shared, not copied, so the
            state dict is unchanged.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        if norm.affine:
            self.weight = norm.weight
            self.bias = norm.bias
        self.valid_lengths: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: ``(batch, channels, time)`` conv output.

        Returns:
            The normalised tensor, same shape.

        Raises:
            ValueError: when :attr:`valid_lengths` does not fit ``x``.
        """
        lengths = self.valid_lengths
        num_steps = x.shape[-1]
        if lengths is None or all(n == num_steps for n in lengths):
            return super().forward(x)
        if len(lengths) != x.shape[0] or not all(0 < n <= num_steps for n in lengths):
            raise ValueError(
                f"valid lengths {lengths} do not fit a batch of shape {tuple(x.shape)}"
            )
        pieces = [
            # (1, channels, n): each item alone, as nn.GroupNorm would see it unpadded
            nn.functional.group_norm(
                x[i : i + 1, :, :n], self.num_groups, self.weight, self.bias, self.eps
            )
            for i, n in enumerate(lengths)
        ]
        # under autocast group_norm may return float32 for a half-precision input
        out = torch.zeros(x.shape, dtype=pieces[0].dtype, device=x.device)
        for i, (piece, n) in enumerate(zip(pieces, lengths, strict=True)):
            out[i, :, :n] = piece[0]
        return out


def pad_batch(items: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms into a batch on ``device``, with its attention mask.

    On a CUDA device the batch is assembled in pinned host memory and copied with
    ``non_blocking=True``: the copy runs as a DMA transfer that overlaps the host's work until
    the forward needs the data (the caching host allocator keeps the buffer alive until the copy
    is done). The mask is built on the device from the lengths, so it costs no transfer.

    Args:
        items: ``(num_samples_i,)`` float32 waveforms.
        device: where the batch goes.

    Returns:
        ``input_values`` ``(num_items, max_samples)`` float32 and ``attention_mask``
        ``(num_items, max_samples)`` int64 (1 on valid samples), both on ``device``.
    """
    num_samples = [x.shape[0] for x in items]
    cuda = device.type == "cuda"
    host = torch.zeros((len(items), max(num_samples)), dtype=torch.float32, pin_memory=cuda)
    view = host.numpy()  # (num_items, max_samples), shares the tensor's memory
    for i, x in enumerate(items):
        view[i, : x.shape[0]] = x
    input_values = host.to(device, non_blocking=cuda)
    lengths = torch.tensor(num_samples, dtype=torch.int64).to(device, non_blocking=cuda)
    positions = torch.arange(host.shape[1], device=device)
    # (max_samples,) < (num_items, 1) -> (num_items, max_samples), 1 on valid samples
    attention_mask = (positions[None, :] < lengths[:, None]).long()
    return input_values, attention_mask
