"""Calibration of the factorial comparison (``embedx fit --factors``), by simulation.

**Per-speaker scores** (the input of :func:`embedx.probing.factorial.factorial_tests`, the function
``fit --factors`` calls) are simulated as a corpus produces them: four feature sets in a 2 (arch)
× 2 (lang) design, speakers in two corpora (the ``--domain`` factor, between speakers), 4 classes
with 2-4 items each per speaker (8-16 items: a speaker's UAR is coarse and bounded). A speaker
recognises an item with probability ``sigmoid(ability_s + effect_set + corpus_s + noise_s,set)``:
abilities vary a lot between speakers (sd 0.8), every speaker × set pair has its own deviation
(sd 0.3), and the sets differ in that deviation (sd 0.15-0.45, so the sets are *not*
exchangeable in their noise: the hard case for a sign-flip test). Effects are on the logit scale.

Cases: ``null`` (no effect anywhere); ``others`` (arch +0.5 and corpus +0.5 planted: lang,
arch × lang and corpus × lang are still null, each tested while the others are present);
``power`` (arch +0.4, arch × lang ±0.3 per cell, corpus × arch ±0.3). Reported per case and
number of speakers: the rate of ``p_perm < 0.05`` for every null effect (false positives) and
every planted one (power), with the Monte Carlo standard error; and the parametric ``p_F`` for
reference.

**End to end** (``--e2e N``): N null studies through ``embedx.fit`` on a store of four sets of
equal signal (12 speakers in 2 corpora, 2 layers each), counting any Holm-significant effect.

    nice -n 10 python benchmarks/factorial_calibration.py --reps 1000 --e2e 20

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from embedx.probing.factorial import factorial_tests

LEVELS = {"arch": ["a0", "a1"], "lang": ["l0", "l1"]}
CELLS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (arch, lang) in the order factorial_tests expects
SET_SD = np.array([0.15, 0.45, 0.3, 0.2])  # each set's own speaker × set deviation
CASES = {
    "null": {},
    "others": {"arch": 0.5, "corpus": 0.5},
    "power": {"arch": 0.4, "arch × lang": 0.3, "corpus × arch": 0.3},
}


def simulate(rng: np.random.Generator, speakers: int, effects: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (S, 4), corpus (S,))``: every speaker's UAR with every set."""
    corpus = np.arange(speakers) % 2  # (S,)
    arch = np.array([a for a, _ in CELLS]) - 0.5  # (4,) ±0.5
    lang = np.array([b for _, b in CELLS]) - 0.5
    logit = (1.0 + rng.normal(0, 0.8, (speakers, 1)) + rng.normal(0, 1, (speakers, 4)) * SET_SD
             + effects.get("arch", 0) * arch + effects.get("arch × lang", 0) * 2 * arch * lang
             + effects.get("corpus", 0) * (corpus[:, None] - 0.5)
             + effects.get("corpus × arch", 0) * 2 * (corpus[:, None] - 0.5) * arch)  # (S, 4)
    items = rng.integers(2, 5, (speakers, 1, 4))  # (S, 1, classes): items per class
    correct = rng.binomial(np.broadcast_to(items, (speakers, 4, 4)), 1 / (1 + np.exp(-logit[..., None])))
    return (correct / items).mean(axis=2), np.where(corpus == 0, "A", "B")  # UAR: mean recall over classes


def calibrate(reps: int, sizes: list[int], n_perm: int, seed: int) -> pd.DataFrame:
    """One row per (case, speakers, effect): rate of p_perm < 0.05 and of p_F < 0.05."""
    rows = []
    for case, effects in CASES.items():
        for s in sizes:
            rng = np.random.default_rng([seed, s, len(case)])
            tables = []
            for r in range(reps):
                scores, corpus = simulate(rng, s, effects)
                tables.append(factorial_tests(scores, LEVELS, domains=corpus, domain_name="corpus", n_perm=n_perm,
                                              seed=r))
            p = pd.concat(tables)
            for effect, part in p.groupby("effect", sort=False):
                rate = float((part["p_perm"] < 0.05).mean())
                rows.append({"case": case, "speakers": s, "effect": effect,
                             "planted": effect in effects, "rate_perm": rate,
                             "mc_se": float(np.sqrt(rate * (1 - rate) / reps)) if 0 < rate < 1 else 0.0,
                             "rate_F": float((part["p_F"] < 0.05).mean())})
    return pd.DataFrame(rows)


def end_to_end(studies: int, seed: int) -> dict[str, float]:
    """Null studies through ``embedx.fit``: share with any Holm-significant effect, and per effect."""
    import embedx
    from embedx.store import FeatureSetSpec, StoreWriter

    hits, per_effect = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(studies):
            rng = np.random.default_rng([seed, k])
            n, spk = 96, np.repeat(np.arange(12), 8)
            y = np.arange(n) % 2
            items = pd.DataFrame({
                "id": [f"u{i:03d}" for i in range(n)], "path": [f"u{i:03d}.wav" for i in range(n)],
                "duration": 1.0, "sample_rate": 16000, "num_samples": 16000, "label": [f"c{c}" for c in y],
                "speaker": [f"s{s:02d}" for s in spk], "corpus": np.where(spk % 2, "A", "B")})
            path = Path(tmp) / f"null{k}.h5"
            with StoreWriter(path) as w:
                w.write_items(items)
                for a in ("a0", "a1"):
                    for b in ("l0", "l1"):
                        pooled = rng.normal(0, 1, (2, n, 6)).astype(np.float32)  # (layers, items, dim)
                        pooled[1, :, 0] += 1.0 * y + rng.normal(0, 0.5, 12)[spk]  # same signal in every set
                        spec = FeatureSetSpec(name=f"{a}_{b}", backend="hf", layers=(0, 1), dim=6,
                                              poolings=("mean",), frames=False, dtype="float32", attrs={},
                                              config={"backend": "hf", "model": "sim", "layers": "all"})
                        w.create_feature_set(spec)
                        w.write(spec.name, np.arange(n), pooled={"mean": pooled})
            factors = Path(tmp) / "factors.csv"
            factors.write_text("set,arch,lang\n" + "".join(f"{a}_{b},{a},{b}\n" for a in ("a0", "a1")
                                                          for b in ("l0", "l1")))
            fitted = embedx.fit(path, output=None, factors=factors, domain="corpus", bootstrap=999, seed=k,
                                progress=False)
            table = fitted.study.analyses["factorial"].table
            hits += bool((table["p_holm"] < 0.05).any())
            per_effect.append((table["p_perm"] < 0.05).mean())
    return {"studies": studies, "any_holm": hits / studies, "per_effect_rate": float(np.mean(per_effect))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--sizes", default="10,30,60")
    parser.add_argument("--perm", type=int, default=999, help="random flips/permutations per test")
    parser.add_argument("--e2e", type=int, default=0, help="null studies through embedx.fit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    table = calibrate(args.reps, [int(s) for s in args.sizes.split(",")], args.perm, args.seed)
    print(f"## Factorial tests: rate of p < 0.05 ({args.reps} simulated studies per row)\n")
    print("| case | effect | planted | " + " | ".join(f"{s} speakers (perm / F)" for s in table["speakers"].unique())
          + " |")
    print("|---|---|---|" + "---|" * table["speakers"].nunique())
    for (case, effect), part in table.groupby(["case", "effect"], sort=False):
        cells = [f"{r.rate_perm:.3f} ± {r.mc_se:.3f} / {r.rate_F:.3f}" for r in part.itertuples()]
        print(f"| {case} | {effect} | {'yes' if part['planted'].iloc[0] else 'no'} | " + " | ".join(cells) + " |")
    null = table[~table["planted"]]
    se = np.sqrt(0.05 * 0.95 / args.reps)
    print(f"\nnull effects: {len(null)} rows, mean false-positive rate (permutation) "
          f"{null['rate_perm'].mean():.4f} ± {np.sqrt(0.05 * 0.95 / (args.reps * len(null))):.4f} (pooled), "
          f"largest {null['rate_perm'].max():.3f}, {int((null['rate_perm'] > 0.05 + 2 * se).sum())} above "
          f"0.05 + 2 MC s.e. ({0.05 + 2 * se:.3f}); ({time.perf_counter() - start:.0f} s)")
    if args.e2e:
        res = end_to_end(args.e2e, args.seed)
        print(f"\n## End to end: {res['studies']} null studies through embedx.fit (12 speakers, 2 corpora, "
              f"4 sets)\n\nany effect Holm-significant: {res['any_holm']:.3f}; mean share of the 7 effects "
              f"with p_perm < 0.05: {res['per_effect_rate']:.3f}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
