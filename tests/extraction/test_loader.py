"""The decoding workers' hand-over: the shared slot ring, packing, CPU accounting, slot reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedx.extraction.audio import load
from embedx.extraction.loader import (
    SLOTS_PER_WORKER,
    Batch,
    Decoder,
    Loader,
    SlotRing,
    pack,
    unpack,
)
from embedx.testing.synth import noise


def _prepare(wave: np.ndarray) -> np.ndarray:
    # the normalisation of a wav2vec2-style checkpoint, as an independent reference
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


def _fit(wave: np.ndarray) -> np.ndarray:
    return wave


@pytest.fixture
def files(write_audio):
    specs = [(0.31, 16000), (0.52, 22050), (0.27, 16000), (0.44, 16000), (0.38, 22050), (0.61, 16000),
             (0.29, 16000), (0.47, 22050), (0.33, 16000)]
    paths = [str(write_audio(f"a/{i}.wav", noise(s, r, seed=i), r)) for i, (s, r) in enumerate(specs)]
    expected = np.array([len(load(p, 16000)) for p in paths])
    return paths, expected


def test_pack_fills_a_free_slot_unpack_reads_it_in_place_and_release_frees_it():
    rng = np.random.default_rng(0)
    ring = SlotRing(workers=2, slots=2, slot_samples=12)
    assert ring.data.is_shared() and ring.data.shape == (2, 2, 12) and ring.state.is_shared()
    features = rng.standard_normal((3, 4))  # a CPU backend's (float64, 2-D) features
    items = [(4, rng.standard_normal(7).astype(np.float32), None), (9, None, "cannot decode audio: x"),
             (2, rng.standard_normal(3).astype(np.float32), None), (5, features, None)]
    batch = pack(items, ring, worker=1)
    assert batch.slot == (1, 0) and batch.flat is None and ring.state.tolist() == [[0, 0], [1, 0]]
    out = unpack(batch, ring)
    assert [i for i, _, _ in out] == [4, 9, 2, 5]
    assert out[1][1] is None and out[1][2] == "cannot decode audio: x"
    for want, got in [(items[0][1], out[0][1]), (items[2][1], out[2][1]), (features, out[3][1])]:
        np.testing.assert_array_equal(got, want)
    assert out[3][1].dtype == np.float64
    assert np.shares_memory(out[0][1], ring.data.numpy()) and np.shares_memory(out[2][1], ring.data.numpy())
    # both slots of worker 1 in flight: the next batch travels in its own tensor, still intact
    second = pack(items, ring, worker=1)
    third = pack(items, ring, worker=1)
    assert second.slot == (1, 1) and third.slot is None and isinstance(third.flat, torch.Tensor)
    np.testing.assert_array_equal(unpack(third, ring)[2][1], items[2][1])
    ring.release(batch.slot)
    assert ring.take(1) == 0  # the released slot is the one handed out next
    # a batch larger than a slot (a long item) never goes into the ring
    big = pack([(0, np.ones(13, np.float32), None)], ring, worker=0)
    assert big.slot is None and big.flat.shape == (13,) and ring.state[0].tolist() == [0, 0]


def test_decoder_batch_in_the_main_process_matches_load_and_prepare_and_accounts_cpu(files, tmp_path):
    paths, expected = files
    decoder = Decoder([*paths, str(tmp_path / "missing.wav")], np.append(expected, 1), 16000, _prepare, _fit)
    batch = decoder.__getitems__([1, 0, len(paths)])
    assert isinstance(batch, Batch) and batch.slot is None and not batch.entries
    (i1, w1, e1), (i0, w0, e0), (im, wm, em) = batch.items
    assert (i1, i0, im) == (1, 0, len(paths)) and e1 is None and e0 is None
    np.testing.assert_array_equal(w1, _prepare(load(paths[1], 16000)))
    np.testing.assert_array_equal(w0, _prepare(load(paths[0], 16000)))
    assert wm is None and "no such file" in em
    # file 1 is at 22.05 kHz: it was decoded and resampled, and nothing was packed
    assert batch.cpu["decode"] > 0 and batch.cpu["resample"] > 0 and batch.cpu["pack"] == 0


def test_a_header_length_mismatch_is_an_item_error(files):
    paths, expected = files
    decoder = Decoder(paths, expected + 1, 16000, _prepare, _fit)
    _, wave, err = decoder[0]
    assert wave is None and "header implies" in err


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_reuse_slots_without_corrupting_a_batch_the_loop_holds(files, workers):
    paths, expected = files
    # more batches than slots, so every slot is refilled several times; each batch is checked
    # only after the next ones were decoded into the ring (the workers prefetch), then released
    batches = [[k % len(paths), (k * 4 + 1) % len(paths)] for k in range(4 * SLOTS_PER_WORKER * workers)]
    want = {i: _prepare(load(p, 16000)) for i, p in enumerate(paths)}
    loader = Loader(paths, expected, 16000, _prepare, _fit, batches, workers, slot_samples=2 * max(expected))
    seen, in_ring = [], 0
    try:
        for batch in loader:
            items = loader.items(batch)
            seen.append([i for i, _, _ in items])
            for i, wave, err in items:
                assert err is None
                np.testing.assert_array_equal(wave, want[i])
            in_ring += batch.slot is not None
            assert batch.cpu["decode"] > 0 and batch.cpu["pack"] > 0
            loader.release(batch)
    finally:
        loader.close()
    assert seen == batches
    assert in_ring == len(batches)  # with slots released in time, no batch needed its own segment
