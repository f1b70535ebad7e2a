"""The Hugging Face backend: exact padded batches, layer numbering, frames, short items, errors.

Every model is a tiny random-weight one written by ``save_tiny_model`` into a temp dir and
loaded back through the same code path as a hub id; references are plain transformers forwards
of one item at a time, normalised by the checkpoint's own ``Wav2Vec2FeatureExtractor``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, Wav2Vec2FeatureExtractor

import embedx
from embedx.backends import create_backend
from embedx.backends.hf import HFBackend
from embedx.backends.padding import MaskedGroupNorm, conv_output_length
from embedx.errors import AudioError, ConfigError, ModelError
from embedx.testing.tiny import TINY_FAMILIES, save_tiny_model
from tests.conftest import fake_hub_cache

SR = 16000
TOL = 1e-4  # max |batched - alone| / max |alone|, per layer and item


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny checkpoint per family (4 blocks, hidden size 32)."""
    root = tmp_path_factory.mktemp("tiny")
    return {family: str(save_tiny_model(family, root / family)) for family in TINY_FAMILIES}


@pytest.fixture(scope="module")
def backends(tiny: dict[str, str]) -> dict[str, HFBackend]:
    return {family: HFBackend(path, device="cpu") for family, path in tiny.items()}


def _time(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def signals() -> list[np.ndarray]:
    """A tone with DC offset (1.2 s), a chirp (0.55 s), noise (0.3 s) and a 26 ms blip."""
    rng = np.random.default_rng(0)
    t1, t2, t4 = _time(1.2), _time(0.55), _time(0.026)
    waves = [
        0.3 * np.sin(2 * np.pi * 220 * t1) + 0.05,
        0.2 * np.sin(2 * np.pi * (100 + 1500 * t2) * t2),
        0.05 * rng.standard_normal(int(0.3 * SR)),
        0.1 * np.sin(2 * np.pi * 440 * t4) + 0.01 * rng.standard_normal(t4.size),
    ]
    return [w.astype(np.float32) for w in waves]


def reference(path: str, wave: np.ndarray) -> tuple[torch.Tensor, ...]:
    """All hidden states of ``wave`` run alone through the stock model and feature extractor."""
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    inputs = extractor(wave, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        return model(inputs["input_values"], output_hidden_states=True).hidden_states


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def run(backend: HFBackend, waves: list[np.ndarray], layers: list[int] | None = None):
    prepared = [backend.fit_length(backend.prepare(w)) for w in waves]
    return backend.forward(
        prepared, layers if layers is not None else list(range(backend.num_layers))
    )


# --- exactness ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_padded_batch_equals_one_by_one(family, tiny, backends):
    backend = backends[family]
    waves = signals()
    out = run(backend, waves)
    assert out.hidden.shape == (backend.num_layers, len(waves), max(out.lengths), backend.dim)
    assert out.hidden.dtype == torch.float32 and out.lengths.dtype == torch.int64
    for i, wave in enumerate(waves):
        ref = reference(tiny[family], wave)
        assert len(ref) == backend.num_layers
        n = ref[0].shape[1]
        assert int(out.lengths[i]) == n == backend.num_frames(wave.size)
        for layer in range(backend.num_layers):
            err = rel_err(out.hidden[layer, i, :n], ref[layer][0])
            assert err < TOL, f"{family} item {i} layer {layer}: {err:.2e}"


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_naive_padded_batch_is_not_exact(family, tiny):
    """The stock model on a masked, zero-padded batch drifts (group norm; data2vec's pos conv)."""
    model = AutoModel.from_pretrained(tiny[family]).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(tiny[family])
    waves = signals()[:2]
    inputs = extractor(
        waves, sampling_rate=SR, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    with torch.inference_mode():
        naive = model(**inputs, output_hidden_states=True).hidden_states
    ref = reference(tiny[family], waves[1])
    n = ref[0].shape[1]
    assert rel_err(naive[-1][1, :n], ref[-1][0]) > 0.05


def test_masked_group_norm_matches_group_norm_alone():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(8, 8, affine=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    masked = MaskedGroupNorm(norm)
    assert masked.weight is norm.weight and set(masked.state_dict()) == set(norm.state_dict())
    x = torch.randn(3, 8, 50)
    x[1, :, 30:] = 0.0
    x[2, :, 12:] = 0.0
    masked.valid_lengths = [50, 30, 12]
    out = masked(x)
    for i, n in enumerate([50, 30, 12]):
        # one vectorised pass for the batch: equal to the item alone within float32 rounding
        torch.testing.assert_close(out[i : i + 1, :, :n], norm(x[i : i + 1, :, :n]), rtol=0, atol=2e-6)
        assert not out[i, :, n:].any()
    masked.valid_lengths = None
    assert torch.equal(masked(x), norm(x))


def test_repairs_are_inert_outside_forward(tiny, backends):
    """backend.model keeps stock behaviour (and all its blocks) between forwards."""
    backend = backends["data2vec-audio"]
    run(backend, signals(), [1])
    assert len(backend.model.encoder.layers) == 4
    stock = AutoModel.from_pretrained(tiny["data2vec-audio"]).eval()
    x = torch.from_numpy(np.stack([signals()[0][:8000], np.pad(signals()[1][:4000], (0, 4000))]))
    mask = torch.zeros(2, 8000, dtype=torch.long)
    mask[0] = 1
    mask[1, :4000] = 1
    with torch.inference_mode():
        a = backend.model(x, attention_mask=mask, output_hidden_states=True).hidden_states
        b = stock(x, attention_mask=mask, output_hidden_states=True).hidden_states
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


# --- layers ---------------------------------------------------------------------------------


def test_early_stop_is_bitwise(backends):
    backend = backends["hubert"]
    waves = signals()
    full = run(backend, waves)
    some = run(backend, waves, [2, 0])  # returned in the order asked
    assert some.hidden.shape[0] == 2
    assert torch.equal(some.hidden[0], full.hidden[2])
    assert torch.equal(some.hidden[1], full.hidden[0])
    only_input = run(backend, waves, [0])
    assert torch.equal(only_input.hidden[0], full.hidden[0])
    assert len(backend.model.encoder.layers) == 4


def test_stable_layer_norm_last_layer_is_before_final_norm(tiny, backends):
    """transformers 5.x returns block L's output before the encoder's final LayerNorm."""
    backend = backends["wav2vec2-large"]
    wave = signals()[0]
    model = AutoModel.from_pretrained(tiny["wav2vec2-large"]).eval()
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(tiny["wav2vec2-large"])(
        wave, sampling_rate=SR, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model(inputs["input_values"], output_hidden_states=True)
        post_ln = model.encoder.layer_norm(out.hidden_states[-1])
    assert not torch.allclose(out.hidden_states[-1], out.last_hidden_state, atol=1e-3)
    assert torch.allclose(post_ln, out.last_hidden_state, atol=1e-6)
    ours = run(backend, [wave], [backend.num_layers - 1]).hidden[0, 0]
    assert rel_err(ours, out.hidden_states[-1][0]) < TOL  # embedx stores the pre-LN state
    assert backend.metadata()["last_layer_before_final_norm"] is True

    post = backends["wav2vec2"]  # post-LN model: layer L is the last hidden state
    base = AutoModel.from_pretrained(tiny["wav2vec2"]).eval()
    with torch.inference_mode():
        out = base(torch.from_numpy(post.prepare(wave))[None], output_hidden_states=True)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_bad_layers_raise(backends):
    backend = backends["hubert"]
    with pytest.raises(ConfigError, match="out of range"):
        run(backend, signals()[:1], [5])
    with pytest.raises(ConfigError):
        run(backend, signals()[:1], [])


# --- frames and short items -----------------------------------------------------------------


def test_num_frames_matches_the_model(backends):
    backend = backends["wav2vec2"]
    model = backend.model
    assert backend.min_samples == 400 and backend.frame_rate == 50.0 and backend.sample_rate == SR
    lengths = [400, 401, 719, 720, 721, 1039, 1040, 16000, 16001, 19200]
    for n in lengths:
        expected = (n - 400) // 320 + 1
        with torch.inference_mode():
            actual = model.feature_extractor(torch.zeros(1, n)).shape[-1]
        assert backend.num_frames(n) == expected == actual, n
    assert backend.num_frames(399) == 0 and backend.num_frames(0) == 0
    # the frame mask transformers derives from the sample mask has the same lengths
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    frames = model._get_feat_extract_output_lengths(torch.tensor(lengths))
    frame_mask = model._get_feature_vector_attention_mask(int(frames.max()), mask)
    assert frame_mask.sum(-1).tolist() == [backend.num_frames(n) for n in lengths]
    assert conv_output_length(400, (10, 3), (5, 2)) == 39


def test_short_pad_gives_one_frame_equal_to_padded_item(tiny, backends):
    backend = backends["wav2vec2"]
    wave = signals()[2][:200]
    fitted = backend.fit_length(backend.prepare(wave))
    assert fitted.shape == (400,) and not fitted[200:].any()
    out = backend.forward([fitted, backend.prepare(signals()[0])], list(range(backend.num_layers)))
    assert out.lengths.tolist()[0] == 1
    model = AutoModel.from_pretrained(tiny["wav2vec2"]).eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(fitted)[None], output_hidden_states=True).hidden_states
    for layer in range(backend.num_layers):
        assert rel_err(out.hidden[layer, 0, :1], ref[layer][0]) < TOL


def test_short_fail_and_forward_refuse_short_items(tiny, backends):
    strict = HFBackend(tiny["hubert"], device="cpu", short="fail")
    with pytest.raises(AudioError, match=r"200 samples.*400"):
        strict.fit_length(strict.prepare(np.zeros(200, np.float32)))
    assert strict.fit_length(np.zeros(400, np.float32)).shape == (400,)
    with pytest.raises(AudioError, match="399"):
        backends["hubert"].forward([np.zeros(399, np.float32)], [0])


# --- input normalisation --------------------------------------------------------------------


def test_prepare_follows_the_checkpoint(tmp_path, backends):
    wave = signals()[0]
    normalising = backends["wav2vec2"]
    assert normalising.do_normalize is True
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(wave, sampling_rate=SR)["input_values"][
        0
    ]
    np.testing.assert_array_equal(normalising.prepare(wave), expected)

    assert backends["hubert"].do_normalize is False  # like hubert-base-ls960
    plain = HFBackend(
        str(save_tiny_model("wav2vec2", tmp_path / "plain", do_normalize=False)), device="cpu"
    )
    assert plain.do_normalize is False
    np.testing.assert_array_equal(plain.prepare(wave), wave)
    assert plain.metadata()["do_normalize_source"] == "preprocessor_config.json"


def test_missing_preprocessor_config_uses_family_default(tmp_path):
    for family, expected in [("hubert", False), ("wav2vec2-large", True)]:
        path = save_tiny_model(family, tmp_path / family, num_hidden_layers=1)
        (path / "preprocessor_config.json").unlink()
        backend = HFBackend(str(path), device="cpu")
        assert backend.do_normalize is expected
        assert backend.metadata()["do_normalize_source"] == "default"
        assert backend.sample_rate == SR


def test_preparer_is_cheap_to_pickle(backends):
    backend = backends["wav2vec2"]
    blob = pickle.dumps(backend.preparer)
    assert len(blob) < 1000
    restored = pickle.loads(blob)
    wave = signals()[3][:100]
    np.testing.assert_array_equal(restored(wave), backend.fit_length(backend.prepare(wave)))


# --- attention and precision ----------------------------------------------------------------


def test_sdpa_matches_eager(tiny, backends):
    sdpa = backends["hubert"]
    eager = HFBackend(tiny["hubert"], device="cpu", attn="eager")
    assert sdpa.attn == "sdpa" and sdpa.model.config._attn_implementation == "sdpa"
    assert eager.model.config._attn_implementation == "eager"
    waves = signals()
    a, b = run(sdpa, waves), run(eager, waves)
    for layer in range(sdpa.num_layers):
        for i, n in enumerate(a.lengths.tolist()):
            assert rel_err(a.hidden[layer, i, :n], b.hidden[layer, i, :n]) < TOL


def test_wavlm_has_no_sdpa(tiny, backends):
    assert backends["wavlm"].attn == "eager"
    with pytest.raises(ConfigError, match="sdpa"):
        HFBackend(tiny["wavlm"], device="cpu", attn="sdpa")


def test_bf16_on_cpu_is_close_to_fp32(tiny, backends):
    fp32 = backends["wav2vec2"]
    bf16 = HFBackend(tiny["wav2vec2"], device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    waves = signals()
    a, b = run(fp32, waves), run(bf16, waves)
    assert b.hidden.dtype == torch.float32
    for i, n in enumerate(a.lengths.tolist()):
        cos = torch.nn.functional.cosine_similarity(
            a.hidden[:, i, :n].mean(1), b.hidden[:, i, :n].mean(1), dim=-1
        )  # (num_layers,)
        assert bool((cos > 0.99).all()), cos


# --- loading, options, metadata -------------------------------------------------------------


def test_attributes_metadata_and_registry(tiny, backends):
    backend = create_backend("hf", model=tiny["wavlm"], device="cpu")
    assert isinstance(backend, HFBackend)
    assert backend.name == "wavlm" and backend.num_layers == 5 and backend.dim == 32
    assert backend.head_names == {} and backend.device == torch.device("cpu")
    assert backend.precision == "fp32"  # the default; auto resolves to fp32 on cpu as well
    assert HFBackend(tiny["wavlm"], device="auto", precision="auto", name="x").name == "x"
    meta = backends["wav2vec2-large"].metadata()
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())
    assert meta["model_type"] == "wav2vec2" and meta["architectures"] == "Wav2Vec2Model"
    assert meta["feat_extract_norm"] == "layer" and meta["do_stable_layer_norm"] is True
    assert meta["commit_hash"] == "" and meta["attn_implementation"] == "sdpa"
    assert meta["num_hidden_layers"] == 4 and meta["hidden_size"] == 32


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        HFBackend(str(tmp_path / "missing"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        HFBackend(str(tmp_path / "empty"), device="cpu")
    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    ).save_pretrained(bert)
    with pytest.raises(ModelError, match="'bert'.*wav2vec2"):
        HFBackend(str(bert), device="cpu")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": "tpu"}, "unknown device"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"device": "cpu", "precision": "fp16"}, "fp16"),
        ({"short": "drop"}, "short-item policy"),
        ({"attn": "flash"}, "attention implementation"),
    ],
)
def test_bad_options_raise_config_error(tiny, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HFBackend(tiny["hubert"], **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        HFBackend(tiny["hubert"], device="cuda")


def test_sequence_classification_checkpoint_loads_backbone(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    src = save_tiny_model("wav2vec2", tmp_path / "backbone", num_hidden_layers=1)
    config = Wav2Vec2Config.from_pretrained(src)
    config.num_labels = 3
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(tmp_path / "cls")
    (tmp_path / "cls" / "preprocessor_config.json").write_text(
        json.dumps(json.loads((src / "preprocessor_config.json").read_text()))
    )
    backend = HFBackend(str(tmp_path / "cls"), device="cpu")
    assert type(backend.model).__name__ == "Wav2Vec2Model"
    assert backend.metadata()["architectures"] == "Wav2Vec2ForSequenceClassification"
    assert run(backend, signals()[:2]).hidden.shape[:2] == (2, 2)


def test_broken_reduced_precision_is_refused_or_close(tmp_path):
    """8 channels per positional-conv group trips a oneDNN bf16 bug on some CPUs: never garbage."""
    path = save_tiny_model("hubert", tmp_path / "g4", num_conv_pos_embedding_groups=4)
    fp32 = HFBackend(str(path), device="cpu")
    try:
        bf16 = HFBackend(str(path), device="cpu", precision="bf16")
    except ConfigError as exc:
        assert "fp32" in str(exc)
        return
    a, b = run(fp32, signals()[:1], [0]), run(bf16, signals()[:1], [0])
    assert (
        torch.nn.functional.cosine_similarity(a.hidden.flatten(), b.hidden.flatten(), dim=0) > 0.99
    )


def test_hub_id_loads_offline_from_the_cache_with_its_commit(tiny, tmp_path):
    """A hub id resolves through the HF cache (offline) and records the snapshot's commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    fake_hub_cache(tmp_path, tiny["hubert"], "fake-org/tiny-hubert", commit)
    script = (
        "from embedx.backends.hf import HFBackend\n"
        "from embedx.errors import ModelError\n"
        "b = HFBackend('fake-org/tiny-hubert', device='cpu')\n"
        "print(b.name, b.metadata()['commit_hash'], b.metadata()['model_id'])\n"
        "try:\n"
        "    HFBackend('fake-org/absent', device='cpu')\n"
        "except ModelError as exc:\n"
        "    print('ModelError', len(str(exc).splitlines()), 'HF_HUB_OFFLINE=1' in str(exc))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    root = os.path.dirname(os.path.dirname(embedx.__file__))  # so the child imports this embedx
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2] == f"tiny-hubert {commit} fake-org/tiny-hubert"
    assert lines[-1] == "ModelError 1 True"


def test_unreachable_hub_is_one_line_or_the_cache(tiny, tmp_path):
    """Hub down (connection refused), not offline mode: a cached model loads with its commit;
    an uncached one fails fast in one line that names HF_HUB_OFFLINE=1 and a local directory,
    without huggingface_hub's retry chatter."""
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    fake_hub_cache(tmp_path, tiny["hubert"], "fake-org/tiny-hubert", commit)
    script = (
        "import time\n"
        "from embedx.backends import create_backend\n"
        "from embedx.errors import ModelError\n"
        "b = create_backend('hf', model='fake-org/tiny-hubert', device='cpu')\n"
        "print(b.metadata()['commit_hash'])\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    create_backend('hf', model='fake-org/absent', device='cpu')\n"
        "except ModelError as exc:\n"
        "    print(time.perf_counter() - t)\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    # port 9 (discard) on loopback: nothing listens, so every request is refused at once
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "hub"))
    root = os.path.dirname(os.path.dirname(embedx.__file__))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    cached_commit, seconds, message = done.stdout.splitlines()[-3:]
    assert cached_commit == commit
    assert float(seconds) < 5  # one request, no retries with back-off
    assert "fake-org/absent" in message and "HF_HUB_OFFLINE=1" in message
    assert "local model directory" in message and "cannot reach the Hugging Face hub" in message
    assert "Retry" not in done.stderr and "Retry" not in done.stdout
