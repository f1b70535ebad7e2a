"""Weighted-layer probe: the estimator's gradient and weights, its place in the study, its outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from embedx.errors import ConfigError
from embedx.probing.cv import make_folds
from embedx.probing.data import Block, Dataset, FeatureConfig, load_dataset
from embedx.probing.models import parse_models
from embedx.probing.report import write_report
from embedx.probing.study import StudySettings, run_study
from embedx.probing.weighted import (
    MODEL,
    WeightedLayerClassifier,
    WeightedLayerRegressor,
    layer_weights_table,
)

from .conftest import LAYERS, planted

FAST = {"n_boot": 100, "threads": 1}


def _stack(signal_layer, **kwargs):
    items, pooled = planted(signal_layer=signal_layer, **kwargs)
    X = np.transpose(pooled, (1, 0, 2))  # (items, layers, dim)
    y = items["label"].str[1:].astype(int).to_numpy()
    return X, y, items


@pytest.mark.parametrize("k", [1, 4])
def test_only_informative_layer_gets_the_largest_weight(k):
    X, y, _ = _stack(k)
    probe = WeightedLayerClassifier().fit(X, y)
    w = probe.layer_weights_
    assert w.shape == (5,) and np.isclose(w.sum(), 1.0) and (w >= 0).all()
    assert int(np.argmax(w)) == k and w[k] > 0.5  # most of the mass, not just the largest share
    assert (probe.predict(X) == y).mean() > 0.95
    np.testing.assert_allclose(probe.predict_proba(X).sum(axis=1), 1.0)


def test_regressor_weights_the_layer_that_holds_the_target():
    X, _, items = _stack(2)
    target = items["arousal"].to_numpy()
    probe = WeightedLayerRegressor().fit(X, target)
    assert int(np.argmax(probe.layer_weights_)) == 2
    assert np.corrcoef(probe.predict(X), target)[0, 1] > 0.9


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_analytic_gradient_matches_finite_differences(kind, monkeypatch):
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(30, 4, 3))
    probe = (WeightedLayerClassifier(C=0.5, layer_alpha=0.3, class_weight="balanced") if kind == "classifier"
             else WeightedLayerRegressor(alpha=0.7, layer_alpha=0.3))
    outputs = 3 if kind == "classifier" else 1
    codes = np.arange(30) % 3
    targets = np.eye(3)[codes] if kind == "classifier" else rng.normal(size=(30, 1))
    weight = rng.uniform(0.5, 2.0, 30)
    captured = {}

    def fake_minimize(fun, x0, jac, method, options):
        captured["fun"] = fun

        class R:
            x, nit = x0, 0
        return R()

    monkeypatch.setattr("scipy.optimize.minimize", fake_minimize)
    probe._fit_stack(Z, targets, weight, outputs)
    fun = captured["fun"]
    theta = rng.normal(size=4 + 3 * outputs + outputs)
    # the loss written out independently of the implementation
    a, W, b = theta[:4], theta[4:4 + 3 * outputs].reshape(3, outputs), theta[4 + 3 * outputs:]
    s = np.exp(a) / np.exp(a).sum()
    scores = sum(s[layer] * Z[:, layer, :] for layer in range(4)) @ W + b
    if kind == "classifier":
        logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        expected = -np.sum(weight * logp[np.arange(30), codes]) + np.sum(W**2) / (2 * 0.5)
    else:
        expected = np.sum(weight * (scores[:, 0] - targets[:, 0]) ** 2) + 0.7 * np.sum(W**2)
    expected += 0.3 * np.sum(a**2) / 2
    loss, grad = fun(theta)
    assert loss == pytest.approx(expected, rel=1e-10)
    numeric = approx_fprime(theta, lambda t: fun(t)[0], 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)


def test_standardisation_uses_the_training_items_and_flat_input_predicts_the_same():
    X, y, _ = _stack(3)
    probe = WeightedLayerClassifier().fit(X[:60], y[:60])
    np.testing.assert_allclose(probe.mean_, X[:60].mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(probe.scale_, X[:60].std(axis=0), rtol=1e-6)
    flat = X[60:].reshape(60, -1)  # what `embedx predict` builds: the layers side by side
    np.testing.assert_array_equal(probe.predict(flat), probe.predict(X[60:]))


def test_probe_never_sees_a_test_fold(monkeypatch):
    rng = np.random.default_rng(0)
    n, layers, dim = 90, 3, 4
    X = rng.normal(size=(n, layers, dim)).astype(np.float32)
    X[:, :, 0] = np.arange(n)[:, None]  # feature 0 of every layer = the item's index
    y = np.arange(n) % 3
    groups = np.array([f"s{(i // 3) % 9}" for i in range(n)])  # every speaker has every class
    blocks = tuple(Block("x", layer, "mean") for layer in range(layers))
    config = FeatureConfig(blocks, weighted=True)
    single = FeatureConfig((blocks[0],))
    ds = Dataset(configs=[single, config], X={single.name: X[:, 0], config.name: X}, y=y,
                 task="classification", classes=["c0", "c1", "c2"], groups=groups, split=None,
                 ids=np.array([f"u{i}" for i in range(n)]), paths=np.array([f"u{i}.wav" for i in range(n)]),
                 rows=np.arange(n), label="label", group="speaker")
    seen = {"fit": [], "predict": []}
    fit, predict = WeightedLayerClassifier.fit, WeightedLayerClassifier.predict

    def spy_fit(self, Xf, yf):
        seen["fit"].append(np.asarray(Xf)[:, 0, 0].astype(int))
        return fit(self, Xf, yf)

    def spy_predict(self, Xp):
        seen["predict"].append(np.asarray(Xp)[:, 0, 0].astype(int))
        return predict(self, Xp)

    monkeypatch.setattr(WeightedLayerClassifier, "fit", spy_fit)
    monkeypatch.setattr(WeightedLayerClassifier, "predict", spy_predict)
    result = run_study(ds, StudySettings(refit=False, **FAST))
    folds = make_folds(y, scheme="auto", n_splits=5, seed=0, groups=groups, task="classification",
                       num_classes=3, class_names=["c0", "c1", "c2"])
    assert len(seen["fit"]) == len(seen["predict"]) == 5
    for (train, test), fitted, predicted in zip(folds.splits, seen["fit"], seen["predict"], strict=True):
        assert sorted(fitted) == sorted(train) and not set(fitted) & set(test)
        assert sorted(predicted) == sorted(test)
    assert result.layer_weights[(config.name, MODEL)].shape == (5, layers)


def test_study_adds_one_weighted_configuration_and_writes_its_weights(toy_store, tmp_path):
    ds = load_dataset(toy_store(), label="label", group="speaker", weighted_layers=True)
    assert [c.name for c in ds.configs][-1] == "toy@weighted/mean"
    assert ds.X["toy@weighted/mean"].shape == (120, 5, 16)
    result = run_study(ds, StudySettings(models=["logreg"], **FAST))
    s = result.summary
    row = s[s["config"] == "toy@weighted/mean"].iloc[0]
    assert row["model"] == MODEL and pd.isna(row["layer"]) and not row["concat"]
    assert row["uar_pooled"] > 0.9 and not row["worse_than_best"]  # as good as the planted layer
    assert len(s) == 6 and (s[s["config"] != "toy@weighted/mean"]["model"] == "logreg").all()
    weights = result.layer_weights[("toy@weighted/mean", MODEL)]
    assert weights.shape == (5, 5) and np.argmax(weights.mean(axis=0)) == 3

    files = write_report(result, tmp_path / "out")
    table = pd.read_csv(files["layer_weights"])
    assert list(table.columns) == ["set", "pooling", "model", "layer", "weight_mean", "ci_low", "ci_high",
                                   *[f"fold_{f}" for f in range(5)]]
    assert list(table["layer"]) == list(LAYERS)
    np.testing.assert_allclose(table["weight_mean"], weights.mean(axis=0))
    np.testing.assert_allclose(table[[f"fold_{f}" for f in range(5)]].to_numpy(), weights.T)
    assert files["layer_weights_plot"].stat().st_size > 0
    report = files["report"].read_text()
    assert "## Weighted layers" in report and "layer_weights.png" in report


def test_layer_weights_interval_is_the_t_interval_over_folds():
    w = np.array([[0.1, 0.9], [0.3, 0.7], [0.2, 0.8]])
    config = FeatureConfig((Block("s", 0, "mean"), Block("s", 5, "mean")), weighted=True)
    table = layer_weights_table({(config.name, MODEL): w}, [config])
    # hand-computed: mean 0.2, sd 0.1, t_{0.975, 2} = 4.302653, half width 0.1 * 4.302653 / sqrt(3)
    half = 0.1 * 4.302653 / np.sqrt(3)
    assert table.loc[0, "weight_mean"] == pytest.approx(0.2)
    assert table.loc[0, "ci_low"] == 0.0  # clipped at 0
    assert table.loc[0, "ci_high"] == pytest.approx(0.2 + half, rel=1e-6)
    assert table.loc[1, "ci_low"] == pytest.approx(0.8 - half, rel=1e-6)
    assert list(table["layer"]) == [0, 5]


def test_weighted_layer_errors(toy_store):
    path = toy_store()
    with pytest.raises(ConfigError, match="concat=True"):
        load_dataset(path, label="label", group="speaker", weighted_layers=True, concat=True)
    with pytest.raises(ConfigError, match="at least 2 layers"):
        load_dataset(path, label="label", group="speaker", weighted_layers=True, layers="3")
    with pytest.raises(ConfigError, match="not a models choice"):
        parse_models("logreg,weighted-linear", "classification")
    assert MODEL not in parse_models("all", "classification")
    with pytest.raises(ConfigError, match="C of the weighted-layer probe"):
        WeightedLayerClassifier(C=0).fit(*_stack(1)[:2])


def test_a_refitted_weighted_model_predicts_a_store_through_embedx_predict(toy_store):
    from embedx.probing.predict import predict_store

    path = toy_store()
    full = load_dataset(path, label="label", group="speaker", weighted_layers=True)
    config = full.configs[-1]
    ds = Dataset(configs=[config], X={config.name: full.X[config.name]}, y=full.y, task=full.task,
                 classes=full.classes, groups=full.groups, split=None, ids=full.ids, paths=full.paths,
                 rows=full.rows, label="label", group="speaker", store=str(path), specs=full.specs)
    result = run_study(ds, StudySettings(**FAST))
    bundle = result.final
    assert bundle["model"] == MODEL and [b["layer"] for b in bundle["blocks"]] == list(LAYERS)
    table, _ = predict_store(bundle, path)
    assert len(table) == 120
    assert (table["prediction"].to_numpy() == np.array(full.classes)[full.y]).mean() > 0.95
    np.testing.assert_allclose(table[[f"prob_{c}" for c in full.classes]].sum(axis=1), 1.0)
