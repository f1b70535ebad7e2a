"""Fixtures for stage-2 tests: small constructed stores with known structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedx.store import FeatureSetSpec, StoreWriter

NUM_ITEMS = 120
DIM = 16
LAYERS = (0, 1, 2, 3, 4)
NUM_CLASSES = 3
NUM_SPEAKERS = 12


def planted(num_items: int = NUM_ITEMS, dim: int = DIM, layers=LAYERS, signal_layer: int = 3,
            strength: float = 1.5, num_classes: int = NUM_CLASSES,
            num_speakers: int = NUM_SPEAKERS, speaker_scale: float = 1.0, seed: int = 0):
    """Items, labels and pooled features where only ``signal_layer`` knows the class.

    Item i has class ``i % num_classes`` and speaker ``(i // num_classes) % num_speakers``, so
    every speaker has every class. Every layer holds a per-speaker offset plus noise; the
    signal layer adds a class mean of norm ~``strength * sqrt(dim)``; ``arousal`` is a
    continuous target whose value is planted (linearly) in the signal layer too.

    Returns:
        ``(items, pooled)``: DataFrame and ``(num_layers, num_items, dim)`` float32.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(num_items) % num_classes
    spk = (np.arange(num_items) // num_classes) % num_speakers
    arousal = rng.normal(0, 1, num_items)
    items = pd.DataFrame({
        "id": [f"u{i:03d}" for i in range(num_items)],
        "path": [f"wavs/u{i:03d}.wav" for i in range(num_items)],
        "duration": 1.0,
        "sample_rate": 16000,
        "num_samples": 16000,
        "label": [f"c{c}" for c in y],
        "speaker": [f"s{s:02d}" for s in spk],
        "arousal": arousal,
        "split": np.where(spk < 8, "train", np.where(spk < 10, "dev", "test")),
    })
    means = rng.normal(0, 1, (num_classes, dim))
    direction = rng.normal(0, 1, dim)
    offsets = rng.normal(0, speaker_scale, (num_speakers, dim))
    pooled = np.empty((len(layers), num_items, dim), np.float32)
    for li, layer in enumerate(layers):
        X = rng.normal(0, 1, (num_items, dim)) + offsets[spk]
        if layer == signal_layer:
            X += strength * means[y] + np.outer(arousal, direction)
        pooled[li] = X
    return items, pooled


def write_store(path: Path, items: pd.DataFrame, sets: dict[str, tuple[np.ndarray, tuple[int, ...]]],
                done: np.ndarray | None = None, poolings=("mean",)) -> Path:
    """Write ``items`` and feature sets ``name -> (pooled, layers)`` (same array per pooling)."""
    with StoreWriter(path) as w:
        w.write_items(items)
        for name, (pooled, layers) in sets.items():
            spec = FeatureSetSpec(
                name=name, backend="hf", layers=layers, dim=pooled.shape[-1], poolings=poolings,
                frames=False, dtype="float32", attrs={"model_id": f"test/{name}"},
                config={"backend": "hf", "model": f"test/{name}", "layers": "all"},
            )
            w.create_feature_set(spec)
            rows = np.arange(len(items)) if done is None else np.flatnonzero(done)
            w.write(name, rows, pooled={p: pooled[:, rows] for p in poolings})
    return path


@pytest.fixture
def toy_store(tmp_path):
    """Factory: a store with set ``toy`` (layers 0-4, class info in layer 3 only)."""

    def make(name: str = "toy.h5", **kwargs) -> Path:
        done = kwargs.pop("done", None)
        poolings = kwargs.pop("poolings", ("mean",))
        items, pooled = planted(**kwargs)
        return write_store(tmp_path / name, items, {"toy": (pooled, LAYERS)}, done=done,
                           poolings=poolings)

    return make


def regression_dataset(blocks: list[tuple[str, int, float]], seed: int, speakers: int = 10, per: int = 12):
    """An in-memory regression :class:`~embedx.probing.data.Dataset`: a Gaussian target, and per
    ``(set, layer, strength)`` block 4 features carrying ``strength`` times the target plus noise."""
    from embedx.probing.data import Block, Dataset, FeatureConfig

    rng = np.random.default_rng(seed)
    n = speakers * per
    spk = np.repeat(np.arange(speakers), per)
    y = rng.normal(size=n)
    configs, X = [], {}
    for name, layer, strength in blocks:
        config = FeatureConfig((Block(name, layer, "mean"),))
        X[config.name] = (rng.normal(size=(n, 4)) + strength * y[:, None] * np.array([1.0, 0.5, 0, 0])).astype(np.float32)
        configs.append(config)
    return Dataset(configs=configs, X=X, y=y, task="regression", classes=None,
                   groups=np.array([f"s{s:02d}" for s in spk]), split=None, ids=np.arange(n).astype(str),
                   paths=np.arange(n).astype(str), rows=np.arange(n), label="label", group="speaker")


def noisy_corpus(accuracies, speakers: int = 8, per: int = 12, k: int = 3, seed: int = 0):
    """Labels ``(n,)``, speakers ``(n,)`` and one prediction array per accuracy: each item right
    with that probability, else a wrong class at random (``n = speakers × per``, ``k`` classes)."""
    rng = np.random.default_rng(seed)
    n = speakers * per
    y = np.arange(n) % k
    spk = np.repeat(np.arange(speakers), per)
    preds = [np.where(rng.random(n) < acc, y, (y + 1 + rng.integers(0, k - 1, n)) % k) for acc in accuracies]
    return y, spk, preds
