"""Calibration of the subgroup gap CI (``fit --by``) and of the set comparison, by simulation.

**Gap CI** (:func:`embedx.probing.subgroups.gap_ci`, the function ``embedx fit --by`` calls). Out-of-fold
predictions are simulated directly, since the CI is about the sampling of *speakers* for given
predictions: every speaker has its own accuracy (``sigmoid(a)``, ``a ~ N(logit(p_group), 0.8)``,
so accuracy varies a lot from speaker to speaker as in real corpora), 8-16 items over 4 balanced
classes, and a wrong prediction is a uniformly drawn other class. The truth of a subgroup's UAR
is its population value, ``E[sigmoid(a)]`` (computed with 10^6 draws). Cases: ``null`` (two
subgroups of equal accuracy: coverage = share of CIs that contain 0), ``gap`` (0.75 vs 0.55),
and ``null3`` (three equal subgroups, the gap between the observed extremes: the selection of the
pair makes it harder). Both interval methods are reported: ``t`` (bootstrap standard error with
the ``S/(S-1)`` correction and a Welch t quantile; the default) and ``percentile``.

**Set comparison** (what ``embedx fit``'s model-comparison table decides: the study's confidence
set over every configuration, :func:`embedx.probing.compare.compare_configurations`, then
:func:`embedx.probing.sets.set_verdicts`). Two feature sets that are equally good (every layer the
same class signal, :func:`stats_calibration.simulate`), out-of-fold predictions of a linear
discriminant on 5 speaker-grouped folds (as ``benchmarks/stats_calibration.py``). Reported: how
often either set is called significantly worse (every flag is false), and, for the rejected
alternatives, how often a one-sided sign-flip test of the winner is below 0.05: on the two sets'
best layers' own predictions, and on leave-one-speaker-out / leave-one-fold-out selections within
each set. Cases: 6 vs 6 layers, and 12 layers vs 1 (a model against a single eGeMAPS-like set,
where the layer choice favours the bigger set).

    nice -n 10 python benchmarks/subgroup_calibration.py --reps 300 --jobs 2

Prints two Markdown tables; Monte Carlo standard errors are given for the rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NUM_CLASSES = 4
SPEAKER_SD = 0.8


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def population_accuracy(p: float, draws: int = 1_000_000) -> float:
    """``E[sigmoid(a)]``, ``a ~ N(logit(p), SPEAKER_SD)``: the subgroup's UAR over infinitely many speakers."""
    a = np.random.default_rng(123).normal(_logit(p), SPEAKER_SD, draws)
    return float(np.mean(1 / (1 + np.exp(-a))))


def simulate_predictions(groups: list[tuple[str, int, float]], seed: int):
    """Labels, predictions, speakers and subgroups of one corpus.

    Args:
        groups: ``(name, speakers, accuracy p)`` per subgroup.
        seed: seed.

    Returns:
        ``(y, pred, speaker, subgroup)``, each ``(num_items,)``.
    """
    rng = np.random.default_rng(seed)
    ys, preds, spks, subs = [], [], [], []
    sid = 0
    for name, speakers, p in groups:
        for _ in range(speakers):
            n = int(rng.integers(8, 17))
            acc = 1 / (1 + np.exp(-rng.normal(_logit(p), SPEAKER_SD)))
            y = (np.arange(n) + rng.integers(NUM_CLASSES)) % NUM_CLASSES
            wrong = (y + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
            preds.append(np.where(rng.random(n) < acc, y, wrong))
            ys.append(y)
            spks.append(np.full(n, f"s{sid:03d}"))
            subs.append(np.full(n, name))
            sid += 1
    return np.concatenate(ys), np.concatenate(preds), np.concatenate(spks), np.concatenate(subs)


def one_gap(groups: list[tuple[str, int, float]], truth: dict[str, float], seed: int, n_boot: int) -> dict:
    """One replicate: the observed extremes' gap CI (both methods) and whether it covers the truth."""
    from embedx.probing.metrics import get_metric
    from embedx.probing.subgroups import gap_ci

    uar = get_metric("uar")
    y, pred, spk, sub = simulate_predictions(groups, seed)
    scores = {g: uar.func(y[sub == g], pred[sub == g]) for g, _, _ in groups}
    hi, lo = max(scores, key=scores.get), min(scores, key=scores.get)
    true_gap = truth[hi] - truth[lo]
    out = {}
    for method in ("t", "percentile"):
        _, low, high = gap_ci(y, pred, spk, sub == hi, sub == lo, uar, num_classes=NUM_CLASSES,
                              n_boot=n_boot, seed=seed, method=method)
        out[method] = (low <= true_gap <= high, high - low, low > 0 or high < 0)
    return out


def gap_table(reps: int, jobs: int, n_boot: int, seed: int) -> list[str]:
    from joblib import Parallel, delayed

    cases = [
        ("10 spk (5+5)", "null", [("a", 5, 0.65), ("b", 5, 0.65)]),
        ("10 spk (5+5)", "gap", [("a", 5, 0.75), ("b", 5, 0.55)]),
        ("30 spk (15+15)", "null", [("a", 15, 0.65), ("b", 15, 0.65)]),
        ("30 spk (15+15)", "gap", [("a", 15, 0.75), ("b", 15, 0.55)]),
        ("30 spk (10+10+10)", "null3", [("a", 10, 0.65), ("b", 10, 0.65), ("c", 10, 0.65)]),
    ]
    lines = [f"{reps} replicates per row; 4 classes, 8-16 items per speaker, speaker accuracy logit sd "
             f"{SPEAKER_SD}, {n_boot} bootstrap resamples; Monte Carlo se of a coverage near 0.95: "
             f"{np.sqrt(0.95 * 0.05 / reps):.3f}", "",
             "| size | case | true gap | coverage t (default) | coverage percentile | width t | "
             "width percentile | CI excludes 0, t | CI excludes 0, percentile |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size, case, groups in cases:
        truth = {g: population_accuracy(p) for g, _, p in groups}
        runs = Parallel(n_jobs=jobs)(delayed(one_gap)(groups, truth, seed + r, n_boot) for r in range(reps))
        row = [size, case, f"{max(truth.values()) - min(truth.values()):.3f}"]
        for k in (0, 1, 2):
            for method in ("t", "percentile"):
                value = np.mean([r[method][k] for r in runs])
                row.append(f"{value:.3f}")
        # columns: coverage t, coverage pct, width t, width pct, excl t, excl pct
        lines.append("| " + " | ".join(row) + " |")
    return lines


def one_sets(layers_a: int, layers_b: int, speakers: int, per: int, strength: float, seed: int,
             n_perm: int, strength_b: float | None = None) -> dict:
    """One replicate of two equally good sets: is one of them called worse?"""
    from stats_calibration import lda_fit_predict, simulate

    from embedx.probing.compare import (
        ClusterScores,
        clusters_of,
        compare_configurations,
        signflip_test,
    )
    from embedx.probing.cv import make_folds
    from embedx.probing.metrics import get_metric
    from embedx.probing.sets import nested_predictions, set_verdicts

    uar = get_metric("uar")
    strengths = np.full(layers_a + layers_b, strength)
    strengths[layers_a:] = strength if strength_b is None else strength_b
    y, spk, X = simulate(speakers, per, strengths, seed)
    folds = make_folds(y, scheme="group", n_splits=5, seed=seed, groups=spk, num_classes=NUM_CLASSES)
    preds = []
    for layer in range(layers_a + layers_b):
        pred = np.empty(len(y), dtype=np.int64)
        for train, test in folds.splits:
            pred[test] = lda_fit_predict(X[layer][train], y[train], X[layer][test])
        preds.append(pred)
    members = [np.arange(layers_a), np.arange(layers_a, layers_a + layers_b)]
    # embedx: the study's confidence set over every configuration, then set_verdicts
    comp, _ = compare_configurations(y, preds, uar, groups=spk, num_classes=NUM_CLASSES, alpha=0.05,
                                     n_perm=n_perm, seed=seed)
    _, worse = set_verdicts(comp.p_set, comp.in_set, members)
    codes, _ = clusters_of(len(y), spk, seed)

    def signflip(vectors: list[np.ndarray]) -> float:
        scores = ClusterScores(y, vectors, uar, codes, NUM_CLASSES)
        winner = int(np.argmax(scores.pooled()))
        return signflip_test(scores, winner, 1 - winner, greater_is_better=True, n_perm=n_perm, seed=seed), winner

    # rejected: each set's best layer by its own score, then a sign-flip test of the winner
    own = [max((preds[j] for j in m), key=lambda p: uar.func(y, p)) for m in members]
    naive_p, winner = signflip(own)
    # rejected: leave-one-speaker-out / leave-one-fold-out selection within each set, then a sign-flip test
    loso = signflip([nested_predictions(y, [preds[j] for j in m], uar, codes, NUM_CLASSES)[0] for m in members])[0]
    fold_of = folds.fold_of(len(y))
    lofo = signflip([nested_predictions(y, [preds[j] for j in m], uar, fold_of, NUM_CLASSES)[0]
                     for m in members])[0]
    return {"worse": bool(worse.any()), "b_worse": bool(worse[1]), "naive": naive_p < 0.05,
            "naive_big": naive_p < 0.05 and winner == 0 and layers_a > layers_b,
            "loso": loso < 0.05, "lofo": lofo < 0.05}


def sets_table(reps: int, jobs: int, n_perm: int, seed: int, strength: float, weaker: float) -> list[str]:
    from joblib import Parallel, delayed

    cases = [(6, 6, 10, 48), (6, 6, 30, 16), (12, 1, 10, 48), (12, 1, 30, 16)]
    se = np.sqrt(0.05 * 0.95 / reps)
    lines = [f"{reps} studies per row; two equally good sets (every layer class signal {strength}), 4 classes, "
             f"linear discriminant on 5 speaker-grouped folds, {n_perm} permutations; every flag is false; "
             f"Monte Carlo se of a rate near 0.05: {se:.3f}", "",
             "| layers (set a / set b) | speakers x items | embedx: a set called worse (confidence set) | "
             "rejected: best layers' sign-flip p < 0.05 | of which the bigger set wins | rejected: "
             "leave-one-speaker-out selection, sign-flip p < 0.05 | rejected: leave-one-fold-out selection, "
             "sign-flip p < 0.05 |",
             "|---|---|---|---|---|---|---|"]
    for la, lb, speakers, per in cases:
        runs = Parallel(n_jobs=jobs)(delayed(one_sets)(la, lb, speakers, per, strength, seed + r, n_perm)
                                     for r in range(reps))
        lines.append(f"| {la} / {lb} | {speakers}x{per} | " + " | ".join(
            f"{np.mean([r[k] for r in runs]):.3f}" for k in ("worse", "naive", "naive_big", "loso", "lofo"))
            + " |")
    lines += ["", f"Power: set b weaker (every layer class signal {weaker} against {strength}), {reps} studies "
                  "per row", "", "| layers (set a / set b) | speakers x items | set b called worse |", "|---|---|---|"]
    for la, lb, speakers, per in [(6, 6, 10, 48), (6, 6, 30, 16)]:
        runs = Parallel(n_jobs=jobs)(delayed(one_sets)(la, lb, speakers, per, strength, seed + r, n_perm, weaker)
                                     for r in range(reps))
        lines.append(f"| {la} / {lb} | {speakers}x{per} | {np.mean([r['b_worse'] for r in runs]):.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=80, help="replicates per row")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the gap CI")
    parser.add_argument("--perm", type=int, default=500, help="permutations per set-comparison test")
    parser.add_argument("--strength", type=float, default=1.0, help="class signal of every layer (sets)")
    parser.add_argument("--weaker", type=float, default=0.6, help="class signal of the weaker set (power rows)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("gap", "sets"), default=None, help="run one of the two tables")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.only in (None, "gap"):
        print("## Subgroup gap CI (embedx.probing.subgroups.gap_ci)\n")
        print("\n".join(gap_table(args.reps, args.jobs, args.boot, args.seed)))
        print(f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.only in (None, "sets"):
        t = time.perf_counter()
        print("## Set comparison under the null (embedx.probing.sets.set_verdicts)\n")
        print("\n".join(sets_table(args.reps, args.jobs, args.perm, args.seed, args.strength, args.weaker)))
        print(f"\n({time.perf_counter() - t:.0f} s)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
