"""The study's estimand, CIs, paired tests, confidence set and selection-aware score.

Every value is checked against an independent computation (scikit-learn / numpy / scipy,
written out by hand with loops), not against the module's own helpers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sst
from sklearn.metrics import balanced_accuracy_score

from embedx.probing import metrics as M
from embedx.probing.compare import (
    NULL_INFLATION,
    ClusterScores,
    best_set,
    clusters_of,
    compare_configurations,
    jackknife_ci,
    nested_best,
    signflip_test,
)

UAR = M.get_metric("uar")


def _corpus(accuracies, speakers=8, per=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    n = speakers * per
    y = np.arange(n) % k
    spk = np.repeat(np.arange(speakers), per)
    preds = [np.where(rng.random(n) < acc, y, (y + 1 + rng.integers(0, k - 1, n)) % k) for acc in accuracies]
    return y, spk, preds


def _ccc(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return 2 * np.cov(a, b, ddof=0)[0, 1] / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)


def test_mixes_equal_the_metric_of_the_mixed_predictions():
    y, spk, preds = _corpus([0.5, 0.7, 0.9])
    scores = ClusterScores(y, preds, UAR, spk, 3)
    rng = np.random.default_rng(1)
    assign = rng.integers(-1, 3, (20, 8))
    assign[:, 0] = 1  # at least one cluster used
    got = scores.evaluate(assign)
    for row, value in zip(assign, got, strict=True):
        keep = row[spk] >= 0
        mixed = np.choose(np.maximum(row[spk], 0), preds)
        assert value == pytest.approx(balanced_accuracy_score(y[keep], mixed[keep]))
    # regression: CCC of mixed predictions, through the stacked weighted form
    t = rng.normal(size=96)
    rpreds = [t + rng.normal(scale=s, size=96) for s in (0.3, 1.0)]
    rscores = ClusterScores(t, rpreds, M.get_metric("ccc"), spk)
    row = np.array([0, 1, 1, -1, 0, 0, 1, 0])
    keep = row[spk] >= 0
    mixed = np.where(row[spk] == 1, rpreds[1], rpreds[0])
    assert rscores.evaluate(row[None])[0] == pytest.approx(_ccc(t[keep], mixed[keep]))
    np.testing.assert_allclose(rscores.pooled(), [_ccc(t, p) for p in rpreds])
    loo = rscores.leave_one_out()
    assert loo[1, 3] == pytest.approx(_ccc(t[spk != 3], rpreds[1][spk != 3]))
    two = scores.leave_two_out()
    keep = (spk != 2) & (spk != 5)
    assert two[0, 2, 5] == pytest.approx(balanced_accuracy_score(y[keep], preds[0][keep]))
    assert two[0, 4, 4] == pytest.approx(scores.leave_one_out()[0, 4])


def test_jackknife_t_interval_by_hand():
    loo = np.array([0.61, 0.58, 0.66, 0.63, 0.55, 0.60])
    s = len(loo)
    se = np.sqrt((s - 1) / s * np.sum((loo - loo.mean()) ** 2))
    half = sst.t.ppf(0.975, s - 1) * se
    assert jackknife_ci(0.6, loo) == pytest.approx((0.6 - half, 0.6 + half))
    assert jackknife_ci(0.97, loo, bounds=(0.0, 1.0))[1] == 1.0  # clipped to the metric's range
    assert all(np.isnan(jackknife_ci(0.6, loo[:1])))


def test_signflip_test_is_exact_and_one_sided():
    y, spk, preds = _corpus([0.55, 0.8], speakers=6)
    scores = ClusterScores(y, preds, UAR, spk, 3)
    observed = balanced_accuracy_score(y, preds[1]) - balanced_accuracy_score(y, preds[0])
    null = []
    for flips in itertools.product([False, True], repeat=6):
        swap = np.asarray(flips)[spk]
        a = np.where(swap, preds[0], preds[1])
        b = np.where(swap, preds[1], preds[0])
        null.append(NULL_INFLATION * (balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b)))
    expected = np.mean(np.asarray(null) >= observed - 1e-12)
    p = signflip_test(scores, 1, 0, greater_is_better=True, n_perm=100, seed=0)
    assert p == pytest.approx(expected)
    assert p < 0.1  # few of the 64 swaps reach the observed difference
    # the other direction: "0 is better than 1" is not supported at all
    assert signflip_test(scores, 0, 1, greater_is_better=True, n_perm=100, seed=0) > 0.9
    # a lower-is-better metric flips the direction: errors of 1 are lower
    err = M.get_metric("mae")
    t = y.astype(float)
    rscores = ClusterScores(t, [p.astype(float) for p in preds], err, spk)
    assert signflip_test(rscores, 1, 0, greater_is_better=False, n_perm=100, seed=0) < 0.1
    assert signflip_test(rscores, 0, 1, greater_is_better=False, n_perm=100, seed=0) > 0.9


def test_confidence_set_keeps_the_best_and_drops_only_clearly_worse():
    y, spk, preds = _corpus([0.9, 0.88, 0.45, 0.4], speakers=10, per=20)
    scores = ClusterScores(y, preds, UAR, spk, 3)
    p, in_set = best_set(scores, greater_is_better=True, alpha=0.05, n_perm=300, seed=0)
    assert in_set.tolist() == [True, True, False, False]
    assert (p[2:] < 0.05).all() and (p[:2] >= 0.05).all()
    # identical configurations: the observed spread is zero, nothing can be eliminated
    same = ClusterScores(y, [preds[0]] * 4, UAR, spk, 3)
    p, in_set = best_set(same, greater_is_better=True, alpha=0.05, n_perm=50, seed=0)
    assert in_set.all() and np.allclose(p, 1.0)


def test_nested_selection_by_hand():
    y, spk, preds = _corpus([0.6, 0.62, 0.58], speakers=6, per=15, seed=3)
    scores = ClusterScores(y, preds, UAR, spk, 3)
    est, low, high = nested_best(scores, greater_is_better=True)

    def nested(clusters):
        mixed, keep = np.empty_like(y), np.isin(spk, clusters)
        for s in clusters:
            others = np.isin(spk, [c for c in clusters if c != s])
            choice = int(np.argmax([balanced_accuracy_score(y[others], p[others]) for p in preds]))
            mixed[spk == s] = preds[choice][spk == s]
        return balanced_accuracy_score(y[keep], mixed[keep])

    assert est == pytest.approx(nested(list(range(6))))
    jack = [nested([c for c in range(6) if c != t]) for t in range(6)]
    assert (low, high) == pytest.approx(jackknife_ci(est, np.asarray(jack), bounds=(0.0, 1.0)))


def test_compare_configurations_switches():
    y, spk, preds = _corpus([0.6, 0.8], speakers=8)
    comp, notes = compare_configurations(y, preds, UAR, groups=spk, num_classes=3, alpha=0.05,
                                         n_perm=0, seed=0)
    assert not comp.tested and np.isnan(comp.ci_low).all() and comp.in_set.all() and not notes
    assert np.isnan(comp.paired_p(1, 0))
    comp, notes = compare_configurations(y[spk < 3], [p[spk < 3] for p in preds], UAR, groups=spk[spk < 3],
                                         num_classes=3, alpha=0.05, n_perm=100, seed=0)
    assert not comp.tested and "only 3 speaker(s)" in notes[0]
    # no groups: seeded random blocks of items, the same for the same seed
    codes, kind = clusters_of(96, None, 4)
    assert kind == "block" and len(np.unique(codes)) == 50 and np.bincount(codes).min() >= 1
    np.testing.assert_array_equal(codes, clusters_of(96, None, 4)[0])
    assert clusters_of(30, None, 0)[0].max() == 29  # fewer items than blocks: one item each
