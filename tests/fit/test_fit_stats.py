"""Bootstrap CIs and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from embedx.fit import metrics as M
from embedx.fit.stats import (
    _weight_chunks,
    bootstrap_replicates,
    corrected_ttest,
    holm,
    paired_bootstrap,
    percentile_ci,
    wilcoxon,
)


def _preds(acc, n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    pred = np.where(rng.random(n) < acc, y, (y + 1) % k)
    return y, pred


def test_bootstrap_ci_brackets_the_metric_and_narrows_with_n():
    uar = M.get_metric("uar")
    widths = []
    for n in (100, 1600):
        y, pred = _preds(0.7, n=n)
        reps = bootstrap_replicates(y, {"a": pred}, uar, num_classes=4, n_boot=500, seed=0)["a"]
        low, high = percentile_ci(reps)
        assert low < uar.func(y, pred) < high
        widths.append(high - low)
    # the CI of a proportion from n items has width ~ 2 * 1.96 * sqrt(p(1-p)/n)
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 1600), rel=0.25)
    assert widths[0] > 3 * widths[1]


def test_replicates_are_reproducible_and_paired():
    y, a = _preds(0.8)
    _, b = _preds(0.6, seed=1)
    uar = M.get_metric("uar")
    r1 = bootstrap_replicates(y, {"a": a, "b": b}, uar, num_classes=4, n_boot=200, seed=5)
    r2 = bootstrap_replicates(y, {"a": a, "b": b}, uar, num_classes=4, n_boot=200, seed=5)
    np.testing.assert_array_equal(r1["a"], r2["a"])
    # identical predictions under paired resamples give identical replicates
    r3 = bootstrap_replicates(y, {"a": a, "a2": a.copy()}, uar, num_classes=4, n_boot=50, seed=0)
    np.testing.assert_array_equal(r3["a"], r3["a2"])
    assert paired_bootstrap(r3["a"], r3["a2"], observed=0.0)[2] == 1.0
    observed = uar.func(y, a) - uar.func(y, b)  # 0.7525 - 0.615
    low, high, p = paired_bootstrap(r1["a"], r1["b"], observed=observed)
    # se of a difference of two independent proportions of 400 items: ~0.032
    assert low == pytest.approx(observed - 1.96 * 0.032, abs=0.02)
    assert high == pytest.approx(observed + 1.96 * 0.032, abs=0.02)
    assert p < 1e-3


def test_cluster_bootstrap_resamples_whole_groups():
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), [3, 1, 4, 2, 5])
    for w in _weight_chunks(len(groups), 40, 0, groups, 16):
        for g in np.unique(groups):
            assert len(np.unique(w[:, groups == g], axis=1).T) == 1  # same weight within a group
        firsts = w[:, [0, 3, 4, 8, 10]]
        np.testing.assert_array_equal(firsts.sum(axis=1), 5)  # 5 groups drawn each time
    w_items = next(_weight_chunks(7, 10, 0, None, 10))
    np.testing.assert_array_equal(w_items.sum(axis=1), 7)


def test_regression_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    p = y + rng.normal(scale=0.5, size=300)
    ccc = M.get_metric("ccc")
    reps = bootstrap_replicates(y, {"m": p}, ccc, n_boot=300, seed=0)["m"]
    low, high = percentile_ci(reps)
    assert low < ccc.func(y, p) < high


def test_corrected_ttest_formula():
    a = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    b = np.array([0.65, 0.69, 0.66, 0.70, 0.64])
    d = a - b
    t_expected = d.mean() / np.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    t, p = corrected_ttest(a, b, 0.25)
    assert t == pytest.approx(t_expected)
    assert p == pytest.approx(2 * sst.t.sf(abs(t_expected), 4))
    # the correction makes it more conservative than the plain paired t-test
    assert p > sst.ttest_rel(a, b).pvalue
    assert corrected_ttest(a, a, 0.25) == (0.0, 1.0)
    assert np.isnan(corrected_ttest(a[:1], b[:1], 0.25)[1])


def test_wilcoxon_and_holm():
    a = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    b = np.array([0.65, 0.69, 0.66, 0.70, 0.64])
    assert wilcoxon(a, b) == pytest.approx(sst.wilcoxon(a - b).pvalue)
    assert wilcoxon(a, b) == pytest.approx(0.0625)  # the smallest possible with 5 folds
    assert wilcoxon(a, a) == 1.0
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(holm(np.array([0.5, 0.001])), [0.5, 0.002])
