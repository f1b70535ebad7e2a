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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, Param
from embedx.probing import metrics as M
from embedx.probing.compare import (
    compare_configurations,
    null_inflation,
)
from embedx.probing.cv import UNGROUPED, Folds, check_inner_groups, inner_cv, make_folds
from embedx.probing.data import Dataset
from embedx.probing.engines import ENGINES
from embedx.probing.fitting import run_task
from embedx.probing.grids import load_grids
from embedx.probing.models import get_model, parse_models
from embedx.probing.permfit import run_permuted
from embedx.probing.refit import fit_final
from embedx.probing.tables import CONSTANT_WARNING, collect_results, summarise
from embedx.progress import progress_bar
from embedx.text import plural

if TYPE_CHECKING:
    from embedx.probing.analysis import Prepared

__all__ = [
    "BACKENDS",
    "Study",
    "StudyResult",
    "StudySettings",
    "run_study",
]

#: joblib backends the runner accepts (``fit --engine``; the list lives with the engines)
BACKENDS = ENGINES


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


@dataclass(frozen=True)
class Study:
    """What a study's cross-validation produced: the input of every analysis.

    Attributes:
        results: tidy table, one row per (configuration, model, fold).
        summary: one row per (configuration, model), ranked by the main metric (with
            ``p_permutation`` / ``p_permutation_fwer`` under a chance control).
        folds: the shared folds.
        metric: main metric name; greater_is_better its direction.
        best: ``(configuration name, model)`` of the best row.
        predictions: ``(configuration name, model)`` -> ``(num_items,)`` out-of-fold predictions
            (NaN / -1 for items never in a test part).
        confusions: ``(configuration name, model)`` -> ``(num_classes, num_classes)`` summed
            over folds (classification).
        settings: the settings, as a plain dict.
        dataset: the data the study ran on.
        notes: remarks for the report (a chance verdict first, after any leading notes).
        seconds: wall-clock time of the grid.
        grids: model -> the tuning grid used (``tune``), else ``None``.
        selection: the selection-aware score of the best configuration (``estimate``,
            ``ci_low``, ``ci_high``, ``optimistic``, ``candidates``; see
            :func:`embedx.probing.compare.nested_best`), or ``None`` with one configuration.
        layer_weights: ``(configuration name, model)`` -> ``(num_folds, num_layers)`` learned
            layer weights of every weighted-layer configuration (see :mod:`embedx.probing.weighted`).
        chance: the chance control (``info`` of :class:`embedx.probing.permutation.ChanceControl`),
            or ``None`` without ``permutations``.
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    folds: Folds
    metric: str
    greater_is_better: bool
    best: tuple[str, str]
    predictions: dict[tuple[str, str], np.ndarray]
    confusions: dict[tuple[str, str], np.ndarray]
    settings: dict[str, Any]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    grids: dict[str, dict[str, list[Any]] | None] | None = None
    selection: dict[str, float] | None = None
    layer_weights: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    chance: dict[str, Any] | None = None


@dataclass(frozen=True)
class StudyResult(Study):
    """A finished study: its cross-validation (:class:`Study`), the refitted model and the analyses.

    Attributes:
        holdout: metrics of the best configuration on a held-out test part, or ``None``.
        final: the refitted best model bundle (see :func:`fit_final`), or ``None``.
        analyses: analysis name -> its result, for every analysis of
            :mod:`embedx.probing.analyses` that had something to say (e.g. ``sets``:
            :class:`embedx.probing.sets.SetComparison`, ``transfer``, ``subgroups``,
            ``selectivity``, ``weighted``, ``permutations``), in registry order.
    """

    holdout: dict[str, float] | None = None
    final: dict[str, Any] | None = None
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
        raise ConfigError(Param("speaker_norm", switch=True), " needs a group column; give ", Param("group", "COLUMN"))
    if settings.backend not in BACKENDS:
        raise ConfigError("unknown ", Param("engine"), f" {settings.backend!r}; accepted: {', '.join(BACKENDS)}")
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError(Param("threads", settings.threads), " not accepted; it must be at least 1")
    if settings.jobs == 0:
        raise ConfigError(Param("jobs", 0), " not accepted; it must be a positive number or -1 (all cores)")
    if settings.n_boot < 0:
        raise ConfigError(Param("bootstrap", settings.n_boot), " not accepted; it must be >= 0")
    if settings.permutations < 0:
        raise ConfigError(Param("permutations", settings.permutations), " not accepted; it must be >= 0")
    if not 0 < settings.alpha < 1:
        raise ConfigError(Param("alpha", settings.alpha), " not accepted; it must be in (0, 1)")
    if settings.tune and settings.inner_folds < 2:
        raise ConfigError(Param("inner_folds", settings.inner_folds), " not accepted; it must be at least 2")
    return models, metric


def _grids_for(models: list[str], settings: StudySettings) -> dict[str, dict[str, list[Any]] | None]:
    if not settings.tune:
        return dict.fromkeys(models)
    grids = settings.grids if settings.grids is not None else load_grids()
    out = {}
    for name in models:
        if name not in grids:
            raise ConfigError(
                Param("tune", switch=True), f": no tuning grid for model {name!r}; grids exist for: "
                f"{', '.join(sorted(grids)) or 'none'} (add one to the grids file)"
            )
        out[name] = grids[name]
    return out


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


def _folds(dataset: Dataset, settings: StudySettings) -> Folds:
    return make_folds(dataset.y, scheme=settings.scheme, n_splits=settings.n_splits, seed=settings.seed,
                      groups=dataset.groups, split=dataset.split, task=dataset.task,
                      num_classes=dataset.num_classes or None, class_names=dataset.classes,
                      group_name=dataset.group, crossed=dataset.cross_groups,
                      crossed_name=dataset.cross_group)


def _plan_note(dataset: Dataset, settings: StudySettings, folds: Folds, n_pairs: int, n_tasks: int) -> str:
    """The console line that says how many fits the study is about to run, and how."""
    cores = os.cpu_count() or 1
    threads = _threads(settings)
    return (
        f"{plural(n_pairs, 'pair')} of feature configuration and model × "
        f"{plural(folds.n_splits, 'fold')} = {plural(n_tasks, 'fit')} on "
        f"{plural(dataset.num_items, 'item')} ({folds.scheme} CV, {plural(settings.jobs, 'job')}, "
        f"{plural(threads, 'thread')} each"
        + (f"; --jobs -1 would use all {cores} cores)" if settings.jobs == 1 and cores > 1 else ")")
        + (f"; the chance control refits them on {settings.permutations} label permutations "
           f"({n_tasks * settings.permutations} fits)" if settings.permutations else "")
    )


def _run_grid(dataset: Dataset, settings: StudySettings, folds: Folds, tasks: list[tuple[int, int, int]],
              labels: list[np.ndarray], models: list[str], grids: dict[str, Any], inner: Any, metric: str,
              progress: bool) -> tuple[list[dict[str, Any]], float]:
    """Every task on every label vector (0: the real labels; 1..N: permuted ones), with joblib:
    one joblib task per fit on the real labels, one per (configuration, model, fold) for all N
    permutations (:func:`embedx.probing.permfit.run_permuted`).

    Returns:
        ``(outputs, seconds)``: the task outputs sorted by their key ``(labels, config, model,
        fold)`` and the wall-clock time.
    """
    from joblib import Parallel, delayed

    from embedx.probing.engines import engine

    task = dataset.task
    grouped_inner = dataset.groups is not None and folds.scheme not in UNGROUPED
    threads = _threads(settings)
    configs = dataset.configs

    permuted = np.stack(labels[1:]) if len(labels) > 1 else None  # (N, num_items)

    def jobs():
        for ci, mi, fi in tasks:
            train, test = folds.splits[fi]
            common = dict(key=(ci, mi, fi), model=models[mi], task=task, seed=settings.seed,
                          class_weight=settings.class_weight, threads=threads,
                          speaker_norm=settings.speaker_norm, grid=grids.get(models[mi]), inner=inner,
                          grouped_inner=grouped_inner, metric=metric)
            yield delayed(run_task)(dataset.X[configs[ci].name], labels[0], dataset.groups, train, test,
                                    num_classes=dataset.num_classes, **dict(common, key=(0, ci, mi, fi)))
            if permuted is not None:  # every permutation of this fold in one task (embedx.probing.permfit)
                yield delayed(run_permuted)(dataset.X[configs[ci].name], permuted, dataset.groups, train,
                                            test, **common)

    start = time.perf_counter()
    outputs = []
    with progress_bar(progress) as bar, engine(settings.backend, settings.jobs, settings.scheduler) as return_as:
        handle = bar.add_task("fit", total=len(tasks) * len(labels))
        for out in Parallel(return_as=return_as)(jobs()):
            batch = out if isinstance(out, list) else [out]
            outputs.extend(batch)
            bar.advance(handle, len(batch))
    outputs.sort(key=lambda o: o["key"])
    return outputs, time.perf_counter() - start


def coverage_note(folds: Folds, dataset: Dataset) -> str:
    """The console line of two-way folds: how many items are scored of how many, and the items
    each fold leaves out (printed even with ``--quiet``: dropped data is never quiet).

    Args:
        folds: the study's folds (with :attr:`~embedx.probing.cv.Folds.left_out`).
        dataset: the data they split.

    Returns:
        The line.
    """
    n = len(dataset.y)
    return (f"two-way folds ({dataset.group} × {dataset.cross_group}): {folds.scored(n)} of {n} items "
            "scored (each once), items left out of each fold: " + ", ".join(map(str, folds.left_out)))


def run_study(
    dataset: Dataset,
    settings: StudySettings | None = None,
    *,
    analyses: Sequence[Prepared] | None = None,
    notes: Sequence[str] = (),
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run every configuration × model × fold, then summarise, compare, refit and analyse.

    Args:
        dataset: the data (see :func:`embedx.probing.data.load_dataset`).
        settings: the options; defaults when ``None``.
        analyses: the analyses to run on the finished cross-validation, prepared (see
            :func:`embedx.probing.analyses.prepare`, which may narrow the dataset: pass the
            dataset it returns); ``None``: every analysis that needs no option.
        notes: remarks that open the study's notes (e.g. how the folds were grouped).
        progress: show a rich progress bar.
        log: where to send notes.

    Returns:
        The :class:`StudyResult`, built once, complete.

    Raises:
        ConfigError: bad option (model, metric, scheme, backend, grid).
        DataError: folds that cannot be built (too few items/groups, a class missing).
    """
    from embedx.probing import analyses as registry
    from embedx.probing.engines import check_engine

    settings = settings or StudySettings()
    note = log or (lambda _m: None)
    models, metric = _validate(dataset, settings)
    grids = _grids_for(models, settings)
    folds = _folds(dataset, settings)
    if folds.reason:
        note(folds.reason)
    if folds.left_out:
        note(coverage_note(folds, dataset))
    if settings.tune and dataset.groups is not None and folds.scheme not in UNGROUPED:
        check_inner_groups(folds, dataset.groups, settings.inner_folds)
    inner = (inner_cv(folds.scheme, settings.inner_folds, settings.seed, dataset.task, dataset.groups is not None)
             if settings.tune else None)
    check_engine(settings.backend, settings.scheduler)
    if analyses is None:
        dataset, analyses = registry.prepare(dataset)
    pairs, all_models = _pairs(dataset.configs, models)
    tasks = [(ci, mi, fi) for ci, mi in pairs for fi in range(folds.n_splits)]
    labels = [dataset.y]
    if settings.permutations:
        from embedx.probing.permutation import permuted_labels

        labels += list(permuted_labels(dataset.y, dataset.groups, settings.permutations, settings.seed))
    note(_plan_note(dataset, settings, folds, len(pairs), len(tasks)))
    outputs, seconds = _run_grid(dataset, settings, folds, tasks, labels, all_models, grids, inner, metric,
                                 progress)
    real = [dict(o, key=o["key"][1:]) for o in outputs if o["key"][0] == 0]
    permuted = (labels[1:], [o for o in outputs if o["key"][0] > 0])
    study = _assemble(dataset, settings, folds, all_models, pairs, metric, real, seconds,
                      grids=grids if settings.tune else None, permuted=permuted, notes=notes)
    final, holdout = fit_final(study, threads=_threads(settings)) if settings.refit else (None, None)
    note(f"{len(tasks) * len(labels)} fits in {seconds:.1f} s")
    values = {}
    for prepared in analyses:
        value = prepared.analysis.run(study, prepared.state, progress=progress, log=log)
        if value is not None:
            values[prepared.analysis.name] = value
    return StudyResult(**{f.name: getattr(study, f.name) for f in fields(Study)},
                       holdout=holdout, final=final, analyses=values)


def _data_notes(dataset: Dataset, settings: StudySettings, folds: Folds, models: list[str], metric: str,
                stat_notes: list[str]) -> list[str]:
    """Notes on the folds, the class weights, the statistics and folds that lack a class."""
    task = dataset.task
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
    return notes


def _result_notes(dataset: Dataset, folds: Folds, metric: str, summary: pd.DataFrame, results: pd.DataFrame,
                  stats: Any, selection: dict[str, float] | None) -> list[str]:
    """Notes on constant predictions, the selection of the best, warnings and unused items."""
    notes = []
    n = len(summary)
    constant = summary[summary["warning"].str.startswith(CONSTANT_WARNING)]
    if len(constant):
        notes.append(
            f"{len(constant)} configuration(s) predict a constant out of fold (e.g. "
            f"{constant['config'].iloc[0]} with {constant['model'].iloc[0]}): the model learned "
            "nothing from the features; see the warning column of summary.csv"
        )
    if n > 1 and folds.holdout is not None:
        notes.append(
            f"the best configuration was chosen on the dev part among {n} configurations; "
            "its held-out test score is the unbiased number"
        )
    elif n > 1:
        notes.append(
            f"the best configuration was chosen by its cross-validated {metric} among "
            f"{n} configurations, so its score is optimistic"
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
    return notes


def _assemble(
    dataset: Dataset,
    settings: StudySettings,
    folds: Folds,
    models: list[str],
    pairs: list[tuple[int, int]],
    metric: str,
    outputs: list[dict[str, Any]],
    seconds: float,
    *,
    grids: dict[str, dict[str, list[Any]] | None] | None,
    permuted: tuple[list[np.ndarray], list[dict[str, Any]]],
    notes: Sequence[str],
    comparison: tuple[Any, list[str]] | None = None,
) -> Study:
    """The :class:`Study` of the grid's outputs: results, ranked summary, comparisons, chance, notes."""
    main = M.get_metric(metric, dataset.task)
    results, preds, confusions, layer_weights = collect_results(dataset, folds, models, outputs)
    tested = np.zeros(dataset.num_items, dtype=bool)
    for _, test in folds.splits:
        tested[test] = True
    keys = [(dataset.configs[ci], models[mi]) for ci, mi in pairs]
    stats, stat_notes = comparison or compare_configurations(
        dataset.y[tested], [preds[(c.name, m)][tested] for c, m in keys], main,
        groups=None if dataset.groups is None else dataset.groups[tested],
        num_classes=dataset.num_classes or None, alpha=settings.alpha,
        n_perm=settings.n_boot, seed=settings.seed, inflation=null_inflation([m for _, m in keys], dataset.task),
    )
    summary = summarise(dataset, folds, keys, metric, results, preds, stats, tested)
    selection = stats.nested if len(keys) > 1 else None
    chance = None
    if settings.permutations:
        from embedx.probing.permutation import chance_control

        chance = chance_control(summary, dataset, folds, metric, settings.alpha, *permuted, models)
        summary = summary.assign(**chance.columns)
    settings_dict = asdict(settings)
    settings_dict.update(models=models, metric=metric, scheme=folds.scheme, n_folds=folds.n_splits, task=dataset.task)
    settings_dict["grids"] = None if settings.grids is None else "custom"
    settings_dict["clusters"] = stats.cluster_kind
    settings_dict["num_clusters"] = stats.num_clusters
    return Study(
        results=results, summary=summary, folds=folds, metric=metric, greater_is_better=main.greater_is_better,
        best=(summary.loc[0, "config"], summary.loc[0, "model"]), predictions=preds, confusions=confusions,
        settings=settings_dict, dataset=dataset,
        notes=[*notes, *([chance.verdict] if chance is not None and chance.verdict else []),
               *_data_notes(dataset, settings, folds, models, metric, stat_notes),
               *_result_notes(dataset, folds, metric, summary, results, stats, selection)],
        seconds=seconds, grids=grids, selection=selection, layer_weights=layer_weights,
        chance=None if chance is None else chance.info,
    )


def assemble(dataset: Dataset, settings: StudySettings, folds: Folds, models: list[str],
             pairs: list[tuple[int, int]], metric: str, outputs: list[dict[str, Any]], seconds: float,
             *, comparison: tuple[Any, list[str]] | None = None, notes: Sequence[str] = (),
             analyses: dict[str, Any] | None = None) -> StudyResult:
    """The result of a study whose fits ran elsewhere (the frame-level study), built once.

    Args:
        dataset, settings, folds: as in :func:`run_study`.
        models, pairs: the model names and the (configuration, model) index pairs fitted.
        metric: the main metric.
        outputs: the fits' outputs (as :func:`embedx.probing.fitting.run_task` returns them).
        seconds: the fits' wall-clock time.
        comparison: ``(Comparison, notes)`` computed by the caller (e.g. from per-speaker
            confusion counts); ``None``: from the out-of-fold predictions.
        notes: remarks that open the study's notes.
        analyses: the analyses' results by name (``StudyResult.analyses``).

    Returns:
        The :class:`StudyResult` (no refit: ``final`` and ``holdout`` are ``None``).
    """
    study = _assemble(dataset, settings, folds, models, pairs, metric, outputs, seconds, grids=None,
                      permuted=([], []), notes=notes, comparison=comparison)
    return StudyResult(**{f.name: getattr(study, f.name) for f in fields(Study)}, analyses=dict(analyses or {}))


#: the study's steps, for a study that runs its fits itself (:mod:`embedx.probing.frames`)
model_pairs = _pairs
task_threads = _threads
validate_settings = _validate

