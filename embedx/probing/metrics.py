"""Metric registry for stage 2.

Every metric is registered by name with its task (``classification`` or ``regression``), its
direction, a scalar function ``(y_true, y_pred) -> float`` and a vectorised *weighted* form used
by the bootstrap in :mod:`embedx.probing.stats`: ``(weights, ...) -> (num_boot,)`` where each row of
``weights`` holds how often every item was drawn. With all weights equal to one the weighted
form equals the scalar one (tested against scikit-learn).

Classification metrics take integer-coded labels ``0..num_classes-1``; they follow
scikit-learn's conventions: UAR is :func:`sklearn.metrics.balanced_accuracy_score` (mean recall
over the classes present in ``y_true``), macro-F1 is :func:`sklearn.metrics.f1_score` with
``average="macro"`` over the classes present in ``y_true`` or ``y_pred`` (``zero_division=0``).

Regression: CCC is Lin's concordance correlation coefficient with population (ddof=0) moments,
Pearson r is 0 when either side is constant (no detectable linear association), MAE is the mean
absolute error (lower is better).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from embedx.errors import ConfigError
from embedx.probing.tasks import (
    CLASSIFICATION,
    REGRESSION,
)

__all__ = [
    "ChanceLevel",
    "Metric",
    "available_metrics",
    "chance_level",
    "confusion",
    "default_metric",
    "get_metric",
    "metrics_for",
    "per_class_recall",
    "register_metric",
]


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: registry key (column name in ``results.csv``).
        task: ``"classification"`` or ``"regression"``.
        greater_is_better: direction used to rank configurations.
        func: ``(y_true, y_pred) -> float``.
        weighted: vectorised bootstrap form. Classification: ``(counts) -> (num_boot,)`` where
            ``counts`` is ``(num_boot, num_classes, num_classes)`` weighted confusion counts
            (rows true, columns predicted). Regression: ``(weights, y_true, y_pred) ->
            (num_boot,)`` with ``weights`` of shape ``(num_boot, num_items)``.
        description: one line for help texts and the report.
        bounds: the metric's range ``(low, high)`` (confidence intervals are clipped to it), or
            ``None`` when unbounded.
        chance: ``(y_true, num_classes) -> ChanceLevel``: the best expected score of a predictor
            that ignores the input (see :func:`chance_level`); ``None`` when not defined.
    """

    name: str
    task: str
    greater_is_better: bool
    func: Callable[[np.ndarray, np.ndarray], float]
    weighted: Callable[..., np.ndarray]
    description: str = ""
    bounds: tuple[float, float] | None = None
    chance: Callable[[np.ndarray, int | None], ChanceLevel] | None = None


class ChanceLevel(NamedTuple):
    """The chance level of a metric on a data set.

    Attributes:
        value: the level.
        label: short legend text, e.g. ``chance = 1/4 (random guess)``.
        rule: how it is defined, for the report, e.g. ``1/4 classes: any guess that ignores the
            input``.
    """

    value: float
    label: str
    rule: str


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> None:
    """Add ``metric`` to the registry (replacing one of the same name).

    Args:
        metric: the metric to register.
    """
    _REGISTRY[metric.name] = metric


def available_metrics(task: str | None = None) -> list[str]:
    """Registered metric names, in registration order.

    Args:
        task: only the metrics of this task when given.

    Returns:
        The names.
    """
    return [m.name for m in _REGISTRY.values() if task is None or m.task == task]


def get_metric(name: str, task: str | None = None) -> Metric:
    """Look a metric up.

    Args:
        name: registry key.
        task: when given, the metric must belong to this task.

    Returns:
        The metric.

    Raises:
        ConfigError: unknown name, or a metric of the other task.
    """
    metric = _REGISTRY.get(name)
    if metric is None or (task is not None and metric.task != task):
        raise ConfigError(
            f"unknown {task + ' ' if task else ''}metric {name!r}; accepted: "
            f"{', '.join(available_metrics(task))}"
        )
    return metric


def metrics_for(task: str) -> list[Metric]:
    """All metrics of ``task`` (the columns of ``results.csv``)."""
    return [m for m in _REGISTRY.values() if m.task == task]


def chance_level(name: str, y_true: np.ndarray, num_classes: int | None = None) -> ChanceLevel | None:
    """Chance level of a metric: the best expected score of a predictor that ignores the input.

    One definition for every metric, so that "beats chance" means "learned something from the
    features" (large-sample expectations over a guess drawn independently of the input, with
    class shares ``p_k`` of the ``K`` classes present in ``y_true``):

    * UAR: ``1/K`` (every such guess recalls class ``k`` at the rate it guesses ``k``);
    * accuracy: the majority-class share ``max p_k`` (always guessing the majority class);
    * macro-F1: ``1/K``. Guessing class ``k`` at rate ``q_k`` gives it F1 ``2 p_k q_k / (p_k +
      q_k)``; the mean over classes is largest at ``q = p`` (guessing at the class shares), where
      it is ``mean p_k = 1/K``. Always guessing the majority class gets less,
      ``2 p_max / (1 + p_max) / K``;
    * CCC and Pearson r: 0 (no association);
    * MAE: the mean absolute deviation from the median of ``y_true`` (predicting the median);
      RMSE: the standard deviation of ``y_true`` (predicting the mean). These use the labels of
      all evaluated items, so they are slightly optimistic for a constant learned in a fold.

    Args:
        name: registered metric name.
        y_true: ``(num_items,)`` labels of the evaluated items (integer codes for classification).
        num_classes: number of classes (classification; unused by the rules above, which count
            the classes present in ``y_true``).

    Returns:
        The :class:`ChanceLevel`, or ``None`` for a metric without a chance rule or no labels.
    """
    metric = _REGISTRY.get(name)
    y = np.asarray(y_true)
    if metric is None or metric.chance is None or y.size == 0:
        return None
    return metric.chance(y, num_classes)


def _chance_one_in_k(what: str, rule: str) -> Callable[[np.ndarray, int | None], ChanceLevel]:
    def chance(y: np.ndarray, num_classes: int | None) -> ChanceLevel:
        k = len(np.unique(y))
        return ChanceLevel(1.0 / k, f"chance = 1/{k} ({what})", f"1/{k} for {k} classes: {rule}")

    return chance


def _chance_majority(y: np.ndarray, num_classes: int | None) -> ChanceLevel:
    share = float(np.max(np.unique(y, return_counts=True)[1]) / len(y))
    return ChanceLevel(share, f"chance = {share:.3f} (majority class)",
                       "the majority-class share: always guessing the most frequent class")


def _chance_zero(y: np.ndarray, num_classes: int | None) -> ChanceLevel:
    return ChanceLevel(0.0, "chance = 0 (no association)", "0: a prediction that ignores the input has no association")


def _chance_median(y: np.ndarray, num_classes: int | None) -> ChanceLevel:
    y = y.astype(np.float64)
    value = float(np.mean(np.abs(y - np.median(y))))
    return ChanceLevel(value, f"chance = {value:.3f} (predicting the median)",
                       "the mean absolute deviation from the median: always predicting the median")


def _chance_mean(y: np.ndarray, num_classes: int | None) -> ChanceLevel:
    value = float(np.std(y.astype(np.float64)))
    return ChanceLevel(value, f"chance = {value:.3f} (predicting the mean)",
                       "the standard deviation of the labels: always predicting their mean")


def default_metric(task: str) -> str:
    """Main metric of a task: UAR for classification, CCC for regression."""
    return "uar" if task == CLASSIFICATION else "ccc"


# ---------------------------------------------------------------- classification helpers


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts, rows = true class, columns = predicted class.

    Args:
        y_true: ``(num_items,)`` integer labels.
        y_pred: ``(num_items,)`` integer predictions.
        num_classes: number of classes.

    Returns:
        ``(num_classes, num_classes)`` int64 counts.
    """
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of every class; NaN for a class absent from ``y_true``.

    Returns:
        ``(num_classes,)`` float64.
    """
    cm = confusion(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def _uar_counts(counts: np.ndarray) -> np.ndarray:
    # counts: (num_boot, num_classes, num_classes)
    support = counts.sum(axis=2)  # (num_boot, num_classes)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp, dtype=np.float64), where=present)
    return recall.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _f1_counts(counts: np.ndarray) -> np.ndarray:
    support = counts.sum(axis=2)
    predicted = counts.sum(axis=1)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    denom = support + predicted  # 2TP + FP + FN
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=np.float64), where=present)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _acc_counts(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=(1, 2))
    tp = np.diagonal(counts, axis1=1, axis2=2).sum(axis=1)
    return tp / np.maximum(total, 1e-300)


def _uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    k = int(max(np.max(y_true), np.max(y_pred))) + 1
    return float(_uar_counts(confusion(y_true, y_pred, k)[None])[0])


def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    k = int(max(np.max(y_true), np.max(y_pred))) + 1
    return float(_f1_counts(confusion(y_true, y_pred, k)[None])[0])


def _acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


# -------------------------------------------------------------------- regression helpers


def _moments(w: np.ndarray, a: np.ndarray, b: np.ndarray):
    # w: (num_boot, num_items) non-negative weights; a, b: (num_items,)
    total = w.sum(axis=1)
    ma = w @ a / total
    mb = w @ b / total
    va = w @ (a * a) / total - ma**2
    vb = w @ (b * b) / total - mb**2
    cov = w @ (a * b) / total - ma * mb
    return ma, mb, np.maximum(va, 0.0), np.maximum(vb, 0.0), cov


def _ccc_weighted(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    mt, mp, vt, vp, cov = _moments(w, y_true.astype(np.float64), y_pred.astype(np.float64))
    denom = vt + vp + (mt - mp) ** 2
    return np.divide(2 * cov, denom, out=np.zeros_like(denom), where=denom > 0)


def _pearson_weighted(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    _, _, vt, vp, cov = _moments(w, y_true.astype(np.float64), y_pred.astype(np.float64))
    denom = np.sqrt(vt * vp)
    # relative threshold: a (numerically) constant side has no linear association -> 0
    scale = np.sqrt(
        np.maximum(w @ (y_true.astype(np.float64) ** 2), 1e-300)
        * np.maximum(w @ (y_pred.astype(np.float64) ** 2), 1e-300)
    ) / w.sum(axis=1)
    ok = denom > 1e-12 * scale
    return np.clip(np.divide(cov, denom, out=np.zeros_like(denom), where=ok), -1.0, 1.0)


def _mae_weighted(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    err = np.abs(y_true.astype(np.float64) - y_pred.astype(np.float64))
    return w @ err / w.sum(axis=1)


def _rmse_weighted(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    err = (y_true.astype(np.float64) - y_pred.astype(np.float64)) ** 2
    return np.sqrt(w @ err / w.sum(axis=1))


def _scalar(weighted: Callable[..., np.ndarray]) -> Callable[[np.ndarray, np.ndarray], float]:
    def func(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        y_true = np.asarray(y_true, dtype=np.float64)
        return float(weighted(np.ones((1, len(y_true))), y_true, np.asarray(y_pred))[0])

    return func


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments).

    Args:
        y_true: ``(num_items,)`` targets.
        y_pred: ``(num_items,)`` predictions.

    Returns:
        CCC in ``[-1, 1]``; 0 when both sides are constant.
    """
    return _scalar(_ccc_weighted)(y_true, y_pred)


for _metric in (
    Metric("uar", CLASSIFICATION, True, _uar, _uar_counts,
           "unweighted average recall (balanced accuracy)", (0.0, 1.0), _chance_one_in_k(
           "random guess", "the expected score of any guess that ignores the input")),
    Metric("macro_f1", CLASSIFICATION, True, _f1, _f1_counts, "macro-averaged F1", (0.0, 1.0),
           _chance_one_in_k(
           "guessing at the class shares", "guessing each class at its share, the best guess that ignores the input")),
    Metric("accuracy", CLASSIFICATION, True, _acc, _acc_counts, "accuracy", (0.0, 1.0), _chance_majority),
    Metric("ccc", REGRESSION, True, ccc, _ccc_weighted, "concordance correlation coefficient",
           (-1.0, 1.0), _chance_zero),
    Metric("pearson", REGRESSION, True, _scalar(_pearson_weighted), _pearson_weighted,
           "Pearson correlation", (-1.0, 1.0), _chance_zero),
    Metric("mae", REGRESSION, False, _scalar(_mae_weighted), _mae_weighted, "mean absolute error",
           (0.0, float("inf")), _chance_median),
    Metric("rmse", REGRESSION, False, _scalar(_rmse_weighted), _rmse_weighted,
           "root mean squared error", (0.0, float("inf")), _chance_mean),
):
    register_metric(_metric)
