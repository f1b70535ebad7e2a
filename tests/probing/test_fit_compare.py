"""The study's estimand, CIs, paired tests, confidence set and selection-aware score.

Every value is checked against an independent computation (scikit-learn / numpy / scipy,
written out by hand with loops), not against the module's own helpers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sst
from sklearn.metrics import balanced_accuracy_score

from embedx.probing import compare
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

from .conftest import noisy_corpus

UAR = M.get_metric("uar")


def _corpus(accuracies, speakers=8, per=12, k=3, seed=0):
    return noisy_corpus(accuracies, speakers, per, k, seed)


def _regression(speakers, per=8, gain=0.25, seed=0):
    """Targets and two predictions; the second has ``gain`` more noise (its errors are larger)."""
    rng = np.random.default_rng(seed)
    n = speakers * per
    t, spk = rng.normal(size=n), np.repeat(np.arange(speakers), per)
    return t, spk, [t + rng.normal(scale=1.0, size=n), t + rng.normal(scale=1.0 + gain, size=n)]


def _mae_gains(t, spk, better, worse):
    """``(S,)`` each speaker's share of ``MAE(worse) - MAE(better)``: MAE is a sum over items / N."""
    return np.bincount(spk, weights=np.abs(worse - t) - np.abs(better - t)) / len(t)


def _all_signs(num):
    """``(2^num, num)`` every +-1 vector: no swap (+1) or swap (-1) of each speaker."""
    return np.array(list(itertools.product([1.0, -1.0], repeat=num)))


def _inflation():
    """The permutation null's widening, read through its public name (never a copy of its value)."""
    return compare.NULL_INFLATION


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


def test_monte_carlo_signflip_beyond_the_exact_limit_matches_full_enumeration():
    # 14 speakers: past EXACT_MAX_CLUSTERS, so random swaps. The reference enumerates all 2^14
    # swaps by hand: MAE is a sum over items, so swapping speaker s flips the sign of its share
    speakers = 14
    assert speakers > compare.EXACT_MAX_CLUSTERS
    t, spk, preds = _regression(speakers, seed=4)
    gains = _mae_gains(t, spk, preds[0], preds[1])
    assert gains.sum() == pytest.approx(np.mean(np.abs(preds[1] - t)) - np.mean(np.abs(preds[0] - t)))
    null = _all_signs(speakers) @ gains  # (2^S,) the uninflated null of "0 is better than 1"

    def exact(inflation):
        return float(np.mean(inflation * null >= gains.sum() - 1e-12))

    n_perm = 10_000
    scores = ClusterScores(t, preds, M.get_metric("mae"), spk)
    p = signflip_test(scores, 0, 1, greater_is_better=False, n_perm=n_perm, seed=0)
    want = exact(_inflation())
    se = np.sqrt(want * (1 - want) / n_perm)
    assert abs(p - want) < 4 * se + 1 / (n_perm + 1)
    # the test has the power to see the widening: without it the p-value is > 8 SE lower
    assert want - exact(1.0) > 8 * se


def test_monte_carlo_p_values_are_never_below_one_over_permutations_plus_one():
    # A better than B in every block of items: no random swap reaches the observed difference,
    # and a Monte Carlo p-value counts the observed arrangement itself: 1 / (n_perm + 1), not 0
    k, n = 3, 100
    y = np.arange(n) % k
    good, bad = y.copy(), (y + 1) % k
    n_perm = 199
    comp, _ = compare_configurations(y, [bad, good], UAR, groups=None, num_classes=k, alpha=0.05,
                                     n_perm=n_perm, seed=0)
    assert comp.cluster_kind == "block" and comp.num_clusters > compare.EXACT_MAX_CLUSTERS
    # the chance that one random swap (sign flip, or permutation of the two) reaches the observed
    # gap: the swapped blocks must carry at most a share (f-1)/(2f) of it, f the inflation
    codes, _ = clusters_of(n, None, 0)
    gains = np.sort(np.bincount(codes, weights=1.0 / (k * np.bincount(y)[y])))  # UAR share per block
    allowed = int(np.searchsorted(np.cumsum(gains), gains.sum() * (_inflation() - 1) / (2 * _inflation()),
                                  side="right"))
    s = comp.num_clusters
    reach = 2 * sum(math.comb(s, j) for j in range(allowed + 1)) / 2.0**s
    assert reach * n_perm < 1e-6  # so no random swap reaches it: the count of hits is 0
    assert comp.paired_p(1, 0) == pytest.approx(1 / (n_perm + 1), rel=1e-12)
    assert comp.p_set[0] == pytest.approx(1 / (n_perm + 1), rel=1e-12) and comp.in_set.tolist() == [False, True]
    # the other direction: every swap but the all-swapped one (chance 2^-50) reaches it, p = 1
    assert comp.paired_p(0, 1) == 1.0


def test_confidence_set_p_value_is_the_inflated_permutation_null_by_enumeration():
    # two configurations: permuting them within a speaker is a swap with probability 1/2, so the
    # spread's null is |sum of +-shares| over all 2^S swaps, widened by the inflation
    speakers = 10
    t, spk, preds = _regression(speakers, seed=1)
    gains = _mae_gains(t, spk, preds[0], preds[1])
    spread = np.abs(_all_signs(speakers) @ gains)

    def exact(inflation):
        return float(np.mean(inflation * spread >= abs(gains.sum()) - 1e-12))

    n_perm = 6000
    scores = ClusterScores(t, preds, M.get_metric("mae"), spk)
    p, in_set = best_set(scores, greater_is_better=False, alpha=0.05, n_perm=n_perm, seed=0)
    want = exact(_inflation())
    se = np.sqrt(want * (1 - want) / n_perm)
    assert abs(p[1] - want) < 4 * se + 1 / (n_perm + 1)
    assert in_set.tolist() == [True, bool(p[1] >= 0.05)]
    # the permutation null is widened (it lacks each configuration's training noise): the set is
    # measurably more conservative than the plain permutation test
    assert want - exact(1.0) > 8 * se
