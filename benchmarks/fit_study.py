"""Benchmark: time of a full stage-2 study on synthetic features.

Default: 2,000 items × 768 dims × 13 layers (a base model), 4 classes, 20 speakers,
models logreg, svm (linear), lgbm, 5 speaker-independent folds, 1,000 bootstrap resamples,
refit of the best configuration; run once per ``--jobs`` value. The features are written to a
temporary HDF5 store first and read back with ``load_dataset`` (timed separately), so the
study runs exactly as ``embedx fit`` runs it.

    python benchmarks/fit_study.py --jobs 1 2

The cost of the probing controls (issue 14): ``--variants plain weighted permutations`` runs the
same study without extras, with ``--weighted-layers`` (one weighted-layer configuration more) and
with ``--permutations N`` (every configuration refitted on N label permutations), e.g.

    nice -n 10 python benchmarks/fit_study.py --items 400 --dim 256 --models logreg \
        --bootstrap 200 --jobs 2 --variants plain weighted permutations --permutations 100

Prints a Markdown table (config, n_items, dim, layers, models, folds, jobs, seconds, fits/s)
and the fit time per model.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_store(path: Path, num_items: int, dim: int, num_layers: int, num_classes: int,
               num_speakers: int, seed: int) -> None:
    """Write synthetic pooled features: class information peaks in the middle layers."""
    from embedx.store import FeatureSetSpec, StoreWriter

    rng = np.random.default_rng(seed)
    y = np.arange(num_items) % num_classes
    spk = (np.arange(num_items) // num_classes) % num_speakers
    items = pd.DataFrame({
        "id": [f"u{i:05d}" for i in range(num_items)],
        "path": [f"wavs/u{i:05d}.wav" for i in range(num_items)],
        "duration": 3.0, "sample_rate": 16000, "num_samples": 48000,
        "label": [f"c{c}" for c in y], "speaker": [f"s{s:03d}" for s in spk],
    })
    means = rng.normal(0, 1, (num_classes, dim)) / np.sqrt(dim) * 6
    offsets = rng.normal(0, 0.5, (num_speakers, dim))
    layers = tuple(range(num_layers))
    spec = FeatureSetSpec(name="synthetic", backend="hf", layers=layers, dim=dim, poolings=("mean",),
                          frames=False, dtype="float32", attrs={"model_id": "synthetic"})
    with StoreWriter(path) as w:
        w.write_items(items)
        w.create_feature_set(spec)
        pooled = np.empty((num_layers, num_items, dim), np.float32)
        for layer in layers:
            strength = np.exp(-((layer - num_layers * 0.6) ** 2) / (2 * (num_layers / 5) ** 2))
            pooled[layer] = (rng.normal(size=(num_items, dim)) + offsets[spk]
                             + 0.35 * strength * rng.normal(1, 0.1) * means[y] * np.sqrt(dim) / 6)
        w.write("synthetic", np.arange(num_items), pooled={"mean": pooled})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--speakers", type=int, default=20)
    parser.add_argument("--models", default="logreg,svm,lgbm")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads per fit (default: 1)")
    parser.add_argument("--backend", default="loky")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["plain"],
                        choices=["plain", "weighted", "permutations", "weighted+permutations"],
                        help="study variants: plain, weighted (--weighted-layers), permutations "
                             "(--permutations N), or both")
    parser.add_argument("--permutations", type=int, default=100,
                        help="label permutations of the permutations variants")
    args = parser.parse_args()

    from embedx.probing.data import load_dataset
    from embedx.probing.study import StudySettings, run_study

    models = args.models.split(",")
    rows, per_model = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "synthetic.h5"
        make_store(store, args.items, args.dim, args.layers, args.classes, args.speakers, args.seed)
        start = time.perf_counter()
        plain = load_dataset(store, label="label", group="speaker")
        load_seconds = time.perf_counter() - start
        weighted = None
        if any("weighted" in v for v in args.variants):
            weighted = load_dataset(store, label="label", group="speaker", weighted_layers=True)
        for jobs in args.jobs:  # untimed: starts the workers and imports, so no variant pays for it
            run_study(plain, StudySettings(models=models, n_splits=args.folds, seed=args.seed, n_boot=0,
                                           jobs=jobs, threads=args.threads, backend=args.backend, refit=False))
        for variant in args.variants:
            for jobs in args.jobs:
                dataset = weighted if "weighted" in variant else plain
                perms = args.permutations if "permutations" in variant else 0
                settings = StudySettings(models=models, n_splits=args.folds, seed=args.seed,
                                         n_boot=args.bootstrap, jobs=jobs, threads=args.threads,
                                         backend=args.backend, permutations=perms)
                start = time.perf_counter()
                result = run_study(dataset, settings)
                seconds = time.perf_counter() - start
                fits = len(result.results) * (1 + perms)
                threads = args.threads or 1
                rows.append({
                    "variant": variant + (f" ({perms})" if perms else ""),
                    "config": f"{args.backend}, {threads} thread(s)/worker, {result.folds.scheme} CV, "
                              f"best {result.best[0]} {result.best[1]}",
                    "n_items": args.items, "dim": args.dim, "layers": args.layers,
                    "models": ",".join(models), "folds": args.folds, "jobs": jobs,
                    "seconds": f"{seconds:.1f}", "fits/s": f"{fits / seconds:.2f}",
                    "grid_s": f"{result.seconds:.1f}",
                })
                by_model = result.results.groupby("model", sort=False)["fit_seconds"].agg(["sum", "mean"])
                for model, r in by_model.iterrows():
                    per_model.append({"variant": variant, "jobs": jobs, "model": model,
                                      "fit seconds (sum)": f"{r['sum']:.1f}", "per fit": f"{r['mean']:.2f}"})

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"store read in {load_seconds:.1f} s; seconds = whole study (grid + bootstrap + refit), "
          "grid_s = the grid alone\n")
    _print_table(rows)
    print()
    _print_table(per_model)


def _print_table(rows: list[dict]) -> None:
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


if __name__ == "__main__":
    main()
