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

__all__ = ["MaskedGroupNorm", "WavePreparer", "conv_output_length", "masked_group_norm", "pad_batch", "receptive_field"]


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
    ``valid_lengths[i]`` positions as ``nn.GroupNorm`` normalises the unpadded item (same
    affine parameters, equal within float rounding); its padded positions are set to zero. The
    whole batch is normalised by one fixed sequence of tensor operations, so the number of
    operations (kernel launches on a GPU) does not grow with the batch. With
    :attr:`valid_lengths` unset it is a plain ``nn.GroupNorm``.

    Args:
        norm: the ``nn.GroupNorm`` to replace; its parameters are shared, not copied, so the
            state dict is unchanged.

    Attributes:
        valid_lengths: valid positions per item (host integers: checked without a device sync).
        length_tensor: the same lengths as an int64 tensor on the input's device, when the
            caller has one (a backend copies all of a batch's lengths at once); else it is
            built from :attr:`valid_lengths`.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        if norm.affine:
            self.weight = norm.weight
            self.bias = norm.bias
        self.valid_lengths: list[int] | None = None
        self.length_tensor: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: ``(batch, channels, time)`` conv output.

        Returns:
            The normalised tensor, same shape (float32 when masked, like ``group_norm`` under
            autocast).

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
        n = self.length_tensor
        if n is None:
            n = torch.tensor(lengths, dtype=torch.int64).to(x.device, non_blocking=True)
        return masked_group_norm(x, n, self.num_groups, self.weight, self.bias, self.eps)


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, num_groups: int,
                      weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Group norm of every item over its first ``lengths[i]`` positions, padding set to zero.

    The statistics are float32 and two-pass (mean, then the mean squared deviation), as
    ``nn.GroupNorm`` computes them on the unpadded item; the sums over time are matrix products
    with the mask, so no masked copy of ``x`` is made. A fixed number of operations for any batch.

    Args:
        x: ``(batch, channels, time)`` input, any float dtype.
        lengths: ``(batch,)`` int64 valid positions, on ``x``'s device, each in ``1..time``.
        num_groups: groups the channels are split into.
        weight: ``(channels,)`` scale, or ``None``.
        bias: ``(channels,)`` shift, or ``None``.
        eps: added to the variance.

    Returns:
        ``(batch, channels, time)`` float32.
    """
    # float32 statistics under autocast too (it would run the bmm in bf16/fp16), as group_norm is
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _masked_group_norm(x, lengths, num_groups, weight, bias, eps)


def _masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, num_groups: int,
                       weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    batch, channels, steps = x.shape
    per_group = channels // num_groups
    xf = x.float()
    # (time,) < (batch, 1) -> (batch, time, 1): 1.0 on valid positions
    mask = (torch.arange(steps, device=x.device)[None, :] < lengths[:, None]).float()[:, :, None]
    count = lengths.float()[:, None] * per_group  # (batch, 1): values per group
    # (batch, channels, time) @ (batch, time, 1) -> (batch, channels) -> (batch, groups)
    mean = torch.bmm(xf, mask).view(batch, num_groups, per_group).sum(-1) / count
    # (batch, groups) -> (batch, channels, 1): every channel gets its group's mean
    centred = xf - mean.repeat_interleave(per_group, dim=1)[:, :, None]
    # (batch, channels, time) @ (batch, time, 1) -> (batch, groups): masked squared deviations
    var = torch.bmm(centred * centred, mask).view(batch, num_groups, per_group).sum(-1) / count
    scale = torch.rsqrt(var + eps).repeat_interleave(per_group, dim=1)  # (batch, channels)
    if weight is not None:
        scale = scale * weight.float()[None, :]
    out = centred.mul_(scale[:, :, None])
    if bias is not None:
        out = out.add_(bias.float()[None, :, None])
    # (batch, time, 1) -> (batch, 1, time): padded positions set to zero
    return out.mul_(mask.transpose(1, 2))


def pad_batch(items: Sequence[np.ndarray], device: torch.device, length_rows: Sequence[Sequence[int]] = ()
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms into a batch on ``device``, with its attention mask and lengths.

    On a CUDA device the batch is assembled in pinned host memory and copied with
    ``non_blocking=True``: the copy runs as a DMA transfer that overlaps the host's work until
    the forward needs the data (the caching host allocator keeps the buffer alive until the copy
    is done). Every length the forward needs (samples, frames, the group norms' valid
    positions) travels in one more pinned, non-blocking copy, so nothing on the host waits for
    the device (a ``torch.tensor(lengths, device=...)`` would wait for the batch's copy). The
    mask is built on the device from the lengths.

    Args:
        items: ``(num_samples_i,)`` float32 waveforms.
        device: where the batch goes.
        length_rows: further per-item integer rows to copy along (frames, valid positions).

    Returns:
        ``input_values`` ``(num_items, max_samples)`` float32, ``attention_mask``
        ``(num_items, max_samples)`` int64 (1 on valid samples), and ``lengths``
        ``(1 + len(length_rows), num_items)`` int64 (row 0: samples per item, then
        ``length_rows``), all on ``device``.
    """
    num_samples = [x.shape[0] for x in items]
    cuda = device.type == "cuda"
    host = torch.empty((len(items), max(num_samples)), dtype=torch.float32, pin_memory=cuda)
    view = host.numpy()  # (num_items, max_samples), shares the tensor's memory
    for i, x in enumerate(items):
        view[i, : x.shape[0]] = x
        view[i, x.shape[0]:] = 0.0
    rows = torch.empty((1 + len(length_rows), len(items)), dtype=torch.int64, pin_memory=cuda)
    rows.numpy()[:] = np.asarray([num_samples, *length_rows], dtype=np.int64)
    input_values = host.to(device, non_blocking=cuda)
    lengths = rows.to(device, non_blocking=cuda)
    positions = torch.arange(host.shape[1], device=device)
    # (max_samples,) < (num_items, 1) -> (num_items, max_samples), 1 on valid samples
    attention_mask = (positions[None, :] < lengths[0, :, None]).long()
    return input_values, attention_mask, lengths
