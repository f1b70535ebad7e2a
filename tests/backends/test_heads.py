"""Heads of *ForSequenceClassification and audEERING emotion checkpoints (hf backend).

References: transformers' own ``AutoModelForAudioClassification`` forward of one item alone, and
the audEERING model card's ``EmotionModel`` class (written out below, with ``post_init()`` as
transformers 5.x needs), also run on one item alone.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForAudioClassification,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    Wav2Vec2PreTrainedModel,
)

from embedx.backends import create_backend
from embedx.backends.hf import HFBackend
from embedx.errors import ModelError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.store import StoreReader
from embedx.testing.tiny import save_tiny_model
from tests.conftest import fake_hub_cache

SR = 16000
TOL = 1e-4


# --- the model card's classes (audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim) ------------


class RegressionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features, **kwargs):
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        x = self.dropout(x)
        return self.out_proj(x)


class EmotionModel(Wav2Vec2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = RegressionHead(config)
        self.post_init()  # the card's init_weights() fails on transformers 5.x

    def forward(self, input_values):
        hidden_states = self.wav2vec2(input_values)[0]
        hidden_states = torch.mean(hidden_states, dim=1)
        return hidden_states, self.classifier(hidden_states)


# --- helpers ----------------------------------------------------------------------------------


def signals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.1 * SR)) / SR
    return [
        (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05).astype(np.float32),
        (0.05 * rng.standard_normal(int(0.45 * SR))).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 90 * t[: int(0.2 * SR)])).astype(np.float32),
        (0.1 * rng.standard_normal(300)).astype(np.float32),  # < 400 samples: padded to one frame
    ]


def alone(path, wave: np.ndarray) -> torch.Tensor:
    """The checkpoint's normalised input for one item, zero-padded to 400 samples if shorter."""
    x = Wav2Vec2FeatureExtractor.from_pretrained(path)(wave, sampling_rate=SR, return_tensors="pt")
    values = x["input_values"]
    if values.shape[1] < 400:
        values = nn.functional.pad(values, (0, 400 - values.shape[1]))
    return values


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max())


def run(backend: HFBackend, waves, layers=None):
    prepared = [backend.fit_length(backend.prepare(w)) for w in waves]
    return backend.forward(prepared, layers if layers is not None else list(range(backend.num_layers)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    paths = {f: save_tiny_model(f, root / f) for f in ("emotion", "seqclass")}
    # a base-style (group-norm) classifier that reads the weighted sum of all hidden states,
    # with non-uniform layer weights
    src = save_tiny_model("seqclass", root / "w0", feat_extract_norm="group", do_stable_layer_norm=False,
                          conv_bias=False, use_weighted_layer_sum=True)
    model = AutoModelForAudioClassification.from_pretrained(src)
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0]))
    model.save_pretrained(root / "weighted")
    shutil.copy(src / "preprocessor_config.json", root / "weighted")
    paths["weighted"] = root / "weighted"
    return paths


# --- sequence classification ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seqclass", "weighted"])
def test_classification_heads_equal_the_model_on_each_item_alone(kind, tiny):
    path = tiny[kind]
    backend = create_backend("hf", model=str(path), device="cpu")
    assert isinstance(backend, HFBackend) and type(backend.model).__name__ == "HubertModel"
    assert backend.head_names == {"logits": ["neu", "hap", "ang", "sad"],
                                  "probs": ["neu", "hap", "ang", "sad"]}
    assert backend.metadata()["head"] == "sequence-classification"
    waves = signals()
    out = run(backend, waves)
    reference = AutoModelForAudioClassification.from_pretrained(path).eval()
    assert out.heads["logits"].shape == (len(waves), 4) and out.heads["probs"].dtype == np.float32
    for i, wave in enumerate(waves):
        x = alone(path, wave)
        with torch.inference_mode():
            result = reference(x, output_hidden_states=True)
        logits, states = result.logits[0], result.hidden_states
        assert rel_err(out.heads["logits"][i], logits) < TOL, (kind, i)
        assert rel_err(out.heads["probs"][i], logits.softmax(-1)) < TOL
        n = int(out.lengths[i])
        for layer in range(backend.num_layers):
            assert rel_err(out.hidden[layer, i, :n], states[layer][0]) < TOL, (kind, i, layer)


def test_a_head_runs_every_block_even_for_low_layers(tiny):
    backend = HFBackend(str(tiny["weighted"]), device="cpu")
    full = run(backend, signals()[:2])
    low = run(backend, signals()[:2], [1, 0])
    assert low.hidden.shape[0] == 2 and torch.equal(low.hidden[0], full.hidden[1])
    for name in ("logits", "probs"):
        assert np.array_equal(low.heads[name], full.heads[name])


def test_classification_checkpoint_without_its_head_is_refused(tiny, tmp_path):
    backbone = AutoModel.from_pretrained(tiny["seqclass"])
    backbone.save_pretrained(tmp_path / "cut")
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    config["architectures"] = ["HubertForSequenceClassification"]
    (tmp_path / "cut" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="HubertForSequenceClassification.*no projector.weight"):
        HFBackend(str(tmp_path / "cut"), device="cpu")


def test_backbones_have_no_head(tiny, tmp_path):
    backend = HFBackend(str(save_tiny_model("hubert", tmp_path / "h")), device="cpu")
    assert backend.head is None and backend.head_names == {}
    assert run(backend, signals()[:1]).heads == {} and backend.metadata()["head"] == ""


# --- audEERING emotion checkpoints ----------------------------------------------------------------


def test_emotion_checkpoint_is_saved_like_the_real_one(tiny):
    config = json.loads((tiny["emotion"] / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ForSpeechClassification"]
    assert config["id2label"] == {"0": "arousal", "1": "dominance", "2": "valence"}
    assert config["problem_type"] == "regression" and config["do_stable_layer_norm"] is True
    from safetensors import safe_open

    with safe_open(str(tiny["emotion"] / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert {k for k in keys if k.startswith("classifier.")} == {
        "classifier.dense.weight", "classifier.dense.bias",
        "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert all(k.startswith(("wav2vec2.", "classifier.")) for k in keys)


def test_emotion_heads_equal_the_model_card_class_on_each_item_alone(tiny):
    path = tiny["emotion"]
    backend = create_backend("hf", model=str(path), device="cpu")
    assert type(backend.model).__name__ == "Wav2Vec2Model"
    assert backend.head_names == {"logits": ["arousal", "dominance", "valence"]}
    assert backend.metadata()["head"] == "regression"
    waves = signals()
    out = run(backend, waves)
    reference = EmotionModel.from_pretrained(path).eval()
    for i, wave in enumerate(waves):
        x = alone(path, wave)
        with torch.inference_mode():
            states = reference.wav2vec2(x, output_hidden_states=True)
            pooled = states.last_hidden_state.mean(dim=1)
            logits = reference.classifier(pooled)
            assert torch.equal(logits, reference(x)[1])  # what the card's forward returns
        states = states.hidden_states
        assert rel_err(out.heads["logits"][i], logits[0]) < TOL, i
        n = int(out.lengths[i])
        for layer in range(backend.num_layers):
            assert rel_err(out.hidden[layer, i, :n], states[layer][0]) < TOL, (i, layer)
        # the head reads last_hidden_state (after the final LayerNorm); layer L is before it
        assert rel_err(out.hidden[-1, i, :n].mean(0), pooled[0]) > 1e-2


@pytest.mark.parametrize("layout", ["bin", "EmotionModel"])
def test_emotion_head_loads_from_bin_files_and_other_architecture_names(layout, tiny, tmp_path):
    model = EmotionModel.from_pretrained(tiny["emotion"])
    dest = tmp_path / layout
    if layout == "bin":  # the real checkpoint's original format
        model.config.architectures = ["EmotionModel"]
        model.config.save_pretrained(dest)
        torch.save(model.state_dict(), dest / "pytorch_model.bin")
    else:
        model.save_pretrained(dest)
    shutil.copy(tiny["emotion"] / "preprocessor_config.json", dest)
    assert json.loads((dest / "config.json").read_text())["architectures"] == ["EmotionModel"]
    waves = signals()[:2]
    expected = run(HFBackend(str(tiny["emotion"]), device="cpu"), waves).heads["logits"]
    got = run(HFBackend(str(dest), device="cpu"), waves).heads["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_extract_stores_heads_with_their_names(tiny, write_audio, tmp_path):
    for k, wave in enumerate(signals()[:3]):
        write_audio(f"w/{k}.wav", wave, SR)
    long = np.concatenate([signals()[0]] * 3)  # 3.3 s, run in 2-s chunks
    write_audio("w/long.wav", long, SR)
    config = ExtractConfig(model=str(tiny["emotion"]), layers="-1", device="cpu", workers=0,
                           progress=False, max_chunk_seconds=2.0)
    assert extract([str(tmp_path / "w")], tmp_path / "f.h5", config).processed == 4
    backend = HFBackend(str(tiny["emotion"]), device="cpu")
    with StoreReader(tmp_path / "f.h5") as r:
        name = r.feature_sets()[0]
        assert r.spec(name).heads == {"logits": ("arousal", "dominance", "valence")}
        values, names = r.heads(name, "logits")
        assert names == ["arousal", "dominance", "valence"] and values.shape == (4, 3)
        for idx, path in enumerate(r.items["path"]):
            wave = np.asarray(load_wave(path))
            if path.endswith("long.wav"):
                # documented approximation: the frame-weighted mean of the chunks' heads
                from embedx.extraction.batching import chunk_spans

                prepared = backend.prepare(wave)
                spans = chunk_spans(prepared.size, 2 * SR, 320, 400)
                assert len(spans) == 2
                parts = [run(backend, [prepared[s.start:s.stop]], [0]).heads["logits"][0]
                         for s in spans]
                weights = np.array([s.num_frames for s in spans], dtype=np.float64)
                expected = (np.stack(parts) * (weights / weights.sum())[:, None]).sum(0)
                np.testing.assert_allclose(values[idx], expected, rtol=1e-4, atol=1e-6)
            else:
                expected = run(backend, [wave], [0]).heads["logits"][0]
                np.testing.assert_allclose(values[idx], expected, rtol=1e-4, atol=1e-6)


def load_wave(path: str) -> np.ndarray:
    from embedx.extraction.audio import load

    return load(path, SR)


def test_emotion_hub_id_loads_offline_from_the_cache(tiny, tmp_path):
    """A hub id in the HF cache (offline) gives the backbone and the head, no remote code."""
    import os
    import subprocess
    import sys

    import embedx

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    fake_hub_cache(tmp_path, tiny["emotion"], "audeering/tiny-emotion", commit)
    script = (
        "import json\n"
        "import numpy as np\n"
        "from embedx.backends import create_backend\n"
        "b = create_backend('hf', model='audeering/tiny-emotion', device='cpu')\n"
        "x = np.sin(np.arange(8000, dtype=np.float32) / 9)\n"
        "out = b.forward([b.prepare(x)], [0])\n"
        "print(b.head_names['logits'], b.metadata()['commit_hash'])\n"
        "print(json.dumps(out.heads['logits'][0].tolist()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    root = os.path.dirname(os.path.dirname(embedx.__file__))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    names, logits = done.stdout.splitlines()[-2:]
    assert names == f"['arousal', 'dominance', 'valence'] {commit}"
    backend = HFBackend(str(tiny["emotion"]), device="cpu")
    x = np.sin(np.arange(8000, dtype=np.float32) / 9)
    expected = backend.forward([backend.prepare(x)], [0]).heads["logits"][0]
    np.testing.assert_allclose(json.loads(logits), expected, rtol=1e-6)
