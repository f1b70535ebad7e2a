"""The model file: skops with an explicit list of trusted types; a pickle only when trusted."""

from __future__ import annotations

import dataclasses
import pickle

import joblib
import numpy as np
import pytest
import skops.io as sio
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import ConfigError
from embedx.probing.data import load_dataset
from embedx.probing.modelfile import (
    MODEL_FILE,
    load_model,
    save_model,
    trusted_types,
    types_in_file,
)
from embedx.probing.models import _REGISTRY
from embedx.probing.predict import features_for, predict_store
from embedx.probing.refit import fit_final
from embedx.probing.study import StudySettings, run_study
from embedx.store import StoreReader

FAST = {"n_boot": 0, "threads": 1, "n_splits": 2}
#: every (model, task) of the registry, the weighted-layer probe included
ENTRIES = [(name, task) for name, spec in _REGISTRY.items() for task in spec.tasks]


def _refit(path, name, task):
    """The study's refitted bundle with ``name`` as its best model (a weighted one for the probe)."""
    label = "label" if task == "classification" else "arousal"
    stacked = _REGISTRY[name].stacked
    ds = load_dataset(path, label=label, layers="2,3" if stacked else "3", weighted_layers=stacked)
    models = ["logreg" if task == "classification" else "ridge"] if stacked else [name]
    result = run_study(ds, StudySettings(models=models, **FAST))
    if stacked:  # make the weighted configuration the best one, whatever the ranking said
        weighted = next(c.name for c in ds.configs if c.weighted)
        return fit_final(dataclasses.replace(result, best=(weighted, name)))[0]
    return result.final


def _in_memory(bundle, path):
    """What the unsaved pipeline predicts for the store's items (classes as codes)."""
    with StoreReader(path) as reader:
        X, _ = features_for(bundle, reader)  # (num_items, dim), layers side by side for the probe
    pipe = bundle["pipeline"]
    proba = pipe.predict_proba(X) if bundle["task"] == "classification" and hasattr(pipe, "predict_proba") else None
    return pipe.predict(X), proba


@pytest.mark.parametrize(("name", "task"), ENTRIES, ids=[f"{n}-{t[:3]}" for n, t in ENTRIES])
def test_every_registry_model_saves_loads_and_predicts_the_same(toy_store, tmp_path, name, task):
    path = toy_store()
    bundle = _refit(path, name, task)
    assert bundle["model"] == name
    saved = save_model(bundle, tmp_path / MODEL_FILE)
    # skops itself finds nothing beyond what embedx passes as trusted: the list is complete
    assert set(sio.get_untrusted_types(file=saved)) <= trusted_types()
    assert types_in_file(saved) <= trusted_types()
    loaded = load_model(saved)
    assert type(loaded["pipeline"]) is type(bundle["pipeline"])
    table, skipped = predict_store(loaded, path)
    pred, proba = _in_memory(bundle, path)
    assert skipped == 0 and len(table) == 120
    if task == "classification":
        assert table["prediction"].tolist() == [bundle["classes"][int(k)] for k in pred]
        if proba is not None:
            cols = [f"prob_{c}" for c in bundle["classes"]]
            np.testing.assert_allclose(table[cols].to_numpy(), proba, rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(table["prediction"].to_numpy(), pred, rtol=1e-12, atol=1e-12)


def test_a_tuned_model_saves_its_refitted_pipeline_not_the_search(toy_store, tmp_path):
    path = toy_store()
    ds = load_dataset(path, label="label", layers="3")
    result = run_study(ds, StudySettings(models=["knn"], tune=True, grids={"knn": {"n_neighbors": [3, 5]}},
                                         inner_folds=2, **FAST))
    bundle = result.final
    assert type(bundle["pipeline"]).__name__ == "Pipeline"
    assert bundle["pipeline"].named_steps["model"].n_neighbors == bundle["params"]["n_neighbors"]
    saved = save_model(bundle, tmp_path / MODEL_FILE)
    table, _ = predict_store(load_model(saved), path)
    pred, _ = _in_memory(bundle, path)
    assert table["prediction"].tolist() == [bundle["classes"][int(k)] for k in pred]


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a malicious model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    planted = tmp_path / "model.joblib"
    joblib.dump({"format": "embedx-model", "pipeline": _Payload(marker)}, planted)
    with pytest.raises(ConfigError, match=r"model\.joblib' is a pickle .*give trust_pickle=True only"):
        load_model(planted)
    assert not marker.exists()
    res = CliRunner().invoke(app, ["predict", str(planted), str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert str(planted) in res.output and "--trust-pickle" in res.output
    assert not marker.exists()
    # the payload is real: trusting the file runs it (and the result is no model)
    with pytest.raises(ConfigError, match="lacks task"):
        load_model(planted, trust_pickle=True)
    assert marker.exists()


def test_a_trusted_old_joblib_bundle_still_predicts(toy_store, tmp_path):
    path = toy_store()
    bundle = _refit(path, "logreg", "classification")
    old = tmp_path / "model.joblib"
    joblib.dump(bundle, old)  # what embedx 0.2 wrote
    table, _ = predict_store(load_model(old, trust_pickle=True), path)
    pred, proba = _in_memory(bundle, path)
    assert table["prediction"].tolist() == [bundle["classes"][int(k)] for k in pred]
    np.testing.assert_allclose(table[["prob_c0", "prob_c1", "prob_c2"]].to_numpy(), proba, rtol=1e-12)
    preds = tmp_path / "p.csv"
    res = CliRunner().invoke(app, ["predict", str(old), str(path), "--trust-pickle", "-o", str(preds)])
    assert res.exit_code == 0, res.output
    assert preds.read_text() == table.to_csv(index=False)


class _Planted:
    """A type no embedx model holds; rebuilding it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        self.__dict__.update(state)


def test_a_skops_file_with_an_untrusted_type_is_refused(toy_store, tmp_path):
    bundle = _refit(toy_store(), "logreg", "classification")
    marker = tmp_path / "built"
    planted = tmp_path / "planted.skops"
    sio.dump({**bundle, "extra": _Planted(marker)}, planted)
    with pytest.raises(ConfigError, match=rf"contains {__name__}\._Planted, which is not a type of an embedx"):
        load_model(planted)
    assert not marker.exists()
    res = CliRunner().invoke(app, ["predict", str(planted), str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"{__name__}._Planted" in res.output


def test_a_type_skops_trusts_but_no_embedx_model_holds_is_refused(toy_store, tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    bundle = _refit(toy_store(), "logreg", "classification")
    steps = bundle["pipeline"].steps
    sneaky = {**bundle, "pipeline": type(bundle["pipeline"])([("log", FunctionTransformer(np.log1p)), *steps])}
    sio.dump(sneaky, tmp_path / "sneaky.skops")
    assert sio.get_untrusted_types(file=tmp_path / "sneaky.skops") == []  # skops alone would load it
    with pytest.raises(ConfigError, match=r"sneaky.skops' contains .*FunctionTransformer") as err:
        load_model(tmp_path / "sneaky.skops")
    assert "log1p" in str(err.value)
    # and save_model writes no file it would refuse to load
    with pytest.raises(ConfigError, match="FunctionTransformer"):
        save_model(sneaky, tmp_path / "never.skops")
    assert not (tmp_path / "never.skops").exists()


def test_metadata_is_saved_as_plain_python(toy_store, tmp_path):
    bundle = _refit(toy_store(), "logreg", "classification")
    sets = {k: {**v, "attrs": {**v["attrs"], "rev": np.str_("abc"), "n": np.int16(3), "ids": np.array([1, 2])}}
            for k, v in bundle["feature_sets"].items()}
    loaded = load_model(save_model({**bundle, "feature_sets": sets}, tmp_path / MODEL_FILE))
    attrs = loaded["feature_sets"]["toy"]["attrs"]
    assert attrs == {**bundle["feature_sets"]["toy"]["attrs"], "rev": "abc", "n": 3, "ids": [1, 2]}
    assert type(attrs["rev"]) is str and type(attrs["n"]) is int


def test_the_format_is_told_by_the_content_not_the_name(toy_store, tmp_path):
    bundle = _refit(toy_store(), "ridge", "classification")
    odd = save_model(bundle, tmp_path / "model.joblib")  # a skops file under the old name
    assert load_model(odd)["model"] == "ridge"
    (tmp_path / "junk.skops").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ConfigError, match="junk.skops' is a pickle"):
        load_model(tmp_path / "junk.skops")
