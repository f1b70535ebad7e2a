"""Model registry: every entry builds a Pipeline that fits, with scaling inside."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from embedx.errors import ConfigError
from embedx.fit.models import available_models, build_model, get_model, parse_models


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_model_fits(task):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.arange(60) % 3 if task == "classification" else X[:, 0] + 0.1 * rng.normal(size=60)
    for name in available_models(task):
        pipe = build_model(name, task, seed=0, n_jobs=1)
        assert isinstance(pipe, Pipeline) and pipe.steps[-1][0] == "model"
        assert ("scale" in pipe.named_steps) == get_model(name, task).scale
        pred = clone(pipe).fit(X, y).predict(X)
        assert pred.shape == (60,)
        if task == "classification":
            assert (pred == y).mean() > 0.3
        else:
            assert np.corrcoef(pred, y)[0, 1] > 0.5, name


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
    assert {"logreg", "svm", "rbf_svm", "ridge", "knn", "rf", "lgbm", "mlp"} == set(
        available_models("classification"))
    assert {"ridge", "svr", "lgbm"} <= set(available_models("regression"))
    with pytest.raises(ConfigError, match="unknown regression model 'logreg'; accepted: ridge, svr"):
        parse_models("logreg", "regression")
    with pytest.raises(ConfigError, match="empty --models"):
        parse_models(" , ", "classification")
