"""Tiny random-weight speech models for tests and demos (no download).

:func:`save_tiny_model` writes a directory that loads through exactly the code path a hub id
takes (``AutoConfig`` / ``AutoModel.from_pretrained(path)`` plus ``preprocessor_config.json``).
The models are small (hidden size 32, 4 blocks) but keep the real feature encoder's kernels and
strides, so their frame arithmetic (400-sample receptive field, 320-sample hop) is that of the
real checkpoints, and the normalisation layout (group-norm vs. layer-norm feature encoder,
stable layer norm) of the family they imitate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from embedx.errors import ConfigError

__all__ = ["TINY_FAMILIES", "save_tiny_model"]

#: real feature-encoder geometry (every wav2vec2-style checkpoint at 16 kHz)
_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)

_SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "conv_dim": (32,) * 7,
    "conv_kernel": _CONV_KERNEL,
    "conv_stride": _CONV_STRIDE,
    # 16 channels per group: oneDNN's bf16 grouped conv1d on CPU (torch 2.11) returns garbage
    # for fewer than 16 channels per group with an even kernel >= 8; real models have 48 or 64
    "num_conv_pos_embedding_groups": 2,
}

# family -> (config class, model class, config values, feature-extractor values). The
# feature-extractor values follow the real checkpoints: wav2vec2-base normalises without a mask,
# hubert-base-ls960 and wavlm-base do not normalise, large-robust and data2vec-audio normalise
# and return a mask.
_FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel], dict, dict]] = {
    "wav2vec2": (
        Wav2Vec2Config,
        Wav2Vec2Model,
        {
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            "conv_bias": False,
            "num_conv_pos_embeddings": 16,
        },
        {"do_normalize": True, "return_attention_mask": False},
    ),
    "wav2vec2-large": (
        Wav2Vec2Config,
        Wav2Vec2Model,
        {
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "conv_bias": True,
            "num_conv_pos_embeddings": 16,
        },
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "hubert": (
        HubertConfig,
        HubertModel,
        {
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            "conv_bias": False,
            "num_conv_pos_embeddings": 16,
        },
        {"do_normalize": False, "return_attention_mask": False},
    ),
    "wavlm": (
        WavLMConfig,
        WavLMModel,
        {
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            "conv_bias": False,
            "num_conv_pos_embeddings": 16,
            "num_buckets": 32,
            "max_bucket_distance": 80,
        },
        {"do_normalize": False, "return_attention_mask": True},
    ),
    "data2vec-audio": (
        Data2VecAudioConfig,
        Data2VecAudioModel,
        # data2vec-audio's feature encoder is always layer-normed; its positional embedding is
        # a stack of num_conv_pos_embeddings convolutions of width conv_pos_kernel_size
        {"conv_bias": True, "num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 19},
        {"do_normalize": True, "return_attention_mask": True},
    ),
}

#: names accepted by :func:`save_tiny_model`
TINY_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def save_tiny_model(
    family: str,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    do_normalize: bool | None = None,
    **overrides: Any,
) -> Path:
    """Build a tiny random-weight model of ``family`` and save it like a hub checkpoint.

    Args:
        family: one of :data:`TINY_FAMILIES`.
        path: directory to write ``config.json``, ``model.safetensors`` and
            ``preprocessor_config.json`` to (created if missing).
        seed: seed of the weight initialisation; the same seed gives the same weights.
        do_normalize: the feature extractor's ``do_normalize``; ``None`` keeps the family's
            convention (see the module docstring).
        **overrides: config values replacing the tiny defaults (e.g. ``num_hidden_layers=2``).

    Returns:
        The directory, loadable with ``AutoModel.from_pretrained``.

    Raises:
        ConfigError: when ``family`` is unknown.
    """
    if family not in _FAMILIES:
        raise ConfigError(
            f"unknown tiny model family {family!r}; accepted: {', '.join(TINY_FAMILIES)}"
        )
    config_cls, model_cls, family_values, extractor_values = _FAMILIES[family]
    values = {**_SMALL, **family_values, **overrides}
    config = config_cls(**values)
    config.architectures = [model_cls.__name__]

    torch.manual_seed(seed)
    model = model_cls(config).eval()

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    extractor_values = dict(extractor_values)
    if do_normalize is not None:
        extractor_values["do_normalize"] = bool(do_normalize)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, **extractor_values
    )
    extractor.save_pretrained(out)
    return out
