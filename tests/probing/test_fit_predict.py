"""Saved models: predict reproduces the refitted model on the same features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedx.errors import ConfigError, DataError, StoreError
from embedx.probing.data import load_dataset
from embedx.probing.modelfile import load_model, save_model
from embedx.probing.predict import predict_store
from embedx.probing.speaker_norm import group_standardize
from embedx.probing.study import StudySettings, run_study

from .conftest import LAYERS, planted, write_store

FAST = {"n_boot": 0, "threads": 1}


def _fit(path, tmp_path, **kwargs):
    data = {k: kwargs.pop(k) for k in ("layers", "group", "label", "sets", "concat") if k in kwargs}
    ds = load_dataset(path, **data)
    result = run_study(ds, StudySettings(**{"models": ["logreg"], **FAST, **kwargs}))
    model = save_model(result.final, tmp_path / "model.skops")
    return ds, result, model


def test_predict_reproduces_the_refit_model(toy_store, tmp_path):
    path = toy_store()
    ds, result, model_path = _fit(path, tmp_path, group="speaker")
    bundle = load_model(model_path)
    assert bundle["blocks"] == [{"feature_set": "toy", "layer": 3, "pooling": "mean"}]
    assert bundle["feature_sets"]["toy"]["attrs"]["model_id"] == "test/toy"
    assert bundle["feature_sets"]["toy"]["config"]["model"] == "test/toy"
    table, skipped = predict_store(bundle, path)
    X = ds.X["toy@3/mean"]
    expected = result.final["pipeline"].predict(X)
    assert skipped == 0
    assert table["id"].tolist() == list(ds.ids)
    assert table["prediction"].tolist() == [ds.classes[k] for k in expected]
    proba = result.final["pipeline"].predict_proba(X)
    np.testing.assert_allclose(table[["prob_c0", "prob_c1", "prob_c2"]].to_numpy(), proba, rtol=1e-6)
    assert (table["prediction"] == np.array(ds.classes)[ds.y]).mean() > 0.95


def test_predict_new_store_with_missing_items(toy_store, tmp_path):
    _, result, model_path = _fit(toy_store(), tmp_path, layers="3")
    done = np.ones(120, dtype=bool)
    done[:10] = False
    other = toy_store("new.h5", seed=1, done=done)
    table, skipped = predict_store(load_model(model_path), other)
    assert skipped == 10 and len(table) == 110 and table["id"].iloc[0] == "u010"


def test_concat_and_speaker_norm_models(tmp_path):
    items, pooled = planted()
    extra = np.random.default_rng(3).normal(size=(1, 120, 4)).astype(np.float32)
    path = write_store(tmp_path / "two.h5", items, {"toy": (pooled, LAYERS), "egemaps": (extra, (0,))})
    ds, result, model_path = _fit(path, tmp_path, sets=["toy@3", "egemaps"], concat=True,
                                  group="speaker", speaker_norm=True)
    bundle = load_model(model_path)
    assert bundle["concat"] and len(bundle["blocks"]) == 2 and bundle["speaker_norm"]
    table, _ = predict_store(bundle, path)
    X = group_standardize(np.hstack([pooled[3], extra[0]]), items["speaker"].to_numpy())
    expected = bundle["pipeline"].predict(X)
    assert table["prediction"].tolist() == [ds.classes[k] for k in expected]
    # without the group column the model cannot normalise
    no_group = write_store(tmp_path / "nogroup.h5", items.drop(columns=["speaker"]),
                           {"toy": (pooled, LAYERS), "egemaps": (extra, (0,))})
    with pytest.raises(DataError, match="speaker normalisation and needs a group column"):
        predict_store(bundle, no_group)
    csv = tmp_path / "groups.csv"
    items[["id", "speaker"]].to_csv(csv, index=False)
    table2, _ = predict_store(bundle, no_group, labels_csv=csv)
    assert table2["prediction"].tolist() == table["prediction"].tolist()


def test_regression_model(toy_store, tmp_path):
    path = toy_store()
    ds, result, model_path = _fit(path, tmp_path, label="arousal", layers="3", models=["ridge"])
    table, _ = predict_store(load_model(model_path), path)
    np.testing.assert_allclose(table["prediction"], result.final["pipeline"].predict(ds.X["toy@3/mean"]))
    assert list(table.columns) == ["id", "path", "prediction"]


def test_predict_errors(toy_store, tmp_path):
    _, _, model_path = _fit(toy_store(), tmp_path, layers="3")
    bundle = load_model(model_path)
    items, pooled = planted()
    wrong_name = write_store(tmp_path / "w1.h5", items, {"hubert": (pooled, LAYERS)})
    with pytest.raises(StoreError, match="no feature set 'toy', which the model needs; available: hubert"):
        predict_store(bundle, wrong_name)
    wrong_dim = write_store(tmp_path / "w2.h5", items, {"toy": (pooled[..., :8], LAYERS)})
    with pytest.raises(StoreError, match="dim 8; the model was trained on hf dim 16"):
        predict_store(bundle, wrong_dim)
    few_layers = write_store(tmp_path / "w3.h5", items, {"toy": (pooled[:2], (0, 1))})
    with pytest.raises(StoreError, match="has no layer 3"):
        predict_store(bundle, few_layers)
    bundle2 = dict(bundle, feature_sets={"toy": dict(bundle["feature_sets"]["toy"], attrs={"model_id": "other"})})
    with pytest.raises(StoreError, match="has model_id 'test/toy'; the model was trained on model_id 'other'"):
        predict_store(bundle2, toy_store())
    pd.DataFrame({"a": [1]}).to_pickle(tmp_path / "x.joblib")
    with pytest.raises(ConfigError, match="x.joblib' is a pickle"):
        load_model(tmp_path / "x.joblib")
    with pytest.raises(ConfigError, match="is not an embedx model file"):
        load_model(tmp_path / "x.joblib", trust_pickle=True)
    import skops.io as sio

    sio.dump({"a": [1]}, tmp_path / "x.skops")
    with pytest.raises(ConfigError, match="is not an embedx model file"):
        load_model(tmp_path / "x.skops")
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "absent.skops")


def test_predict_from_audio_uses_the_stored_extraction_config(tiny_model, tmp_path):
    import soundfile as sf

    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.extract import extract

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        freq = 200.0 if i % 2 else 900.0
        t = np.arange(int(16000 * 0.5)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=len(t))
        rel = f"a/{i:02d}.wav"
        (tmp_path / "a").mkdir(exist_ok=True)
        sf.write(tmp_path / rel, wave.astype(np.float32), 16000)
        rows.append({"path": rel, "label": ["high", "low"][i % 2], "speaker": f"s{i % 3}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    store = tmp_path / "train.h5"
    config = ExtractConfig(model=str(tiny_model("hubert")), layers="0,2", manifest=str(tmp_path / "labels.csv"),
                           workers=0, progress=False)
    extract([str(tmp_path)], store, config)
    ds = load_dataset(store, label="label")
    result = run_study(ds, StudySettings(models=["logreg"], n_splits=2, **FAST))
    bundle = result.final
    from embedx.probing.predict import predict_audio

    table, skipped = predict_audio(bundle, [str(tmp_path / "a")], overrides={"workers": 0, "progress": False})
    on_store, _ = predict_store(bundle, store)
    assert skipped == 0 and len(table) == 12
    by_file = dict(zip(table["id"], table["prediction"], strict=True))
    assert [by_file[p.removeprefix("a/")] for p in on_store["id"]] == on_store["prediction"].tolist()
