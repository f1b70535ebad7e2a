"""Calibration of the comparison statistics for regression studies, every regressor of the registry.

The regression counterpart of ``stats_calibration.py`` (whose classification table set
:data:`embedx.probing.compare.FAMILY_INFLATION`): the same null of exchangeable configurations,
the same designs, the same two false claims, with a continuous target scored by the regression
default metric (CCC) per speaker.

Synthetic corpus: every item has a target ``y = speaker shift + z`` (``z ~ N(0, 1)``, the
speaker's shift ``~ N(0, 0.5)``, as speakers differ in mean arousal); every configuration's
features (dimension 8) are a speaker offset plus ``strength × expressiveness × y`` along a fixed
direction plus independent noise, so the configurations are exchangeable and per-speaker CCC
varies from speaker to speaker. Per study: 3 configurations, the study's 5 speaker-grouped folds
(:func:`embedx.probing.cv.make_folds`), the registry's regression pipeline
(:func:`embedx.probing.models.build_model`) cloned and fitted in every training fold, then
:func:`embedx.probing.compare.compare_configurations` with the family's inflation
(:func:`embedx.probing.compare.null_inflation`, the factor ``embedx fit`` uses). Reported per
family and design:

* false "worse": a configuration flagged worse than the best (family-wise), target <= 0.05;
* false selective: the paired sign-flip test of configuration 0 against its exchangeable twin 1
  at p < 0.05 (the selectivity test's false claim), target <= 0.05;
* the needed inflation: the 95th percentile over the null studies of each study's critical
  inflation (above it the study stops flagging; bisection on ``best_set`` / ``signflip_test``),
  i.e. the smallest factor with a false rate of at most 0.05.

    nice -n 19 python benchmarks/stats_calibration_regression.py --jobs 1
    python benchmarks/stats_calibration_regression.py --families ridge --designs 10x48 --studies 8  # smoke

Prints one Markdown table; rates come with binomial Monte Carlo standard errors.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats_calibration import ALPHA, DESIGNS, DIM, FAMILY_CONFIGS, _rate, critical_inflations  # noqa: E402

#: studies per null cell, by cost (rf: 300 trees per fit; lgbm, mlp: boosting and early stopping)
STUDIES = {"rf": 16, "lgbm": 24, "mlp": 24}
DEFAULT_STUDIES = 40


def simulate(num_speakers: int, per_speaker: int, strengths: np.ndarray, seed: int):
    """Targets, speakers and ``(configs, items, dim)`` features of one synthetic corpus."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(12345).normal(size=DIM)
    direction /= np.linalg.norm(direction)  # fixed in every replicate
    spk = np.repeat(np.arange(num_speakers), per_speaker)
    y = rng.normal(0.0, 0.5, num_speakers)[spk] + rng.normal(0.0, 1.0, len(spk))
    offset = rng.normal(0.0, 1.0, (num_speakers, DIM))[spk]  # who is speaking (every configuration)
    express = np.exp(rng.normal(0.0, 0.5, num_speakers))[spk, None]  # how clearly
    X = np.empty((len(strengths), len(y), DIM), np.float32)
    for c, strength in enumerate(strengths):
        X[c] = offset + strength * express * y[:, None] * direction + rng.normal(0.0, 1.0, (len(y), DIM))
    return y, spk, X


def oof_predictions(family: str, X: np.ndarray, y: np.ndarray, folds, seed: int) -> np.ndarray:
    """Out-of-fold predictions of the registry's regression pipeline, fitted per fold."""
    from sklearn.base import clone

    from embedx.probing.models import build_model

    proto = build_model(family, "regression", seed=seed)
    pred = np.empty(len(y))
    for train, test in folds.splits:
        pred[test] = clone(proto).fit(X[train], y[train]).predict(X[test])
    return pred


def null_study(family: str, speakers: int, per: int, strength: float, seed: int, n_perm: int) -> dict:
    """One null study: which configurations are flagged, the paired p and the critical inflations."""
    from threadpoolctl import threadpool_limits

    from embedx.probing.compare import compare_configurations, null_inflation
    from embedx.probing.cv import make_folds
    from embedx.probing.metrics import get_metric

    y, spk, X = simulate(speakers, per, np.full(FAMILY_CONFIGS, strength), seed)
    folds = make_folds(y, scheme="group", n_splits=5, seed=seed, groups=spk, task="regression")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = [oof_predictions(family, X[c], y, folds, seed) for c in range(len(X))]
    comp, _ = compare_configurations(y, preds, get_metric("ccc"), groups=spk, num_classes=None, alpha=ALPHA,
                                     n_perm=n_perm, seed=seed, inflation=null_inflation(family, "regression"))
    return {"worse": ~comp.in_set, "p_sel": comp.paired_p(0, 1), "pooled": comp.pooled,
            **critical_inflations(comp.scores, n_perm, seed)}


def family_row(family: str, design: str, args) -> dict[str, object]:
    """The null studies of one cell (family × design), scored."""
    from joblib import Parallel, delayed

    from embedx.probing.compare import null_inflation

    speakers, per = (int(v) for v in design.lower().split("x"))
    n = args.studies or STUDIES.get(family, DEFAULT_STUDIES)
    start = time.perf_counter()
    runs = Parallel(n_jobs=args.jobs)(delayed(null_study)(family, speakers, per, args.strength, args.seed + r,
                                                          args.perm) for r in range(n))
    worse = np.array([r["worse"] for r in runs])  # (studies, configs)
    p_sel = np.array([r["p_sel"] for r in runs])
    return {
        "family": family, "design": design, "studies": n, "inflation": null_inflation(family, "regression"),
        "ccc": float(np.mean([r["pooled"] for r in runs])),
        "false_worse": _rate(worse.any(axis=1), n), "false_selective": _rate(p_sel < ALPHA, n),
        "c_set": [r["c_set"] for r in runs], "c_sel": [r["c_sel"] for r in runs],
        "needed": float(np.quantile([r["c_set"] for r in runs], 1 - ALPHA, method="higher")),
        "needed_sel": float(np.quantile([r["c_sel"] for r in runs], 1 - ALPHA, method="higher")),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    from embedx.probing.models import available_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    known = available_models("regression")
    parser.add_argument("--families", default="all", help=f"regressors of the registry ({', '.join(known)}) or all")
    parser.add_argument("--designs", default=DESIGNS, help="speakers x items per speaker, comma list")
    parser.add_argument("--studies", type=int, default=None,
                        help=f"studies per cell (default {DEFAULT_STUDIES}, except {STUDIES})")
    parser.add_argument("--strength", type=float, default=1.0, help="signal of every configuration")
    parser.add_argument("--perm", type=int, default=300, help="permutations per comparison test")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write every cell, with each study's critical inflations, as JSON")
    args = parser.parse_args(argv)
    families = known if args.families == "all" else [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in known]
    if bad:
        parser.error(f"--families: {', '.join(bad)} not a regressor of the registry; accepted: {', '.join(known)}, all")
    start = time.perf_counter()
    rows = []
    for design in args.designs.split(","):
        for family in families:
            rows.append(family_row(family, design, args))
            print(f"[{time.perf_counter() - start:.0f} s] "
                  f"{ {k: v for k, v in rows[-1].items() if k not in ('c_set', 'c_sel')} }", flush=True)
    print()
    print(f"regression, {FAMILY_CONFIGS} exchangeable configurations per study, dim {DIM}, 5 speaker-grouped "
          f"folds, metric CCC per speaker, {args.perm} permutations per test, alpha {ALPHA}, seed {args.seed}; "
          f"rate ± binomial Monte Carlo se (at the rate, or at {ALPHA} when the rate is lower)")
    print()
    print("| family | design | studies | inflation | mean CCC | false 'worse' | needed inflation | "
          "false selective | needed (selectivity) | s |")
    print("|" + "---|" * 10)
    for r in rows:
        print(f"| {r['family']} | {r['design']} | {r['studies']} | {r['inflation']:.2f} | {r['ccc']:.3f} | "
              f"{r['false_worse']} | {r['needed']:.2f} | {r['false_selective']} | {r['needed_sel']:.2f} | "
              f"{r['seconds']:.0f} |")
    if args.out:
        import json

        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1, default=float)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
