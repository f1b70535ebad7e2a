"""Calibration of embedx's comparisons, CIs and selection-aware best score, by simulation.

Synthetic features (4 balanced classes, dimension 8) and speakers that differ (a feature offset
and an expressiveness factor per speaker, so accuracy varies from speaker to speaker as it does in
real corpora); no audio and no extraction: the features go straight into the stage-2 functions.

**Every model family** (the default; issue 22). Per study: 3 exchangeable configurations (the
same class signal, independent noise; for ``weighted-linear``, the weighted-layer probe, 3 stacks
of 3 such layers), the study's folds (:func:`embedx.probing.cv.make_folds`, 5 speaker-grouped
folds), the registry's pipeline (:func:`embedx.probing.models.build_model`) cloned and fitted in
every training fold, then :func:`embedx.probing.compare.compare_configurations` with the family's
inflation (:func:`embedx.probing.compare.null_inflation`). Cases, at each design (speakers × items
per speaker):

* ``null``: every "worse than best" flag is false (family-wise rate); the paired sign-flip test of
  configuration 0 against 1 is the selectivity test of a layer against an equally good random
  twin, so ``p < 0.05`` is a false selective claim. For both, the *needed inflation*: each study's
  critical inflation (above it the study stops flagging, found by bisection on the library's own
  ``best_set`` / ``signflip_test``), whose 95th percentile over the null studies is the smallest
  inflation with a false rate of at most 0.05.
* ``planted``: configuration 0 carries a stronger signal; power (the share of the two weaker ones
  flagged worse; selectivity of 0 against 1) and the rate at which 0 is flagged (an error).
* ``chance``: no class signal at all; every configuration is refitted on ``--labels`` label
  permutations (:func:`embedx.probing.permutation.permuted_labels`, within speakers, same folds)
  and the best configuration's family-wise p (:func:`embedx.probing.permutation.permutation_p`
  against each permutation's best score) ``<= 0.05`` is a false "beats chance".
  ``chance-signal``: the same with a weak signal (power).

    nice -n 5 python benchmarks/stats_calibration.py --jobs 2
    python benchmarks/stats_calibration.py --quick --families logreg,svm     # smoke run

**The 13-layer linear-discriminant table** (``--legacy``, its own options below): 13 layers, two
engines, coverage of the CIs and the optimism of the best score.

Synthetic features with 13 layers, 4 balanced classes and speakers that differ (a feature
offset and an expressiveness factor per speaker, so accuracy varies from speaker to speaker as
it does in real corpora). Two engines produce a replicate:

* ``--engine oof`` (default, ~0.3 s per study): the study's folds (:func:`embedx.probing.cv.make_folds`,
  5 speaker-grouped folds), a closed-form linear discriminant fitted inside every training fold
  (standardised on the training part), then :func:`embedx.probing.compare.compare_configurations`,
  the exact function ``embedx fit`` uses for the pooled estimand, the CIs, the confidence set
  that decides ``worse_than_best`` and the selection-aware estimate;
* ``--engine study``: the whole of :func:`embedx.probing.study.run_study` with ``--model`` (slower,
  ~2 s per study), to check that the two agree.

Two cases at each size (speakers × items per speaker):

* ``null``: 13 exchangeable layers (the same class signal, independent noise per layer);
  every "worse" flag is false. Reported: the family-wise false "worse" rate.
* ``planted``: layer 6 carries a stronger signal than the other 12 (equal among themselves);
  reported: power (the share of the 12 weaker layers flagged worse, and the share of studies
  flagging all of them) and the rate at which the truly best layer is flagged (an error).

In both cases: coverage of the 95% CI of a pre-chosen configuration (layer 0), of the
selected (best) configuration's own CI, and of the selection-aware CI, each against the true
performance of that configuration: the expected UAR on new speakers of the same model trained
on a training part of the same size (4/5 of the speakers), computed once per signal strength by
training on fresh data and testing on 400 fresh speakers (averaged over 30 training draws). The
optimism of the best configuration's score and of the selection-aware estimate is the mean of
(estimate - truth of the selected configuration).

    nice -n 10 python benchmarks/stats_calibration.py --legacy --reps 200 --jobs 2

Prints one Markdown table; Monte Carlo standard errors are given for the rates.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

NUM_LAYERS = 13
NUM_CLASSES = 4
DIM = 8
BEST_LAYER = 6
PRECHOSEN = 0


def _means(seed: int = 12345) -> np.ndarray:
    """Fixed class means (the same in every replicate, so the truth is computed once)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(NUM_CLASSES, DIM))
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def simulate(num_speakers: int, per_speaker: int, strengths: np.ndarray, seed: int):
    """Labels, speakers and ``(layers, items, dim)`` features of one synthetic corpus."""
    rng = np.random.default_rng(seed)
    means = _means()
    y = np.tile(np.arange(per_speaker) % NUM_CLASSES, num_speakers)
    spk = np.repeat(np.arange(num_speakers), per_speaker)
    offset = rng.normal(0.0, 1.0, (num_speakers, DIM))[spk]  # who is speaking (all layers)
    express = np.exp(rng.normal(0.0, 0.5, num_speakers))[spk, None]  # how clearly (all layers)
    X = np.empty((len(strengths), len(y), DIM), np.float32)
    for layer, strength in enumerate(strengths):
        X[layer] = offset + strength * express * means[y] + rng.normal(0.0, 1.0, (len(y), DIM))
    return y, spk, X


def lda_fit_predict(X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Linear discriminant (shared covariance, slight ridge), standardised on the training part."""
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-8
    Z, Zt = (X - mean) / std, (X_test - mean) / std
    centroids = np.stack([Z[y == k].mean(axis=0) for k in range(NUM_CLASSES)])  # (classes, dim)
    resid = Z - centroids[y]
    cov = resid.T @ resid / max(len(Z) - NUM_CLASSES, 1) + 1e-3 * np.eye(Z.shape[1])
    coef = np.linalg.solve(cov, centroids.T)  # (dim, classes)
    scores = Zt @ coef - 0.5 * np.sum(centroids.T * coef, axis=0)
    return np.argmax(scores, axis=1)


def true_uar(strength: float, train_speakers: int, per_speaker: int, engine: str, model: str,
             draws: int = 30, test_speakers: int = 400, seed: int = 999) -> float:
    """Expected UAR on new speakers of the engine's model trained on ``train_speakers`` speakers."""
    from embedx.probing.metrics import get_metric
    from embedx.probing.models import build_model

    uar = get_metric("uar")
    values = []
    for d in range(draws):
        y, _, X = simulate(train_speakers, per_speaker, np.array([strength]), seed + 2 * d)
        yt, _, Xt = simulate(test_speakers, per_speaker, np.array([strength]), seed + 2 * d + 1)
        if engine == "oof":
            pred = lda_fit_predict(X[0], y, Xt[0])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = build_model(model, "classification", seed=0).fit(X[0], y).predict(Xt[0])
        values.append(uar.func(yt, pred))
    return float(np.mean(values))


def one_study(num_speakers: int, per_speaker: int, strengths: np.ndarray, seed: int, engine: str,
              model: str, n_perm: int) -> dict[str, object]:
    """One replicate: out-of-fold predictions, then the study's comparison code."""
    if engine == "oof":
        return _oof_study(num_speakers, per_speaker, strengths, seed, n_perm)
    return _full_study(num_speakers, per_speaker, strengths, seed, model, n_perm)


def _oof_study(num_speakers: int, per_speaker: int, strengths: np.ndarray, seed: int,
               n_perm: int) -> dict[str, object]:
    from embedx.probing.compare import compare_configurations
    from embedx.probing.cv import make_folds
    from embedx.probing.metrics import get_metric

    y, spk, X = simulate(num_speakers, per_speaker, strengths, seed)
    folds = make_folds(y, scheme="group", n_splits=5, seed=seed, groups=spk, num_classes=NUM_CLASSES)
    preds = []
    for layer in range(len(strengths)):
        pred = np.empty(len(y), dtype=np.int64)
        for train, test in folds.splits:
            pred[test] = lda_fit_predict(X[layer][train], y[train], X[layer][test])
        preds.append(pred)
    comp, _ = compare_configurations(y, preds, get_metric("uar"), groups=spk, num_classes=NUM_CLASSES,
                                     alpha=0.05, n_perm=n_perm, seed=seed)
    best = int(np.lexsort((np.arange(len(preds)), -comp.pooled))[0])  # the study's ranking rule
    return {
        "worse": {layer: bool(not comp.in_set[layer]) for layer in range(len(preds))},
        "ci": {layer: (comp.ci_low[layer], comp.ci_high[layer]) for layer in range(len(preds))},
        "best_layer": best,
        "best_score": float(comp.pooled[best]),
        "selection": dict(comp.nested),
    }


def _full_study(num_speakers: int, per_speaker: int, strengths: np.ndarray, seed: int, model: str,
                n_perm: int) -> dict[str, object]:
    from embedx.probing.data import Block, Dataset, FeatureConfig
    from embedx.probing.study import StudySettings, run_study

    y, spk, X = simulate(num_speakers, per_speaker, strengths, seed)
    configs = [FeatureConfig((Block("sim", layer, "mean"),)) for layer in range(len(strengths))]
    n = len(y)
    ds = Dataset(configs=configs, X={c.name: X[i] for i, c in enumerate(configs)}, y=y,
                 task="classification", classes=[f"c{k}" for k in range(NUM_CLASSES)],
                 groups=np.array([f"s{s:03d}" for s in spk]), split=None,
                 ids=np.arange(n).astype(str), paths=np.arange(n).astype(str), rows=np.arange(n),
                 label="label", group="speaker", store="simulated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_study(ds, StudySettings(models=[model], scheme="group", n_splits=5, seed=seed,
                                             n_boot=n_perm, refit=False, jobs=1, threads=1))
    s = result.summary
    layer = s["layer"].to_numpy(dtype=int)
    return {
        "worse": dict(zip(layer, s["worse_than_best"].to_numpy(dtype=bool), strict=True)),
        "ci": dict(zip(layer, zip(s["ci_low"], s["ci_high"], strict=True), strict=True)),
        "best_layer": int(layer[0]),
        "best_score": float(s.loc[0, "uar_pooled"]),
        "selection": dict(result.selection),
    }


def evaluate(num_speakers: int, per_speaker: int, strengths: np.ndarray,
             truths: dict[float, float], reps: int, jobs: int, engine: str, model: str, n_perm: int,
             seed: int) -> dict[str, float]:
    """Run ``reps`` studies and score flags, coverage, bias and power."""
    from joblib import Parallel, delayed

    runs = Parallel(n_jobs=jobs)(
        delayed(one_study)(num_speakers, per_speaker, strengths, seed + r, engine, model, n_perm)
        for r in range(reps)
    )
    truth = {layer: truths[float(st)] for layer, st in enumerate(strengths)}
    worse_layers = [layer for layer in range(len(strengths)) if truth[layer] < max(truth.values()) - 1e-9]
    best_true = [layer for layer in range(len(strengths)) if layer not in worse_layers]

    def covers(interval, value):
        return interval[0] <= value <= interval[1]

    false_any = [any(r["worse"][b] for b in best_true) if worse_layers else any(r["worse"].values())
                 for r in runs]
    out = {
        "false_worse": float(np.mean(false_any)),
        "cover_prechosen": float(np.mean([covers(r["ci"][PRECHOSEN], truth[PRECHOSEN]) for r in runs])),
        "cover_selected": float(np.mean([covers(r["ci"][r["best_layer"]], truth[r["best_layer"]])
                                         for r in runs])),
        "cover_selection_aware": float(np.mean([
            covers((r["selection"]["ci_low"], r["selection"]["ci_high"]), truth[r["best_layer"]])
            for r in runs])),
        "optimism_best": float(np.mean([r["best_score"] - truth[r["best_layer"]] for r in runs])),
        "optimism_aware": float(np.mean([r["selection"]["estimate"] - truth[r["best_layer"]]
                                         for r in runs])),
        "ci_width_prechosen": float(np.mean([r["ci"][PRECHOSEN][1] - r["ci"][PRECHOSEN][0] for r in runs])),
        "power": float("nan"),
        "power_all": float("nan"),
        "picked_true_best": float(np.mean([r["best_layer"] in best_true for r in runs])),
    }
    if worse_layers:
        out["power"] = float(np.mean([np.mean([r["worse"][w] for w in worse_layers]) for r in runs]))
        out["power_all"] = float(np.mean([all(r["worse"][w] for w in worse_layers) for r in runs]))
    return out


def legacy_main(argv: list[str]) -> None:
    """The 13-layer table of the linear discriminant (``--legacy``)."""
    parser = argparse.ArgumentParser(prog="stats_calibration.py --legacy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200, help="studies per case and size")
    parser.add_argument("--sizes", default="10x48,30x16,60x8", help="speakers x items per speaker")
    parser.add_argument("--cases", default="null,planted")
    parser.add_argument("--engine", choices=("oof", "study"), default="oof")
    parser.add_argument("--model", default="ridge", help="--engine study: an embedx classifier")
    parser.add_argument("--power-studies", type=int, default=12, help="studies per power cell (planted, chance-signal)")
    parser.add_argument("--strength", type=float, default=1.0, help="class signal of every layer")
    parser.add_argument("--planted", type=float, default=1.6, help="signal of the best layer (planted case)")
    parser.add_argument("--perm", type=int, default=300, help="permutations per test (--bootstrap)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows = []
    for size in args.sizes.split(","):
        speakers, per = (int(v) for v in size.lower().split("x"))
        train_speakers = speakers - speakers // 5
        truths = {st: true_uar(st, train_speakers, per, args.engine, args.model)
                  for st in {args.strength, args.planted}}
        for case in args.cases.split(","):
            strengths = np.full(NUM_LAYERS, args.strength)
            if case == "planted":
                strengths[BEST_LAYER] = args.planted
            res = evaluate(speakers, per, strengths, truths, args.reps, args.jobs, args.engine,
                           args.model, args.perm, args.seed)
            rows.append((size, case, truths[args.strength],
                         truths[args.planted] if case == "planted" else float("nan"), res))
            print(f"[{time.perf_counter() - start:.0f} s] {size} {case} done", flush=True)

    se = np.sqrt(0.05 * 0.95 / args.reps)
    print()
    model = "linear discriminant (oof engine)" if args.engine == "oof" else args.model
    print(f"{args.reps} studies per row; {NUM_LAYERS} layers, {NUM_CLASSES} classes, model {model}, "
          f"5 speaker-grouped folds, {args.perm} permutations per test; Monte Carlo se of a rate "
          f"near 0.05: {se:.3f}, near 0.95: {se:.3f}")
    print()
    print("| size | case | true UAR (other / best layer) | false 'worse' (FWER) | CI coverage pre-chosen "
          "| CI coverage selected (own CI) | coverage selection-aware CI | optimism best score "
          "| optimism selection-aware | power (share of worse layers flagged) | power (all flagged) "
          "| picked true best | CI width pre-chosen |")
    print("|" + "---|" * 13)
    for size, case, t_other, t_best, r in rows:
        def f(v):
            return "–" if not np.isfinite(v) else f"{v:.3f}"
        print(f"| {size} | {case} | {t_other:.3f} / {f(t_best)} | {f(r['false_worse'])} | "
              f"{f(r['cover_prechosen'])} | {f(r['cover_selected'])} | {f(r['cover_selection_aware'])} | "
              f"{r['optimism_best']:+.3f} | {r['optimism_aware']:+.3f} | {f(r['power'])} | "
              f"{f(r['power_all'])} | {f(r['picked_true_best'])} | {f(r['ci_width_prechosen'])} |")
    print()
    print(f"total {time.perf_counter() - start:.0f} s")


# ------------------------------------------------------------------ every model family (issue 22)

#: the weighted-layer probe (its configurations are layer stacks, not single layers)
WEIGHTED = "weighted-linear"
#: configurations per study (exchangeable under the null) and layers per weighted stack
FAMILY_CONFIGS = 3
STACK_LAYERS = 3
#: the cheap designs of the family table
DESIGNS = "10x48,30x16,60x8"
ALPHA = 0.05


def _families(text: str) -> list[str]:
    """``all`` or a comma list of registry names (classifiers and the weighted probe)."""
    from embedx.probing.models import available_models

    known = [*available_models("classification"), WEIGHTED]
    names = known if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown famil(ies) {', '.join(bad)}; accepted: {', '.join(known)}, all")
    return names


def _design_features(family: str, speakers: int, per: int, strengths: np.ndarray, seed: int):
    """Labels, speakers and one feature array per configuration (a layer stack for the weighted probe)."""
    depth = STACK_LAYERS if family == WEIGHTED else 1
    y, spk, X = simulate(speakers, per, np.repeat(strengths, depth), seed)
    if depth > 1:
        # (configs * layers, items, dim) -> (configs, items, layers, dim)
        X = X.reshape(len(strengths), depth, len(y), DIM).transpose(0, 2, 1, 3)
    return y, spk, X


def oof_predictions(family: str, X: np.ndarray, y: np.ndarray, folds, seed: int) -> np.ndarray:
    """Out-of-fold predictions of the registry's ``family`` pipeline, fitted per fold as a study does."""
    from sklearn.base import clone

    from embedx.probing.models import build_model

    proto = build_model(family, "classification", seed=seed)
    pred = np.empty(len(y), dtype=np.int64)
    for train, test in folds.splits:
        pred[test] = clone(proto).fit(X[train], y[train]).predict(X[test])
    return pred


def critical(flags, low: float = 0.5, high: float = 3.0, tol: float = 0.02) -> float:
    """Smallest inflation at which ``flags(inflation)`` (monotone: True below, False above) is False.

    ``low`` when it is False already at ``low``, ``inf`` when still True at ``high``. A study
    flags at inflation ``c`` exactly when ``c < critical``, so the false rate at any ``c`` is the
    share of null studies whose critical value exceeds ``c``.
    """
    if not flags(low):
        return low
    if flags(high):
        return float("inf")
    while high - low > tol:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if flags(mid) else (low, mid)
    return high


def family_study(family: str, speakers: int, per: int, strengths: np.ndarray, seed: int,
                 n_perm: int, critical_values: bool = True) -> dict[str, object]:
    """One study of ``family``: the study's folds and comparison on exchangeable configurations.

    Returns the configurations flagged worse (``worse``), the paired sign-flip p of configuration
    0 against 1 (``p_sel``: the selectivity test when 1 is 0's random twin), their pooled UAR and,
    with ``critical_values``, the inflation above which the study stops flagging (``c_set``, for the
    confidence set; ``c_sel``, for the paired test), see :func:`critical`.
    """
    from threadpoolctl import threadpool_limits

    from embedx.probing.compare import compare_configurations, null_inflation
    from embedx.probing.cv import make_folds
    from embedx.probing.metrics import get_metric

    y, spk, X = _design_features(family, speakers, per, strengths, seed)
    folds = make_folds(y, scheme="group", n_splits=5, seed=seed, groups=spk, num_classes=NUM_CLASSES)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = [oof_predictions(family, X[c], y, folds, seed) for c in range(len(X))]
    inflation = null_inflation(family)
    comp, _ = compare_configurations(y, preds, get_metric("uar"), groups=spk, num_classes=NUM_CLASSES,
                                     alpha=ALPHA, n_perm=n_perm, seed=seed, inflation=inflation)
    out = {"worse": ~comp.in_set, "p_sel": comp.paired_p(0, 1), "pooled": comp.pooled}
    if critical_values:
        out.update(critical_inflations(comp.scores, n_perm, seed))
    return out


def critical_inflations(scores, n_perm: int, seed: int) -> dict[str, float]:
    """A null study's critical inflations (see :func:`critical`): ``c_set``, above which the
    confidence set for the best holds every configuration, and ``c_sel``, above which the paired
    sign-flip test of configuration 0 against 1 is no longer significant."""
    from embedx.probing.compare import best_set, signflip_test

    def set_flags(c: float) -> bool:
        return bool(not best_set(scores, greater_is_better=True, alpha=ALPHA, n_perm=n_perm, seed=seed,
                                 inflation=c)[1].all())

    def sel_flags(c: float) -> bool:
        return signflip_test(scores, 0, 1, greater_is_better=True, n_perm=n_perm, seed=seed, inflation=c) < ALPHA

    return {"c_set": critical(set_flags), "c_sel": critical(sel_flags)}


def chance_study(family: str, speakers: int, per: int, strength: float, seed: int, n_labels: int) -> float:
    """``p_permutation_fwer`` of the best configuration of one study (the chance control's verdict).

    The labels are permuted by :func:`embedx.probing.permutation.permuted_labels` (within every
    speaker, on the same folds); every configuration is refitted on every permutation; the
    p-value is :func:`embedx.probing.permutation.permutation_p` of the best real score against
    each permutation's best score (Westfall-Young max statistic, as ``chance_control`` computes it).
    """
    from threadpoolctl import threadpool_limits

    from embedx.probing.cv import make_folds
    from embedx.probing.metrics import get_metric
    from embedx.probing.permutation import permutation_p, permuted_labels

    uar = get_metric("uar").func
    y, spk, X = _design_features(family, speakers, per, np.full(FAMILY_CONFIGS, strength), seed)
    folds = make_folds(y, scheme="group", n_splits=5, seed=seed, groups=spk, num_classes=NUM_CLASSES)
    labels = [y, *permuted_labels(y, spk, n_labels, seed)]
    scores = np.empty((len(labels), len(X)))  # (1 + permutations, configs)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p, lab in enumerate(labels):
            for c in range(len(X)):
                scores[p, c] = uar(lab, oof_predictions(family, X[c], lab, folds, seed))
    best_null = scores[1:].max(axis=1)  # (permutations,)
    return float(permutation_p(scores[0].max(), best_null[:, None], True)[0])


def _se(rate: float, n: int) -> float:
    """Binomial Monte Carlo standard error of a rate from ``n`` studies, at the rate or at
    :data:`ALPHA` when the rate is lower (a rate of 0 has a plug-in se of 0, which says nothing)."""
    return float(np.sqrt(max(rate, ALPHA) * (1 - max(rate, ALPHA)) / n)) if n else float("nan")


def _rate(values, n: int) -> str:
    rate = float(np.mean(values)) if n else float("nan")
    return f"{rate:.3f} ± {_se(rate, n):.3f}"


def family_row(family: str, design: str, case: str, args) -> dict[str, object]:
    """Run the studies of one cell (family × design × case) and score them."""
    from joblib import Parallel, delayed

    from embedx.probing.compare import null_inflation

    speakers, per = (int(v) for v in design.lower().split("x"))
    n = args.studies_of(family, case)
    start = time.perf_counter()
    row: dict[str, object] = {"family": family, "design": design, "case": case, "studies": n,
                              "inflation": null_inflation(family)}
    if case == "chance" or case == "chance-signal":
        strength = 0.0 if case == "chance" else args.chance_signal
        ps = Parallel(n_jobs=args.jobs)(delayed(chance_study)(family, speakers, per, strength, args.seed + r,
                                                              args.labels) for r in range(n))
        row["beats_chance"] = _rate(np.asarray(ps) <= ALPHA, n)
    else:
        strengths = np.full(FAMILY_CONFIGS, args.strength)
        if case == "planted":
            strengths[0] = args.planted
        runs = Parallel(n_jobs=args.jobs)(delayed(family_study)(family, speakers, per, strengths, args.seed + r,
                                                                args.perm, case == "null") for r in range(n))
        worse = np.array([r["worse"] for r in runs])  # (studies, configs)
        p_sel = np.array([r["p_sel"] for r in runs])
        row["uar"] = float(np.mean([r["pooled"] for r in runs]))
        if case == "null":
            c_set = np.array([r["c_set"] for r in runs])
            row["c_set"], row["c_sel"] = c_set.tolist(), [r["c_sel"] for r in runs]
            row["false_worse"] = _rate(worse.any(axis=1), n)
            row["false_selective"] = _rate(p_sel < ALPHA, n)
            row["needed"] = float(np.quantile(c_set, 1 - ALPHA, method="higher"))
            row["needed_sel"] = float(np.quantile([r["c_sel"] for r in runs], 1 - ALPHA, method="higher"))
        else:
            row["false_worse"] = _rate(worse[:, 0], n)  # the planted (best) configuration flagged
            row["power"] = _rate(worse[:, 1:].mean(axis=1), n)
            row["power_selective"] = _rate(p_sel < ALPHA, n)
    row["seconds"] = time.perf_counter() - start
    return row


def print_family_table(rows: list[dict[str, object]], args) -> None:
    """One Markdown table: every cell's rates with their Monte Carlo standard errors."""
    def get(r, key, fmt="{}"):
        return fmt.format(r[key]) if key in r else "–"

    print()
    print(f"{FAMILY_CONFIGS} configurations per study (the weighted probe: {FAMILY_CONFIGS} stacks of "
          f"{STACK_LAYERS} layers), {NUM_CLASSES} classes, dim {DIM}, 5 speaker-grouped folds, "
          f"{args.perm} permutations per test, alpha {ALPHA}; rate ± binomial Monte Carlo se (at the rate, "
          f"or at {ALPHA} when the rate is lower); chance "
          f"control: {args.labels} label permutations")
    print()
    print("| family | design | case | studies | inflation | mean UAR | false 'worse' | needed inflation "
          "(95% of null studies) | false selective | needed (selectivity) | power 'worse' "
          "| power selective | beats chance | s |")
    print("|" + "---|" * 14)
    for r in rows:
        print(f"| {r['family']} | {r['design']} | {r['case']} | {r['studies']} | {r['inflation']:.2f} | "
              f"{get(r, 'uar', '{:.3f}')} | {get(r, 'false_worse')} | {get(r, 'needed', '{:.2f}')} | "
              f"{get(r, 'false_selective')} | {get(r, 'needed_sel', '{:.2f}')} | {get(r, 'power')} | "
              f"{get(r, 'power_selective')} | {get(r, 'beats_chance')} | {r['seconds']:.0f} |")


#: studies per cell when --studies is not given, by cost (rf: 300 trees per fit)
STUDIES = {"rf": 40, "lgbm": 16, "mlp": 16}
DEFAULT_STUDIES = 40
#: studies per chance cell (each refits every configuration on every label permutation)
CHANCE_STUDIES = 20


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if "--legacy" in argv:
        legacy_main([a for a in argv if a != "--legacy"])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="all", help="registry names (classifiers, weighted-linear) or all")
    parser.add_argument("--designs", default=DESIGNS, help="speakers x items per speaker, comma list")
    parser.add_argument("--cases", default="null,chance,planted",
                        help="null (false 'worse' and selective), planted (power), chance (false 'beats "
                             "chance', no signal), chance-signal (its power)")
    parser.add_argument("--chance-families", default="svm", help="families of the chance cases")
    parser.add_argument("--power-families", default="cheap",
                        help="families of the planted case (cheap: all but the costly " + ", ".join(STUDIES) + ")")
    parser.add_argument("--studies", type=int, default=None,
                        help=f"studies per cell (default: null {DEFAULT_STUDIES}, except {STUDIES}; "
                             f"chance {CHANCE_STUDIES}; power cells --power-studies)")
    parser.add_argument("--power-studies", type=int, default=12, help="studies per power cell (planted, chance-signal)")
    parser.add_argument("--strength", type=float, default=1.0, help="class signal of every configuration")
    parser.add_argument("--planted", type=float, default=1.6, help="signal of configuration 0 (planted case)")
    parser.add_argument("--chance-signal", type=float, default=0.2, help="class signal of the chance-signal case")
    parser.add_argument("--perm", type=int, default=300, help="permutations per comparison test")
    parser.add_argument("--labels", type=int, default=19, help="label permutations of the chance control")
    parser.add_argument("--out", help="also write every cell (and each null study's critical inflation) as JSON")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 studies per cell, 10x48 only (a smoke run)")
    parser.add_argument("--legacy", action="store_true", help="the 13-layer linear-discriminant table (own options)")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies = args.studies or 20
        args.designs = "10x48" if args.designs == DESIGNS else args.designs
    args.studies_of = lambda f, case: args.studies or (
        STUDIES.get(f, DEFAULT_STUDIES) if case == "null" else CHANCE_STUDIES if case == "chance" else args.power_studies)
    families, chance = _families(args.families), _families(args.chance_families)
    power = [f for f in families if f not in STUDIES] if args.power_families == "cheap" else \
        [f for f in _families(args.power_families) if f in families]
    start = time.perf_counter()
    rows = []
    for case in args.cases.split(","):  # the false rates of every design first, power last
        for design in args.designs.split(","):
            for family in {"chance": chance, "chance-signal": chance, "planted": power}.get(case, families):
                rows.append(family_row(family, design, case, args))
                print(f"[{time.perf_counter() - start:.0f} s] {family} {design} {case}: "
                      f"{ {k: v for k, v in rows[-1].items() if k not in ('family', 'design', 'case', 'c_set', 'c_sel')} }",
                      flush=True)
    print_family_table(rows, args)
    if args.out:
        import json

        with open(args.out, "w") as f:  # every cell, with the null studies' critical inflations
            json.dump(rows, f, indent=1, default=float)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")

if __name__ == "__main__":
    main()
