"""Utterance-level heads of fine-tuned checkpoints, read from the checkpoint and run per item.

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
  a bare model and the head tensors are read from the checkpoint file (:func:`load_head`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from torch import nn

from embedx.errors import ModelError

__all__ = ["UtteranceHead", "load_head"]

#: checkpoint keys of the heads embedx computes (everything else belongs to the backbone)
_HEAD_PREFIXES = ("projector.", "classifier.", "layer_weights")
_SEQUENCE_KEYS = ("projector.weight", "projector.bias", "classifier.weight", "classifier.bias")
_REGRESSION_KEYS = (
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
)
#: architecture suffixes known to carry no utterance-level head (their checkpoints are not searched)
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


def load_head(
    path: str, model: str, config: transformers.PretrainedConfig, headless: Collection[str] = ()
) -> UtteranceHead | None:
    """The checkpoint's utterance-level head, or ``None`` when it has none embedx computes.

    Args:
        path: local directory of the checkpoint.
        model: its hub id or directory as given (named in messages).
        config: its transformers config.
        headless: architecture names known to carry no head (the family's bare backbones), so
            that their weights files are not searched.

    Returns:
        The :class:`UtteranceHead`, or ``None``.

    Raises:
        ModelError: the config names a ``*ForSequenceClassification`` architecture but the
            checkpoint lacks its head weights.
    """
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and all(
        a in headless or a.endswith(_HEADLESS_SUFFIXES) for a in architectures
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
