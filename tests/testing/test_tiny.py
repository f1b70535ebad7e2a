"""The example model's narrowing blocks (embedx.testing.tiny.narrow_blocks), by value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

from embedx.errors import ConfigError
from embedx.testing.synth import DEMO_BOTTLENECK, EMOTIONS, utterance
from embedx.testing.tiny import save_tiny_model


def _hidden_states(path, wave: np.ndarray) -> list[np.ndarray]:
    model = AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(wave)[None], output_hidden_states=True)
    return [h[0].numpy().astype(np.float64) for h in out.hidden_states]  # each (frames, dim)


def _share_outside(frames: np.ndarray, keep: int) -> float:
    """Share of the centred (frames, dim) matrix's variance outside its top ``keep`` directions."""
    power = np.linalg.svd(frames - frames.mean(axis=0), compute_uv=False) ** 2
    return float(power[keep:].sum() / power.sum())


def test_each_block_keeps_only_its_rank_of_directions(tmp_path):
    rng = np.random.default_rng(3)
    waves = [utterance(emotion, f0, shift, 1.5, 16000, rng)
             for emotion in EMOTIONS for f0, shift in ((120.0, 0.9), (200.0, 1.1))]
    narrowed_model = save_tiny_model("hubert", tmp_path / "n", bottleneck=DEMO_BOTTLENECK)
    plain_model = save_tiny_model("hubert", tmp_path / "p")
    # every layer's frames of all 8 utterances: (layers, frames of all, dim)
    narrowed = [np.concatenate(layer)
                for layer in zip(*(_hidden_states(narrowed_model, w) for w in waves), strict=True)]
    plain = [np.concatenate(layer)
             for layer in zip(*(_hidden_states(plain_model, w) for w in waves), strict=True)]
    assert len(narrowed) == len(DEMO_BOTTLENECK) + 1
    # layer 0 is the feature encoder's output, untouched, and uses many directions
    np.testing.assert_allclose(narrowed[0], plain[0], rtol=1e-5, atol=1e-5)
    assert _share_outside(plain[0], 4) > 0.3
    for rank, frames, reference in zip(DEMO_BOTTLENECK, narrowed[1:], plain[1:], strict=True):
        # block k's update lies in `rank` directions (the layer norm's centring adds one): the
        # rest of its input survives as a trace; the plain blocks keep it
        assert _share_outside(frames, rank + 1) < 0.01
        assert _share_outside(reference, rank + 1) > 0.05
        assert _share_outside(frames, max(rank // 2, 1)) > 0.01  # and it uses more than half of them
    # the blocks' output projections have exactly the bottleneck's ranks, the plain ones full rank
    blocks = AutoModel.from_pretrained(narrowed_model).encoder.layers
    plain_blocks = AutoModel.from_pretrained(plain_model).encoder.layers
    for rank, block, plain_block in zip(DEMO_BOTTLENECK, blocks, plain_blocks, strict=True):
        for name in ("attention.out_proj", "feed_forward.output_dense"):
            weight = block.get_submodule(name).weight.detach()  # (32, in_features)
            assert torch.linalg.matrix_rank(weight) == rank
            assert torch.linalg.matrix_rank(plain_block.get_submodule(name).weight.detach()) == 32


def test_same_seed_same_weights(tmp_path):
    a = save_tiny_model("wavlm", tmp_path / "a", bottleneck=(8, 4, 2, 1))
    b = save_tiny_model("wavlm", tmp_path / "b", bottleneck=(8, 4, 2, 1))
    wa, wb = (AutoModel.from_pretrained(p).encoder.layers[2].attention.out_proj.weight for p in (a, b))
    assert torch.equal(wa, wb) and torch.linalg.matrix_rank(wa.detach()) == 2


@pytest.mark.parametrize("family, bottleneck, message", [
    ("hubert", (16, 8, 4), "one rank per block (4)"),
    ("hubert", (16, 8, 4, 0), "each an integer in 1..32"),
    ("hubert", (16, 8, 4, 33), "each an integer in 1..32"),
    ("seqclass", (16, 8, 4, 2), "backbone families"),
])
def test_bad_bottleneck_is_refused(tmp_path, family, bottleneck, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        save_tiny_model(family, tmp_path / "m", bottleneck=bottleneck)
    assert not (tmp_path / "m").exists()  # refused before anything is written
