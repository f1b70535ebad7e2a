"""The extraction data path on its own: decode, resample, batch, transfer, pool, write.

A near-free model (HuBERT architecture, 1 block, width 16, conv width 8, random weights, no
download) runs over a generated corpus of mixed rates and lengths (~2.4 s per file on average,
every third file at 22.05 kHz, the rest at 16 kHz), so what is timed is everything *around* the
forward. For each batch setting (GPU-sized 60-s batches, the CPU default) it reports:

- loop audio-s/s (the processing loop, from the first batch request to the last write) and the
  time to the first batch;
- where the main process's time goes (waiting for data, host->device transfer, forward,
  pooling + device->host copy, write), from :attr:`ExtractSummary.timings` (when the code
  under test records them);
- the raw rate of the decoding workers' job measured on one core in this process: plain
  ``soundfile`` decode, soxr resampling, and embedx's whole per-item preparation.

Usage:
    python benchmarks/pipeline.py [--files 4000] [--repeats 2] [--workers N ...] [--corpus DIR]

Runs are interleaved (every setting once per repeat) and the best of the repeats is reported,
so noise from other processes hits every setting alike. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_corpus(folder: Path, num_files: int, seed: int = 0) -> float:
    """Write ``num_files`` wav files of 1.2-3.6 s, every third at 22.05 kHz; returns total seconds.

    An existing corpus of the same size in ``folder`` is reused (its marker file says so).
    """
    import soundfile as sf

    marker = folder / f".corpus-{num_files}-{seed}"
    if marker.exists():
        return float(marker.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(num_files):
        rate = 22050 if i % 3 == 0 else 16000
        seconds = float(rng.uniform(1.2, 3.6))
        n = int(seconds * rate)
        t = np.arange(n) / rate
        # a voiced-like tone plus noise: content does not matter to the timing, only length/rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.05 * rng.standard_normal(n)
        sf.write(folder / f"f{i:05d}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
        total += n / rate
    marker.write_text(repr(total))
    return total


def make_model(folder: Path) -> Path:
    """Save the near-free HuBERT (1 block, width 16, conv width 8; real conv geometry)."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    config = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, conv_dim=(8,) * 7,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def raw_rates(paths: list[Path], limit: int = 600) -> dict[str, float]:
    """audio-s/s of one core for plain decoding, soxr resampling, and embedx's per-item path."""
    import soundfile as sf
    import soxr

    from embedx.audio import load

    sample = paths[:limit]
    audio = sum(sf.info(str(p)).duration for p in sample)
    t0 = time.perf_counter()
    decoded = [sf.read(str(p), dtype="float32") for p in sample]
    t1 = time.perf_counter()
    for w, sr in decoded:
        if sr != 16000:
            soxr.resample(w, sr, 16000, quality="HQ")
    t2 = time.perf_counter()
    for p in sample:
        w = load(p, 16000)
        (w - w.mean()) / np.sqrt(w.var() + 1e-7)  # the model's normalisation, as the workers do it
    t3 = time.perf_counter()
    return {"decode": audio / (t1 - t0), "resample (all files' audio)": audio / (t2 - t1),
            "embedx load + normalise": audio / (t3 - t2)}


def null_forward(self, waves, layers):  # noqa: ANN001, ANN201 - HFBackend.forward's signature
    """A forward that skips the model: zeros of the right shape (the data path alone)."""
    import torch

    from embedx.backends.base import BackendOutput

    lengths = [self.num_frames(len(w)) for w in waves]
    # (num_layers, batch, num_frames, dim), what the model would return
    hidden = torch.zeros((len(layers), len(waves), max(lengths), self.dim))
    return BackendOutput(hidden=hidden, lengths=torch.tensor(lengths), heads={})


def run_extract(corpus: Path, model: Path, out: Path, batch_seconds: float | None,
                workers: int | None, no_model: bool = False) -> dict[str, float]:
    """One in-process extraction; returns its loop figures."""
    from embedx.backends.hf import HFBackend
    from embedx.extract import ExtractConfig, extract

    original = HFBackend.forward
    if no_model:
        HFBackend.forward = null_forward

    config = ExtractConfig(model=str(model), layers="all", poolings=("mean",), device="cpu",
                           batch_seconds=batch_seconds, workers=workers, progress=False)
    t0 = time.perf_counter()
    try:
        summary = extract([str(corpus)], out, config)
    finally:
        HFBackend.forward = original
    total = time.perf_counter() - t0
    res = {"loop_rate": summary.audio_seconds / summary.elapsed, "loop_s": summary.elapsed,
           "total_s": total, "audio": summary.audio_seconds, "items": summary.processed}
    timings = getattr(summary, "timings", None) or {}
    res.update({f"t_{k}": v for k, v in timings.items()})
    return res


def small_run_wall(corpus: Path, model: Path, out: Path, files: int) -> tuple[float, float]:
    """Wall time of the CLI on the first ``files`` files (a fresh process: start-up included),
    and the time of ``python -c 'import embedx.cli'`` alone."""
    lst = out.parent / "small.txt"
    lst.write_text("\n".join(str(p) for p in sorted(corpus.glob("*.wav"))[:files]) + "\n")
    env = dict(os.environ)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "embedx", "extract", str(lst), "-m", str(model), "-o", str(out),
                    "--quiet", "--device", "cpu"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import embedx.cli"], check=True, env=env)
    imp = time.perf_counter() - t0
    return wall, imp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is reported")
    parser.add_argument("--workers", type=int, nargs="*", default=[None],
                        help="decoding workers to compare (default: embedx's default)")
    parser.add_argument("--batch-seconds", type=float, nargs="*", default=[60.0, 0.0],
                        help="batch budgets to compare; 0 = embedx's CPU default")
    parser.add_argument("--corpus", type=Path, default=None, help="folder for the corpus (reused if present)")
    parser.add_argument("--small", type=int, default=480, help="files of the small CLI run (0: skip)")
    parser.add_argument("--no-model", action="store_true",
                        help="also run every setting with the forward replaced by zeros: the data path alone")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus or tmp / "corpus"
        audio = make_corpus(corpus, args.files)
        model = make_model(tmp / "model")
        paths = sorted(corpus.glob("*.wav"))
        rates = raw_rates(paths)
        settings = [(b or None, w, nm) for b in args.batch_seconds for w in args.workers
                    for nm in ([False, True] if args.no_model else [False])]
        results: dict[tuple, list[dict[str, float]]] = {s: [] for s in settings}
        k = 0
        for _ in range(args.repeats):
            for s in settings:
                k += 1
                results[s].append(run_extract(corpus, model, tmp / f"r{k}.h5", *s))
                (tmp / f"r{k}.h5").unlink()
        small = small_run_wall(corpus, model, tmp / "small.h5", args.small) if args.small else None

    from embedx.extract import default_workers

    print(f"\n{args.files} files, {audio:.0f} s of audio (1.2-3.6 s, every third at 22.05 kHz), "
          f"near-free HuBERT (1 block, width 16), all layers, mean pooling, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, default workers {default_workers()}, "
          f"best of {args.repeats} interleaved\n")
    print("| batch budget | workers | model | loop audio-s/s | loop s | run s (with model load, scan) | "
          "first batch s | wait for data | pad + to device + forward | pool + to host | blocked on writes | "
          "writes (writer thread) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s, runs in results.items():
        best = max(runs, key=lambda r: r["loop_rate"])
        def cell(key: str, r: dict = best) -> str:
            return f"{r[key]:.2f}" if key in r else "n/a"
        print(f"| {s[0] or 'CPU default'} s | {s[1] if s[1] is not None else 'default'} | "
              f"{'none (zeros)' if s[2] else 'near-free'} | "
              f"{best['loop_rate']:.0f} | {best['loop_s']:.2f} | {best['total_s']:.2f} | {cell('t_first_batch')} | "
              f"{cell('t_wait')} | {cell('t_forward')} | {cell('t_pool')} | {cell('t_write_wait')} | "
              f"{cell('t_write')} |")
    print("\nOne core, the decoding workers' job alone (first 600 files):\n")
    print("| step | audio-s/s |")
    print("|---|---:|")
    for label, rate in rates.items():
        print(f"| {label} | {rate:.0f} |")
    if small:
        print(f"\nSmall run: `embedx extract` CLI on {args.small} files, fresh process: {small[0]:.2f} s wall "
              f"(of which `import embedx.cli`: {small[1]:.2f} s)")


if __name__ == "__main__":
    main()
