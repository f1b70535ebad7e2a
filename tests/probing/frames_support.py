"""Planted frame stores and alignments for the frame-level tests and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedx.store import FeatureSetSpec, StoreWriter

HOP, WIN, SR = 320, 400, 16000


def alignments_of(segments: pd.DataFrame, items: pd.DataFrame, source: str = "planted"):
    """An ``Alignments`` object built directly (the real class when it exists)."""
    from embedx.probing.alignments import Alignments

    have = set(segments["item"])
    unaligned = tuple(i for k, i in enumerate(items["id"]) if k not in have)
    return Alignments(segments=segments.reset_index(drop=True), unaligned=unaligned, source=source)


def planted_frames(num_items: int = 24, num_speakers: int = 6, num_classes: int = 3,
                   frames_per_item: int = 60, seg_frames: int = 6, lead: int = 3, dim: int = 8,
                   layers=(0, 1, 2, 3), signal_layer: int = 2, strength: float = 2.0,
                   unaligned: int = 0, seed: int = 0):
    """Items, segments and frames where only ``signal_layer`` knows each frame's segment label.

    Every item starts with ``lead`` uncovered frames, then segments of ``seg_frames`` frames
    whose labels cycle through the classes (shifted per item); boundaries sit on frame edges
    (``0.02 f`` s), so the frames a segment covers are exactly ``f0 <= i < f1``. Every layer
    holds a per-speaker offset plus noise; the signal layer adds a class mean. The last
    ``unaligned`` items get no segment.

    Returns:
        ``(items, segments, frames)``: items DataFrame (id, path, speaker, ...), segments
        (item, start, end, label), ``(total_frames, num_layers, dim)`` float32.
    """
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "id": [f"u{i:03d}" for i in range(num_items)],
        "path": [f"wavs/u{i:03d}.wav" for i in range(num_items)],
        "duration": frames_per_item * HOP / SR, "sample_rate": SR,
        "num_samples": (frames_per_item - 1) * HOP + WIN,
        "speaker": [f"s{i % num_speakers:02d}" for i in range(num_items)],
    })
    means = rng.normal(0, 1, (num_classes, dim))
    offsets = rng.normal(0, 1, (num_speakers, dim))
    segs, parts = [], []
    for i in range(num_items):
        y = np.full(frames_per_item, -1)
        if i < num_items - unaligned:
            for j, f0 in enumerate(range(lead, frames_per_item - seg_frames + 1, seg_frames)):
                c = (i + j) % num_classes
                y[f0:f0 + seg_frames] = c
                segs.append((i, f0 * HOP / SR, (f0 + seg_frames) * HOP / SR, f"c{c}"))
        x = rng.normal(0, 1, (frames_per_item, len(layers), dim)) + offsets[i % num_speakers]
        li = list(layers).index(signal_layer)
        x[y >= 0, li] += strength * means[y[y >= 0]]
        parts.append(x.astype(np.float32))
    segments = pd.DataFrame(segs, columns=["item", "start", "end", "label"])
    return items, segments, np.concatenate(parts)


def write_frames_store(path: Path, items: pd.DataFrame, frames: np.ndarray, layers, *,
                       name: str = "toy", dtype: str = "float32", batch: int = 32) -> Path:
    """Write ``items`` and one feature set with frames (equal frames per item) and mean pooling."""
    n = len(items)
    per = len(frames) // n
    with StoreWriter(path) as w:
        w.write_items(items)
        spec = FeatureSetSpec(name=name, backend="hf", layers=tuple(layers), dim=frames.shape[-1],
                              poolings=("mean",), frames=True, dtype=dtype, frame_rate=SR / HOP,
                              attrs={"model_id": f"test/{name}"},
                              config={"backend": "hf", "model": f"test/{name}", "layers": "all"})
        w.create_feature_set(spec, num_frames=np.full(n, per))
        for a in range(0, n, batch):
            idx = np.arange(a, min(n, a + batch))
            chunk = [frames[i * per:(i + 1) * per] for i in idx]
            pooled = np.stack([c.mean(axis=0) for c in chunk], axis=1)  # (num_layers, batch, dim)
            w.write(name, idx, pooled={"mean": pooled}, frames=chunk)
    return path


def write_alignment_csv(path: Path, segments: pd.DataFrame, items: pd.DataFrame) -> Path:
    """The segments as ``id,start,end,label`` rows."""
    table = segments.assign(id=items["id"].to_numpy()[segments["item"].to_numpy()])
    table[["id", "start", "end", "label"]].to_csv(path, index=False)
    return path
