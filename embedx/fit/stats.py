"""Statistics: bootstrap confidence intervals and paired comparisons of configurations.

What embedx computes (and the report states):

* **Confidence interval** of a configuration's main metric: a percentile bootstrap of the
  metric on the *pooled out-of-fold predictions* (each item predicted by the fold that held it
  out). When a group column is given the bootstrap resamples **groups** (speakers) with all
  their items (a cluster bootstrap), because items of one speaker are not independent; otherwise
  (or with fewer than 5 groups in the test parts, which the report notes) it resamples items.
  Every configuration uses the same resamples.
* **Paired comparison** of the best configuration against every other one, on the same items:

  - the *paired bootstrap* of the metric difference (same resamples for both configurations):
    a percentile CI of the difference and a two-sided p-value from the normal approximation
    ``2 * Φ(-|d| / se_boot)`` (``d`` the observed difference of the pooled metric, ``se_boot``
    the bootstrap standard deviation of the difference). Its Holm-adjusted p-value (over all
    comparisons against the best) decides the ``worse_than_best`` column, because the best
    configuration was picked among many;
  - over the shared folds, the *corrected resampled t-test* of Nadeau & Bengio (2003), whose
    variance term ``(1/k + n_test/n_train)`` accounts for overlapping training sets, and the
    Wilcoxon signed-rank test. Both are reported for reference; with 5 folds the smallest
    possible two-sided Wilcoxon p-value is 0.0625, so it can never reach 0.05.

The bootstrap draws weights (how often each item is drawn) and evaluates metrics from weighted
confusion counts or weighted moments, so 1,000 resamples of 40 configurations take well under a
second.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from embedx.fit.metrics import CLASSIFICATION, Metric

__all__ = [
    "bootstrap_replicates",
    "corrected_ttest",
    "holm",
    "paired_bootstrap",
    "percentile_ci",
    "wilcoxon",
]


def _weight_chunks(num_items: int, n_boot: int, seed: int, groups: np.ndarray | None, chunk: int):
    """Yield ``(chunk, num_items)`` float64 bootstrap weights, reproducibly for ``seed``."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        _, codes = np.unique(groups, return_inverse=True)
        num_groups = int(codes.max()) + 1
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        if groups is None:
            yield rng.multinomial(num_items, np.full(num_items, 1.0 / num_items), size=size).astype(
                np.float64
            )
        else:
            gw = rng.multinomial(num_groups, np.full(num_groups, 1.0 / num_groups), size=size)
            yield gw[:, codes].astype(np.float64)  # (size, num_items)


def bootstrap_replicates(
    y_true: np.ndarray,
    predictions: Mapping[Hashable, np.ndarray],
    metric: Metric,
    *,
    num_classes: int | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 100,
) -> dict[Hashable, np.ndarray]:
    """Metric values of every configuration on the same bootstrap resamples.

    Args:
        y_true: ``(num_items,)`` true labels (int codes) or targets.
        predictions: configuration key -> ``(num_items,)`` out-of-fold predictions.
        metric: the metric (its weighted form is used).
        num_classes: number of classes (classification).
        groups: ``(num_items,)`` groups for a cluster bootstrap, or ``None`` to resample items.
        n_boot: number of resamples.
        seed: seed of the resampling.
        chunk: resamples evaluated at once (memory ``chunk × num_items`` floats).

    Returns:
        key -> ``(n_boot,)`` metric values; paired across keys (same resamples).
    """
    y_true = np.asarray(y_true)
    num_items = len(y_true)
    out: dict[Hashable, list[np.ndarray]] = {key: [] for key in predictions}
    onehots = {}
    if metric.task == CLASSIFICATION:
        k = int(num_classes)
        for key, pred in predictions.items():
            code = y_true.astype(np.int64) * k + np.asarray(pred, dtype=np.int64)
            onehot = np.zeros((num_items, k * k))  # (num_items, k*k)
            onehot[np.arange(num_items), code] = 1.0
            onehots[key] = onehot
    for weights in _weight_chunks(num_items, n_boot, seed, groups, chunk):
        for key, pred in predictions.items():
            if metric.task == CLASSIFICATION:
                counts = (weights @ onehots[key]).reshape(-1, k, k)
                out[key].append(metric.weighted(counts))
            else:
                out[key].append(metric.weighted(weights, y_true, np.asarray(pred)))
    return {key: np.concatenate(vals) for key, vals in out.items()}


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values``.

    Args:
        values: ``(n_boot,)`` replicate values.
        level: coverage, e.g. 0.95.

    Returns:
        ``(low, high)``.
    """
    alpha = (1.0 - level) / 2.0
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    reps_a: np.ndarray,
    reps_b: np.ndarray,
    observed: float | None = None,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Paired bootstrap of the difference ``a - b`` from replicates on the same resamples.

    The p-value is the normal approximation ``2 * Φ(-|observed| / se)`` with ``se`` the
    standard deviation of the bootstrap differences (Efron & Tibshirani, ch. 16). Unlike a
    count of resamples on the other side of zero, it does not bottom out at ``2 / (B + 1)``,
    so it survives a Holm correction over many comparisons.

    Args:
        reps_a: ``(n_boot,)`` metric of configuration a.
        reps_b: ``(n_boot,)`` metric of configuration b (same resamples).
        observed: the difference on the original sample (default: the mean bootstrap one).
        level: CI coverage.

    Returns:
        ``(ci_low, ci_high, p_value)``: percentile CI of the difference and the two-sided
        p-value (1 when the two never differ, 0 when they always differ by the same amount).
    """
    from scipy import stats

    diff = np.asarray(reps_a, dtype=np.float64) - np.asarray(reps_b, dtype=np.float64)
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return float("nan"), float("nan"), float("nan")
    low, high = percentile_ci(diff, level)
    obs = float(np.mean(diff)) if observed is None else float(observed)
    se = float(np.std(diff, ddof=1))
    if se <= 1e-12:
        return low, high, 1.0 if abs(obs) <= 1e-12 else 0.0
    return low, high, float(2.0 * stats.norm.sf(abs(obs) / se))


def corrected_ttest(
    scores_a: np.ndarray, scores_b: np.ndarray, test_train_ratio: float
) -> tuple[float, float]:
    """Nadeau–Bengio corrected resampled paired t-test over shared folds.

    Args:
        scores_a: ``(num_folds,)`` per-fold metric of configuration a.
        scores_b: ``(num_folds,)`` per-fold metric of configuration b (same folds).
        test_train_ratio: mean ``n_test / n_train`` of the folds.

    Returns:
        ``(t, p)`` two-sided; NaN with fewer than 2 folds. Identical non-zero differences give
        ``p = 0``; all-zero differences ``p = 1``.
    """
    from scipy import stats

    diff = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    num = len(diff)
    if num < 2:
        return float("nan"), float("nan")
    mean = diff.mean()
    var = diff.var(ddof=1)
    if var <= 1e-24:
        return (0.0, 1.0) if abs(mean) <= 1e-12 else (float(np.sign(mean) * np.inf), 0.0)
    t = mean / np.sqrt((1.0 / num + test_train_ratio) * var)
    p = 2.0 * stats.t.sf(abs(t), df=num - 1)
    return float(t), float(p)


def wilcoxon(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-fold scores.

    Returns:
        The p-value; 1.0 when all differences are zero, NaN with fewer than 2 folds.
    """
    from scipy import stats

    diff = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    if len(diff) < 2:
        return float("nan")
    if np.all(np.abs(diff) <= 1e-12):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaNs stay NaN and do not count).

    Args:
        pvalues: ``(num_tests,)`` raw p-values.

    Returns:
        ``(num_tests,)`` adjusted p-values, monotone in the raw ones.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out
