"""Calibration of MDL probing (``embedx fit --mdl``) by simulation: a planted layer and a null.

Synthetic pooled features with 13 layers, 4 balanced classes and speakers that differ (a
per-speaker offset in every layer, every speaker has items of every class). Each replicate codes
the labels of every layer with the code ``embedx fit --mdl`` uses: the blocks of
:func:`embedx.probing.mdl.speaker_blocks` (whole speakers, seeded order) and
:func:`embedx.probing.mdl.online_code` with the study's model (:func:`embedx.probing.models.build_model`,
default ``logreg``: a standardising scaler and L2 logistic regression).

Two cases at each size (speakers × items per speaker):

* ``planted``: layer 6 adds a class mean of norm ``strength`` (in units of the noise sd per
  dimension × sqrt(dim)); the other 12 layers hold no class information. Reported: how often the
  planted layer has the shortest code (MDL rank 1) and its mean compression, against the mean
  compression of the other layers.
* ``null``: no layer holds class information. Reported: the mean compression over every layer
  of every study and its 5th-95th percentiles, and the share of layers whose compression exceeds 1
  (a code shorter than the uniform one on labels the features do not carry).

    nice -n 10 python benchmarks/mdl_probe.py --reps 40 --jobs 2

Prints one Markdown table (and the command); Monte Carlo standard errors for the rates.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

NUM_LAYERS = 13
NUM_CLASSES = 4
PLANTED = 6


def simulate(num_speakers: int, per_speaker: int, dim: int, strength: float, seed: int):
    """Labels, speakers and ``(layers, items, dim)`` features of one synthetic corpus."""
    rng = np.random.default_rng(seed)
    n = num_speakers * per_speaker
    spk = np.repeat(np.arange(num_speakers), per_speaker)
    y = np.tile(np.arange(NUM_CLASSES), n // NUM_CLASSES + 1)[:n]
    y = np.concatenate([rng.permutation(y[spk == s]) for s in range(num_speakers)])  # each speaker: every class
    means = rng.normal(size=(NUM_CLASSES, dim))
    means *= strength / np.linalg.norm(means, axis=1, keepdims=True) * np.sqrt(dim) / 2
    X = np.empty((NUM_LAYERS, n, dim), np.float32)
    for layer in range(NUM_LAYERS):
        offsets = rng.normal(size=(num_speakers, dim))  # speakers differ in every layer
        X[layer] = rng.normal(size=(n, dim)) + offsets[spk]
        if layer == PLANTED and strength > 0:
            X[layer] += means[y]
    return X, y, spk


def one_study(num_speakers: int, per_speaker: int, dim: int, strength: float, model: str, seed: int) -> np.ndarray:
    """``(layers,)`` compression of every layer's online code in one replicate."""
    from threadpoolctl import threadpool_limits

    from embedx.probing.mdl import online_code, speaker_blocks
    from embedx.probing.models import build_model

    X, y, spk = simulate(num_speakers, per_speaker, dim, strength, seed)
    blocks = speaker_blocks(spk, len(y), seed=seed)
    est = build_model(model, "classification", seed=seed)
    with threadpool_limits(limits=1):
        return np.array([online_code(est, X[layer], y, blocks, NUM_CLASSES).compression
                         for layer in range(NUM_LAYERS)])


def _rate(hits: int, n: int) -> str:
    p = hits / n
    return f"{hits}/{n} ({p:.2f} ± {np.sqrt(p * (1 - p) / n):.2f})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40, help="studies per size and case")
    ap.add_argument("--sizes", default="10x48,30x16,60x8", help="speakers x items per speaker, comma list")
    ap.add_argument("--strengths", default="0.5,1.0", help="planted signal strengths, comma list")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--model", default="logreg")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from joblib import Parallel, delayed

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    strengths = [float(s) for s in args.strengths.split(",")]
    rows = []
    start = time.perf_counter()
    for S, m in sizes:
        for strength in [0.0, *strengths]:
            comp = np.array(Parallel(n_jobs=args.jobs)(
                delayed(one_study)(S, m, args.dim, strength, args.model, args.seed * 100_003 + r)
                for r in range(args.reps)))  # (reps, layers)
            if strength == 0:
                q05, q95 = np.quantile(comp, [0.05, 0.95])
                rows.append(f"| {S}×{m} | null | – | – | {comp.mean():.3f} [{q05:.3f}, {q95:.3f}] | "
                            f"{_rate(int((comp > 1).sum()), comp.size)} |")
            else:
                first = int((comp.argmax(axis=1) == PLANTED).sum())  # highest compression = shortest code
                others = np.delete(comp, PLANTED, axis=1)
                rows.append(f"| {S}×{m} | planted | {strength:g} | {_rate(first, args.reps)} | "
                            f"{comp[:, PLANTED].mean():.3f} (other layers {others.mean():.3f}) | "
                            f"{_rate(int((others > 1).sum()), others.size)} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"python benchmarks/mdl_probe.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{args.reps} studies per row; {NUM_LAYERS} layers, {NUM_CLASSES} classes, dim {args.dim}, "
          f"model {args.model}; {time.perf_counter() - start:.0f} s\n")
    print("| speakers×items | case | strength | planted layer has the shortest code | "
          "mean compression [5%, 95%] | signal-free layers with compression > 1 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
