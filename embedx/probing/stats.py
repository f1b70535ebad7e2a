"""Tests on per-fold scores, kept for comparison with the literature.

The study's estimand, confidence intervals, ``Δ to best``, paired tests and the
``worse_than_best`` decision all live in :mod:`embedx.probing.compare` and use the pooled
out-of-fold metric with speakers as the unit. The two tests here work on the per-fold scores (a
different quantity: with LOGO a fold's UAR averages only the classes present in that fold) and
are reported in ``summary.csv`` for reference only, one-sided in the direction "the best is
better":

* the *corrected resampled t-test* of Nadeau & Bengio (2003), whose variance term
  ``(1/k + n_test/n_train)`` accounts for overlapping training sets;
* the *Wilcoxon signed-rank test*, exact with few folds, so it cannot go below ``1 / 2**K``
  one-sided (0.031 with 5 folds; 0.0625 two-sided), which the report states.

The bootstrap of earlier versions is gone: a percentile cluster bootstrap over ~10 speakers
covered 0.73-0.82 instead of 0.95, and its normal-approximation p-value was far too small
(0.0003 where an exact sign-flip test gave 0.016).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TIE",
    "corrected_ttest",
    "wilcoxon",
    "wilcoxon_floor",
]

#: paired differences within this (relative) tolerance are ties: float noise is not a difference
TIE = 1e-12


def corrected_ttest(
    scores_a: np.ndarray, scores_b: np.ndarray, test_train_ratio: float,
    alternative: str = "two-sided",
) -> tuple[float, float]:
    """Nadeau–Bengio corrected resampled paired t-test over shared folds.

    Args:
        scores_a: ``(num_folds,)`` per-fold metric of configuration a.
        scores_b: ``(num_folds,)`` per-fold metric of configuration b (same folds).
        test_train_ratio: mean ``n_test / n_train`` of the folds.
        alternative: ``"two-sided"`` or ``"greater"`` (a better than b, greater is better).

    Returns:
        ``(t, p)``; NaN with fewer than 2 folds. Identical non-zero differences give ``p = 0``
        (two-sided; one-sided: 0 when positive, 1 when negative); all-zero differences ``p = 1``.
    """
    from scipy import stats

    diff = _differences(scores_a, scores_b)
    num = len(diff)
    if num < 2:
        return float("nan"), float("nan")
    mean = diff.mean()
    var = diff.var(ddof=1)
    if var <= 1e-24:
        if mean == 0.0:
            return 0.0, 1.0
        t = float(np.sign(mean) * np.inf)
        return t, 0.0 if alternative == "two-sided" or mean > 0 else 1.0
    t = mean / np.sqrt((1.0 / num + test_train_ratio) * var)
    if alternative == "greater":
        return float(t), float(stats.t.sf(t, df=num - 1))
    return float(t), float(2.0 * stats.t.sf(abs(t), df=num - 1))


def _differences(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """``a - b`` with float noise (``|d| <= TIE``, relative to the scores) set to exactly zero."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    diff = a - b
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    diff[np.abs(diff) <= TIE * scale] = 0.0
    return diff


def wilcoxon(scores_a: np.ndarray, scores_b: np.ndarray, alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p-value of paired per-fold scores.

    Differences within float noise (``1e-16`` after summing recalls in another order) are ties,
    not losses. The test is exact with few folds, so its p-value cannot go below
    ``2 / 2**K`` two-sided or ``1 / 2**K`` one-sided (0.0625 and 0.031 with 5 folds; see
    :func:`wilcoxon_floor`).

    Args:
        scores_a: ``(num_folds,)`` per-fold metric of configuration a.
        scores_b: ``(num_folds,)`` per-fold metric of configuration b.
        alternative: ``"two-sided"`` or ``"greater"`` (a better than b).

    Returns:
        The p-value; 1.0 when all differences are zero, NaN with fewer than 2 folds.
    """
    from scipy import stats

    diff = _differences(scores_a, scores_b)
    if len(diff) < 2:
        return float("nan")
    if np.all(diff == 0.0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="zsplit", alternative=alternative).pvalue)


def wilcoxon_floor(num_folds: int, alternative: str = "two-sided") -> float:
    """Smallest p-value the exact Wilcoxon signed-rank test can give with ``num_folds`` folds."""
    return (2.0 if alternative == "two-sided" else 1.0) / 2.0**num_folds
