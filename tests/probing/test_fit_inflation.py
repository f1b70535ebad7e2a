"""The inflation of the permutation nulls: per model family, and what the tests do with it.

References are computed independently: exact enumerations of every speaker swap with
scikit-learn's balanced accuracy, not the module's evaluator.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from embedx.probing import compare
from embedx.probing import metrics as M
from embedx.probing.compare import (
    NULL_INFLATION,
    ClusterScores,
    best_set,
    compare_configurations,
    null_inflation,
    signflip_test,
)
from embedx.probing.data import Block, Dataset, FeatureConfig
from embedx.probing.study import StudySettings, run_study

from .conftest import noisy_corpus, regression_dataset

UAR = M.get_metric("uar")


def test_null_inflation_per_family_and_the_largest_for_a_mix(monkeypatch):
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"rf": 1.3, "svm": 1.0})
    assert null_inflation() == NULL_INFLATION == null_inflation([])
    assert null_inflation("logreg") == NULL_INFLATION  # not listed: the default
    assert null_inflation("rf") == 1.3 and null_inflation(["rf"]) == 1.3
    assert null_inflation("svm") == 1.0  # a conservative family may get less than the default
    assert null_inflation(["svm", "rf"]) == 1.3  # the noisiest family of the comparison
    assert null_inflation(["svm", "logreg"]) == NULL_INFLATION


def test_every_listed_family_is_a_registry_name():
    from embedx.probing.models import available_models
    from embedx.probing.weighted import MODEL

    assert set(compare.FAMILY_INFLATION) <= {*available_models(), MODEL}
    assert all(1.0 <= v <= 2.0 for v in compare.FAMILY_INFLATION.values())


def _two(speakers=8, per=12, k=3, seed=4, acc=(0.62, 0.5)):
    return noisy_corpus(acc, speakers, per, k, seed)


def _swap_differences(y, spk, a, b):
    """UAR(a) - UAR(b) for every way of swapping the two predictions speaker by speaker."""
    out = []
    for flips in itertools.product([0, 1], repeat=len(np.unique(spk))):
        swap = np.asarray(flips, bool)[spk]
        out.append(balanced_accuracy_score(y, np.where(swap, b, a)) - balanced_accuracy_score(y, np.where(swap, a, b)))
    return np.array(out)


def test_signflip_test_scales_its_null_by_the_inflation():
    y, spk, preds = _two()
    scores = ClusterScores(y, preds, UAR, spk, 3)
    diff = _swap_differences(y, spk, *preds)
    observed = diff[0]  # the identity swap
    p = {}
    for c in (1.0, 1.5, 2.5):
        p[c] = signflip_test(scores, 0, 1, greater_is_better=True, n_perm=0, seed=0, inflation=c)
        assert p[c] == pytest.approx(np.mean(c * diff >= observed - 1e-12))
    assert p[1.0] < p[1.5] < p[2.5]  # the data are chosen so that every inflation matters
    default = signflip_test(scores, 0, 1, greater_is_better=True, n_perm=0, seed=0)
    assert default == pytest.approx(np.mean(NULL_INFLATION * diff >= observed - 1e-12))


def test_confidence_set_of_two_scales_its_permuted_spread_by_the_inflation():
    # with two configurations, permuting a speaker's predictions among them is a swap, and the
    # spread of the permuted mixes is |UAR(mix) - UAR(complement)|: the exact null by enumeration
    y, spk, preds = _two()
    scores = ClusterScores(y, preds, UAR, spk, 3)
    spread = np.abs(_swap_differences(y, spk, *preds))
    observed = spread[0]
    for c in (1.0, 1.5):
        p_values, in_set = best_set(scores, greater_is_better=True, alpha=0.05, n_perm=20000, seed=1,
                                    inflation=c)
        exact = np.mean(c * spread >= observed - 1e-12)
        assert p_values[1] == pytest.approx(exact, abs=0.01)  # Monte Carlo: se ~0.003
        assert in_set[0]
    assert np.mean(spread >= observed) + 0.05 < np.mean(1.5 * spread >= observed)


def _study_data(speakers=10, per=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    n = speakers * per
    y = np.arange(n) % k
    spk = np.repeat(np.arange(speakers), per)
    configs, X = [], {}
    for layer, strength in enumerate((0.4, 0.5, 0.6)):
        config = FeatureConfig((Block("set", layer, "mean"),))
        X[config.name] = (rng.normal(size=(n, 4)) + strength * 2 * np.eye(k, 4)[y]).astype(np.float32)
        configs.append(config)
    return Dataset(configs=configs, X=X, y=y, task="classification", classes=[f"c{j}" for j in range(k)],
                   groups=np.array([f"s{s:02d}" for s in spk]), split=None, ids=np.arange(n).astype(str),
                   paths=np.arange(n).astype(str), rows=np.arange(n), label="label", group="speaker")


def test_a_study_uses_the_inflation_of_its_model_family(monkeypatch):
    ds = _study_data()
    settings = StudySettings(models=["ridge"], n_boot=300, threads=1, refit=False, seed=2)
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"ridge": 1.7})
    result = run_study(ds, settings)
    s = result.summary
    preds = [result.predictions[(c, "ridge")] for c in s["config"]]
    for c, expect_same in ((1.7, True), (NULL_INFLATION, False)):
        comp, _ = compare_configurations(ds.y, preds, UAR, groups=ds.groups, num_classes=3, alpha=0.05,
                                         n_perm=300, seed=2, inflation=c)
        same = np.allclose(s["p_set"].to_numpy(dtype=float), comp.p_set)
        assert same == expect_same


def test_regression_takes_its_own_inflation_then_the_family_one(monkeypatch):
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"ridge": 1.2, "knn": 1.8})
    monkeypatch.setattr(compare, "REGRESSION_INFLATION", {"ridge": 1.6, "svr": 1.5})
    assert null_inflation("ridge") == 1.2  # classification: the family's factor
    assert null_inflation("ridge", "regression") == 1.6
    assert null_inflation("knn", "regression") == 1.8  # no regression factor: the family's
    assert null_inflation("svr", "regression") == 1.5
    assert null_inflation("lgbm", "regression") == NULL_INFLATION
    assert null_inflation(["ridge", "knn"], "regression") == 1.8


def test_every_regression_factor_names_a_regressor():
    from embedx.probing.models import available_models

    assert set(compare.REGRESSION_INFLATION) <= set(available_models("regression"))
    assert all(1.0 <= v <= 2.0 for v in compare.REGRESSION_INFLATION.values())


def test_a_regression_study_uses_the_regression_inflation(monkeypatch):
    ds = regression_dataset([("set", layer, strength) for layer, strength in enumerate((0.6, 0.8, 1.0))], seed=3)
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"ridge": 1.0})
    monkeypatch.setattr(compare, "REGRESSION_INFLATION", {"ridge": 1.9})
    result = run_study(ds, StudySettings(models=["ridge"], n_boot=300, threads=1, refit=False, seed=2))
    s = result.summary
    preds = [result.predictions[(c, "ridge")] for c in s["config"]]
    ccc = M.get_metric("ccc", "regression")
    for c, expect_same in ((1.9, True), (1.0, False)):
        comp, _ = compare_configurations(ds.y, preds, ccc, groups=ds.groups, num_classes=None, alpha=0.05,
                                         n_perm=300, seed=2, inflation=c)
        assert np.allclose(s["p_set"].to_numpy(dtype=float), comp.p_set) == expect_same
