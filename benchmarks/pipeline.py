"""The extraction data path on its own: decode, resample, batch, hand-over, pool, write.

A near-free model (HuBERT architecture, 1 block, width 16, conv width 8, random weights, no
download) runs over a generated corpus of mixed rates and lengths (~2.4 s per file on average,
every third file at 22.05 kHz, the rest at 16 kHz), so what is timed is everything *around* the
forward; ``--no-model`` also runs every setting with the forward replaced by zeros of the right
shape (the data path alone: what the CPU of a GPU host does). For each setting it reports:

- wall clock: loop audio-s/s (the processing loop, from the first batch request to the last
  write), time to the first batch, where the main thread's time went, and the 1-min load
  average during the run (other processes on the machine distort every wall-clock figure);
- CPU ms per audio-second per part, whichever process spent it (:attr:`ExtractSummary.cpu`):
  decode, resample, prepare (normalise), pack (the hand-over in the worker), receive (the
  hand-over in the main process), forward, pool, write (the writer thread), the rest, and the
  audio-s/s this CPU cost allows on the machine's cores when nothing else runs (``ceiling``);
- the decoding workers' job on one core (CPU time): plain ``soundfile``, soxr, embedx's decode
  and its whole per-item preparation.

Usage:
    python benchmarks/pipeline.py [--files 4000] [--repeats 2] [--workers N ...] [--no-model]

Runs are interleaved (every setting once per repeat); the wall-clock table shows each setting's
fastest run, the CPU table its run with the least CPU. Prints markdown tables.
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
    """CPU ms per audio-second of one core for plain decoding, soxr resampling, embedx's decode
    and its whole per-item path (CPU time: it holds on a busy machine where wall time does not)."""
    import soundfile as sf
    import soxr

    from embedx.extraction.audio import load

    try:
        from embedx.extraction.audio import decode
    except ImportError:  # a tree before decode() existed
        def decode(path: Path) -> None:
            sf.read(str(path), dtype="float32", always_2d=True)

    sample = paths[:limit]
    audio = sum(sf.info(str(p)).duration for p in sample)
    for p in sample:  # into the page cache first: the first reader would pay for the disk
        p.read_bytes()
    t0 = time.process_time()
    decoded = [sf.read(str(p), dtype="float32") for p in sample]
    t1 = time.process_time()
    for w, sr in decoded:
        if sr != 16000:
            soxr.resample(w, sr, 16000, quality="HQ")
    t2 = time.process_time()
    for p in sample:
        decode(p)
    t3 = time.process_time()
    for p in sample:
        w = load(p, 16000)
        (w - w.mean()) / np.sqrt(w.var() + 1e-7)  # the model's normalisation, as the workers do it
    t4 = time.process_time()
    return {"soundfile decode (float32)": 1000 * (t1 - t0) / audio,
            "soxr resample (per second of all files' audio)": 1000 * (t2 - t1) / audio,
            "embedx decode": 1000 * (t3 - t2) / audio,
            "embedx decode + resample + normalise": 1000 * (t4 - t3) / audio}


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
    """One in-process extraction; returns its loop figures, CPU per part and the load average."""
    from embedx.backends.hf import HFBackend
    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.extract import extract
    from embedx.extraction.run_stats import children_cpu

    original = HFBackend.forward
    if no_model:
        HFBackend.forward = null_forward

    config = ExtractConfig(model=str(model), layers="all", poolings=("mean",), device="cpu",
                           batch_seconds=batch_seconds, workers=workers, progress=False)
    load_before = os.getloadavg()[0]
    t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
    try:
        summary = extract([str(corpus)], out, config)
    finally:
        HFBackend.forward = original
    total = time.perf_counter() - t0
    audio = summary.audio_seconds
    res = {"loop_rate": audio / summary.elapsed, "loop_s": summary.elapsed,
           "total_s": total, "audio": audio, "items": summary.processed, "workers": summary.workers,
           "load": max(load_before, os.getloadavg()[0]),
           # the whole run (model load, header scan, loop), measured from outside: holds for any tree
           "run_main_ms": 1000 * (time.process_time() - c0) / audio,
           "run_workers_ms": 1000 * (children_cpu() - k0) / audio}
    res.update({f"t_{k}": v for k, v in (getattr(summary, "timings", None) or {}).items()})
    res.update({f"c_{k}": 1000 * v / audio for k, v in (getattr(summary, "cpu", None) or {}).items()})
    return res


def ceiling(r: dict[str, float], cores: int) -> float:
    """audio-s/s the loop's CPU allows on ``cores`` idle cores: the main process (its loop),
    the workers together, and all of it on the cores, whichever binds first."""
    main, workers = r["c_main_total"], r["c_workers_total"]
    bounds = [1000 * cores / (main + workers), 1000 / main]
    if r["workers"]:
        bounds.append(1000 * r["workers"] / workers)
    return min(bounds)


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
    parser.add_argument("--only-no-model", action="store_true", help="run only the data path alone")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = args.corpus or tmp / "corpus"
        audio = make_corpus(corpus, args.files)
        model = make_model(tmp / "model")
        paths = sorted(corpus.glob("*.wav"))
        rates = raw_rates(paths)
        variants = [True] if args.only_no_model else [False, True] if args.no_model else [False]
        settings = [(b or None, w, nm) for b in args.batch_seconds for w in args.workers for nm in variants]
        results: dict[tuple, list[dict[str, float]]] = {s: [] for s in settings}
        k = 0
        for _ in range(args.repeats):
            for s in settings:
                k += 1
                results[s].append(run_extract(corpus, model, tmp / f"r{k}.h5", *s))
                (tmp / f"r{k}.h5").unlink()
        small = small_run_wall(corpus, model, tmp / "small.h5", args.small) if args.small else None

    from embedx.extraction.extract import available_cores, default_workers

    cores = available_cores()
    print(f"\n{args.files} files, {audio:.0f} s of audio (1.2-3.6 s, every third at 22.05 kHz), "
          f"near-free HuBERT (1 block, width 16), all layers, mean pooling, {cores} cores, "
          f"torch threads {torch.get_num_threads()}, default workers {default_workers()}, "
          f"best of {args.repeats} interleaved\n")
    print("Wall clock (best run; `load` = the 1-min load average during it: other processes on the machine)\n")
    print("| batch budget | workers | model | loop audio-s/s | load | loop s | run s (with model load, scan) | "
          "first batch s | wait for data | pad + to device + forward | pool + to host | blocked on writes | "
          "writes (writer thread) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s, runs in results.items():
        best = max(runs, key=lambda r: r["loop_rate"])
        def cell(key: str, r: dict = best) -> str:
            return f"{r[key]:.2f}" if key in r else "n/a"
        print(f"| {s[0] or 'CPU default'} s | {best['workers']} | "
              f"{'none (zeros)' if s[2] else 'near-free'} | "
              f"{best['loop_rate']:.0f} | {best['load']:.1f} | {best['loop_s']:.2f} | {best['total_s']:.2f} | "
              f"{cell('t_first_batch')} | {cell('t_wait')} | {cell('t_forward')} | {cell('t_pool')} | "
              f"{cell('t_write_wait')} | {cell('t_write')} |")
    parts = ["decode", "resample", "prepare", "pack", "receive", "forward", "pool", "write"]
    print("\nCPU ms per audio-second (run with the least CPU; whichever process spent it). `worker other`: "
          "worker start-up and sending; `main other`: the rest of the main process's loop (progress, "
          "queueing, torch threads); `ceiling`: audio-s/s this CPU cost allows on "
          f"{cores} idle cores (main process, workers, all cores: whichever binds first)\n")
    print("| batch budget | workers | model | " + " | ".join(parts) + " | worker other | main other | "
          "loop total | ceiling audio-s/s | whole run: main, workers |")
    print("|---|---:|---|" + "---:|" * (len(parts) + 6))
    for s, runs in results.items():
        best = min(runs, key=lambda r: r["run_main_ms"] + r["run_workers_ms"])
        head = f"| {s[0] or 'CPU default'} s | {best['workers']} | {'none (zeros)' if s[2] else 'near-free'} | "
        tail = f"{best['run_main_ms']:.3f}, {best['run_workers_ms']:.3f} |"
        if "c_main_total" not in best:  # a tree without CPU accounting
            print(head + " | ".join(["n/a"] * (len(parts) + 4)) + " | " + tail)
            continue
        decoding = sum(best[f"c_{p}"] for p in ("decode", "resample", "prepare", "pack"))
        in_main = best["c_receive"] + best["c_forward"] + best["c_pool"] + best["c_write"]
        worker_other = best["c_workers_total"] - decoding if best["workers"] else 0.0
        main_other = best["c_main_total"] - in_main - (0.0 if best["workers"] else decoding)
        total = best["c_main_total"] + best["c_workers_total"]
        print(head + " | ".join(f"{best[f'c_{p}']:.3f}" for p in parts)
              + f" | {worker_other:.3f} | {main_other:.3f} | {total:.3f} | {ceiling(best, cores):.0f} | " + tail)
    print("\nOne core, the decoding workers' job alone (first 600 files), CPU ms per audio-second:\n")
    print("| step | CPU ms per audio-s | audio-s/s per core |")
    print("|---|---:|---:|")
    for label, ms in rates.items():
        print(f"| {label} | {ms:.3f} | {1000 / ms:.0f} |")
    if small:
        print(f"\nSmall run: `embedx extract` CLI on {args.small} files, fresh process: {small[0]:.2f} s wall "
              f"(of which `import embedx.cli`: {small[1]:.2f} s)")


if __name__ == "__main__":
    main()
