"""Model registry: every entry builds a Pipeline that fits, with scaling inside."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from embedx.errors import ConfigError
from embedx.probing.models import available_models, build_model, get_model, parse_models


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_model_learns_held_out_structure(task):
    rng = np.random.default_rng(0)
    n = 240
    y_cls = np.arange(n) % 3
    X = rng.normal(size=(n, 5))
    if task == "classification":
        X[:, :3] += 3.0 * np.eye(3)[y_cls]  # class k shifts feature k: separable, not trivially
        y = y_cls
    else:
        y = X[:, 0] + 0.1 * rng.normal(size=n)
    train, test = np.arange(n) < 160, np.arange(n) >= 160
    for name in available_models(task):
        pipe = build_model(name, task, seed=0, n_jobs=1)
        assert isinstance(pipe, Pipeline) and pipe.steps[-1][0] == "model"
        pred = clone(pipe).fit(X[train], y[train]).predict(X[test])
        assert pred.shape == (80,)
        if task == "classification":
            # a constant predictor scores 1/3 here; every model must find the planted classes
            assert (pred == y[test]).mean() > 0.8, name
        else:
            assert np.corrcoef(pred, y[test])[0, 1] > 0.8, name


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_model_ignores_feature_units(task):
    """What "scaling inside" promises: predictions do not depend on the features' units.

    Scaled models owe this to their StandardScaler (fitted on the training rows only); tree
    models (rf, lgbm) are unit-free by construction, up to scikit-learn's trees casting to
    float32 (a few items next to a threshold may flip). One feature in micro-units and one in
    mega-units would otherwise dominate or vanish for distance- and penalty-based models.
    """
    rng = np.random.default_rng(1)
    n = 150
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) if task == "classification" else X[:, 0] - X[:, 1]
    units = np.array([1e-6, 1e6, 1.0, 1e3])
    for name in available_models(task):
        a = build_model(name, task, seed=0, n_jobs=1).fit(X[:100], y[:100]).predict(X[100:])
        b = build_model(name, task, seed=0, n_jobs=1).fit(X[:100] * units, y[:100]).predict(X[100:] * units)
        scaled = get_model(name, task).scale
        if task == "classification":
            assert (a == b).mean() >= (1.0 if scaled else 0.95), name
        elif scaled:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
        else:
            assert np.corrcoef(a, b)[0, 1] > 0.9, name
        if scaled:
            scaler = build_model(name, task).fit(X[:100] * units, y[:100]).named_steps["scale"]
            np.testing.assert_allclose(scaler.mean_, (X[:100] * units).mean(axis=0))


def test_seed_class_weight_and_params():
    pipe = build_model("logreg", "classification", seed=3, class_weight="balanced", params={"C": 0.5})
    model = pipe.named_steps["model"]
    assert (model.random_state, model.class_weight, model.C) == (3, "balanced", 0.5)
    assert build_model("lgbm", "classification", n_jobs=2).named_steps["model"].n_jobs == 2
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) gamma for model 'logreg'"):
        build_model("logreg", "classification", params={"gamma": 1})
    with pytest.raises(ConfigError, match="unknown class weight 'auto'; accepted: none, balanced"):
        build_model("logreg", "classification", class_weight="auto")


def test_parse_models():
    assert parse_models(None, "classification") == ["logreg"]
    assert parse_models(None, "regression") == ["ridge"]
    assert parse_models("logreg, svm,logreg", "classification") == ["logreg", "svm"]
    assert parse_models("all", "regression") == available_models("regression")
    assert {"logreg", "svm", "rbf_svm", "sgd", "softmax", "ridge", "knn", "rf", "lgbm", "mlp"} == set(
        available_models("classification"))
    assert {"ridge", "svr", "lgbm"} <= set(available_models("regression"))
    with pytest.raises(ConfigError, match="unknown regression model 'logreg'; accepted: ridge, svr"):
        parse_models("logreg", "regression")
    with pytest.raises(ConfigError, match="empty models"):
        parse_models(" , ", "classification")


def test_layer_weights_and_the_saved_pipeline_come_from_a_tuned_search():
    """With --tune the estimator is a search: weights and the refit must come from its best."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from embedx.probing.fitting import layer_weights_of

    class Probe(LogisticRegression):
        def fit(self, X, y):
            super().fit(X, y)
            self.layer_weights_ = np.array([0.25, 0.75])
            return self

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    search = GridSearchCV(Pipeline([("model", Probe())]), {"model__C": [0.1, 1.0]}, cv=2).fit(X, y)
    np.testing.assert_array_equal(layer_weights_of(search), [0.25, 0.75])
