"""Layer similarity (linear CKA) at corpus scale: time and peak memory of `embedx similarity`.

Writes one synthetic store through ``StoreWriter`` (no model): ``--sets`` feature sets of
``--items`` items x ``--layers`` layers x ``--dim`` dims, mean pooling, each layer a noisy
mixture of the one below (so the CKA matrix has structure). Then runs
``embedx.cka.similarity`` on it in a fresh process per estimator (biased, debiased) and
reports wall time, that process's resident memory after the imports and its peak (``VmHWM``),
the computation method (``features``: Gram-free, two layers in memory; ``gram``: cached
``(n, n)`` matrices) and the number of CKA values. The size of one layer, ``n x dim`` float64, is printed for reference:
the Gram-free path holds at most two of them plus one float32 layer being read.

Defaults: 20k items, 13 layers x 768 dims, one set, float32 storage (~0.8 GB in --dir).

Usage: python benchmarks/similarity.py [--items 20000] [--layers 13] [--dim 768] [--sets 1]
       [--dtype float32] [--estimators biased debiased] [--dir /tmp] [--keep]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BATCH = 4096  # items per write


def build(path: Path, num_items: int, layers: int, dim: int, sets: int, dtype: str, seed: int) -> float:
    """Write the synthetic store; returns seconds."""
    from embedx.store import FeatureSetSpec, StoreWriter

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "id": [f"utt{i:07d}" for i in range(num_items)],
        "path": [f"/corpus/utt{i:07d}.wav" for i in range(num_items)],
        "duration": 3.0, "sample_rate": 16000, "num_samples": 48000,
    })
    mixes = [np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32) for _ in range(layers)]
    with StoreWriter(path) as w:
        w.write_items(items)
        for s in range(sets):
            name = f"synthetic-{s}"
            w.create_feature_set(FeatureSetSpec(name=name, backend="hf", layers=range(layers), dim=dim,
                                                poolings=("mean",), frames=False, dtype=dtype))
            for a in range(0, num_items, BATCH):
                b = min(num_items, a + BATCH)
                x = rng.normal(size=(b - a, dim)).astype(np.float32)
                pooled = np.empty((layers, b - a, dim), np.float32)
                for k in range(layers):  # layer k: a rotation of layer k-1 plus fresh noise
                    x = 0.8 * (x @ mixes[k]) + 0.6 * rng.normal(size=x.shape).astype(np.float32)
                    pooled[k] = x
                w.write(name, np.arange(a, b), pooled={"mean": pooled})
    return time.perf_counter() - start


def _memory_mib(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB, from /proc (Linux).

    Not ``ru_maxrss``: Linux keeps it across ``execve``, so a spawned child would report the
    parent's peak (the store build) as its own.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")


def _child(path: str, out: str, debiased: bool, queue: mp.Queue) -> None:
    import h5py  # noqa: F401 - loaded before the baseline, like matplotlib and pandas
    import matplotlib.pyplot  # noqa: F401

    from embedx.cka import similarity

    base = _memory_mib("VmRSS")
    start = time.perf_counter()
    result = similarity(path, out, debiased=debiased, progress=False)
    seconds = time.perf_counter() - start
    peak = _memory_mib("VmHWM")
    queue.put((seconds, base, peak, result.method, len(result.table)))


def measure(path: Path, out: Path, debiased: bool) -> tuple[float, float, float, str, int]:
    ctx = mp.get_context("spawn")  # a fresh process: its peak RSS is the command's alone
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(path), str(out), debiased, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--sets", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--estimators", nargs="+", default=["biased", "debiased"], choices=("biased", "debiased"))
    ap.add_argument("--dir", default=None, help="where to write the store [default: a temp folder]")
    ap.add_argument("--keep", action="store_true", help="keep the store and outputs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="embedx-sim-", dir=args.dir))
    try:
        store = work / "feats.h5"
        build_s = build(store, args.items, args.layers, args.dim, args.sets, args.dtype, args.seed)
        layer_mib = args.items * args.dim * 8 / 2**20
        print(f"store: {args.items} items x {args.layers} layers x {args.dim} dims x {args.sets} set(s), "
              f"{args.dtype}, {store.stat().st_size / 2**30:.2f} GiB, written in {build_s:.1f} s; "
              f"one layer as float64: {layer_mib:.0f} MiB\n")
        print("| estimator | method | CKA values | seconds | RSS after imports (MiB) | peak RSS (MiB) |")
        print("|---|---|---:|---:|---:|---:|")
        for est in args.estimators:
            seconds, base, peak, method, rows = measure(store, work / f"sim-{est}", est == "debiased")
            print(f"| {est} | {method} | {rows} | {seconds:.1f} | {base:.0f} | {peak:.0f} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nkept {work}")


if __name__ == "__main__":
    main()
