"""Hugging Face speech SSL models (wav2vec2, HuBERT, WavLM, data2vec-audio) as a backend.

The backend is *exact in padded batches*: the hidden states of an item in a zero-padded,
masked batch equal those of the item run alone (within float rounding). Three things in the
stock models break that, and are repaired here without forking transformers' model code
(see DESIGN.md, "Facts about the models"):

1. Group-norm feature encoders (``feat_extract_norm == "group"``: wav2vec2-base,
   hubert-base-ls960, wavlm-base) normalise every channel of the first convolution over the
   whole time axis, padding included. That ``GroupNorm`` is swapped for :class:`MaskedGroupNorm`,
   which computes the statistics of every item over its valid positions only.
2. data2vec-audio's positional embedding is a stack of convolutions; padded frames turn
   non-zero after the first one and leak into the last valid frames. Forward hooks re-zero the
   padded frames after every layer of that stack.
3. The sample-level attention mask is always passed (transformers derives the frame mask from
   it), and items shorter than the receptive field are refused, since they would silently get a
   full frame mask.

Both repairs are inert (stock behaviour) outside :meth:`HFBackend.forward`.

Checkpoints with an utterance-level head also give the head's outputs (``BackendOutput.heads``),
computed for every item from its valid frames exactly as the model computes them for the item
alone (:class:`UtteranceHead`):

- ``*ForSequenceClassification`` (e.g. ``superb/hubert-large-superb-er``): ``projector`` ->
  mean over the item's frames -> ``classifier`` on ``last_hidden_state`` (or on the softmax-
  weighted sum of all hidden states with ``use_weighted_layer_sum``); heads ``logits`` and
  ``probs`` (softmax; sigmoid for multi-label models; none for regression), named from
  ``id2label``.
- audEERING emotion checkpoints (``audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim``: a
  ``Wav2Vec2Model`` under ``wav2vec2.*`` plus ``classifier.dense`` / ``classifier.out_proj``;
  its config says ``Wav2Vec2ForSpeechClassification``, a class transformers does not have):
  mean of ``last_hidden_state`` (after the final LayerNorm) -> dense -> tanh -> out_proj; head
  ``logits`` named arousal, dominance, valence. No ``trust_remote_code``: the backbone loads as
  a ``Wav2Vec2Model`` and the four head tensors are read from the checkpoint file.

A head needs the whole forward, so early stopping is off for such checkpoints.

:func:`load_hf_backend` (the ``hf`` registry entry) hands Whisper checkpoints to
:class:`embedx.backends.whisper.WhisperBackend`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    Data2VecAudioModel,
    HubertModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMModel,
)

from embedx.backends.base import Backend, BackendOutput, apply_short_policy
from embedx.backends.hub import locate
from embedx.errors import AudioError, ConfigError, ModelError
from embedx.store import RANDOM_SUFFIX

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "PRECISIONS",
    "SHORT_POLICIES",
    "SUPPORTED_MODEL_TYPES",
    "HFBackend",
    "MaskedGroupNorm",
    "UtteranceHead",
    "WavePreparer",
    "conv_output_length",
    "load_hf_backend",
    "receptive_field",
]

#: model_type -> the backbone class AutoModel builds for it
_BACKBONES: dict[str, type[nn.Module]] = {
    "wav2vec2": Wav2Vec2Model,
    "hubert": HubertModel,
    "wavlm": WavLMModel,
    "data2vec-audio": Data2VecAudioModel,
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BACKBONES)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "sdpa", "eager")
SHORT_POLICIES: tuple[str, ...] = ("pad", "fail")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_MIXED_MASK_WARNING = "Support for mismatched key_padding_mask and attn_mask"


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


#: checkpoint keys of the heads embedx computes (everything else belongs to the backbone)
_HEAD_PREFIXES = ("projector.", "classifier.", "layer_weights")
_SEQUENCE_KEYS = ("projector.weight", "projector.bias", "classifier.weight", "classifier.bias")
_REGRESSION_KEYS = (
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
)
#: architectures known to carry no utterance-level head (their checkpoints are not searched)
_HEADLESS = frozenset(cls.__name__ for cls in _BACKBONES.values())
_HEADLESS_SUFFIXES = (
    "ForPreTraining",
    "ForCTC",
    "ForMaskedLM",
    "ForXVector",
    "ForAudioFrameClassification",
)


class UtteranceHead(nn.Module):
    """An utterance-level head on the backbone's frames, evaluated per item on its valid frames.

    Two layouts, recognised from the checkpoint's keys:

    - ``"sequence-classification"`` (transformers' ``*ForSequenceClassification``):
      ``classifier(mean_t(projector(x_t)))`` with ``x`` = ``last_hidden_state``, or the
      softmax(``layer_weights``)-weighted sum of all hidden states when
      ``use_weighted_layer_sum``. Heads ``logits`` and, unless the problem is a regression,
      ``probs`` (softmax; sigmoid for multi-label).
    - ``"regression"`` (audEERING emotion models): ``out_proj(tanh(dense(mean_t(x_t))))`` with
      ``x`` = ``last_hidden_state``. Head ``logits`` (arousal, dominance, valence).

    Args:
        kind: ``"sequence-classification"`` or ``"regression"``.
        tensors: the head's checkpoint tensors (keys as in the checkpoint).
        labels: names of the outputs (from ``id2label``).
        problem_type: the config's ``problem_type`` (``None``, ``single_label_classification``,
            ``multi_label_classification`` or ``regression``).

    Attributes:
        weighted: whether the head reads the weighted sum of all hidden states.
        names: head name -> output names, the backend's ``head_names``.
    """

    def __init__(
        self, kind: str, tensors: dict[str, torch.Tensor], labels: list[str], problem_type: str | None
    ) -> None:
        super().__init__()
        self.kind = kind
        self.problem_type = problem_type
        self.weighted = kind == "sequence-classification" and "layer_weights" in tensors

        def linear(prefix: str) -> nn.Linear:
            weight, bias = tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]
            layer = nn.Linear(weight.shape[1], weight.shape[0])
            layer.weight.data.copy_(weight.float())
            layer.bias.data.copy_(bias.float())
            return layer

        if kind == "sequence-classification":
            self.projector = linear("projector")
            self.classifier = linear("classifier")
            if self.weighted:
                self.layer_weights = nn.Parameter(tensors["layer_weights"].float().clone())
            num_outputs = self.classifier.out_features
        else:
            self.dense = linear("classifier.dense")
            self.out_proj = linear("classifier.out_proj")
            num_outputs = self.out_proj.out_features
        if len(labels) != num_outputs:
            labels = [f"output_{i}" for i in range(num_outputs)]
        self.names: dict[str, list[str]] = {"logits": list(labels)}
        if kind == "sequence-classification" and problem_type != "regression":
            self.names["probs"] = list(labels)

    def forward(
        self, states: dict[int, torch.Tensor], last: torch.Tensor, lengths: Sequence[int]
    ) -> dict[str, np.ndarray]:
        """Evaluate the head for every item of a batch.

        Args:
            states: layer -> ``(num_items, num_frames, dim)`` hidden states (all layers when
                :attr:`weighted`).
            last: ``(num_items, num_frames, dim)`` backbone ``last_hidden_state``.
            lengths: valid frames of every item.

        Returns:
            Head name -> ``(num_items, k)`` float32.
        """
        if self.weighted:
            # num_layers x (num_items, num_frames, dim) -> (num_layers, num_items, num_frames, dim)
            stacked = torch.stack([states[k] for k in range(self.layer_weights.shape[0])]).float()
            weights = nn.functional.softmax(self.layer_weights, dim=-1)
            x = (stacked * weights.view(-1, 1, 1, 1)).sum(dim=0)
        else:
            x = last.float()
        rows = []
        for i, n in enumerate(lengths):
            if self.kind == "sequence-classification":
                # (n, dim) -> (n, proj) -> (proj,) -> (k,)
                rows.append(self.classifier(self.projector(x[i, :n]).mean(dim=0)))
            else:
                # (n, dim) -> (dim,) -> (k,)
                rows.append(self.out_proj(torch.tanh(self.dense(x[i, :n].mean(dim=0)))))
        logits = torch.stack(rows)  # (num_items, k)
        out = {"logits": logits}
        if "probs" in self.names:
            if self.problem_type == "multi_label_classification":
                out["probs"] = torch.sigmoid(logits)
            else:
                out["probs"] = nn.functional.softmax(logits, dim=-1)
        return {k: v.float().cpu().numpy() for k, v in out.items()}


class HFBackend(Backend):
    """wav2vec2 / HuBERT / WavLM / data2vec-audio hidden states, exact in padded batches.

    Layers are numbered ``0..L`` (``num_layers = L + 1``) as transformers' ``hidden_states``:
    layer 0 is the transformer's input (feature-encoder output after projection and positional
    convolution; for post-LN models also after the encoder's LayerNorm), layer ``k`` is the
    output of block ``k``. For stable-layer-norm (pre-LN) models such as wav2vec2-large(-robust)
    and the audEERING emotion checkpoints, layer ``L`` is block ``L``'s output *before* the
    encoder's final LayerNorm, i.e. ``hidden_states[L] != last_hidden_state`` — exactly what
    transformers 5.x returns in ``hidden_states`` (its ``capture_outputs`` runs with
    ``tie_last_hidden_states=False`` for these models). embedx stores that; the post-LN state is
    not exposed. For post-LN models (the base models) layer ``L`` equals ``last_hidden_state``.

    The forward runs only the blocks up to the highest requested layer (at least one), which
    leaves layers ``0..k`` bitwise unchanged; checkpoints with a head (see the module docstring)
    always run all blocks, since the head reads the final state.

    Args:
        model: hub id (resolved through the HF cache; offline works when it is cached) or a
            local directory written by ``save_pretrained``.
        revision: branch, tag or commit of a hub model.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only), run with ``torch.autocast``;
            ``"auto"`` is fp32 on CPU and bf16 (fp16 without bf16 support) on CUDA.
        short: items shorter than :attr:`min_samples`: ``"pad"`` with zeros to one frame, or
            ``"fail"`` (:class:`~embedx.errors.AudioError`), see :meth:`fit_length`.
        attn: attention implementation: ``"auto"`` (sdpa where the model has it, eager for
            WavLM), ``"sdpa"`` or ``"eager"``.
        name: feature-set name; defaults to the last component of ``model`` (with
            ``random_init``: that name + :data:`RANDOM_SUFFIX`).
        random_init: build the checkpoint's architecture from its config with seeded random
            weights instead of loading its weights (the random-network control of a probing
            study; only ``config.json`` and the preprocessor config are read, a head is not).
        seed: the seed of the random weights (``random_init`` only).

    Attributes:
        device: the resolved ``torch.device``.
        precision: the resolved precision (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        attn: the attention implementation the model runs with.
        do_normalize: whether :meth:`prepare` normalises items.
        preparer: the picklable :class:`WavePreparer` behind :meth:`prepare` and
            :meth:`fit_length`.
        model: the loaded backbone (``eval()`` mode, on :attr:`device`).
        config: its transformers config.
        head: the checkpoint's :class:`UtteranceHead`, or ``None``; with a head every forward
            runs all blocks and returns the head's outputs in ``BackendOutput.heads``.

    Raises:
        ModelError: when the model cannot be found or loaded, or is of an unsupported type.
        ConfigError: when device, precision, attn or short is not accepted.
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
        random_init: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer; got {seed!r}")
        self.random_init = bool(random_init)
        self.init_seed = int(seed)
        path, config = open_checkpoint(self, model, revision, device, precision, short, attn)
        model_type = getattr(config, "model_type", None)
        if model_type not in _BACKBONES:
            raise ModelError(
                f"model {self.model_id!r} is of model_type {model_type!r}, which the hf backend does "
                f"not support; accepted: {', '.join(SUPPORTED_MODEL_TYPES)}, whisper"
            )
        self.model_type: str = model_type
        self.attn = _resolve_attn(attn, model_type)

        extractor, self.do_normalize_source = _load_extractor_dict(path)
        feat_extract_norm = getattr(config, "feat_extract_norm", "layer")
        if "do_normalize" in extractor:
            self.do_normalize = bool(extractor["do_normalize"])
        else:
            self.do_normalize = _default_do_normalize(model_type, feat_extract_norm)
            self.do_normalize_source = "default"
        self.sample_rate = int(extractor.get("sampling_rate", 16000))

        self.model = (_random_model(self.model_id, config, self.attn, self.init_seed) if self.random_init
                      else _load_model(path, self.model_id, config, self.attn))
        self.model.to(self.device).eval()
        self.config = self.model.config

        self._kernels = tuple(int(k) for k in config.conv_kernel)
        self._strides = tuple(int(s) for s in config.conv_stride)
        self.feat_extract_norm = str(feat_extract_norm)
        self.do_stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))
        self.name = name or (Path(self.model_id.rstrip("/\\")).name or self.model_id) + (
            RANDOM_SUFFIX if self.random_init else "")
        self.num_layers = int(config.num_hidden_layers) + 1
        self.dim = int(config.hidden_size)
        self.frame_rate = self.sample_rate / float(np.prod(self._strides))
        self.min_samples = receptive_field(self._kernels, self._strides)
        self.hop_samples = int(np.prod(self._strides))
        self.head = None if self.random_init else _load_head(path, self.model_id, config)
        if self.head is not None:
            self.head.to(self.device).eval()
        self.head_names = dict(self.head.names) if self.head is not None else {}
        self.preparer = WavePreparer(
            do_normalize=self.do_normalize,
            min_samples=self.min_samples,
            short=short,
            sample_rate=self.sample_rate,
        )
        self.short = short

        if self.precision != "fp32":
            self._check_precision()
        self._group_norms = self._install_masked_group_norm()
        self._frame_mask: torch.Tensor | None = None
        self._install_pos_conv_hooks()

    # --- the Backend contract -------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """Frames the model gives for ``num_samples`` samples (exact conv arithmetic).

        Args:
            num_samples: item length at :attr:`sample_rate`.

        Returns:
            ``floor((n - 400) / 320) + 1`` for the real geometry; 0 below :attr:`min_samples`.
        """
        return conv_output_length(num_samples, self._kernels, self._strides)

    def forward(self, waves: Sequence[np.ndarray], layers: Sequence[int]) -> BackendOutput:
        """Run a zero-padded, masked batch and return the requested layers.

        Args:
            waves: prepared ``(num_samples_i,)`` float32 waveforms, each at least
                :attr:`min_samples` long.
            layers: layer numbers in ``0..num_layers-1``, returned in this order.

        Returns:
            ``hidden`` of shape ``(len(layers), num_items, num_frames, dim)`` float32 on
            :attr:`device` (``num_frames`` of the longest item) and ``lengths`` ``(num_items,)``
            int64 valid frames per item on :attr:`device`.

        Raises:
            AudioError: when an item is not one-dimensional or shorter than :attr:`min_samples`.
            ConfigError: when a layer is out of range.
            ValueError: when ``waves`` is empty.
        """
        layer_list = self._check_layers(layers)
        items = [np.asarray(w, dtype=np.float32) for w in waves]
        if not items:
            raise ValueError("forward() needs at least one waveform")
        for i, x in enumerate(items):
            if x.ndim != 1:
                raise AudioError(f"item {i}: expected shape (num_samples,), got {x.shape}")
            if x.shape[0] < self.min_samples:
                raise AudioError(
                    f"item {i}: {x.shape[0]} samples < the model's minimum of {self.min_samples}; "
                    "apply fit_length() first"
                )
        num_samples = [x.shape[0] for x in items]
        lengths = [self.num_frames(n) for n in num_samples]
        num_frames = max(lengths)

        input_values, attention_mask = pad_batch(items, self.device)
        frame_lengths = torch.tensor(lengths, dtype=torch.int64, device=self.device)

        head = self.head
        wanted = set(layer_list)
        num_blocks = max(max(layer_list), 1)  # layer 0 is recorded at block 1's input
        if head is not None:
            num_blocks = self.num_layers - 1  # the head reads the final state: no early stop
            if head.weighted:
                wanted.update(range(self.num_layers))
        heads: dict[str, np.ndarray] = {}
        with (
            self._batch_state(num_samples, frame_lengths, num_frames),
            self._capture(wanted, num_blocks) as states,
            torch.inference_mode(),
        ):
            with self._autocast(), warnings.catch_warnings():
                # WavLM's eager attention mixes a bool padding mask with a float position bias
                warnings.filterwarnings("ignore", message=_MIXED_MASK_WARNING, category=UserWarning)
                output = self.model(input_values, attention_mask=attention_mask)
            # num_layers x (num_items, num_frames, dim) -> (num_layers, num_items, num_frames, dim)
            hidden = torch.stack([states[k] for k in layer_list]).float()
            if head is not None:  # in float32, outside autocast, each item on its valid frames
                heads = head(states, output.last_hidden_state, lengths)
        if hidden.shape[2] != num_frames:
            raise RuntimeError(
                f"model returned {hidden.shape[2]} frames where the conv arithmetic says {num_frames}"
            )
        return BackendOutput(hidden=hidden, lengths=frame_lengths, heads=heads)

    def metadata(self) -> dict[str, Any]:
        """Describe the model for the store (str, int, float and bool values only)."""
        return {
            "backend": "hf",
            "model_id": self.model_id,
            "revision": self.revision or "",
            "commit_hash": self.commit_hash,
            "model_type": self.model_type,
            "architectures": ",".join(getattr(self.config, "architectures", None) or []),
            "feat_extract_norm": self.feat_extract_norm,
            "do_stable_layer_norm": self.do_stable_layer_norm,
            "last_layer_before_final_norm": self.do_stable_layer_norm,
            "do_normalize": self.do_normalize,
            "do_normalize_source": self.do_normalize_source,
            "attn_implementation": self.attn,
            "head": self.head.kind if self.head is not None else "",
            "precision": self.precision,
            "device": self.device.type,
            "short": self.short,
            "sample_rate": self.sample_rate,
            "min_samples": self.min_samples,
            "num_hidden_layers": int(self.config.num_hidden_layers),
            "hidden_size": self.dim,
            "random_init": self.random_init,
            "init_seed": self.init_seed if self.random_init else -1,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }

    # --- internals --------------------------------------------------------------------------

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        layer_list = [int(k) for k in layers]
        if not layer_list:
            raise ConfigError("no layer requested")
        bad = [k for k in layer_list if not 0 <= k < self.num_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range; accepted: 0..{self.num_layers - 1}")
        return layer_list

    def _check_precision(self) -> None:
        """Refuse a reduced precision whose kernels are broken for this model on this device.

        oneDNN's bf16 grouped conv1d in torch 2.11 on (AMX) CPUs returns garbage for fewer than
        16 channels per group with an even kernel; the positional convolution is such a layer.
        Its output under autocast is compared with fp32 on a fixed random input.

        Raises:
            ConfigError: when the reduced-precision output is not close to the fp32 one.
        """
        generator = torch.Generator().manual_seed(0)
        # (1 item, 64 frames, dim): the positional convolution's input layout
        x = torch.randn(1, 64, self.dim, generator=generator).to(self.device)
        pos_conv = self.model.encoder.pos_conv_embed
        with torch.inference_mode():
            reference = pos_conv(x).float()
            with self._autocast():
                reduced = pos_conv(x).float()
        cosine = float(
            nn.functional.cosine_similarity(reference.flatten(), reduced.flatten(), dim=0)
        )
        if not cosine > 0.99:
            raise ConfigError(
                f"precision {self.precision!r} is broken for {self.model_id!r} on {self.device} "
                f"(positional conv cosine {cosine:.3f} vs fp32); use precision='fp32'"
            )

    def _install_masked_group_norm(self) -> list[tuple[MaskedGroupNorm, int]]:
        """Swap every GroupNorm of the feature encoder for a :class:`MaskedGroupNorm`.

        Returns:
            ``(module, conv layer index)`` pairs; the index gives the valid length at its input.
        """
        swapped = []
        for index, conv_layer in enumerate(self.model.feature_extractor.conv_layers):
            norm = getattr(conv_layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm) and not isinstance(norm, MaskedGroupNorm):
                masked = MaskedGroupNorm(norm).to(self.device)
                conv_layer.layer_norm = masked
                swapped.append((masked, index))
        return swapped

    def _install_pos_conv_hooks(self) -> None:
        """Re-zero padded frames after every layer of a stacked positional conv (data2vec-audio)."""
        pos_layers = getattr(self.model.encoder.pos_conv_embed, "layers", None)
        if pos_layers is None:
            return

        def rezero(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            frame_mask = self._frame_mask
            if frame_mask is None:
                return None
            # output (num_items, dim, num_frames); mask (num_items, 1, num_frames)
            return output.masked_fill(~frame_mask[:, None, :], 0.0)

        for layer in pos_layers:
            layer.register_forward_hook(rezero)

    @contextlib.contextmanager
    def _batch_state(
        self, num_samples: list[int], frame_lengths: torch.Tensor, num_frames: int
    ) -> Iterator[None]:
        """Tell the padding repairs about the current batch, and forget it afterwards."""
        for norm, index in self._group_norms:
            norm.valid_lengths = [
                conv_output_length(n, self._kernels[: index + 1], self._strides[: index + 1])
                for n in num_samples
            ]
        positions = torch.arange(num_frames, device=self.device)
        # (num_frames,) < (num_items, 1) -> (num_items, num_frames) bool, True on valid frames
        self._frame_mask = positions[None, :] < frame_lengths[:, None]
        try:
            yield
        finally:
            for norm, _ in self._group_norms:
                norm.valid_lengths = None
            self._frame_mask = None

    @contextlib.contextmanager
    def _capture(self, wanted: set[int], num_blocks: int) -> Iterator[dict[int, torch.Tensor]]:
        """Run only the first ``num_blocks`` blocks and record the states of the layers ``wanted``."""
        with capture_layers(self.model.encoder, wanted, num_blocks) as states:
            yield states

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)


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


@contextlib.contextmanager
def capture_layers(
    container: nn.Module, wanted: set[int], num_blocks: int, max_block: int | None = None
) -> Iterator[dict[int, torch.Tensor]]:
    """Run only the first ``num_blocks`` of ``container.layers`` and record hidden states.

    Layer 0 is the input of block 1 and layer k the output of block k, recorded with hooks on
    the blocks exactly where transformers' ``output_hidden_states`` records them (its own hooks
    are installed once, on first use, so they would miss blocks cut off by an early stop).

    Args:
        container: the module holding the blocks in ``.layers`` (an encoder).
        wanted: layer numbers to record.
        num_blocks: blocks to run (the highest wanted layer, or all for a head).
        max_block: record block outputs only up to this block (Whisper takes its last layer
            from the encoder's output instead); default: all that run.

    Yields:
        Layer number -> ``(batch, num_frames, dim)`` state, filled while the model runs.
    """
    states: dict[int, torch.Tensor] = {}
    all_blocks = container.layers
    last = num_blocks if max_block is None else min(num_blocks, max_block)

    def record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if 0 in wanted:
            states[0] = args[0] if args else kwargs["hidden_states"]

    def record_output(k: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if k in wanted:
                # WavLM blocks return (hidden_states, position_bias)
                states[k] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [all_blocks[0].register_forward_pre_hook(record_input, with_kwargs=True)]
    handles += [all_blocks[k - 1].register_forward_hook(record_output(k)) for k in range(1, last + 1)]
    container.layers = all_blocks[:num_blocks]
    try:
        yield states
    finally:
        container.layers = all_blocks
        for handle in handles:
            handle.remove()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16``; nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


# --- loading helpers --------------------------------------------------------------------------


def _resolve_device(device: str) -> torch.device:
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for, but CUDA is not available; use cpu or auto"
        )
    index = int(device.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} does not exist; {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return torch.device("cuda", index)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cpu":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision 'fp16' needs a CUDA device; on cpu use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"device {device} does not support bf16; use fp16 or fp32")
    return precision


def _resolve_attn(attn: str, model_type: str) -> str:
    supports_sdpa = bool(getattr(_BACKBONES[model_type], "_supports_sdpa", False))
    if attn == "auto":
        return "sdpa" if supports_sdpa else "eager"
    if attn == "sdpa" and not supports_sdpa:
        raise ConfigError(
            f"model_type {model_type!r} has no sdpa attention; use attn='eager' or 'auto'"
        )
    return attn


def _load_error(model: str, exc: Exception) -> ModelError:
    first = " ".join(str(exc).strip().splitlines()[0].split()) if str(exc).strip() else type(exc).__name__
    return ModelError(f"{model!r}: its checkpoint files cannot be read: {first}")


def _load_config(path: str, model: str) -> transformers.PretrainedConfig:
    """The config of the checkpoint in directory ``path`` (``model``: its name for messages)."""
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(model, exc) from exc


def _load_extractor_dict(path: str) -> tuple[dict[str, Any], str]:
    """The checkpoint's feature-extractor settings and where they came from."""
    try:
        values, _ = Wav2Vec2FeatureExtractor.get_feature_extractor_dict(path)
    except (OSError, ValueError, json.JSONDecodeError):
        return {}, "default"
    return dict(values), "preprocessor_config.json"


def _default_do_normalize(model_type: str, feat_extract_norm: str) -> bool:
    """``do_normalize`` of a checkpoint without a preprocessor config, following the family.

    HuBERT and WavLM base (group-norm) checkpoints are trained on unnormalised audio; wav2vec2
    base and every layer-norm (large / data2vec) model on normalised audio.
    """
    return not (feat_extract_norm == "group" and model_type in ("hubert", "wavlm"))


def _checkpoint_file(path: str, filename: str) -> str | None:
    """Path of one file of the checkpoint in directory ``path``, or ``None`` when it has none."""
    candidate = os.path.join(path, filename)
    return candidate if os.path.isfile(candidate) else None


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    """The head tensors (keys starting with :data:`_HEAD_PREFIXES`) of one weights file."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as weights:
            return {k: weights.get_tensor(k) for k in weights.keys() if k.startswith(_HEAD_PREFIXES)}
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith(_HEAD_PREFIXES)}


def _head_tensors(path: str) -> dict[str, torch.Tensor]:
    """Head tensors of a checkpoint: safetensors or pytorch_model.bin, single file or sharded."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        single_path = _checkpoint_file(path, single)
        if single_path:
            return _read_tensors(single_path)
        index_path = _checkpoint_file(path, index)
        if index_path:
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
            shards = sorted({f for k, f in weight_map.items() if k.startswith(_HEAD_PREFIXES)})
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                shard_path = _checkpoint_file(path, shard)
                if shard_path:
                    tensors.update(_read_tensors(shard_path))
            return tensors
    return {}


def _load_head(
    path: str, model: str, config: transformers.PretrainedConfig
) -> UtteranceHead | None:
    """The checkpoint's utterance-level head, or ``None`` when it has none embedx computes.

    Raises:
        ModelError: the config names a ``*ForSequenceClassification`` architecture but the
            checkpoint lacks its head weights.
    """
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and all(
        a in _HEADLESS or a.endswith(_HEADLESS_SUFFIXES) for a in architectures
    ):
        return None
    tensors = _head_tensors(path)
    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    problem_type = getattr(config, "problem_type", None)
    if all(k in tensors for k in _REGRESSION_KEYS):
        return UtteranceHead("regression", tensors, labels, problem_type)
    if all(k in tensors for k in _SEQUENCE_KEYS):
        if getattr(config, "use_weighted_layer_sum", False) and "layer_weights" not in tensors:
            raise ModelError(
                f"model {model!r} has use_weighted_layer_sum but no layer_weights in its checkpoint"
            )
        if not getattr(config, "use_weighted_layer_sum", False):
            tensors.pop("layer_weights", None)
        return UtteranceHead("sequence-classification", tensors, labels, problem_type)
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"model {model!r} is a {architectures[0]} but its checkpoint has no "
            f"{', '.join(_SEQUENCE_KEYS)}; accepted: a complete save_pretrained checkpoint"
        )
    return None


def load_hf_backend(model: str, **kwargs: Any) -> Backend:
    """The ``hf`` registry entry: a :class:`HFBackend`, or a Whisper backend for Whisper models.

    Args:
        model: hub id or local directory.
        **kwargs: the backend's options (device, precision, short, ...).

    Returns:
        :class:`embedx.backends.whisper.WhisperBackend` when the checkpoint's ``model_type`` is
        ``whisper``, else :class:`HFBackend`.

    Raises:
        ModelError: when the config cannot be loaded or the model is not supported.
    """
    checkpoint = locate(str(model), kwargs.get("revision"))
    config = _load_config(checkpoint.path, str(model))
    if getattr(config, "model_type", None) == "whisper":
        if kwargs.pop("random_init", False):
            raise ConfigError(f"--random-init is not available for Whisper models yet ({model!r})")
        kwargs.pop("seed", None)
        from embedx.backends.whisper import WhisperBackend

        return WhisperBackend(model, **kwargs)
    return HFBackend(model, **kwargs)


def open_checkpoint(
    backend: Backend, model: str, revision: str | None, device: str, precision: str, short: str,
    attn: str,
) -> tuple[str, transformers.PretrainedConfig]:
    """Validate the common options, resolve device/precision, locate the checkpoint, load its config.

    Sets ``device``, ``precision``, ``model_id``, ``revision`` and ``commit_hash`` on ``backend``.

    Args:
        backend: the backend being built.
        model: hub id or local directory.
        revision: hub revision, or ``None``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: one of :data:`PRECISIONS`.
        short: one of :data:`SHORT_POLICIES`.
        attn: one of :data:`ATTN_IMPLEMENTATIONS`.

    Returns:
        The local directory holding the checkpoint's files (see
        :func:`embedx.backends.hub.locate`) and its config.

    Raises:
        ConfigError: a bad short policy, attention implementation, device or precision.
        ModelError: the checkpoint cannot be located or its config cannot be loaded.
    """
    if short not in SHORT_POLICIES:
        raise ConfigError(f"unknown short-item policy {short!r}; accepted: {', '.join(SHORT_POLICIES)}")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            f"unknown attention implementation {attn!r}; accepted: {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    backend.device = _resolve_device(device)
    backend.precision = _resolve_precision(precision, backend.device)
    backend.model_id = str(model)
    backend.revision = revision
    checkpoint = locate(backend.model_id, revision)
    backend.commit_hash = checkpoint.commit
    return checkpoint.path, _load_config(checkpoint.path, backend.model_id)


@contextlib.contextmanager
def quiet_loading(model: str) -> Iterator[None]:
    """Load weights without transformers' progress bar; turn load failures into ModelError.

    transformers 5 draws a "Loading weights" bar on stderr; embedx shows its own progress.

    Args:
        model: the hub id or directory being loaded (named in the error).

    Raises:
        ModelError: when loading raises OSError or ValueError.
    """
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc) from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()


def _random_model(model: str, config: transformers.PretrainedConfig, attn: str, seed: int) -> nn.Module:
    """The architecture of ``config`` with weights drawn by transformers' own initialiser, seeded.

    The global torch generator is forked, so seeding here changes nothing else in the process.
    """
    with torch.random.fork_rng(devices=[]), quiet_loading(model):
        torch.manual_seed(seed)
        built = AutoModel.from_config(config, attn_implementation=attn)
    for needed in ("feature_extractor", "encoder"):
        if not hasattr(built, needed):
            raise ModelError(f"model {model!r} ({type(built).__name__}) has no {needed}; not a supported backbone")
    return built.float()


def _load_model(
    path: str, model: str, config: transformers.PretrainedConfig, attn: str
) -> nn.Module:
    with quiet_loading(model):
        loaded = AutoModel.from_pretrained(
            path,
            config=config,
            attn_implementation=attn,
            dtype=torch.float32,
        )
    for needed in ("feature_extractor", "encoder"):
        if not hasattr(loaded, needed):
            raise ModelError(
                f"model {model!r} ({type(loaded).__name__}) has no {needed}; not a supported backbone"
            )
    return loaded
