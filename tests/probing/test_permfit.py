"""The chance control's batched refits give the p-values of one fit per task, and the closed form is ridge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier

from embedx.probing import batchfit, permfit
from embedx.probing.batchfit import ridge_many
from embedx.probing.data import load_dataset
from embedx.probing.fitting import run_task
from embedx.probing.permutation import chance_control, permuted_labels
from embedx.probing.study import StudySettings, _pairs, run_study

FAST = {"n_boot": 0, "threads": 1, "refit": False}


def _old_path_outputs(ds, result, settings, models):
    """The refits as they ran before batching: one :func:`run_task` per permutation, fold and model."""
    pairs, all_models = _pairs(ds.configs, models)
    outputs = []
    labels = permuted_labels(ds.y, ds.groups, settings.permutations, settings.seed)
    for p, y in enumerate(labels, start=1):
        for ci, mi in pairs:
            for fi, (train, test) in enumerate(result.folds.splits):
                outputs.append(run_task(
                    ds.X[ds.configs[ci].name], y, ds.groups, train, test, key=(p, ci, mi, fi),
                    model=all_models[mi], task=ds.task, num_classes=ds.num_classes, seed=settings.seed,
                    class_weight=settings.class_weight, threads=1, speaker_norm=settings.speaker_norm,
                    grid=None, inner=None, grouped_inner=False, metric="uar" if ds.task == "classification" else "r2"))
    return list(labels), outputs, all_models


@pytest.mark.parametrize("models,class_weight", [
    (["logreg", "lgbm"], None),  # logreg: stepped together; lgbm: non-linear, no scaler, one fit each
    (["ridge", "knn"], None),  # ridge: the closed form; knn: non-linear, scaled once per fold
    (["logreg", "ridge"], "balanced"),  # class weights: both fall back to one fit each
])
def test_batched_refits_give_the_p_values_of_one_fit_per_task(toy_store, models, class_weight):
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="2,3")
    settings = StudySettings(models=models, permutations=9, seed=3, class_weight=class_weight, **FAST)
    result = run_study(ds, settings)
    labels, outputs, all_models = _old_path_outputs(ds, result, settings, models)
    old = chance_control(result.summary, ds, result.folds, "uar", settings.alpha, labels, outputs, all_models)
    np.testing.assert_array_equal(result.summary["p_permutation"], old.columns["p_permutation"])
    np.testing.assert_array_equal(result.summary["p_permutation_fwer"], old.columns["p_permutation_fwer"])
    assert result.chance["p_best"] == old.info["p_best"]
    assert result.chance["null_best_mean"] == pytest.approx(old.info["null_best_mean"], abs=1e-12)
    # the p-values can tell permutations apart: layer 3 carries the class, layer 2 does not
    assert result.summary["p_permutation"].max() > result.summary["p_permutation"].min()


def test_batched_refits_predict_exactly_as_one_fit_per_task(toy_store, monkeypatch):
    monkeypatch.setattr(permfit, "CHUNK", 4)  # 6 permutations: two rounds of stepped fits
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="2")
    X = ds.X["toy@2/mean"]
    train, test = np.arange(0, 90), np.arange(90, 120)
    # multinomial on raw features, binomial speaker-normalised
    for y, classes, norm in ((ds.y, 3, False), ((ds.y == 0).astype(np.int64), 2, True)):
        labels = permuted_labels(y, ds.groups, 6, seed=1)
        for model in ("logreg", "svm", "ridge", "mlp"):
            common = dict(model=model, task="classification", seed=0, class_weight=None, threads=1,
                          speaker_norm=norm, grid=None, inner=None, grouped_inner=False, metric="uar")
            batched = permfit.run_permuted(X, labels, ds.groups, train, test, key=(0, 0, 0), **common)
            for p, out in enumerate(batched):
                assert out["key"] == (p + 1, 0, 0, 0)
                one = run_task(X, labels[p], ds.groups, train, test, key=(0, 0, 0), num_classes=classes, **common)
                np.testing.assert_array_equal(out["pred"], one["pred"], err_msg=f"{model}, {classes} classes")


def test_logreg_stepped_together_takes_each_fit_s_own_path():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    Xtr, Xte = rng.normal(size=(60, 8)).astype(np.float32), rng.normal(size=(25, 8)).astype(np.float32)
    ytr = np.stack([rng.permutation(np.arange(60) % 4) for _ in range(5)])
    est = LogisticRegression(C=1.0, max_iter=2000)
    preds, margins = batchfit.logreg_many(est, Xtr, ytr, Xte)
    for p in range(5):
        alone = LogisticRegression(C=1.0, max_iter=2000).fit(Xtr, ytr[p])
        np.testing.assert_array_equal(preds[p], alone.predict(Xte))
        decision = np.sort(alone.decision_function(Xte), axis=1)
        assert margins[p] == pytest.approx((decision[:, -1] - decision[:, -2]).min(), abs=1e-5)
    # not the optimum: scikit-learn stops at its tolerance, and so does every fit here
    tight = LogisticRegression(C=1.0, max_iter=2000, tol=1e-12).fit(Xtr, ytr[0]).decision_function(Xte)
    loose = LogisticRegression(C=1.0, max_iter=2000).fit(Xtr, ytr[0]).decision_function(Xte)
    assert np.abs(tight - loose).max() > 1e-6
    assert batchfit.supports(LogisticRegression(class_weight="balanced")) is None
    assert batchfit.supports(est) == "logreg"


def test_ridge_closed_form_matches_ridge_fits():
    rng = np.random.default_rng(0)
    for n, dim in ((40, 12), (20, 50)):  # primal and kernel form
        Xtr, Xte = rng.normal(size=(n, dim)), rng.normal(size=(7, dim))
        targets = rng.normal(size=(5, n, 3))
        out = ridge_many(Ridge(alpha=2.0), Xtr, targets, Xte)
        assert out.shape == (5, 7, 3)
        for p in range(5):
            np.testing.assert_allclose(out[p], Ridge(alpha=2.0).fit(Xtr, targets[p]).predict(Xte), rtol=1e-9, atol=1e-10)


def test_ridge_classifier_defers_to_the_estimator_near_a_tie(monkeypatch):
    rng = np.random.default_rng(1)
    Xtr, Xte = rng.normal(size=(30, 5)), rng.normal(size=(9, 5))
    ytr = np.stack([rng.permutation(np.arange(30) % 3) for _ in range(4)])
    model = RidgeClassifier(alpha=1.0)
    preds, refit = permfit._ridge_preds(model, Xtr, ytr, Xte, "classification")
    for p in range(4):
        np.testing.assert_array_equal(preds[p], RidgeClassifier(alpha=1.0).fit(Xtr, ytr[p]).predict(Xte))
    assert not refit.any()  # random data: no test item within MARGIN of a tie
    monkeypatch.setattr(permfit, "MARGIN", np.inf)  # every item "near a tie": every permutation refits
    assert permfit._ridge_preds(model, Xtr, ytr, Xte, "classification")[1].all()
    # a permutation whose training part misses a class: the estimator, not the closed form
    ytr[2, ytr[2] == 2] = 1
    assert permfit._ridge_preds(model, Xtr, ytr, Xte, "classification") is None
    assert batchfit.supports(RidgeClassifier(class_weight="balanced")) is None
    assert batchfit.supports(model) == "ridge"


def test_ridge_regression_p_values_match_one_fit_per_task(toy_store):
    ds = load_dataset(toy_store(), label="arousal", group="speaker", layers="2,3")
    settings = StudySettings(models=["ridge"], permutations=9, seed=0, **FAST)
    result = run_study(ds, settings)
    labels, outputs, all_models = _old_path_outputs(ds, result, settings, ["ridge"])
    old = chance_control(result.summary, ds, result.folds, result.metric, settings.alpha, labels, outputs, all_models)
    np.testing.assert_array_equal(result.summary["p_permutation"], old.columns["p_permutation"])
