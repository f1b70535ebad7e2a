"""Hugging Face speech SSL models (wav2vec2, HuBERT, WavLM, data2vec-audio) as a backend.

The backend is *exact in padded batches*: the hidden states of an item in a zero-padded,
masked batch equal those of the item run alone (within float rounding). Three things in the
stock models break that, and are repaired here without forking transformers' model code
(see docs/architecture.md, "Facts about the models"):

1. Group-norm feature encoders (``feat_extract_norm == "group"``: wav2vec2-base,
   hubert-base-ls960, wavlm-base) normalise every channel of the first convolution over the
   whole time axis, padding included. That ``GroupNorm`` is swapped for
   :class:`~embedx.backends.padding.MaskedGroupNorm`,
   which computes the statistics of every item over its valid positions only.
2. data2vec-audio's positional embedding is a stack of convolutions; padded frames turn
   non-zero after the first one and leak into the last valid frames. Forward hooks re-zero the
   padded frames after every layer of that stack.
3. The sample-level attention mask is always passed (transformers derives the frame mask from
   it), and items shorter than the receptive field are refused, since they would silently get a
   full frame mask.

Both repairs are inert (stock behaviour) outside :meth:`HFBackend.forward`.

Checkpoints with an utterance-level head (``*ForSequenceClassification``, the audEERING
emotion models) also give the head's outputs, see :mod:`embedx.backends.heads`. A head needs the
whole forward, so early stopping is off for such checkpoints.

Split by concern: the padding repairs and per-item preparation are :mod:`embedx.backends.padding`,
layer capture and autocast :mod:`embedx.backends.capture`, options/device/config loading
:mod:`embedx.backends.loading`; the ``hf`` registry entry (:mod:`embedx.backends`) hands Whisper
checkpoints to :mod:`embedx.backends.whisper`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoModel, Wav2Vec2FeatureExtractor

from embedx.backends.base import RANDOM_INIT_SEED, Backend, BackendOutput
from embedx.backends.capture import autocast, capture_layers, cast_autocast_weights
from embedx.backends.framing import conv_timing
from embedx.backends.heads import load_head
from embedx.backends.loading import checkpoint_metadata, open_checkpoint, quiet_loading
from embedx.backends.padding import (
    MaskedGroupNorm,
    WavePreparer,
    conv_output_length,
    pad_batch,
    receptive_field,
)
from embedx.errors import AudioError, ConfigError, ModelError, Param
from embedx.store.spec import random_name

__all__ = ["SUPPORTED_MODEL_TYPES", "HFBackend", "resolve_attn"]

#: model_type -> the name of the backbone class AutoModel builds for it (imported when used:
#: transformers loads a model family's code on first access, ~0.1-0.3 s each)
_BACKBONES: dict[str, str] = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BACKBONES)
#: the bare backbones carry no utterance-level head: their checkpoints are not searched for one
_HEADLESS = frozenset(_BACKBONES.values())
_MIXED_MASK_WARNING = "Support for mismatched key_padding_mask and attn_mask"


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
        name: feature-set name; defaults to the last component of ``model``; with
            ``random_init`` either gets :data:`RANDOM_SUFFIX` (see :func:`random_name`).
        random_init: build the checkpoint's architecture from its config with seeded random
            weights instead of loading its weights (the random-network control of a probing
            study; only ``config.json`` and the preprocessor config are read, a head is not).
        seed: the seed of the random weights (``random_init`` only; see :data:`RANDOM_INIT_SEED`).

    Attributes:
        device: the resolved ``torch.device``.
        precision: the resolved precision (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        attn: the attention implementation the model runs with.
        do_normalize: whether :meth:`prepare` normalises items.
        preparer: the picklable :class:`~embedx.backends.padding.WavePreparer` behind :meth:`prepare` and
            :meth:`fit_length`.
        model: the loaded backbone (``eval()`` mode, on :attr:`device`).
        config: its transformers config.
        head: the checkpoint's :class:`~embedx.backends.heads.UtteranceHead`, or ``None``; with a head every forward
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
        seed: int = RANDOM_INIT_SEED,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(Param("seed"), f" must be a non-negative integer; got {seed!r}")
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
        self.attn = resolve_attn(attn, model_type)

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
        self.name = random_name(name or (Path(self.model_id.rstrip("/\\")).name or self.model_id),
                                self.random_init, explicit=name is not None)
        self.num_layers = int(config.num_hidden_layers) + 1
        self.dim = int(config.hidden_size)
        self.frame_rate = self.sample_rate / float(np.prod(self._strides))
        self.min_samples = receptive_field(self._kernels, self._strides)
        self.hop_samples = int(np.prod(self._strides))
        self.head = None if self.random_init else load_head(path, self.model_id, config, _HEADLESS)
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
            if self.device.type == "cuda":  # the CPU keeps float32 weights (its bf16 kernels differ)
                cast_autocast_weights(self.model, self.precision)  # the casts autocast repeats per forward, once
        self.activation_bytes_per_second = self._activation_bytes_per_second()
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

        norm_lengths = [
            [conv_output_length(n, self._kernels[: index + 1], self._strides[: index + 1]) for n in num_samples]
            for _norm, index in self._group_norms
        ]
        # one pinned, non-blocking copy of every length: the host never waits for the device here
        input_values, attention_mask, staged = pad_batch(items, self.device, [lengths, *norm_lengths])
        frame_lengths = staged[1]

        head = self.head
        wanted = set(layer_list)
        num_blocks = max(max(layer_list), 1)  # layer 0 is recorded at block 1's input
        if head is not None:
            num_blocks = self.num_layers - 1  # the head reads the final state: no early stop
            if head.weighted:
                wanted.update(range(self.num_layers))
        heads: dict[str, np.ndarray] = {}
        with (
            self._batch_state(norm_lengths, staged[2:], frame_lengths, num_frames),
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
            **checkpoint_metadata(self, self.model_type, self.config.num_hidden_layers),
            "feat_extract_norm": self.feat_extract_norm,
            "do_stable_layer_norm": self.do_stable_layer_norm,
            "last_layer_before_final_norm": self.do_stable_layer_norm,
            "do_normalize": self.do_normalize,
            "do_normalize_source": self.do_normalize_source,
            "head": self.head.kind if self.head is not None else "",
            "random_init": self.random_init,
            "init_seed": self.init_seed if self.random_init else -1,
            # frame i covers samples [hop * i, hop * i + receptive field)
            **conv_timing(self.hop_samples, self.min_samples, self.sample_rate).attrs(),
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

    def _activation_bytes_per_second(self) -> float:
        """Device memory a forward holds per padded audio-second (a deliberate over-estimate).

        The first convolution's output dominates (its sample rate / stride positions x
        ``conv_dim[0]`` channels, in float32, ~6 live copies around the masked group norm and
        GELU), then the transformer's states (every recorded layer plus ~8 transient ones, the
        feed-forward's two intermediate tensors). HuBERT-base: ~44 MB per audio-second (a 60-s
        batch was measured near 2 GB on an H100).
        """
        first = self.sample_rate / self._strides[0] * int(self.config.conv_dim[0]) * 4 * 6
        hidden = self.frame_rate * self.dim * 4 * (self.num_layers + 8)
        ffn = self.frame_rate * int(getattr(self.config, "intermediate_size", 4 * self.dim)) * 4 * 2
        return float(first + hidden + ffn)

    def _install_masked_group_norm(self) -> list[tuple[MaskedGroupNorm, int]]:
        """Swap every GroupNorm of the feature encoder for a masked one (see :mod:`~embedx.backends.padding`).

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
        self, norm_lengths: list[list[int]], norm_tensors: torch.Tensor, frame_lengths: torch.Tensor,
        num_frames: int,
    ) -> Iterator[None]:
        """Tell the padding repairs about the current batch, and forget it afterwards.

        ``norm_lengths`` are every masked group norm's valid lengths on the host,
        ``norm_tensors`` ``(num_norms, num_items)`` the same on the device.
        """
        for (norm, _index), valid, tensor in zip(self._group_norms, norm_lengths, norm_tensors, strict=True):
            norm.valid_lengths = valid
            norm.length_tensor = tensor
        positions = torch.arange(num_frames, device=self.device)
        # (num_frames,) < (num_items, 1) -> (num_items, num_frames) bool, True on valid frames
        self._frame_mask = positions[None, :] < frame_lengths[:, None]
        try:
            yield
        finally:
            for norm, _ in self._group_norms:
                norm.valid_lengths = None
                norm.length_tensor = None
            self._frame_mask = None

    @contextlib.contextmanager
    def _capture(self, wanted: set[int], num_blocks: int) -> Iterator[dict[int, torch.Tensor]]:
        """Run only the first ``num_blocks`` blocks and record the states of the layers ``wanted``."""
        with capture_layers(self.model.encoder, wanted, num_blocks) as states:
            yield states

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)


# --- loading helpers --------------------------------------------------------------------------


def resolve_attn(attn: str, model_type: str) -> str:
    """The attention implementation a ``model_type`` runs with.

    Args:
        attn: one of :data:`~embedx.backends.loading.ATTN_IMPLEMENTATIONS`.
        model_type: one of :data:`SUPPORTED_MODEL_TYPES`.

    Returns:
        ``"sdpa"`` or ``"eager"`` (``auto``: sdpa where the model has it; WavLM has not).

    Raises:
        ConfigError: sdpa asked for a model without it.
    """
    supports_sdpa = bool(getattr(getattr(transformers, _BACKBONES[model_type]), "_supports_sdpa", False))
    if attn == "auto":
        return "sdpa" if supports_sdpa else "eager"
    if attn == "sdpa" and not supports_sdpa:
        raise ConfigError(
            f"model_type {model_type!r} has no sdpa attention; use attn='eager' or 'auto'"
        )
    return attn


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
