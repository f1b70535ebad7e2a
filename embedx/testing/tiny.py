"""Tiny random-weight speech models for tests and demos (no download).

:func:`save_tiny_model` writes a directory that loads through exactly the code path a hub id
takes (``AutoConfig`` / ``AutoModel.from_pretrained(path)`` plus ``preprocessor_config.json``).
The models are small (hidden size 32, 4 blocks) but keep the real feature encoder's kernels and
strides, so their frame arithmetic (400-sample receptive field, 320-sample hop) is that of the
real checkpoints, and the normalisation layout (group-norm vs. layer-norm feature encoder,
stable layer norm) of the family they imitate.

Besides the backbones (:data:`TINY_FAMILIES`) there are checkpoints with heads and a Whisper
model (:data:`ALL_TINY_FAMILIES`):

- ``emotion``: saved like ``audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim`` — a
  stable-layer-norm ``Wav2Vec2Model`` under ``wav2vec2.*`` plus ``classifier.dense`` /
  ``classifier.out_proj`` (3 outputs), config ``architectures`` ``Wav2Vec2ForSpeechClassification``,
  ``problem_type`` regression, ``id2label`` arousal / dominance / valence.
- ``seqclass``: a ``HubertForSequenceClassification`` like ``superb/hubert-large-superb-er``
  (layer-norm, stable layer norm) with 4 labels neu / hap / ang / sad.
- ``whisper``: a ``WhisperForConditionalGeneration`` like ``openai/whisper-*`` (80 mel bins, the
  real 1500 encoder positions = 30 s; d_model 32, 2 encoder blocks) and its
  ``WhisperFeatureExtractor``.

``save_tiny_model(..., bottleneck=(16, 8, 4, 2))`` narrows a backbone's transformer blocks (see
:func:`narrow_blocks`): the built-in example's model, whose layers differ in what a probe can read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertForSequenceClassification,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    Wav2Vec2PreTrainedModel,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from embedx.errors import ConfigError

__all__ = [
    "ALL_TINY_FAMILIES",
    "HEAD_FAMILIES",
    "TINY_FAMILIES",
    "Wav2Vec2ForSpeechClassification",
    "narrow_blocks",
    "save_tiny_model",
]

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

#: the backbone families (wav2vec2-style models without a head)
TINY_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


class _RegressionHead(nn.Module):
    """The audEERING emotion head: dense (hidden -> hidden), tanh, out_proj (hidden -> labels)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


class Wav2Vec2ForSpeechClassification(Wav2Vec2PreTrainedModel):
    """The layout of the audEERING emotion checkpoints (their model card's ``EmotionModel``).

    Used to *write* tiny checkpoints with the same keys (``wav2vec2.*``, ``classifier.dense.*``,
    ``classifier.out_proj.*``) and ``architectures`` as the real ones; embedx itself never needs
    this class to read them.
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = _RegressionHead(config)
        self.post_init()

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled last hidden state and the head's outputs, as the model card's class."""
        pooled = self.wav2vec2(input_values)[0].mean(dim=1)
        return pooled, self.classifier(pooled)


_LARGE = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True,
          "num_conv_pos_embeddings": 16}
# family -> (config class, model class, config values, feature-extractor values)
_HEAD_FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel], dict, dict]] = {
    "emotion": (
        Wav2Vec2Config,
        Wav2Vec2ForSpeechClassification,
        {
            **_LARGE,
            "num_labels": 3,
            "id2label": {0: "arousal", 1: "dominance", 2: "valence"},
            "label2id": {"arousal": 0, "dominance": 1, "valence": 2},
            "problem_type": "regression",
            "finetuning_task": "wav2vec2_reg",
            "final_dropout": 0.1,
        },
        {"do_normalize": True, "return_attention_mask": True},
    ),
    "seqclass": (
        HubertConfig,
        HubertForSequenceClassification,
        {
            **_LARGE,
            "num_labels": 4,
            "id2label": {0: "neu", 1: "hap", 2: "ang", 3: "sad"},
            "label2id": {"neu": 0, "hap": 1, "ang": 2, "sad": 3},
            "classifier_proj_size": 16,
        },
        {"do_normalize": True, "return_attention_mask": True},
    ),
}
_WHISPER: dict[str, Any] = {
    "vocab_size": 64,
    "num_mel_bins": 80,
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "max_source_positions": 1500,
    "max_target_positions": 32,
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 3,
    "decoder_start_token_id": 2,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
}
#: families whose checkpoints carry an utterance-level head
HEAD_FAMILIES: tuple[str, ...] = tuple(_HEAD_FAMILIES)
#: every name accepted by :func:`save_tiny_model`
ALL_TINY_FAMILIES: tuple[str, ...] = (*TINY_FAMILIES, *HEAD_FAMILIES, "whisper")


def save_tiny_model(
    family: str,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    do_normalize: bool | None = None,
    bottleneck: tuple[int, ...] | None = None,
    **overrides: Any,
) -> Path:
    """Build a tiny random-weight model of ``family`` and save it like a hub checkpoint.

    Args:
        family: one of :data:`ALL_TINY_FAMILIES`.
        path: directory to write ``config.json``, ``model.safetensors`` and
            ``preprocessor_config.json`` to (created if missing).
        seed: seed of the weight initialisation; the same seed gives the same weights.
        do_normalize: the feature extractor's ``do_normalize``; ``None`` keeps the family's
            convention (see the module docstring).
        bottleneck: for a backbone family, one rank per transformer block: block ``k`` writes
            through a random rank-``bottleneck[k]`` subspace that outweighs its residual path
            (see :func:`narrow_blocks`); ``None`` keeps the plain random weights.
        **overrides: config values replacing the tiny defaults (e.g. ``num_hidden_layers=2``).

    Returns:
        The directory, loadable with ``AutoModel.from_pretrained``.

    Raises:
        ConfigError: when ``family`` is unknown, or ``bottleneck`` is given for a family that is
            not a backbone or does not hold one rank in ``1..hidden_size`` per block.
    """
    if family not in ALL_TINY_FAMILIES:
        raise ConfigError(
            f"unknown tiny model family {family!r}; accepted: {', '.join(ALL_TINY_FAMILIES)}"
        )
    if bottleneck is not None:
        _check_bottleneck(family, tuple(bottleneck), {**_SMALL, **overrides})
    from transformers.utils import logging as hf_logging

    # transformers draws a "Writing model shards" bar for every save; `embedx synth` prints one line
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _save_tiny_model(family, Path(path), seed, do_normalize, bottleneck, overrides)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()


def _check_bottleneck(family: str, ranks: tuple[int, ...], values: dict[str, Any]) -> None:
    """Refuse a bottleneck that :func:`narrow_blocks` cannot apply to ``family``."""
    if family not in TINY_FAMILIES:
        raise ConfigError(f"bottleneck applies to the backbone families ({', '.join(TINY_FAMILIES)}), "
                          f"not {family!r}")
    blocks, width = int(values["num_hidden_layers"]), int(values["hidden_size"])
    if len(ranks) != blocks or not all(isinstance(r, int) and 1 <= r <= width for r in ranks):
        raise ConfigError(f"bottleneck {ranks!r} must hold one rank per block ({blocks}), "
                          f"each an integer in 1..{width}")


def narrow_blocks(model: PreTrainedModel, ranks: tuple[int, ...], *, gain: float = 1000.0,
                  seed: int = 0) -> None:
    """Make each transformer block write through a random low-rank subspace that dominates.

    Block ``k``'s attention output projection and feed-forward output projection (weights and
    biases) are multiplied by ``gain * P_k``, where ``P_k`` is the orthogonal projector onto a
    random (seeded, label-free) ``ranks[k]``-dimensional subspace. A block's update then
    outweighs its residual input (by one to two orders of magnitude at the tiny models' weight
    scale), so after the block's layer norms over 99% of its output's variance lies in
    ``ranks[k]`` directions plus the layer norm's centring, the rest of the input surviving as a
    faint trace: with decreasing ranks each deeper layer keeps fewer directions of what the
    feature encoder saw, and a linear probe reads less from it. Changes ``model`` in place.

    Args:
        model: a backbone of :data:`TINY_FAMILIES` (``model.encoder.layers``).
        ranks: one rank per block, each in ``1..hidden_size``.
        gain: factor on the block's update, so that it outweighs the residual path.
        seed: seed of the random subspaces.
    """
    generator = torch.Generator().manual_seed(seed)
    width = model.config.hidden_size
    with torch.no_grad():
        for rank, block in zip(ranks, model.encoder.layers, strict=True):
            basis, _ = torch.linalg.qr(torch.randn(width, width, generator=generator))
            projector = basis[:, :rank] @ basis[:, :rank].T  # (width, width), rank `rank`
            for linear in (block.attention.out_proj, block.feed_forward.output_dense):
                linear.weight.copy_(gain * projector @ linear.weight)
                linear.bias.copy_(gain * projector @ linear.bias)


def _save_tiny_model(family: str, out: Path, seed: int, do_normalize: bool | None,
                     bottleneck: tuple[int, ...] | None, overrides: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if family == "whisper":
        config = WhisperConfig(**{**_WHISPER, **overrides})
        torch.manual_seed(seed)
        WhisperForConditionalGeneration(config).eval().save_pretrained(out)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000).save_pretrained(out)
        return out
    config_cls, model_cls, family_values, extractor_values = (
        _FAMILIES[family] if family in _FAMILIES else _HEAD_FAMILIES[family]
    )
    values = {**_SMALL, **family_values, **overrides}
    config = config_cls(**values)
    config.architectures = [model_cls.__name__]

    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if bottleneck is not None:
        narrow_blocks(model, tuple(bottleneck), seed=seed)
    model.save_pretrained(out)
    extractor_values = dict(extractor_values)
    if do_normalize is not None:
        extractor_values["do_normalize"] = bool(do_normalize)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, **extractor_values
    )
    extractor.save_pretrained(out)
    return out
