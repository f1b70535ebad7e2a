"""The final model: the study's best configuration refitted, scored once on a held-out test part
when there is one, and bundled for :mod:`embedx.probing.predict`."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from embedx.probing import metrics as M
from embedx.probing.compare import MIN_CLUSTERS, ClusterScores, clusters_of, jackknife_ci
from embedx.probing.cv import UNGROUPED, inner_cv
from embedx.probing.fitting import best_params, fit_estimator, limit_threads, make_estimator
from embedx.probing.speaker_norm import group_standardize

if TYPE_CHECKING:  # the study imports this module to refit; a type only, no import cycle
    from embedx.probing.study import Study

__all__ = ["fit_final", "holdout_ci"]


def holdout_ci(
    y_true: np.ndarray,
    pred: np.ndarray,
    metric: M.Metric,
    *,
    groups: np.ndarray | None,
    num_classes: int | None,
    seed: int,
    enabled: bool = True,
) -> tuple[float, float]:
    """95% jackknife-t CI of the main metric on a held-out test part (speakers as clusters).

    Returns:
        ``(low, high)``; NaN when disabled (``--bootstrap 0``) or with too few clusters.
    """
    codes, _ = clusters_of(len(y_true), groups, seed)
    scores = ClusterScores(np.asarray(y_true), [np.asarray(pred)], metric, codes, num_classes)
    if not enabled or scores.num_clusters_ < MIN_CLUSTERS:
        return float("nan"), float("nan")
    return jackknife_ci(float(scores.pooled()[0]), scores.leave_one_out()[0], bounds=metric.bounds)


def fit_final(result: Study, *, threads: int = 1) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Refit the best configuration and bundle it for :mod:`embedx.probing.predict`.

    With a held-out test part (predefined train/dev/test split) the model is fitted on
    train + dev, scored once on test, and that model is the one bundled. Otherwise it is fitted
    on every item of the study. With tuning, the grid search runs on the fitting items only.

    Args:
        result: a finished study.
        threads: BLAS / estimator threads.

    Returns:
        ``(bundle, holdout_scores)``; ``holdout_scores`` is ``None`` without a held-out part.
    """
    dataset, settings = result.dataset, result.settings
    config_name, model = result.best
    config = next(c for c in dataset.configs if c.name == config_name)
    X, y, groups = dataset.X[config_name], dataset.y, dataset.groups
    train = np.arange(dataset.num_items)
    test = None
    if result.folds.holdout is not None:
        train, test = result.folds.holdout
    task = dataset.task
    grid = result.grids.get(model) if result.grids else None
    inner = (
        inner_cv(result.folds.scheme, settings["inner_folds"], settings["seed"], task, groups is not None)
        if grid is not None
        else None
    )
    grouped_inner = groups is not None and result.folds.scheme not in UNGROUPED
    holdout = None
    with limit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xtr = X[train]
        if settings["speaker_norm"]:
            Xtr = group_standardize(Xtr, groups[train])
        est = make_estimator(model, task, seed=settings["seed"], class_weight=settings["class_weight"],
                         threads=threads, grid=grid, inner=inner, metric=result.metric)
        fit_estimator(est, Xtr, y[train], None if groups is None else groups[train], grouped_inner)
        if test is not None:
            Xte = X[test]
            if settings["speaker_norm"]:
                Xte = group_standardize(Xte, groups[test], fallback=X[train])
            pred = est.predict(Xte)
            holdout = {m.name: m.func(y[test], pred) for m in M.metrics_for(task)}
            holdout["n_test"] = len(test)
            holdout["ci_low"], holdout["ci_high"] = holdout_ci(
                y[test], pred, M.get_metric(result.metric, task),
                groups=None if groups is None else groups[test], num_classes=dataset.num_classes or None,
                seed=settings["seed"], enabled=settings["n_boot"] > 0,
            )
    return _bundle(result, config, est, len(train)), holdout


def _bundle(result: Study, config: Any, est: Any, trained_on: int) -> dict[str, Any]:
    """What the model file holds: the fitted pipeline and everything predict needs to use it."""
    from embedx.probing.modelfile import FORMAT, FORMAT_VERSION
    from embedx.version import __version__

    dataset, settings = result.dataset, result.settings
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embedx_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline": est.best_estimator_ if hasattr(est, "best_estimator_") else est,
        "task": dataset.task,
        "classes": dataset.classes,
        "label": dataset.label,
        "model": result.best[1],
        "params": best_params(est),
        "blocks": [b.to_dict() for b in config.blocks],
        "config": config.name,
        "concat": config.concat,
        "feature_sets": {
            name: {
                "backend": spec.backend,
                "dim": spec.dim,
                "layers": list(spec.layers),
                "poolings": list(spec.poolings),
                "config": dict(spec.config),
                "attrs": dict(spec.attrs),
            }
            for name, spec in dataset.specs.items()
            if name in {b.feature_set for b in config.blocks}
        },
        "speaker_norm": bool(settings["speaker_norm"]),
        "group": dataset.group,
        "metric": result.metric,
        "cv_score": float(result.summary.loc[0, f"{result.metric}_pooled"]),
        "trained_on": int(trained_on),
        "store": dataset.store,
    }
