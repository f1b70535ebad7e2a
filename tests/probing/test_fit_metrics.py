"""Metrics equal scikit-learn's (and textbook formulas) on known predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from embedx.errors import ConfigError
from embedx.probing import metrics as M


def _cases():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(20):
        k = int(rng.integers(2, 6))
        n = int(rng.integers(5, 60))
        y_true = rng.integers(0, k, n)
        y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
        out.append((y_true, y_pred))
    # a class missing from y_true but predicted, and one never predicted
    out.append((np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 0])))
    out.append((np.array([0, 1, 2, 2]), np.array([0, 0, 0, 0])))
    return out


@pytest.mark.filterwarnings("ignore")  # sklearn warns about classes absent from y_true
@pytest.mark.parametrize("y_true,y_pred", _cases())
def test_classification_metrics_equal_sklearn(y_true, y_pred):
    assert M.get_metric("uar").func(y_true, y_pred) == pytest.approx(
        skm.balanced_accuracy_score(y_true, y_pred))
    assert M.get_metric("macro_f1").func(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert M.get_metric("accuracy").func(y_true, y_pred) == pytest.approx(
        skm.accuracy_score(y_true, y_pred))
    k = int(max(y_true.max(), y_pred.max())) + 1
    np.testing.assert_array_equal(
        M.confusion(y_true, y_pred, k), skm.confusion_matrix(y_true, y_pred, labels=range(k)))
    present = np.isin(np.arange(k), y_true)
    recall = M.per_class_recall(y_true, y_pred, k)
    assert np.isnan(recall[~present]).all()
    np.testing.assert_allclose(
        recall[present],
        skm.recall_score(y_true, y_pred, labels=np.flatnonzero(present), average=None,
                         zero_division=0))


def test_known_values():
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 0])
    assert M.get_metric("uar").func(y_true, y_pred) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert M.get_metric("accuracy").func(y_true, y_pred) == pytest.approx(4 / 6)


def test_regression_metrics():
    rng = np.random.default_rng(1)
    y = rng.normal(2, 1.5, 200)
    p = 0.7 * y + rng.normal(0.3, 0.8, 200)
    ccc = 2 * np.cov(y, p, bias=True)[0, 1] / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)
    assert M.get_metric("ccc").func(y, p) == pytest.approx(ccc)
    assert M.get_metric("pearson").func(y, p) == pytest.approx(stats.pearsonr(y, p)[0])
    assert M.get_metric("mae").func(y, p) == pytest.approx(skm.mean_absolute_error(y, p))
    assert M.get_metric("rmse").func(y, p) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert M.get_metric("ccc").func(y, y) == pytest.approx(1.0)
    # a shifted copy is perfectly correlated but not concordant
    assert M.get_metric("pearson").func(y, y + 5) == pytest.approx(1.0)
    assert M.get_metric("ccc").func(y, y + 5) < 0.2
    # constant predictions: no linear association
    assert M.get_metric("pearson").func(y, np.full_like(y, 3.0)) == 0.0
    assert M.get_metric("ccc").func(y, np.full_like(y, 3.0)) == pytest.approx(0.0)


def test_weighted_forms_equal_repeated_samples():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 4, 50)
    y_pred = np.where(rng.random(50) < 0.5, y_true, rng.integers(0, 4, 50))
    w = rng.integers(0, 4, (3, 50)).astype(float)
    counts = np.stack([_weighted_confusion(y_true, y_pred, row) for row in w])
    for name in ("uar", "macro_f1", "accuracy"):
        metric = M.get_metric(name)
        got = metric.weighted(counts)
        for b in range(3):
            rep = np.repeat(np.arange(50), w[b].astype(int))
            assert got[b] == pytest.approx(metric.func(y_true[rep], y_pred[rep]))
    yr, pr = rng.normal(size=50), rng.normal(size=50)
    for name in ("ccc", "pearson", "mae", "rmse"):
        metric = M.get_metric(name)
        got = metric.weighted(w, yr, pr)
        for b in range(3):
            rep = np.repeat(np.arange(50), w[b].astype(int))
            assert got[b] == pytest.approx(metric.func(yr[rep], pr[rep]))


def _weighted_confusion(y_true, y_pred, weights):
    out = np.zeros((4, 4))
    np.add.at(out, (y_true, y_pred), weights)
    return out


def test_registry():
    assert M.available_metrics("classification") == ["uar", "macro_f1", "accuracy"]
    assert {"ccc", "pearson", "mae"} <= set(M.available_metrics("regression"))
    assert M.default_metric("classification") == "uar"
    assert M.default_metric("regression") == "ccc"
    assert not M.get_metric("mae").greater_is_better
    with pytest.raises(ConfigError, match="unknown regression metric 'uar'; accepted: ccc"):
        M.get_metric("uar", "regression")


# ------------------------------------------------ chance levels (issue 19): by value, by simulation


def _guess(y: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A prediction that ignores the input: class k drawn with probability ``shares[k]``."""
    return rng.choice(len(shares), size=len(y), p=shares)


def test_chance_levels_by_value():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])  # shares 0.6, 0.2, 0.2
    assert M.chance_level("uar", y).value == pytest.approx(1 / 3)
    assert M.chance_level("uar", y).label == "chance = 1/3 (random guess)"
    assert M.chance_level("uar", np.array([0, 2, 2, 0])).value == 0.5  # classes present, not codes
    assert M.chance_level("accuracy", y).value == pytest.approx(0.6)  # majority class
    assert M.chance_level("accuracy", y).value == skm.accuracy_score(y, np.zeros_like(y))
    assert M.chance_level("macro_f1", y).value == pytest.approx(1 / 3)
    t = np.array([1.0, 2.0, 3.0, 10.0])
    assert M.chance_level("ccc", t).value == 0.0 and M.chance_level("pearson", t).value == 0.0
    assert M.chance_level("mae", t).value == pytest.approx(2.5)  # |t - 2.5| = 1.5, .5, .5, 7.5
    assert M.chance_level("mae", t).value == skm.mean_absolute_error(t, np.full(4, np.median(t)))
    assert M.chance_level("rmse", t).value == pytest.approx(np.sqrt(skm.mean_squared_error(t, np.full(4, 4.0))))
    assert M.chance_level("uar", np.array([], dtype=int)) is None
    assert M.chance_level("no-such-metric", y) is None


def test_chance_is_the_best_a_guess_that_ignores_the_input_can_expect():
    """Simulated guesses: prevalence guessing reaches the macro-F1 chance level; the others don't beat it."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [6000, 2000, 2000])
    p = np.array([0.6, 0.2, 0.2])
    uniform, majority = np.full(3, 1 / 3), np.array([1.0, 0.0, 0.0])
    f1 = {name: skm.f1_score(y, _guess(y, q, rng), average="macro", zero_division=0)
          for name, q in (("shares", p), ("uniform", uniform), ("majority", majority))}
    chance = M.chance_level("macro_f1", y).value
    assert f1["shares"] == pytest.approx(chance, abs=0.01)
    assert f1["uniform"] < chance - 0.02 and f1["majority"] < chance - 0.05
    # UAR: any guess that ignores the input expects 1/K; accuracy: at most the majority share
    for q in (p, uniform, majority):
        guess = _guess(y, q, rng)
        assert skm.balanced_accuracy_score(y, guess) == pytest.approx(M.chance_level("uar", y).value, abs=0.015)
        assert skm.accuracy_score(y, guess) <= M.chance_level("accuracy", y).value + 0.01
