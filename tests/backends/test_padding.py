"""The masked GroupNorm: equal to each item alone, and a fixed number of operations per batch.

The reference is ``torch.nn.functional.group_norm`` on every unpadded item separately; the
operation count is taken with a ``TorchDispatchMode`` that counts every aten call of a forward.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from embedx.backends.hf import HFBackend
from embedx.backends.padding import MaskedGroupNorm, masked_group_norm, pad_batch


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("groups", "channels"), [(8, 8), (4, 16), (1, 6)])
def test_masked_group_norm_equals_each_item_alone(groups, channels):
    gen = torch.Generator().manual_seed(groups)
    weight, bias = torch.randn(channels, generator=gen), torch.randn(channels, generator=gen)
    lengths = [64, 40, 2, 17, 64]
    x = 3.0 + torch.randn(len(lengths), channels, 64, generator=gen)  # an offset: two-pass variance matters
    out = masked_group_norm(x, torch.tensor(lengths), groups, weight, bias, 1e-5)
    assert out.dtype == torch.float32 and out.shape == x.shape
    for i, n in enumerate(lengths):
        alone = torch.nn.functional.group_norm(x[i : i + 1, :, :n], groups, weight, bias, 1e-5)
        torch.testing.assert_close(out[i : i + 1, :, :n], alone, rtol=0, atol=5e-6)
        assert not out[i, :, n:].any()


def test_masked_group_norm_in_bf16_is_computed_in_float32():
    """A half-precision input (autocast) is normalised in float32, like group_norm under autocast."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 30, generator=gen).bfloat16()
    out = masked_group_norm(x, torch.tensor([30, 11]), 4, None, None, 1e-5)
    alone = torch.nn.functional.group_norm(x[1:, :, :11].float(), 4, None, None, 1e-5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[1:, :, :11], alone, rtol=0, atol=5e-6)


def test_masked_group_norm_under_autocast_keeps_float32_statistics():
    """Autocast would run the sums (matrix products) in bf16; the statistics must stay float32."""
    gen = torch.Generator().manual_seed(2)
    x = 5.0 + torch.randn(3, 8, 400, generator=gen)  # an offset: bf16 sums would be visibly off
    lengths = torch.tensor([400, 250, 33])
    plain = masked_group_norm(x, lengths, 8, None, None, 1e-5)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under = masked_group_norm(x, lengths, 8, None, None, 1e-5)
    assert under.dtype == torch.float32 and torch.equal(under, plain)


def test_masked_group_norm_refuses_lengths_that_do_not_fit():
    masked = MaskedGroupNorm(torch.nn.GroupNorm(2, 2))
    masked.valid_lengths = [5, 0]
    with pytest.raises(ValueError, match="do not fit"):
        masked(torch.zeros(2, 2, 5))


def test_pad_batch_stages_the_lengths_with_the_batch():
    items = [np.arange(1, 6, dtype=np.float32), np.arange(1, 3, dtype=np.float32)]
    values, mask, lengths = pad_batch(items, torch.device("cpu"), [[7, 8]])
    assert values.tolist() == [[1, 2, 3, 4, 5], [1, 2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert lengths.tolist() == [[5, 2], [7, 8]]


def count_forward_ops(backend: HFBackend, waves: list[np.ndarray]) -> Counter[str]:
    backend.forward(waves, [0, 1])  # warm: one-time work (lazy hooks) is not counted
    with OpCounter() as counter:
        backend.forward(waves, [0, 1])
    return counter.ops


def test_operations_per_forward_do_not_grow_with_the_batch(tiny_model):
    """A group-norm model (hubert) on 2 and on 30 padded items, and on 1 and 30 unpadded ones."""
    backend = HFBackend(str(tiny_model("hubert")), device="cpu")
    assert backend._group_norms, "the tiny hubert must have a masked group norm"
    rng = np.random.default_rng(0)
    sizes = rng.integers(800, 4000, size=30)
    padded = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    few, many = count_forward_ops(backend, padded[:2]), count_forward_ops(backend, padded)
    assert sum(few.values()) == sum(many.values()) and few == many
    assert few["aten.bmm"] >= 2  # the masked path ran (two matrix products per masked norm)
    same = [padded[0]] * 30
    one, thirty = count_forward_ops(backend, same[:1]), count_forward_ops(backend, same)
    assert one == thirty
