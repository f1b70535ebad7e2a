"""The study: planted structure is found, folds are shared and honest, workers agree."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from embedx.errors import ConfigError
from embedx.probing import models as registry
from embedx.probing.cv import make_folds
from embedx.probing.data import Block, Dataset, FeatureConfig, load_dataset
from embedx.probing.speaker_norm import group_standardize
from embedx.probing.study import StudySettings, run_study

FAST = {"n_boot": 200, "threads": 1}


def test_planted_layer_ranks_first_and_beats_every_other_layer(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker")
    result = run_study(ds, StudySettings(models=["logreg", "svm"], **FAST))
    s = result.summary
    assert result.folds.scheme == "group"
    assert result.best[0] == "toy@3/mean"
    assert result.best == (s.loc[0, "config"], s.loc[0, "model"])  # the best is the top-ranked row
    assert set(s.loc[s["layer"] == 3, "rank"]) == {1, 2}
    assert s.loc[0, "uar_mean"] > 0.9
    other = s[s["layer"] != 3]
    assert (other["uar_mean"] < 0.6).all()
    assert other["worse_than_best"].all()  # every other layer is outside the set for the best
    assert (other["p_set"] < 0.05).all() and (other["p_paired"] < 0.05).all()
    assert not s.loc[s["layer"] == 3, "worse_than_best"].any()
    assert s.loc[0, "ci_low"] <= s.loc[0, "uar_pooled"] <= s.loc[0, "ci_high"]
    # results.csv rows: one per config x model x fold, with per-class recall
    assert len(result.results) == 5 * 2 * 5
    assert {"recall_c0", "recall_c1", "recall_c2", "macro_f1", "accuracy"} <= set(result.results)
    # the refitted model is the best configuration, trained on every item
    assert result.final["blocks"] == [{"feature_set": "toy", "layer": 3, "pooling": "mean"}]
    assert result.final["trained_on"] == 120 and result.final["classes"] == ["c0", "c1", "c2"]


def test_regression_ranks_planted_layer_first(toy_store):
    ds = load_dataset(toy_store(), label="arousal", group="speaker")
    assert ds.task == "regression"
    result = run_study(ds, StudySettings(models=["ridge", "svr"], **FAST))
    assert result.metric == "ccc"
    assert result.best[0] == "toy@3/mean"
    s = result.summary
    assert s.loc[0, "ccc_mean"] > 0.8
    assert (s.loc[s["layer"] != 3, "ccc_mean"] < 0.3).all()
    assert {"pearson_mean", "mae_mean"} <= set(s.columns)


def test_same_folds_for_every_configuration_and_model(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker")
    result = run_study(ds, StudySettings(models=["logreg", "ridge"], seed=7, refit=False, **FAST))
    expected = make_folds(ds.y, scheme="group", n_splits=5, seed=7, groups=ds.groups, num_classes=3)
    for (tr, te), (tr2, te2) in zip(result.folds.splits, expected.splits, strict=True):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(te, te2)
        assert not set(ds.groups[tr]) & set(ds.groups[te])
    sizes = result.results.pivot_table(index="fold", columns=["config", "model"], values="n_test")
    assert (sizes.nunique(axis=1) == 1).all()
    # each item's out-of-fold prediction comes from the fold that held it out: refit the same
    # pipeline on each fold's training rows by hand and predict its test rows
    for (config, model), pred in result.predictions.items():
        X = ds.X[config]
        for tr, te in expected.splits:
            direct = registry.build_model(model, "classification", seed=7, n_jobs=1).fit(X[tr], ds.y[tr])
            np.testing.assert_array_equal(pred[te], direct.predict(X[te]), err_msg=f"{config} {model}")
    # ... and a model fitted on all items (what a leak would give) predicts differently somewhere
    X = ds.X["toy@1/mean"]
    leaky = registry.build_model("logreg", "classification", seed=7, n_jobs=1).fit(X, ds.y).predict(X)
    assert (leaky != result.predictions[("toy@1/mean", "logreg")]).any()


def test_parallel_workers_give_the_same_results(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="2,3")
    one = run_study(ds, StudySettings(models=["logreg"], jobs=1, refit=False, **FAST))
    two = run_study(ds, StudySettings(models=["logreg"], jobs=2, refit=False, **FAST))
    cols = ["config", "model", "fold", "uar", "macro_f1", "accuracy"]
    assert one.results[cols].equals(two.results[cols])
    np.testing.assert_allclose(one.summary["ci_low"], two.summary["ci_low"])


# ----------------------------------------------------------------- spies: what a fit sees

class Spy(BaseEstimator, ClassifierMixin):
    """Records the matrices it is fitted on and asked to predict."""

    calls: list[tuple[str, np.ndarray]] = []

    def __init__(self, c: float = 1.0):
        self.c = c

    def fit(self, X, y):
        Spy.calls.append(("fit", np.array(X, copy=True)))
        self.classes_ = np.unique(y)
        self.majority_ = np.bincount(y).argmax()
        return self

    def predict(self, X):
        Spy.calls.append(("predict", np.array(X, copy=True)))
        return np.full(len(X), self.majority_)


@pytest.fixture
def spies():
    Spy.calls = []
    for name, scale in (("spy", True), ("spy_raw", False)):
        registry.register_model(registry.ModelSpec(
            name, "test spy", classifier=lambda seed, class_weight, n_jobs: Spy(), scale=scale))
    yield Spy.calls
    for name in ("spy", "spy_raw"):
        registry._REGISTRY.pop(name)


def _dataset(X, y, groups=None, split=None):
    config = FeatureConfig((Block("x", 0, "mean"),))
    n = len(y)
    return Dataset(configs=[config], X={config.name: X}, y=y, task="classification",
                   classes=[f"c{k}" for k in range(int(y.max()) + 1)], groups=groups, split=split,
                   ids=np.array([f"u{i}" for i in range(n)]), paths=np.array([f"u{i}.wav" for i in range(n)]),
                   rows=np.arange(n), label="label", group=None if groups is None else "speaker")


def test_scaling_is_fitted_on_the_training_fold_only(spies):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(90, 5)) * [1, 2, 3, 4, 5] + [10, -3, 0, 2, 7]).astype(np.float32)
    y = np.arange(90) % 3
    run_study(_dataset(X, y), StudySettings(models=["spy"], scheme="stratified", refit=False, **FAST))
    fits = [x for kind, x in spies if kind == "fit"]
    predicts = [x for kind, x in spies if kind == "predict"]
    assert len(fits) == len(predicts) == 5
    for Xtr, Xte in zip(fits, predicts, strict=True):
        assert len(Xtr) == 72 and len(Xte) == 18
        np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-5)  # scaler saw exactly these rows
        np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-4)
        assert np.abs(Xte.mean(axis=0)).max() > 1e-3  # test rows are transformed, not refitted


def test_nested_tuning_never_touches_the_test_fold(spies):
    rng = np.random.default_rng(0)
    n = 90
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 3))]).astype(np.float32)  # col 0 = item
    y = np.arange(n) % 3
    groups = np.array([f"s{s}" for s in (np.arange(n) // 3) % 10])
    ds = _dataset(X, y, groups)
    result = run_study(ds, StudySettings(models=["spy_raw"], tune=True, inner_folds=3,
                                         grids={"spy_raw": {"c": [1.0, 2.0]}}, **FAST))
    folds = result.folds.splits
    per_fold = 3 * 2 * 2 + 2  # inner folds x grid x (fit, predict) + refit + outer predict
    for k, (train, test) in enumerate(folds):  # tasks run in order with jobs=1
        calls = spies[k * per_fold:(k + 1) * per_fold]
        for kind, seen in calls[:-1]:
            assert set(seen[:, 0].astype(int)) <= set(train), kind  # tuning sees train only
        kind, seen = calls[-1]
        assert kind == "predict"
        np.testing.assert_array_equal(seen[:, 0].astype(int), test)
    # then the final refit tunes on every item
    assert len(spies) == len(folds) * per_fold + per_fold - 1
    assert result.results["params"].str.contains('"c"').all()
    assert result.final["params"]["c"] in (1.0, 2.0)


def test_speaker_normalisation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    groups = np.repeat(["a", "b", "c"], 10)
    Z = group_standardize(X, groups)
    for g in "abc":
        np.testing.assert_allclose(Z[groups == g].mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(Z[groups == g].std(axis=0), 1, atol=1e-5)
    # a group's result depends on its own rows only
    X2 = X.copy()
    X2[groups == "b"] += 100
    np.testing.assert_allclose(group_standardize(X2, groups)[groups != "b"], Z[groups != "b"], atol=1e-6)


def test_speaker_normalisation_of_a_one_item_group_uses_the_fallback_statistics_and_warns():
    rng = np.random.default_rng(1)
    train = rng.normal(loc=3.0, scale=2.0, size=(40, 4))
    X = np.vstack([rng.normal(size=(5, 4)), [[7.0, -1.0, 3.0, 5.0]]])  # group "a" of 5, group "b" of 1
    groups = np.array(["a"] * 5 + ["b"])
    with pytest.warns(UserWarning, match=r"1 group\(s\) with a single item standardised with the statistics "
                                         r"of the training items"):
        Z = group_standardize(X, groups, fallback=train)
    expected = (X[5] - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(Z[5], expected, rtol=1e-5)
    assert np.abs(Z[5]).min() > 0.1  # not silently zeros
    np.testing.assert_allclose(Z[:5], group_standardize(X[:5], groups[:5]), atol=1e-6)  # "a" unchanged
    with pytest.warns(UserWarning, match="statistics of all items"):
        Z_self = group_standardize(X, groups)
    np.testing.assert_allclose(Z_self[5], (X[5] - X.mean(axis=0)) / X.std(axis=0), rtol=1e-5)


def test_speaker_normalisation_removes_speaker_offsets(toy_store):
    path = toy_store(speaker_scale=6.0, strength=0.6)
    ds = load_dataset(path, label="label", group="speaker", layers="3")
    plain = run_study(ds, StudySettings(models=["logreg"], refit=False, **FAST))
    normed = run_study(ds, StudySettings(models=["logreg"], speaker_norm=True, refit=False, **FAST))
    assert normed.summary.loc[0, "uar_mean"] > plain.summary.loc[0, "uar_mean"] + 0.1
    with pytest.raises(ConfigError, match="speaker_norm=True needs a group column"):
        run_study(load_dataset(path, layers="3", group=None), StudySettings(speaker_norm=True))


def test_predefined_split_scores_the_best_once_on_test(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker", split_col="split")
    result = run_study(ds, StudySettings(models=["logreg"], scheme="predefined", **FAST))
    (train, dev), = result.folds.splits
    assert set(ds.split[train]) == {"train"} and set(ds.split[dev]) == {"dev"}
    assert result.holdout["n_test"] == 18 and result.holdout["uar"] > 0.8
    assert result.final["trained_on"] == 102  # train + dev; test never used for fitting
    assert any("held-out test score is the unbiased number" in n for n in result.notes)
    # 2 dev speakers are too few for CIs or tests over speakers: none, and the notes say so
    assert any("only 2 speaker(s) in the evaluated parts" in n for n in result.notes)
    assert result.summary["ci_low"].isna().all() and not result.summary["worse_than_best"].any()
    assert np.isnan(result.holdout["ci_low"])  # 2 test speakers: no CI either


def test_study_errors(toy_store):
    ds = load_dataset(toy_store(), label="label", layers="3")
    with pytest.raises(ConfigError, match="unknown classification model 'xgb'; accepted: logreg"):
        run_study(ds, StudySettings(models=["xgb"]))
    with pytest.raises(ConfigError, match="unknown classification model 'svr'"):
        run_study(ds, StudySettings(models=["svr"]))
    with pytest.raises(ConfigError, match="no tuning grid for model 'logreg'"):
        run_study(ds, StudySettings(models=["logreg"], tune=True, grids={"svm": {"C": [1]}}))
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        run_study(ds, StudySettings(backend="spark"))
    with pytest.raises(ConfigError, match="unknown classification metric 'ccc'"):
        run_study(ds, StudySettings(metric="ccc"))


def test_packaged_grids_cover_every_model():
    from embedx.probing.grids import load_grids

    grids = load_grids()
    for name in registry.available_models():
        assert name in grids, name
        for task in registry._REGISTRY[name].tasks:
            registry.build_model(name, task, params={k: v[0] for k, v in grids[name].items()})


def test_grid_file_errors(tmp_path):
    from embedx.probing.grids import load_grids

    bad = tmp_path / "g.yaml"
    bad.write_text("grids:\n  logreg:\n    C: 1\n")
    with pytest.raises(ConfigError, match="must map model names to"):
        load_grids(bad)
    with pytest.raises(ConfigError, match="cannot read tuning grids"):
        load_grids(tmp_path / "absent.yaml")


# ------------------------------------------------- issue 13: one estimand, signed, honest


def _balanced(speakers=20, per=12, k=3, dim=6, seed=0, split=False, regression=False):
    """In-memory dataset: layer L's signal grows with L; speakers differ by an offset."""
    rng = np.random.default_rng(seed)
    n = speakers * per
    y = np.arange(n) % k
    spk = np.repeat(np.arange(speakers), per)
    target = rng.normal(size=n)
    configs, X = [], {}
    for layer in range(4):
        config = FeatureConfig((Block("set", layer, "mean"),))
        signal = (0.3 + 0.5 * layer) * (np.outer(target, np.ones(dim)) if regression else 2 * np.eye(k, dim)[y])
        X[config.name] = (rng.normal(size=(n, dim)) + rng.normal(size=(speakers, dim))[spk] + signal).astype(np.float32)
        configs.append(config)
    parts = np.where(spk < speakers // 2, "train", np.where(spk < 3 * speakers // 4, "dev", "test"))
    return Dataset(configs=configs, X=X, y=target if regression else y,
                   task="regression" if regression else "classification",
                   classes=None if regression else [f"c{j}" for j in range(k)],
                   groups=np.array([f"s{s:02d}" for s in spk]), split=parts if split else None,
                   ids=np.arange(n).astype(str), paths=np.arange(n).astype(str), rows=np.arange(n),
                   label="label", group="speaker")


def test_one_estimand_ranks_ci_delta_and_tests():
    from sklearn.metrics import balanced_accuracy_score

    ds = _balanced()
    result = run_study(ds, StudySettings(models=["logreg", "ridge"], refit=False, **FAST))
    s = result.summary
    pooled = [balanced_accuracy_score(ds.y, result.predictions[(c, m)]) for c, m in zip(s["config"], s["model"], strict=True)]
    np.testing.assert_allclose(s["uar_pooled"], pooled)  # the estimand, recomputed by hand
    assert (np.diff(s["uar_pooled"]) <= 0).all()  # ranked by it
    np.testing.assert_allclose(s["diff_to_best"], s.loc[0, "uar_pooled"] - s["uar_pooled"])
    assert ((s["ci_low"] <= s["uar_pooled"]) & (s["uar_pooled"] <= s["ci_high"])).all()
    assert result.final is None and result.settings["clusters"] == "group"
    # signed: a flagged configuration is always below the best, and nothing above it is flagged
    for i in range(len(s)):
        if s.loc[i, "worse_than_best"]:
            assert s.loc[i, "diff_to_best"] > 0 and s.loc[i:, "worse_than_best"].all()
    # selection-aware: each speaker scored by the configuration best on the other speakers
    sel = result.selection
    assert sel["optimistic"] == pytest.approx(s.loc[0, "uar_pooled"]) and sel["candidates"] == 8
    assert sel["ci_low"] <= sel["estimate"] <= sel["ci_high"]
    assert any("selection-aware estimate" in n for n in result.notes)


def test_error_metric_delta_is_positive_and_regression_folds_are_named_kfold():
    ds = _balanced(regression=True)
    ds.groups, ds.group = None, None
    result = run_study(ds, StudySettings(models=["ridge"], metric="mae", refit=False, **FAST))
    s = result.summary
    assert result.folds.scheme == "kfold" and result.settings["clusters"] == "block"
    assert (np.diff(s["mae_pooled"]) >= 0).all()  # lower is better: ranked ascending
    assert (s["diff_to_best"] >= 0).all() and s.loc[len(s) - 1, "diff_to_best"] > 0
    np.testing.assert_allclose(s["diff_to_best"], s["mae_pooled"] - s.loc[0, "mae_pooled"])
    # kfold really is plain shuffled KFold
    from sklearn.model_selection import KFold

    for (_tr, te), (_tr2, te2) in zip(result.folds.splits,
                                    KFold(5, shuffle=True, random_state=0).split(ds.y), strict=True):
        np.testing.assert_array_equal(np.sort(te), np.sort(te2))


def test_logo_fold_uar_note_and_pooled_uar():
    from sklearn.metrics import balanced_accuracy_score

    ds = _balanced(speakers=6, per=12)
    ds.y = ds.y.copy()
    ds.y[(ds.groups == "s00") & (ds.y == 2)] = 0  # speaker s00 has no class c2
    result = run_study(ds, StudySettings(models=["logreg"], scheme="logo", refit=False, **FAST))
    assert any("1 of 6 test folds lack some class" in n for n in result.notes)
    row = result.summary.iloc[0]
    key = (row["config"], row["model"])
    assert row["uar_pooled"] == pytest.approx(balanced_accuracy_score(ds.y, result.predictions[key]))


def test_predefined_holdout_has_a_ci_over_test_speakers():
    from sklearn.metrics import balanced_accuracy_score

    from embedx.probing.compare import jackknife_ci

    ds = _balanced(speakers=20, split=True)
    result = run_study(ds, StudySettings(models=["logreg"], scheme="predefined", **FAST))
    h = result.holdout
    _, test = result.folds.holdout
    est = result.final["pipeline"]
    pred = est.predict(ds.X[result.best[0]][test])
    spk = ds.groups[test]
    loo = [balanced_accuracy_score(ds.y[test][spk != g], pred[spk != g]) for g in np.unique(spk)]
    assert h["uar"] == pytest.approx(balanced_accuracy_score(ds.y[test], pred))
    assert (h["ci_low"], h["ci_high"]) == pytest.approx(jackknife_ci(h["uar"], np.array(loo), bounds=(0, 1)))
    assert h["ci_low"] < h["uar"] <= h["ci_high"]


def test_constant_predictions_are_warned(spies):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.arange(90) % 3
    y[:6] = 0  # c0 is the majority in every training part
    result = run_study(_dataset(X, y), StudySettings(models=["spy"], scheme="stratified", refit=False, **FAST))
    warning = result.summary.loc[0, "warning"]
    assert warning.startswith("constant out-of-fold predictions (always 'c0')")
    assert any("predict a constant out of fold" in n for n in result.notes)
