"""Merging extraction shards at corpus scale: time, file size, memory, and reading one layer.

Writes N synthetic shard files the way ``embedx extract --shard K/N`` does (through
``StoreWriter``: items of the shard, shard metadata, a pooled feature set; no model), then
times ``embedx.store.merge`` and reading one layer's ``(num_items, dim)`` matrix from the
merged file with ``StoreReader.pooled``. The merge runs in a fresh process so its peak
resident memory can be reported (it must stay bounded: the pooled data are copied in blocks,
never loaded whole).

Defaults: 100k items, 4 shards, 13 layers x 768 dims (a base model's all layers), mean pooling,
float16: ~2 GB of features. Needs about twice that on disk (shards + merged file) in --dir.

Usage: python benchmarks/scale.py [--items 100000] [--shards 4] [--layers 13] [--dim 768]
       [--dtype float16] [--dir /tmp] [--keep]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SET = "synthetic-base"
BATCH = 4096  # items per write


def make_items(num_items: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    duration = np.round(rng.lognormal(1.2, 0.6, num_items), 3)  # ~3.3 s median, like speech corpora
    return pd.DataFrame({
        "id": [f"spk{i % 1000:04d}/utt{i:07d}.wav" for i in range(num_items)],
        "path": [f"/corpus/spk{i % 1000:04d}/utt{i:07d}.wav" for i in range(num_items)],
        "duration": duration,
        "sample_rate": 16000,
        "num_samples": (duration * 16000).astype(np.int64),
        "label": np.array(["neutral", "happy", "sad", "angry"])[rng.integers(0, 4, num_items)],
        "speaker": [f"spk{i % 1000:04d}" for i in range(num_items)],
    })


def features(rows: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Deterministic ``(num_layers, len(rows), dim)`` features of global items ``rows``."""
    # a fixed random block, shifted per item so that every row differs: cheap to make at scale
    x = base[:, rows % base.shape[1], :]  # (num_layers, batch, dim)
    return x + (rows % 997).astype(base.dtype)[None, :, None] / 997


def write_shards(folder: Path, items: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from embedx.extraction.shard import items_digest, select
    from embedx.store import FeatureSetSpec, StoreWriter

    spec = FeatureSetSpec(
        name=SET, backend="hf", layers=tuple(range(args.layers)), dim=args.dim,
        poolings=("mean",), frames=False, dtype=args.dtype, frame_rate=49.9,
        attrs={"model_id": "synthetic/base"}, config={"layers": "all", "poolings": ["mean"]},
    )
    base = np.random.default_rng(0).standard_normal((args.layers, 1024, args.dim)).astype(np.float32)
    digest = items_digest(items["id"].tolist())
    files = []
    for k in range(args.shards):
        idx = select(items["duration"].to_numpy(), k, args.shards)
        path = folder / f"shard-{k}.h5"
        with StoreWriter(path, command=f"benchmarks/scale.py --shard {k}/{args.shards}") as w:
            w.write_items(items.iloc[idx].reset_index(drop=True))
            w.set_shard(k, args.shards, idx, len(items), digest)
            w.create_feature_set(spec)
            for a in range(0, len(idx), BATCH):
                local = np.arange(a, min(a + BATCH, len(idx)))
                w.write(SET, local, pooled={"mean": features(idx[local], base)})
        files.append(path)
    return files


def _merge_child(files: list[str], out: str, queue: mp.Queue) -> None:
    from embedx.store import merge

    start = time.perf_counter()
    merge(files, out)
    seconds = time.perf_counter() - start
    queue.put((seconds, _peak_rss()))


def _peak_rss() -> int:
    """Peak resident bytes of this process since exec (VmHWM; ru_maxrss survives exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def timed_merge(files: list[Path], out: Path) -> tuple[float, int]:
    ctx = mp.get_context("spawn")  # a clean process: its peak RSS is the merge's
    queue = ctx.Queue()
    proc = ctx.Process(target=_merge_child, args=([str(f) for f in files], str(out), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode:
        raise SystemExit(f"merge failed with exit code {proc.exitcode}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--layer", type=int, default=None, help="layer to read (default: the middle one)")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()

    from embedx.store import StoreReader

    folder = Path(tempfile.mkdtemp(prefix="embedx-scale-", dir=args.dir))
    try:
        items = make_items(args.items, seed=0)
        start = time.perf_counter()
        files = write_shards(folder, items, args)
        write_s = time.perf_counter() - start
        shard_bytes = sum(f.stat().st_size for f in files)

        out = folder / "merged.h5"
        merge_s, peak = timed_merge(files, out)
        size = out.stat().st_size

        layer = args.layers // 2 if args.layer is None else args.layer
        reads = []
        with StoreReader(out) as r:
            for _ in range(3):
                start = time.perf_counter()
                x = r.pooled(SET, "mean", layer)  # (num_items, dim) float32
                reads.append(time.perf_counter() - start)
            sample = np.random.default_rng(1).choice(args.items, 64, replace=False)
            base = np.random.default_rng(0).standard_normal((args.layers, 1024, args.dim)).astype(np.float32)
            want = features(np.sort(sample), base)[layer].astype(args.dtype).astype(np.float32)
            ok = x.shape == (args.items, args.dim) and np.array_equal(x[np.sort(sample)], want)

        layer_bytes = args.items * args.dim * np.dtype(args.dtype).itemsize
        feat_bytes = layer_bytes * args.layers
        print(f"\n{args.items} items, {args.shards} shards, {args.layers} layers x {args.dim} dims, "
              f"mean pooling, {args.dtype}: {feat_bytes / 1e9:.2f} GB of features "
              f"(merged values checked: {'ok' if ok else 'MISMATCH'})\n")
        rows = [
            ("write shards (StoreWriter, synthetic)", f"{write_s:.1f} s", f"{feat_bytes / write_s / 1e6:.0f} MB/s"),
            ("shard files, total", f"{shard_bytes / 1e9:.2f} GB", ""),
            ("merge (embedx.store.merge)", f"{merge_s:.1f} s", f"{feat_bytes / merge_s / 1e6:.0f} MB/s"),
            ("merge peak memory (RSS)", f"{peak / 2**20:.0f} MiB", ""),
            ("merged file", f"{size / 1e9:.2f} GB", f"{size / feat_bytes:.3f} x raw features"),
            (f"read layer {layer}: ({args.items}, {args.dim}) matrix, first",
             f"{reads[0]:.2f} s", f"{layer_bytes / 1e6:.0f} MB {args.dtype} -> float32, "
             f"{layer_bytes / reads[0] / 1e6:.0f} MB/s"),
            ("read layer, best of 3", f"{min(reads):.2f} s", "file just written: in the page cache"),
        ]
        print("| step | value | rate / note |")
        print("|---|---:|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        if args.keep:
            print(f"\nfiles kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
