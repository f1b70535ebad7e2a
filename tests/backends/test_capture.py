"""Weights cast once for autocast: the same values as autocast's per-forward casts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedx.backends.capture import cast_autocast_weights
from embedx.backends.hf import HFBackend
from embedx.errors import ConfigError
from embedx.testing.tiny import TINY_FAMILIES


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_weights_cast_once_give_the_same_bf16_forward(family, tiny_model):
    try:
        backend = HFBackend(str(tiny_model(family)), device="cpu", precision="bf16")
    except ConfigError:  # this CPU's bf16 kernels are refused for the model (see _check_precision)
        pytest.skip("bf16 refused on this CPU")
    assert all(p.dtype == torch.float32 for p in backend.model.parameters())  # the CPU keeps fp32
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (3000, 1800, 900)]
    layers = list(range(backend.num_layers))
    before = backend.forward(waves, layers).hidden
    cast = cast_autocast_weights(backend.model, "bf16")
    linears = [m for m in backend.model.modules() if type(m) is torch.nn.Linear]
    assert cast > len(linears) > 0 and all(m.weight.dtype == torch.bfloat16 for m in linears)
    norms = [m for m in backend.model.modules()
             if isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm) and m.weight is not None]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)  # fp32-list ops keep fp32
    assert torch.equal(backend.forward(waves, layers).hidden, before)


def test_fp32_casts_nothing(tiny_model):
    backend = HFBackend(str(tiny_model("hubert")), device="cpu")
    assert cast_autocast_weights(backend.model, "fp32") == 0
    assert all(p.dtype == torch.float32 for p in backend.model.parameters())
