"""GPU extraction throughput of base and large speech models, in one command.

Builds HuBERT-base (12 blocks, 768 dims, group-norm encoder) and HuBERT-large (24 blocks, 1024
dims, layer-norm encoder) with random weights from their configs (real sizes, no download),
generates a corpus of 2-8 s wav files (every third at 22.05 kHz), and runs ``embedx extract``
(all layers, mean pooling) at each precision. For every run it prints audio-s/s, the GPU's peak
memory, the share of the GPU's FLOP ceiling used, and how much of the loop's wall time the
forward waited on decoded data; each run's profile is also stored in its feature set's
``run_*`` attrs (``embedx info`` shows it).

Usage (any CUDA GPU):
    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --files 4000 --precision bf16 fp16 --peak-tflops 989
Smoke test without a GPU:
    python benchmarks/gpu_throughput.py --device cpu --quick

The FLOP count per audio-second is computed from each config (feature encoder convolutions,
projections, attention and feed-forward of every block); the ceiling is the dense fp16/bf16
tensor-core peak of the GPU, looked up by name (SXM and PCIe H100 apart) or given with
``--peak-tflops``. Each run follows an untimed warm-up run, and the time to the first decoded
batch (worker start) is reported apart from the rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: dense fp16/bf16 tensor-core peak in TFLOP/s by GPU name fragment (vendor data sheets), most
#: specific first: ``torch.cuda.get_device_name`` says "NVIDIA H100 80GB HBM3" for the SXM card
#: (989), "NVIDIA H100 PCIe" (756) and "NVIDIA H100 NVL" (835) for the others
PEAK_TFLOPS = (
    ("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0),
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0), ("A40", 150.0), ("A6000", 155.0), ("V100", 125.0), ("T4", 65.0), ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)

MODELS = {
    # hubert-base-ls960: group-norm feature encoder, post-norm blocks
    "base": dict(),
    # hubert-large-ll60k: layer-norm feature encoder, stable layer norm
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def make_model(folder: Path, size: str) -> tuple[Path, float]:
    """Save a random-weight HuBERT of the given size; returns its folder and GFLOP per audio-second."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(**MODELS[size])
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        HubertModel(config).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(do_normalize=size == "large", return_attention_mask=True).save_pretrained(folder)
    return folder, gflop_per_second(config)


def gflop_per_second(config: object, seconds: float = 5.0, rate: int = 16000) -> float:
    """Forward GFLOP per audio-second (2 per multiply-add) for items of ``seconds``."""
    n = int(seconds * rate)
    flops = 0.0
    channels = 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True):
        n = (n - kernel) // stride + 1
        flops += 2.0 * n * kernel * channels * dim
        channels = dim
    frames, d, ff = n, config.hidden_size, config.intermediate_size
    flops += 2.0 * frames * channels * d  # feature projection
    flops += 2.0 * frames * d * (d // config.num_conv_pos_embedding_groups) * config.num_conv_pos_embeddings
    per_block = 2.0 * frames * (4 * d * d + 2 * d * ff) + 4.0 * frames * frames * d  # projections, FFN, QK^T and AV
    flops += config.num_hidden_layers * per_block
    return flops / seconds / 1e9


def make_corpus(folder: Path, num_files: int, low: float, high: float, seed: int = 0) -> float:
    """Write ``num_files`` noisy-tone wav files of ``low``-``high`` s; returns the total seconds."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(num_files):
        rate = 22050 if i % 3 == 0 else 16000
        n = int(rng.uniform(low, high) * rate)
        t = np.arange(n) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.05 * rng.standard_normal(n)
        sf.write(folder / f"f{i:05d}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
        total += n / rate
    return total


def peak_tflops(device: str, given: float | None) -> tuple[str, float | None]:
    """The device's name and its dense fp16/bf16 peak (None when unknown)."""
    import torch

    if not device.startswith("cuda"):
        return "cpu", given
    name = torch.cuda.get_device_name(device)
    if given is not None:
        return name, given
    return name, peak_for_name(name)


def peak_for_name(name: str) -> float | None:
    """The dense fp16/bf16 peak of the GPU called ``name`` (the first fragment that matches)."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def warm_up(corpus: Path, out: Path, config: object, files: int = 64) -> None:
    """One short untimed run first: CUDA context, kernels, cuDNN plans and allocator pools."""
    from embedx.extraction.extract import extract

    paths = sorted(corpus.glob("*.wav"))[:files]
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"{p}\n" for p in paths))
    extract([str(listing)], out, config)
    out.unlink()


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="*", default=["base", "large"], choices=list(MODELS))
    parser.add_argument("--precision", nargs="*", default=None, help="default: bf16 fp16 on a GPU, fp32 on the CPU")
    parser.add_argument("--files", type=int, default=3000, help="corpus files (2-8 s each)")
    parser.add_argument("--batch-seconds", type=float, default=None, help="default: embedx's per-device default")
    parser.add_argument("--workers", type=int, default=None, help="default: embedx's (all cores but one)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense fp16/bf16 peak")
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 files of 1-2 s, one run each")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores in this folder")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a smoke test")
    precisions = args.precision or (["bf16", "fp16"] if args.device.startswith("cuda") else ["fp32"])
    files, low, high = (6, 1.0, 2.0) if args.quick else (args.files, 2.0, 8.0)

    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.extract import default_workers, extract
    from embedx.store import StoreReader

    name, peak = peak_tflops(args.device, args.peak_tflops)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out_dir = args.keep or tmp
        out_dir.mkdir(parents=True, exist_ok=True)
        audio = make_corpus(tmp / "corpus", files, low, high)
        for size in args.models:
            model, gflop = make_model(tmp / f"model-{size}", size)
            for precision in precisions:
                out = out_dir / f"{size}-{precision}.h5"
                out.unlink(missing_ok=True)
                config = ExtractConfig(model=str(model), layers="all", poolings=("mean",), device=args.device,
                                       precision=precision, batch_seconds=args.batch_seconds,
                                       workers=args.workers, progress=False)
                warm_up(tmp / "corpus", tmp / "warm-up.h5", config)
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                summary = extract([str(tmp / "corpus")], out, config)
                wall = time.perf_counter() - t0
                rate = summary.audio_seconds / summary.elapsed
                first = summary.timings.get("first_batch", 0.0)  # worker start and the first decode
                steady = summary.audio_seconds / max(summary.elapsed - first, 1e-9)
                with StoreReader(out) as reader:
                    attrs = reader.spec(summary.name).attrs
                assert attrs["run_precision"] == precision, attrs  # the profile was stored
                rows.append({
                    "model": size, "precision": precision, "rate": rate, "wall": wall,
                    "steady": steady, "first": first, "batch_seconds": summary.batch_seconds,
                    "peak": attrs["run_peak_memory_bytes"] / 2**30,
                    "flop_share": steady * gflop / (peak * 1e3) if peak else float("nan"),
                    "wait": summary.timings.get("wait", 0.0) / summary.elapsed,
                    "gflop": gflop,
                })
    workers = default_workers() if args.workers is None else args.workers
    memory = "GPU peak GiB" if args.device.startswith("cuda") else "peak RSS GiB"
    print(f"\n{files} files, {audio:.0f} s of audio ({low:g}-{high:g} s, every third at 22.05 kHz), "
          f"all layers, mean pooling, device {name} ({args.device}), {workers} decoding workers, "
          f"{os.cpu_count()} cores, peak {peak or 'unknown'} TFLOP/s\n")
    print("Each run after an untimed warm-up run on 64 files. `audio-s/s`: the loop (first batch request to "
          "last write); `after first batch`: the same without the wait for the first decoded batch (worker "
          "start, shown apart); the FLOP share is of the latter.\n")
    print(f"| model | precision | GFLOP per audio-s | audio-s/s | after first batch | first batch s | batch s | "
          f"{memory} | share of FLOP ceiling | loop waited on data | run s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        share = f"{r['flop_share']:.1%}" if r["flop_share"] == r["flop_share"] else "n/a"
        print(f"| {r['model']} | {r['precision']} | {r['gflop']:.1f} | {r['rate']:.1f} | {r['steady']:.1f} | "
              f"{r['first']:.2f} | {r['batch_seconds']:g} | {r['peak']:.2f} | {share} | {r['wait']:.0%} | "
              f"{r['wall']:.1f} |")


if __name__ == "__main__":
    main()
