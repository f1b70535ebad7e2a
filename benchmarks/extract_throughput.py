"""Throughput of `embedx extract` vs. the usual per-file tutorial loop vs. the bare forward.

A base-size HuBERT with random weights (the compute of hubert-base-ls960, no download) runs
over synthetic items of 1-8 s. Three ways, same items, all layers, mean pooling:

- embedx: ``embedx.extraction.extract.extract`` (length-bucketed batches, decoding in workers, store writes)
- naive loop: per file ``soundfile.read`` -> ``Wav2Vec2FeatureExtractor`` -> forward with
  ``output_hidden_states=True`` -> mean of every layer (what most tutorials do)
- bare forward: the model alone on pre-loaded tensors, one item at a time (the floor)

Usage: python benchmarks/extract_throughput.py [--items 100] [--repeats 2] [--device cpu] [--precision fp32]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def make_items(folder: Path, num_items: int, seed: int) -> list[Path]:
    from embedx.testing.synth import EMOTIONS, utterance

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_items):
        seconds = float(rng.uniform(1.0, 8.0))
        wave = utterance(list(EMOTIONS)[i % 4], float(rng.uniform(100, 220)), 1.0, seconds, 16000, rng)
        path = folder / f"item{i:04d}.wav"
        sf.write(path, wave, 16000)
        paths.append(path)
    return paths


def make_model(folder: Path) -> Path:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    config = HubertConfig()  # hubert-base-ls960 architecture: 12 layers, 768 dims, group norm
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(folder)
    return folder


def naive_loop(paths: list[Path], model_dir: Path, device: str) -> float:
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    start = time.perf_counter()
    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    feats = []
    with torch.no_grad():
        for p in paths:
            wave, sr = sf.read(p, dtype="float32")
            inputs = fe(wave, sampling_rate=sr, return_tensors="pt").to(device)
            hs = model(**inputs, output_hidden_states=True).hidden_states
            feats.append(torch.stack([h.mean(dim=1)[0] for h in hs]).cpu().numpy())
    return time.perf_counter() - start


def bare_forward(paths: list[Path], model_dir: Path, device: str) -> float:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0])[None].to(device) for p in paths]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        for w in waves:
            model(w, output_hidden_states=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def embedx_extract(paths: list[Path], model_dir: Path, out: Path, device: str, precision: str,
                   batch_seconds: float | None) -> float:
    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.extract import extract

    config = ExtractConfig(model=str(model_dir), layers="all", poolings=("mean",), device=device,
                           precision=precision, batch_seconds=batch_seconds, progress=False)
    start = time.perf_counter()
    extract([str(paths[0].parent)], out, config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-seconds", type=float, default=None, help="default: embedx's per-device default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "wavs").mkdir()
        paths = make_items(tmp / "wavs", args.items, args.seed)
        audio = sum(sf.info(p).duration for p in paths)
        model_dir = make_model(tmp / "model")
        runs = {
            "embedx extract (all layers, mean)": lambda k: embedx_extract(
                paths, model_dir, tmp / f"f{k}.h5", args.device, args.precision, args.batch_seconds),
            "naive per-file loop (tutorial code)": lambda k: naive_loop(paths, model_dir, args.device),
            "bare forward, one item at a time": lambda k: bare_forward(paths, model_dir, args.device),
        }
        # interleaved repeats, best of each: the machine's noise hits every method alike
        times: dict[str, list[float]] = {label: [] for label in runs}
        for k in range(args.repeats):
            for label, run in runs.items():
                times[label].append(run(k))
        rows = [(label, min(t)) for label, t in times.items()]
    base = rows[1][1]
    print(f"\n{args.items} items, {audio:.1f} s of audio (1-8 s), base HuBERT (random weights), "
          f"device {args.device}, embedx precision {args.precision}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}\n")
    print("| method | seconds | audio-s/s | vs. naive loop |")
    print("|---|---:|---:|---:|")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} | {audio / secs:.1f} | {base / secs:.2f}x |")


if __name__ == "__main__":
    main()
