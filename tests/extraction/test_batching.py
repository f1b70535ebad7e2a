import numpy as np
import pytest

from embedx.errors import ConfigError
from embedx.extraction.batching import make_batches


def test_batches_respect_the_padded_budget_and_cover_every_item_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16000, 8 * 16000, size=200)
    indices = np.arange(1000, 1200)
    plan = make_batches(indices, lengths, max_samples=60 * 16000)
    flat = [i for b in plan.batches for i in b]
    assert sorted(flat) == indices.tolist()
    by_index = dict(zip(indices.tolist(), lengths.tolist(), strict=True))
    for b in plan.batches:
        assert max(by_index[i] for i in b) * len(b) <= 60 * 16000
    # longest first, and length-sorted batches waste little padding
    assert by_index[plan.batches[0][0]] == lengths.max()
    assert plan.padded_fraction < 0.05


def test_long_item_gets_own_batch_and_item_cap():
    plan = make_batches(np.arange(4), np.array([100, 1000, 100, 100]), max_samples=300, max_items=2)
    assert plan.batches == [[1], [0, 2], [3]]
    assert plan.padded_fraction == pytest.approx(0.0)


def test_constructed_padding_fraction():
    plan = make_batches(np.arange(2), np.array([100, 50]), max_samples=1000)
    assert plan.batches == [[0, 1]]
    assert plan.padded_fraction == pytest.approx(50 / 200)


def test_bad_budget():
    with pytest.raises(ConfigError, match="positive"):
        make_batches(np.arange(2), np.array([1, 2]), max_samples=0)


@pytest.mark.parametrize("n", [400, 401, 719, 720, 16000, 16399, 16400, 48000, 123457])
def test_chunk_spans_tile_the_frames_exactly(n):
    from embedx.extraction.batching import chunk_spans

    frames = (n - 400) // 320 + 1
    spans = chunk_spans(n, 16000, hop=320, receptive=400)
    assert sum(s.num_frames for s in spans) == frames
    assert spans[0].start == 0 and spans[-1].stop == n
    expect_first = 0
    for s in spans:
        assert s.first_frame == expect_first and s.start == s.first_frame * 320
        assert s.stop - s.start <= 16000
        assert (s.stop - s.start - 400) // 320 + 1 == s.num_frames  # the chunk yields its frames
        expect_first += s.num_frames


def test_chunk_shorter_than_a_frame_is_refused():
    from embedx.extraction.batching import chunk_spans

    with pytest.raises(ConfigError, match="shorter than one frame"):
        chunk_spans(16000, 300, hop=320, receptive=400)
