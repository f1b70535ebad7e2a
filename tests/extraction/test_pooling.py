import numpy as np
import pytest
import torch

from embedx.errors import ConfigError
from embedx.extraction.pooling import available_poolings, get_pooling, parse_poolings


@pytest.fixture
def batch():
    # 2 layers, 3 items of 4 / 2 / 1 valid frames, dim 3; padding filled with huge garbage
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 4, 3)
    lengths = torch.tensor([4, 2, 1])
    for b, n in enumerate(lengths.tolist()):
        hidden[:, b, n:] = 1e6
    return hidden, lengths


def reference(name, x):
    return {"mean": x.mean(0), "std": x.std(0, unbiased=False), "max": x.amax(0), "min": x.amin(0),
            "first": x[0], "last": x[-1]}[name]


@pytest.mark.parametrize("name", ["mean", "std", "max", "min", "first", "last"])
def test_pooling_uses_valid_frames_only(batch, name):
    hidden, lengths = batch
    got = get_pooling(name)(hidden, lengths)
    assert got.shape == (2, 3, 3)
    for b, n in enumerate(lengths.tolist()):
        for layer in range(2):
            torch.testing.assert_close(got[layer, b], reference(name, hidden[layer, b, :n]))


def test_known_values():
    hidden = torch.tensor([[[[1.0], [3.0], [100.0]]]])  # (1 layer, 1 item, 3 frames, dim 1)
    lengths = torch.tensor([2])
    assert get_pooling("mean")(hidden, lengths).item() == 2.0
    assert get_pooling("std")(hidden, lengths).item() == 1.0
    assert get_pooling("max")(hidden, lengths).item() == 3.0
    assert get_pooling("last")(hidden, lengths).item() == 3.0
    assert np.isclose(get_pooling("std")(hidden, torch.tensor([1])).item(), 0.0)


def test_parse_poolings():
    assert parse_poolings("mean, std,mean") == ("mean", "std")
    assert set(available_poolings()) >= {"mean", "std", "max", "min", "first", "last"}
    with pytest.raises(ConfigError, match="unknown pooling 'median'.*accepted: mean"):
        parse_poolings("mean,median")
    with pytest.raises(ConfigError):
        parse_poolings("")
    assert parse_poolings("all") == tuple(available_poolings())  # as in fit --pooling all
    assert parse_poolings([" max", "mean", "max"]) == ("max", "mean")


def test_both_stages_read_one_pooling_grammar():
    """extract --pooling, the preset's poolings and fit --pooling / --set NAME/POOLING: one parser."""
    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.pooling import split_poolings

    assert split_poolings(" std,,mean,std ") == ("std", "mean")
    assert split_poolings("all", every=("mean", "max")) == ("mean", "max")
    assert split_poolings("all") == ("all",)  # no expansion without what "all" means here
    assert ExtractConfig(poolings="std, mean").poolings == ("std", "mean")  # split once, on construction


def test_chunk_combination_equals_pooling_the_stitched_frames():
    from embedx.extraction.pooling import chunk_poolings, combine_chunks

    torch.manual_seed(1)
    frames = torch.randn(3, 1, 23, 5) * 4 + 2  # (num_layers, 1 item, frames, dim)
    cuts = [0, 7, 15, 23]
    names = ("mean", "std", "max", "min", "first", "last")
    wanted = chunk_poolings(names)
    parts = {p: [] for p in wanted}
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        chunk = frames[:, :, a:b]
        for p in wanted:
            parts[p].append(get_pooling(p)(chunk, torch.tensor([b - a]))[:, 0].numpy())
    got = combine_chunks({p: np.stack(v) for p, v in parts.items()}, np.diff(cuts), names)
    for p in names:
        whole = get_pooling(p)(frames, torch.tensor([23]))[:, 0].numpy()
        np.testing.assert_allclose(got[p], whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", ["mean", "std", "max", "min", "first", "last"])
def test_nan_or_inf_in_padding_never_leaks(batch, name, garbage):
    hidden, lengths = batch
    for b, n in enumerate(lengths.tolist()):
        hidden[:, b, n:] = garbage
    got = get_pooling(name)(hidden, lengths)
    assert torch.isfinite(got).all()
    for b, n in enumerate(lengths.tolist()):
        for layer in range(2):
            torch.testing.assert_close(got[layer, b], reference(name, hidden[layer, b, :n]))
