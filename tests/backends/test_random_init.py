"""--random-init: the checkpoint's architecture with seeded random weights, from its config alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from embedx.backends.hf import HFBackend
from embedx.errors import ConfigError
from embedx.extraction.config import config_from_options


def _weights(backend):
    return torch.cat([p.detach().flatten() for p in backend.model.parameters()])


def test_random_init_is_seeded_needs_only_the_config_and_is_named_random(tiny_model, tmp_path):
    trained_dir = tiny_model("hubert")
    config_only = tmp_path / "config-only"
    shutil.copytree(trained_dir, config_only)
    (config_only / "model.safetensors").unlink()  # the weights are never read
    trained = HFBackend(str(trained_dir), device="cpu")
    a = HFBackend(str(config_only), device="cpu", random_init=True, seed=3)
    b = HFBackend(str(trained_dir), device="cpu", random_init=True, seed=3)
    c = HFBackend(str(trained_dir), device="cpu", random_init=True, seed=4)
    assert a.name == "config-only-random" and b.name == f"{trained_dir.name}-random"
    assert type(a.model) is type(trained.model) and a.num_layers == trained.num_layers and a.dim == trained.dim
    torch.testing.assert_close(_weights(a), _weights(b), rtol=0, atol=0)  # same seed, same weights
    assert not torch.equal(_weights(b), _weights(c))
    assert not torch.equal(_weights(b), _weights(trained))
    meta = b.metadata()
    assert meta["random_init"] is True and meta["init_seed"] == 3 and trained.metadata()["random_init"] is False
    wave = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    out_a, out_b = a.forward([wave], [0, 1, 2]), b.forward([wave], [0, 1, 2])
    torch.testing.assert_close(torch.as_tensor(out_a.hidden), torch.as_tensor(out_b.hidden), rtol=0, atol=0)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    HFBackend(str(trained_dir), device="cpu", random_init=True, seed=5)
    assert torch.equal(torch.rand(3), expected)  # the global generator is left alone


def test_random_init_options():
    config = config_from_options({"model": "m", "random_init": True, "seed": 7})
    assert config.backend_options == {"random_init": True, "seed": 7}
    assert config_from_options({"model": "m", "random_init": True}).backend_options["seed"] == 1
    with pytest.raises(ConfigError, match="seed=7 seeds the weights of random_init=True"):
        config_from_options({"model": "m", "seed": 7})
    with pytest.raises(ConfigError, match="random_init=True needs a model of the hf backend"):
        config_from_options({"opensmile": "egemaps", "random_init": True})
    with pytest.raises(ConfigError, match="seed must be a non-negative integer; got -1"):
        HFBackend("unused", device="cpu", random_init=True, seed=-1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`embedx synth demo`, small: 8 items of 4 speakers and the demo's tiny model."""
    from embedx.testing.synth import make_example

    return make_example(tmp_path_factory.mktemp("demo") / "demo", num_items=8, num_speakers=4)


def test_a_named_random_init_set_is_stored_as_name_random_through_the_cli(demo, tmp_path):
    from embedx.store import StoreReader
    from tests.clirun import run_embedx

    out = tmp_path / "feats.h5"
    for name in ("hub", "mine-random"):  # a name that already ends in -random is kept as given
        done = run_embedx("extract", "--model", demo.model_dir, "--random-init", "--name", name,
                          demo.audio_dir, "-o", out)
        assert done.returncode == 0, done.stderr
    with StoreReader(out) as store:
        assert store.feature_sets() == ["hub-random", "mine-random"]


def test_random_name():
    from embedx.store.spec import random_name

    assert random_name("hub", False) == "hub" and random_name("hub", True) == "hub-random"
    assert random_name("hub", True, explicit=True) == "hub-random"
    assert random_name("x-random", True, explicit=True) == "x-random"
    assert random_name("x-random", True) == "x-random-random"  # a model folder named so: suffixed


def test_the_demo_random_init_control_with_its_default_seed_is_not_the_demo_model(demo, tmp_path):
    """The demo model is saved with seed 0; the control's default seed must draw other weights
    (seed 0 rebuilt the demo's own layer 0 exactly: a control equal to the model)."""
    from embedx.store import StoreReader
    from tests.clirun import run_embedx

    out = tmp_path / "feats.h5"
    for extra in ((), ("--random-init",)):
        done = run_embedx("extract", "--model", demo.model_dir, *extra, demo.audio_dir, "-o", out)
        assert done.returncode == 0, done.stderr
    with StoreReader(out) as store:
        assert store.feature_sets() == ["tiny-hubert", "tiny-hubert-random"]
        trained, control = store.pooled("tiny-hubert", "mean", 0), store.pooled("tiny-hubert-random", "mean", 0)
    assert trained.shape == control.shape == (demo.num_items, 32)
    # different weights: no item's layer-0 mean is close to the trained one
    gap = np.abs(trained - control).max(axis=1) / np.abs(trained).max(axis=1)
    assert gap.min() > 0.1, gap
