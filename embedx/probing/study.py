"""The study: every feature configuration × model × fold, run with joblib.

Honest-results rules this module enforces:

* The folds are computed once (seeded) and shared by every configuration and model, so their
  per-fold scores are paired.
* Everything learned is learned inside the training part of a fold: the estimator is cloned
  per fold; scaling is a Pipeline step; tuning (``tune=True``) is a nested
  :class:`~sklearn.model_selection.GridSearchCV` on the training part only (grouped when the
  outer folds are grouped), so no hyper-parameter is ever selected on a test fold.
* Speaker normalisation (``speaker_norm=True``) standardises every item's features with the
  mean and standard deviation of its own group's items *in the same part of the fold*: training
  items with their group's training items, test items with their group's test items. It uses
  features only, never labels, so normalising a test speaker by its own statistics is
  legitimate (and is what a deployed system can do with a new speaker's unlabelled speech).
* One estimand: the pooled out-of-fold main metric ranks the configurations and is what the
  CIs, ``Δ to best`` and the tests of :mod:`embedx.probing.compare` are about (mean ± std over
  folds is kept as a description). The best configuration's score is optimistic (it was picked
  among many); the report says so and gives a selection-aware estimate next to it, and with a
  predefined train/dev/test split the best is picked on dev and scored once on test.

Parallelism: tasks (configuration × model × fold) run as joblib tasks with ``n_jobs=jobs``
workers. Each task limits BLAS/OpenMP threads with threadpoolctl, and threaded estimators
(LightGBM, random forest) get the same thread count: 1 unless ``threads`` says otherwise, so
``jobs`` workers use ``jobs`` cores and never oversubscribe them (see :func:`_threads`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError
from embedx.probing import metrics as M
from embedx.probing.compare import (
    compare_configurations,
)
from embedx.probing.cv import UNGROUPED, Folds, check_inner_groups, inner_cv, make_folds
from embedx.probing.data import Dataset
from embedx.probing.fitting import run_task
from embedx.probing.grids import load_grids
from embedx.probing.models import get_model, parse_models
from embedx.probing.refit import fit_final
from embedx.probing.stats import corrected_ttest, wilcoxon
from embedx.progress import progress_bar
from embedx.text import plural

__all__ = [
    "BACKENDS",
    "StudyResult",
    "StudySettings",
    "run_study",
]

#: start of the warning of a configuration whose out-of-fold predictions are all the same
CONSTANT_WARNING = "constant out-of-fold predictions"
#: joblib backends the runner accepts
BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "dask", "ray")


@dataclass
class StudySettings:
    """Options of a study (everything except the data).

    Attributes:
        models: model names (``None``: the task's default).
        scheme: CV scheme name (see :func:`embedx.probing.cv.available_splitters`).
        n_splits: folds of k-fold schemes (``None``: not given; ``auto`` then picks what the
            data allow, see :func:`embedx.probing.cv.make_folds`).
        seed: seed of the folds, the models and the bootstrap.
        metric: main metric (``None``: UAR for classification, CCC for regression).
        class_weight: ``None`` or ``"balanced"``.
        speaker_norm: standardise features per group (needs groups).
        tune: nested grid search inside every training part.
        grids: model name -> parameter grid (``None``: ``configs/grids.yaml``).
        inner_folds: folds of the nested tuning CV.
        n_boot: bootstrap resamples.
        alpha: significance level of the comparisons (after Holm correction).
        jobs: joblib workers (``-1``: all cores).
        threads: BLAS/OpenMP threads per task (``None``: 1; parallelism comes from ``jobs``).
        backend: joblib backend name (``loky``, ``dask``, ``ray``, ...).
        scheduler: address of a dask scheduler / ray cluster (``None``: a local one); see
            :mod:`embedx.probing.engines`.
        refit: refit the best configuration on all data.
        permutations: label permutations of the chance control per configuration (0: none;
            see :mod:`embedx.probing.permutation`).
    """

    models: list[str] | None = None
    scheme: str = "auto"
    n_splits: int | None = None
    seed: int = 0
    metric: str | None = None
    class_weight: str | None = None
    speaker_norm: bool = False
    tune: bool = False
    grids: dict[str, dict[str, list[Any]]] | None = None
    inner_folds: int = 3
    n_boot: int = 1000
    alpha: float = 0.05
    jobs: int = 1
    threads: int | None = None
    backend: str = "loky"
    scheduler: str | None = None
    refit: bool = True
    permutations: int = 0


@dataclass
class StudyResult:
    """What a study produced.

    Attributes:
        results: tidy table, one row per (configuration, model, fold).
        summary: one row per (configuration, model), ranked by the main metric.
        folds: the shared folds.
        metric: main metric name; greater_is_better its direction.
        best: ``(configuration name, model)`` of the best row.
        predictions: ``(configuration name, model)`` -> ``(num_items,)`` out-of-fold predictions
            (NaN / -1 for items never in a test part).
        confusions: ``(configuration name, model)`` -> ``(num_classes, num_classes)`` summed
            over folds (classification).
        holdout: metrics of the best configuration on a held-out test part, or ``None``.
        final: the refitted best model bundle (see :func:`fit_final`), or ``None``.
        settings: the settings, as a plain dict.
        dataset: the data the study ran on.
        notes: remarks for the report.
        seconds: wall-clock time of the grid.
        grids: model -> the tuning grid used (``tune``), else ``None``.
        selection: the selection-aware score of the best configuration (``estimate``,
            ``ci_low``, ``ci_high``, ``optimistic``, ``candidates``; see
            :func:`embedx.probing.compare.nested_best`), or ``None`` with one configuration.
        layer_weights: ``(configuration name, model)`` -> ``(num_folds, num_layers)`` learned
            layer weights of every weighted-layer configuration (see :mod:`embedx.probing.weighted`).
        chance: the chance control (see :func:`embedx.probing.permutation.add_chance_control`),
            or ``None`` without ``permutations``.
        analyses: further analyses of the study by name, added after it ran and written by
            the report: ``sets`` (:mod:`embedx.probing.sets`), ``transfer``
            (:mod:`embedx.probing.transfer`), ``subgroups`` (:mod:`embedx.probing.subgroups`).
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    folds: Folds
    metric: str
    greater_is_better: bool
    best: tuple[str, str]
    predictions: dict[tuple[str, str], np.ndarray]
    confusions: dict[tuple[str, str], np.ndarray]
    holdout: dict[str, float] | None
    final: dict[str, Any] | None
    settings: dict[str, Any]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    grids: dict[str, dict[str, list[Any]] | None] | None = None
    selection: dict[str, float] | None = None
    layer_weights: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    chance: dict[str, Any] | None = None
    analyses: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- runner


def _threads(settings: StudySettings) -> int:
    """BLAS/OpenMP threads per task: ``--threads``, else 1.

    The grid has many small independent fits, so parallelism comes from joblib workers
    (``--jobs``). Threads inside one small fit gain little and lose a lot when cores are shared:
    on 2 cores (2,000 × 768, 13 layers × logreg/svm/lgbm × 5 folds) one worker with 2 threads
    took 836 s, with 1 thread 247 s, and 2 single-threaded workers 140 s.
    """
    return settings.threads or 1


def _validate(dataset: Dataset, settings: StudySettings) -> tuple[list[str], str]:
    task = dataset.task
    models = parse_models(settings.models, task)
    metric = settings.metric or M.default_metric(task)
    M.get_metric(metric, task)
    if settings.speaker_norm and dataset.groups is None:
        raise ConfigError("--speaker-norm needs a group column; give --group COLUMN")
    if settings.backend not in BACKENDS:
        raise ConfigError(f"unknown joblib backend {settings.backend!r}; accepted: {', '.join(BACKENDS)}")
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {settings.threads}")
    if settings.jobs == 0:
        raise ConfigError("--jobs must be a positive number or -1 (all cores); got 0")
    if settings.n_boot < 0:
        raise ConfigError(f"--bootstrap must be >= 0; got {settings.n_boot}")
    if settings.permutations < 0:
        raise ConfigError(f"--permutations must be >= 0; got {settings.permutations}")
    if not 0 < settings.alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1); got {settings.alpha}")
    if settings.tune and settings.inner_folds < 2:
        raise ConfigError(f"--inner-folds must be at least 2; got {settings.inner_folds}")
    return models, metric


def _grids_for(models: list[str], settings: StudySettings) -> dict[str, dict[str, list[Any]] | None]:
    if not settings.tune:
        return dict.fromkeys(models)
    grids = settings.grids if settings.grids is not None else load_grids()
    out = {}
    for name in models:
        if name not in grids:
            raise ConfigError(
                f"--tune: no tuning grid for model {name!r}; grids exist for: "
                f"{', '.join(sorted(grids)) or 'none'} (add one to the grids file)"
            )
        out[name] = grids[name]
    return out


def _config_columns(config: Any, model: str) -> dict[str, Any]:
    """The columns that name a (feature configuration, model) pair in results and summary."""
    return {
        "config": config.name,
        "feature_set": config.feature_set,
        "layer": config.layer if config.layer is not None else pd.NA,
        "pooling": config.pooling,
        "concat": config.concat,
        "model": model,
    }


def _pairs(configs: list[Any], models: list[str]) -> tuple[list[tuple[int, int]], list[str]]:
    """The (configuration, model) index pairs the study fits, and the model names they index.

    Every ordinary configuration runs with every model; a weighted-layer configuration runs
    with its own model only (:data:`embedx.probing.weighted.MODEL`).
    """
    weighted = [ci for ci, c in enumerate(configs) if getattr(c, "weighted", False)]
    if not weighted:
        return [(ci, mi) for ci in range(len(configs)) for mi in range(len(models))], list(models)
    from embedx.probing.weighted import MODEL

    all_models = [*models, MODEL]
    pairs = [(ci, mi) for ci in range(len(configs)) if ci not in weighted for mi in range(len(models))]
    pairs += [(ci, len(models)) for ci in weighted]
    return pairs, all_models


def run_study(
    dataset: Dataset,
    settings: StudySettings | None = None,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run every configuration × model × fold, then summarise, compare and refit.

    Args:
        dataset: the data (see :func:`embedx.probing.data.load_dataset`).
        settings: the options; defaults when ``None``.
        progress: show a rich progress bar.
        log: where to send notes.

    Returns:
        The :class:`StudyResult`.

    Raises:
        ConfigError: bad option (model, metric, scheme, backend, grid).
        DataError: folds that cannot be built (too few items/groups, a class missing).
    """
    from joblib import Parallel, delayed

    from embedx.probing.engines import check_engine, engine

    settings = settings or StudySettings()
    note = log or (lambda _m: None)
    models, metric = _validate(dataset, settings)
    grids = _grids_for(models, settings)
    task = dataset.task
    folds = make_folds(
        dataset.y,
        scheme=settings.scheme,
        n_splits=settings.n_splits,
        seed=settings.seed,
        groups=dataset.groups,
        split=dataset.split,
        task=task,
        num_classes=dataset.num_classes or None,
        class_names=dataset.classes,
        group_name=dataset.group,
    )
    if folds.reason:
        note(folds.reason)
    grouped_inner = dataset.groups is not None and folds.scheme not in UNGROUPED
    if settings.tune and grouped_inner:
        check_inner_groups(folds, dataset.groups, settings.inner_folds)
    inner = (
        inner_cv(folds.scheme, settings.inner_folds, settings.seed, task, dataset.groups is not None)
        if settings.tune
        else None
    )
    threads = _threads(settings)
    check_engine(settings.backend, settings.scheduler)
    configs = dataset.configs
    pairs, all_models = _pairs(configs, models)
    tasks = [(ci, mi, fi) for ci, mi in pairs for fi in range(folds.n_splits)]
    labels = [dataset.y]
    if settings.permutations:
        from embedx.probing.permutation import permuted_labels

        labels += list(permuted_labels(dataset.y, dataset.groups, settings.permutations, settings.seed))
    cores = os.cpu_count() or 1
    note(
        f"{plural(len(pairs), 'pair')} of feature configuration and model × "
        f"{plural(folds.n_splits, 'fold')} = {plural(len(tasks), 'fit')} on "
        f"{plural(dataset.num_items, 'item')} ({folds.scheme} CV, {plural(settings.jobs, 'job')}, "
        f"{plural(threads, 'thread')} each"
        + (f"; --jobs -1 would use all {cores} cores)" if settings.jobs == 1 and cores > 1 else ")")
        + (f"; the chance control refits them on {settings.permutations} label permutations "
           f"({len(tasks) * settings.permutations} fits)" if settings.permutations else "")
    )

    def jobs():
        for pi, y in enumerate(labels):  # pi 0: the real labels; 1..N: permuted ones
            for ci, mi, fi in tasks:
                train, test = folds.splits[fi]
                yield delayed(run_task)(
                    dataset.X[configs[ci].name], y, dataset.groups, train, test,
                    key=(pi, ci, mi, fi), model=all_models[mi], task=task,
                    num_classes=dataset.num_classes, seed=settings.seed,
                    class_weight=settings.class_weight, threads=threads,
                    speaker_norm=settings.speaker_norm, grid=grids.get(all_models[mi]), inner=inner,
                    grouped_inner=grouped_inner, metric=metric,
                )

    start = time.perf_counter()
    outputs = []
    with progress_bar(progress) as bar, engine(settings.backend, settings.jobs, settings.scheduler) as return_as:
        handle = bar.add_task("fit", total=len(tasks) * len(labels))
        for out in Parallel(return_as=return_as)(jobs()):
            outputs.append(out)
            bar.advance(handle)
    seconds = time.perf_counter() - start
    outputs.sort(key=lambda o: o["key"])
    real = [dict(o, key=o["key"][1:]) for o in outputs if o["key"][0] == 0]
    result = _assemble(dataset, settings, folds, all_models, pairs, metric, real, seconds)
    result.grids = grids if settings.tune else None
    if settings.permutations:
        from embedx.probing.permutation import add_chance_control

        add_chance_control(result, labels[1:], [o for o in outputs if o["key"][0] > 0], all_models)
    if settings.refit:
        result.final, result.holdout = fit_final(result, threads=_threads(settings))
    note(f"{len(tasks) * len(labels)} fits in {seconds:.1f} s")
    return result


def _summary_warning(oof: np.ndarray, part: pd.DataFrame, classes: list[str] | None) -> str:
    """The warning of one (configuration, model): constant predictions first, else a fit's."""
    oof = np.asarray(oof)
    if len(oof) > 1 and (np.all(oof == oof[0]) if classes else np.ptp(oof) <= 1e-12 * max(1.0, abs(oof[0]))):
        value = repr(classes[int(oof[0])]) if classes else f"{float(oof[0]):.4g}"
        return (f"{CONSTANT_WARNING} (always {value}): the model learned nothing, e.g. too few "
                "items per leaf or too strong regularisation")
    warned = part["warning"][part["warning"] != ""]
    return str(warned.iloc[0]) if len(warned) else ""


def _assemble(
    dataset: Dataset,
    settings: StudySettings,
    folds: Folds,
    models: list[str],
    pairs: list[tuple[int, int]],
    metric: str,
    outputs: list[dict[str, Any]],
    seconds: float,
    comparison: Any = None,
) -> StudyResult:
    """Tables, comparisons and notes of a study from its fits' outputs.

    ``comparison`` is a ``(Comparison, notes)`` pair computed by the caller (a frame-level
    study builds it from per-speaker confusion counts); ``None`` computes it from the
    out-of-fold predictions.
    """
    task = dataset.task
    configs = dataset.configs
    main = M.get_metric(metric, task)
    names = [m.name for m in M.metrics_for(task)]
    rows = []
    preds: dict[tuple[str, str], np.ndarray] = {}
    confusions: dict[tuple[str, str], np.ndarray] = {}
    layer_weights: dict[tuple[str, str], list[np.ndarray]] = {}
    for out in outputs:
        ci, mi, fi = out["key"]
        config, model = configs[ci], models[mi]
        train, test = folds.splits[fi]
        key = (config.name, model)
        if key not in preds:
            preds[key] = (
                np.full(dataset.num_items, -1, dtype=np.int64)
                if task == M.CLASSIFICATION
                else np.full(dataset.num_items, np.nan)
            )
            if task == M.CLASSIFICATION:
                confusions[key] = np.zeros((dataset.num_classes,) * 2, dtype=np.int64)
        preds[key][test] = out["pred"]
        if out.get("layer_weights") is not None:
            layer_weights.setdefault(key, []).append(out["layer_weights"])
        row: dict[str, Any] = {
            **_config_columns(config, model),
            "fold": fi,
            "n_train": len(train),
            "n_test": len(test),
        }
        row.update(out["scores"])
        if task == M.CLASSIFICATION:
            confusions[key] += out["confusion"]
            for cls, rec in zip(dataset.classes, out["recall"], strict=True):
                row[f"recall_{cls}"] = rec
        row["fit_seconds"] = out["fit_seconds"]
        row["params"] = json.dumps(out["params"], sort_keys=True) if out["params"] is not None else ""
        row["warning"] = out["warning"]
        rows.append(row)
    results = pd.DataFrame(rows)
    results["layer"] = results["layer"].astype("Int64")

    # --- summary: one row per (config, model); the estimand is the pooled out-of-fold metric
    tested = np.zeros(dataset.num_items, dtype=bool)
    for _, test in folds.splits:
        tested[test] = True
    keys = [(configs[ci].name, models[mi]) for ci, mi in pairs]
    stats, stat_notes = comparison or compare_configurations(
        dataset.y[tested], [preds[k][tested] for k in keys], main,
        groups=None if dataset.groups is None else dataset.groups[tested],
        num_classes=dataset.num_classes or None, alpha=settings.alpha,
        n_perm=settings.n_boot, seed=settings.seed,
    )
    summary_rows = []
    for index, (config, model) in enumerate((configs[ci], models[mi]) for ci, mi in pairs):
        key = (config.name, model)
        part = results[(results["config"] == config.name) & (results["model"] == model)]
        srow: dict[str, Any] = {
            **_config_columns(config, model),
            "n_folds": len(part),
        }
        for name in names:
            srow[f"{name}_mean"] = float(part[name].mean())
            srow[f"{name}_std"] = float(part[name].std(ddof=1)) if len(part) > 1 else float("nan")
        srow[f"{metric}_pooled"] = float(stats.pooled[index])
        srow["ci_low"], srow["ci_high"] = float(stats.ci_low[index]), float(stats.ci_high[index])
        srow["fit_seconds"] = float(part["fit_seconds"].sum())
        srow["fold_scores"] = [float(v) for v in part[metric]]
        srow["warning"] = _summary_warning(preds[key][tested], part, dataset.classes)
        srow["_index"] = index
        summary_rows.append(srow)
    summary = pd.DataFrame(summary_rows)
    summary["layer"] = summary["layer"].astype("Int64")
    sign = 1.0 if main.greater_is_better else -1.0
    # ranked by the estimand; ties keep the order of the configurations as requested
    order = np.lexsort((np.arange(len(summary)), -sign * summary[f"{metric}_pooled"].to_numpy()))
    summary = summary.iloc[order].reset_index(drop=True)
    summary.insert(0, "rank", np.arange(1, len(summary) + 1))
    best = (summary.loc[0, "config"], summary.loc[0, "model"])
    best_index = int(summary.loc[0, "_index"])

    # --- comparisons: all on the pooled metric, signed so that Δ > 0 means the best is better
    ratio = float(np.mean([len(te) / len(tr) for tr, te in folds.splits]))
    best_scores = np.asarray(summary.loc[0, "fold_scores"])
    diffs, p_pair, t_p, w_p = [], [], [], []
    for _, srow in summary.iterrows():
        index = int(srow["_index"])
        diffs.append(sign * float(stats.pooled[best_index] - stats.pooled[index]))
        if index == best_index:
            p_pair.append(np.nan), t_p.append(np.nan), w_p.append(np.nan)
            continue
        p_pair.append(stats.paired_p(best_index, index))
        scores = np.asarray(srow["fold_scores"])
        t_p.append(corrected_ttest(sign * best_scores, sign * scores, ratio, alternative="greater")[1])
        w_p.append(wilcoxon(sign * best_scores, sign * scores, alternative="greater"))
    indices = summary["_index"].to_numpy(dtype=np.int64)
    summary["diff_to_best"] = diffs
    summary["p_set"] = stats.p_set[indices]
    summary["worse_than_best"] = ~stats.in_set[indices] if stats.tested else np.zeros(len(summary), bool)
    summary["p_paired"] = p_pair
    summary["p_ttest_corrected"] = t_p
    summary["p_wilcoxon"] = w_p
    summary = summary.drop(columns="_index")
    selection = stats.nested if len(keys) > 1 else None

    notes = list(folds.notes)
    if settings.class_weight == "balanced" and task == M.CLASSIFICATION:
        unweighted = [m for m in models if not get_model(m, task).class_weight]
        if unweighted:
            notes.append(f"--class-weight balanced does not apply to {', '.join(unweighted)} "
                         "(no class weights)")
    notes.extend(stat_notes)
    if task == M.CLASSIFICATION and folds.n_splits > 1:
        lacking = sum(len(np.unique(dataset.y[te])) < dataset.num_classes for _, te in folds.splits)
        if lacking:
            notes.append(
                f"{lacking} of {folds.n_splits} test folds lack some class: a fold's {metric} "
                "(the mean ± std columns) averages only the classes present in that fold; the "
                f"pooled {metric}, which ranks and compares the configurations, uses every class"
            )
    constant = summary[summary["warning"].str.startswith(CONSTANT_WARNING)]
    if len(constant):
        notes.append(
            f"{len(constant)} configuration(s) predict a constant out of fold (e.g. "
            f"{constant['config'].iloc[0]} with {constant['model'].iloc[0]}): the model learned "
            "nothing from the features; see the warning column of summary.csv"
        )
    if len(keys) > 1 and folds.holdout is not None:
        notes.append(
            f"the best configuration was chosen on the dev part among {len(keys)} configurations; "
            "its held-out test score is the unbiased number"
        )
    elif len(keys) > 1:
        notes.append(
            f"the best configuration was chosen by its cross-validated {metric} among "
            f"{len(keys)} configurations, so its score is optimistic"
            + (f"; the selection-aware estimate (leave-one-"
               f"{'speaker' if stats.cluster_kind == 'group' else 'block'}-out selection) is "
               f"{selection['estimate']:.3f}, 95% CI {selection['ci_low']:.3f}–{selection['ci_high']:.3f}"
               if selection is not None and np.isfinite(selection["estimate"]) else "")
            + "; fix the configuration in advance, or use a train/dev/test split, for an unbiased number"
        )
    warned = results[results["warning"] != ""]
    if len(warned):
        notes.append(
            f"{len(warned)} of {len(results)} fits warned, e.g. {warned['warning'].iloc[0]!r} "
            "(see the warning column of results.csv)"
        )
    if dataset.skipped:
        notes.append(
            "items not used: " + ", ".join(f"{v} {k}" for k, v in dataset.skipped.items())
        )
    settings_dict = asdict(settings)
    settings_dict.update(models=models, metric=metric, scheme=folds.scheme,
                         n_folds=folds.n_splits, task=task)
    settings_dict["grids"] = None if settings.grids is None else "custom"
    settings_dict["clusters"] = stats.cluster_kind
    settings_dict["num_clusters"] = stats.num_clusters
    return StudyResult(
        results=results,
        summary=summary,
        folds=folds,
        selection=selection,
        metric=metric,
        greater_is_better=main.greater_is_better,
        best=best,
        predictions=preds,
        confusions=confusions,
        holdout=None,
        final=None,
        settings=settings_dict,
        dataset=dataset,
        notes=notes,
        seconds=seconds,
        layer_weights={k: np.vstack(v) for k, v in layer_weights.items()},
    )


# public names of the study's steps, for studies that fit elsewhere (the frame-level study,
# embedx.probing.frames) and then assemble the same tables
validate_settings = _validate
model_pairs = _pairs
task_threads = _threads
assemble = _assemble
