"""Frame-level probing at scale: write, read per layer, fit, evaluate, statistics, peak RSS.

Writes a synthetic store with :class:`embedx.store.StoreWriter` (float16 frames of every layer,
``--items`` items of ``--frames-per-item`` frames; default 1,000 × 300 = 300,000 frames ×
13 layers × 768 dims, 6 GB) and an alignment CSV (segments of 3-15 frames, ``--classes``
labels, a few uncovered frames per item), with the label planted in the frames of layer
``--signal-layer`` only. Then runs ``embedx.fit(..., frames=True)`` (default model ``softmax``,
``--max-train-frames`` per fold) and prints a table of the phases and the peak RSS
(``resource.getrusage``). Target: <= 10 min and <= 4 GB on 2 cores.

    python benchmarks/frame_probe.py                      # the full size
    python benchmarks/frame_probe.py --items 40 --frames-per-item 50 --dim 32 --layers 4
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HOP, WIN, SR = 320, 400, 16000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _segments(rng: np.random.Generator, n: int, classes: int) -> list[tuple[int, int, int]]:
    """``(first, end, label)`` segments of 3-15 frames after 2 uncovered frames, gaps of 0-2."""
    out, f = [], 2
    while True:
        length = int(rng.integers(3, 16))
        if f + length > n:
            return out
        out.append((f, f + length, int(rng.integers(0, classes))))
        f += length + int(rng.integers(0, 3))


def write(path: Path, csv: Path, args: argparse.Namespace) -> None:
    """The synthetic store and its alignment CSV, written batch by batch (bounded memory)."""
    from embedx.store import FeatureSetSpec, StoreWriter

    rng = np.random.default_rng(args.seed)
    n, per, layers, dim = args.items, args.frames_per_item, args.layers, args.dim
    items = pd.DataFrame({
        "id": [f"u{i:05d}" for i in range(n)], "path": [f"wavs/u{i:05d}.wav" for i in range(n)],
        "duration": per * HOP / SR, "sample_rate": SR, "num_samples": (per - 1) * HOP + WIN,
        "speaker": [f"s{i % args.speakers:03d}" for i in range(n)],
    })
    means = rng.normal(0, 1, (args.classes, dim)).astype(np.float32)
    offsets = rng.normal(0, 1, (args.speakers, dim)).astype(np.float32)
    rows = []
    spec = FeatureSetSpec(name="bench", backend="hf", layers=tuple(range(layers)), dim=dim,
                          poolings=("mean",), frames=True, dtype="float16", frame_rate=SR / HOP,
                          attrs={"model_id": "synthetic"}, config={"backend": "hf"})
    with StoreWriter(path) as w:
        w.write_items(items)
        w.create_feature_set(spec, num_frames=np.full(n, per))
        for a in range(0, n, 16):
            idx = np.arange(a, min(n, a + 16))
            chunk = []
            for i in idx:
                x = rng.standard_normal((per, layers, dim), dtype=np.float32)
                x += offsets[i % args.speakers]
                for f0, f1, c in _segments(rng, per, args.classes):
                    x[f0:f1, args.signal_layer] += args.strength * means[c]
                    rows.append((items.at[i, "id"], f0 * HOP / SR, f1 * HOP / SR, f"p{c}"))
                chunk.append(x.astype(np.float16))
            pooled = np.stack([c.mean(axis=0, dtype=np.float32) for c in chunk], axis=1)  # (layers, batch, dim)
            w.write("bench", idx, pooled={"mean": pooled}, frames=chunk)
    pd.DataFrame(rows, columns=["id", "start", "end", "label"]).to_csv(csv, index=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--frames-per-item", type=int, default=300)
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--speakers", type=int, default=20)
    p.add_argument("--signal-layer", type=int, default=7)
    p.add_argument("--strength", type=float, default=0.3)
    p.add_argument("--max-train-frames", type=int, default=100_000)
    p.add_argument("--models", default="softmax")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    args = p.parse_args(argv)
    args.signal_layer = min(args.signal_layer, args.layers - 1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import embedx

    work = Path(args.workdir or tempfile.mkdtemp(prefix="frame_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    store, csv = work / "frames.h5", work / "align.csv"
    for f in (store, csv):
        f.unlink(missing_ok=True)
    t0 = time.perf_counter()
    write(store, csv, args)
    t_write, rss_write = time.perf_counter() - t0, _rss_mb()
    t0 = time.perf_counter()
    res = embedx.fit(store, output=work / "results", overwrite=True, frames=True, alignments=csv,
                     models=args.models, max_train_frames=args.max_train_frames, progress=False,
                     log=lambda m: print("  ", m, flush=True))
    t_study = time.perf_counter() - t0
    info = res.study.analyses["frames"]
    secs = info["seconds"]
    best = res.summary.iloc[0]
    total = args.items * args.frames_per_item
    print(f"\n{total} frames x {args.layers} layers x {args.dim} dims (float16, "
          f"{store.stat().st_size / 2**30:.2f} GiB), {info['labelled_frames']} labelled, "
          f"{args.classes} labels, {args.speakers} speakers, models {args.models}, "
          f"max {args.max_train_frames} training frames/fold, {os.cpu_count()} cores")
    rows = [("write store", t_write), (f"read ({info['passes']} passes, all layers)", secs["read"]),
            ("fit", secs["fit"]), ("evaluate (every held-out frame)", secs["evaluate"]),
            ("count per speaker", secs["count"]), ("statistics (CIs, confidence set)", secs["statistics"]),
            ("study total (incl. labels, report)", t_study)]
    print(f"{'phase':40s} {'seconds':>9s}")
    for name, s in rows:
        print(f"{name:40s} {s:9.1f}")
    print(f"{'peak RSS after write (MB)':40s} {rss_write:9.0f}")
    print(f"{'peak RSS overall (MB)':40s} {_rss_mb():9.0f}")
    print(f"best: {best['config']} ({best['model']}) uar {best['uar_pooled']:.3f} "
          f"[{best['ci_low']:.3f}, {best['ci_high']:.3f}]; planted layer {args.signal_layer}")
    if args.workdir is None:
        store.unlink()
    return 0 if int(best["layer"]) == args.signal_layer else 1


if __name__ == "__main__":
    raise SystemExit(main())
