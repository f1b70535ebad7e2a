"""One fit of the study: a model's estimator (tuned by a nested search or not), fitted on the
training part of a fold, scored on its test part. Runs in a joblib worker.

Everything learned is learned on the training part: the estimator is built fresh per task,
scaling is a step of its pipeline, the nested search sees the training part only, and speaker
normalisation standardises each part with its own speakers' statistics.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from embedx.errors import one_line
from embedx.probing import metrics as M
from embedx.probing.models import build_model
from embedx.probing.speaker_norm import group_standardize
from embedx.serial import plain

__all__ = ["best_params", "fit_estimator", "layer_weights_of", "limit_threads", "main_scorer", "make_estimator",
           "run_task"]

#: this process's thread-pool controller and the number of modules loaded when it was made
_CONTROLLER: tuple[int, Any] | None = None


def limit_threads(threads: int):
    """A context that limits the BLAS and OpenMP pools of this process to ``threads``.

    ``threadpoolctl.threadpool_limits`` scans the loaded libraries on every call (2 ms, as long
    as a small fit); a worker runs hundreds of tasks, so the scan is kept and redone only when
    modules were imported since (a new import may load a library with a pool, e.g. LightGBM's
    OpenMP).

    Args:
        threads: threads per pool.

    Returns:
        The context manager (``with limit_threads(1): ...``).
    """
    from threadpoolctl import ThreadpoolController

    global _CONTROLLER
    if _CONTROLLER is None or _CONTROLLER[0] != len(sys.modules):
        _CONTROLLER = (len(sys.modules), ThreadpoolController())
    return _CONTROLLER[1].limit(limits=threads)


def main_scorer(metric_name: str, task: str):
    """The study's main metric as a scikit-learn scorer (what a nested search maximises)."""
    from sklearn.metrics import make_scorer

    metric = M.get_metric(metric_name, task)
    return make_scorer(metric.func, greater_is_better=metric.greater_is_better)


def make_estimator(
    model: str,
    task: str,
    *,
    seed: int,
    class_weight: str | None,
    threads: int,
    grid: Mapping[str, list[Any]] | None,
    inner: Any,
    metric: str,
):
    """The unfitted estimator of one task: the model's pipeline, wrapped in a nested
    :class:`~sklearn.model_selection.GridSearchCV` over ``inner`` when there is a ``grid``."""
    pipe = build_model(model, task, seed=seed, class_weight=class_weight, n_jobs=threads)
    if grid is None:
        return pipe
    from sklearn.model_selection import GridSearchCV

    return GridSearchCV(
        pipe,
        {f"model__{k}": list(v) for k, v in grid.items()},
        scoring=main_scorer(metric, task),
        cv=inner,
        n_jobs=1,
        refit=True,
        error_score=np.nan,  # a candidate that cannot fit (e.g. k > items) is never chosen
    )


def fit_estimator(est, X, y, groups, grouped_inner: bool):
    """Fit ``est``; a grouped nested search gets the groups so its inner folds keep speakers apart."""
    if groups is not None and grouped_inner and hasattr(est, "param_grid"):
        est.fit(X, y, groups=groups)
    else:
        est.fit(X, y)
    return est


def layer_weights_of(est) -> np.ndarray | None:
    """The learned layer weights of a weighted-layer probe (a pipeline's last step), else ``None``."""
    final = est.best_estimator_ if hasattr(est, "best_estimator_") else est
    final = final.steps[-1][1] if hasattr(final, "steps") else final
    weights = getattr(final, "layer_weights_", None)
    return None if weights is None else np.asarray(weights, dtype=np.float64)


def best_params(est) -> dict[str, Any] | None:
    """The parameters a nested search chose (names without ``model__``), else ``None``."""
    if not hasattr(est, "best_params_"):
        return None
    return {k.removeprefix("model__"): plain(v) for k, v in est.best_params_.items()}


def run_task(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    *,
    key: tuple[int, int, int],
    model: str,
    task: str,
    num_classes: int,
    seed: int,
    class_weight: str | None,
    threads: int,
    speaker_norm: bool,
    grid: Mapping[str, list[Any]] | None,
    inner: Any,
    grouped_inner: bool,
    metric: str,
) -> dict[str, Any]:
    """Fit on ``train``, predict ``test``; returns scores and predictions (runs in a worker)."""
    start = time.perf_counter()
    with limit_threads(threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Xtr, Xte = X[train], X[test]  # (n_train, dim), (n_test, dim)
        if speaker_norm:
            Xtr = group_standardize(Xtr, groups[train])
            Xte = group_standardize(Xte, groups[test], fallback=X[train])
        est = make_estimator(model, task, seed=seed, class_weight=class_weight, threads=threads,
                         grid=grid, inner=inner, metric=metric)
        gtr = None if groups is None else groups[train]
        fit_estimator(est, Xtr, y[train], gtr, grouped_inner)
        fit_seconds = time.perf_counter() - start
        pred = est.predict(Xte)
    messages = sorted({one_line(w.message, first_line=True) for w in caught
                       if not issubclass(w.category, DeprecationWarning)})
    scores = {m.name: m.func(y[test], pred) for m in M.metrics_for(task)}
    out: dict[str, Any] = {
        "key": key,
        "scores": scores,
        "pred": np.asarray(pred),
        "fit_seconds": fit_seconds,
        "seconds": time.perf_counter() - start,
        "params": best_params(est),
        "warning": messages[0][:200] if messages else "",
        "layer_weights": layer_weights_of(est),
    }
    if task == M.CLASSIFICATION:
        out["recall"] = M.per_class_recall(y[test], pred, num_classes)
        out["confusion"] = M.confusion(y[test], pred, num_classes)
    return out
