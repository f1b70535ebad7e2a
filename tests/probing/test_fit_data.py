"""X / y / groups from the store, feature selection and one-line data errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embedx.errors import ConfigError, DataError, StoreError
from embedx.probing.data import load_dataset, resolve_layers

from .conftest import LAYERS, planted, write_store


def test_one_config_per_layer_with_the_stored_values(toy_store):
    path = toy_store()
    items, pooled = planted()
    ds = load_dataset(path, label="label", group="speaker")
    assert [c.name for c in ds.configs] == [f"toy@{k}/mean" for k in LAYERS]
    assert [c.layer for c in ds.configs] == list(LAYERS)
    for li, config in enumerate(ds.configs):
        np.testing.assert_array_equal(ds.X[config.name], pooled[li])
    assert ds.task == "classification" and ds.classes == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(ds.y, np.arange(120) % 3)
    np.testing.assert_array_equal(ds.groups, items["speaker"].to_numpy())
    assert ds.skipped == {}


def test_only_done_items_are_used(toy_store):
    done = np.ones(120, dtype=bool)
    done[[5, 17, 40]] = False
    ds = load_dataset(toy_store(done=done), label="label")
    assert ds.num_items == 117 and ds.skipped == {"not extracted yet (re-run the extraction to finish)": 3}
    assert "u005" not in ds.ids
    assert np.isfinite(ds.X["toy@0/mean"]).all()


def test_selection_syntax_and_concat(tmp_path):
    items, pooled = planted()
    other = np.random.default_rng(1).normal(size=(1, 120, 6)).astype(np.float32)
    path = write_store(tmp_path / "two.h5", items, {"toy": (pooled, LAYERS), "egemaps": (other, (0,))},
                       poolings=("mean", "std"))
    ds = load_dataset(path, sets=["toy@3/mean", "egemaps"], concat=True)
    (config,) = ds.configs
    assert config.name == "toy@3/mean+egemaps@0/mean" and config.layer is None
    assert ds.X[config.name].shape == (120, 16 + 6)
    np.testing.assert_array_equal(ds.X[config.name][:, 16:], other[0])
    ds = load_dataset(path, sets=["toy@-2:"], pooling="mean,std")
    assert [c.name for c in ds.configs] == ["toy@3/mean", "toy@3/std", "toy@4/mean", "toy@4/std"]
    ds = load_dataset(path, sets=["toy@last/std"])
    assert [c.name for c in ds.configs] == ["toy@4/std"]
    assert len(load_dataset(path).configs) == 6  # every set, every layer, mean


def test_labels_csv_joined_on_id_or_path(toy_store, tmp_path):
    path = toy_store()
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"id": [f"u{i:03d}" for i in range(0, 120, 2)], "emotion": ["a", "b"] * 30}).to_csv(csv, index=False)
    ds = load_dataset(path, label="emotion", labels_csv=csv)
    assert ds.num_items == 60 and ds.skipped == {"no label": 60}
    assert ds.counts() == {"a": 30, "b": 30}
    # a CSV of relative paths joins on path; its label column replaces the store's
    pd.DataFrame({"path": [f"wavs/u{i:03d}.wav" for i in range(120)],
                  "label": ["x", "y", "y"] * 40}).to_csv(csv, index=False)
    ds = load_dataset(path, label="label", labels_csv=csv)
    assert ds.counts() == {"x": 40, "y": 80}
    pd.DataFrame({"name": ["u000"], "label": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match="needs an 'id' or 'path' column"):
        load_dataset(path, labels_csv=csv)


def test_task_detection(toy_store):
    path = toy_store()
    assert load_dataset(path, label="arousal").task == "regression"
    ds = load_dataset(path, label="arousal", task="regression")
    assert ds.classes is None and ds.y.dtype == np.float64
    with pytest.raises(DataError, match="not numeric"):
        load_dataset(path, label="label", task="regression")
    with pytest.raises(ConfigError, match="unknown task 'guess'"):
        load_dataset(path, task="guess")


def test_data_errors(toy_store, tmp_path):
    path = toy_store()
    with pytest.raises(DataError, match=r"no label column 'emotion' among the items' columns \(id, path, .*label.*labels='labels.csv'"):
        load_dataset(path, label="emotion")
    with pytest.raises(DataError, match="unknown group column 'spk'"):
        load_dataset(path, group="spk")
    with pytest.raises(StoreError, match="no feature set 'hubert'; available: toy"):
        load_dataset(path, sets=["hubert"])
    with pytest.raises(StoreError, match="has no layer 9; stored layers: 0, 1, 2, 3, 4"):
        load_dataset(path, layers="9")
    with pytest.raises(StoreError, match="has no pooling 'max'; stored: mean"):
        load_dataset(path, pooling="max")
    items, pooled = planted()
    items["label"] = "same"
    one = write_store(tmp_path / "one.h5", items, {"toy": (pooled, LAYERS)})
    with pytest.raises(DataError, match=r"single class \('same'\) among 120 items"):
        load_dataset(one)
    items, pooled = planted()
    pooled[2, 7, 3] = np.nan
    pooled[2, 9, 0] = np.inf
    bad = write_store(tmp_path / "nan.h5", items, {"toy": (pooled, LAYERS)})
    with pytest.raises(DataError, match=r"toy@2/mean hold NaN/inf values for 2 item\(s\), first 'u007'"):
        load_dataset(bad)
    load_dataset(bad, layers="3")  # other layers are fine


def test_resolve_layers():
    stored = (0, 4, 8, 12)
    assert resolve_layers("all", stored) == [0, 4, 8, 12]
    assert resolve_layers("last", stored) == [12]
    assert resolve_layers("-1,0", stored) == [0, 12]
    assert resolve_layers("4:9", stored) == [4, 8]
    with pytest.raises(StoreError, match="has no layer 5; stored layers: 0, 4, 8, 12"):
        resolve_layers("5", stored, "hubert")


def test_auto_task_treats_fractional_ratings_as_regression():
    from embedx.probing.data import detect_task

    half_steps = pd.Series(np.arange(1.0, 5.5, 0.5).repeat(3))  # 9 distinct values, 1-5 in 0.5 steps
    assert detect_task(half_steps) == "regression"
    assert detect_task(pd.Series([1, 2, 3, 4, 5] * 4)) == "classification"
    assert detect_task(pd.Series([1.0, 2.0, 3.0] * 4)) == "classification"
    assert detect_task(pd.Series(["a", "b"] * 4)) == "classification"


def test_pooling_list_is_read_with_stage_1s_grammar(tmp_path):
    """Blanks and repeats in --pooling are dropped as `extract --pooling` drops them."""
    items, pooled = planted()
    path = write_store(tmp_path / "p.h5", items, {"toy": (pooled, LAYERS)}, poolings=("mean", "std"))
    spaced = load_dataset(path, sets=["toy@3"], pooling=" std , mean,std")
    assert [c.name for c in spaced.configs] == ["toy@3/std", "toy@3/mean"]
    assert [c.name for c in load_dataset(path, sets=["toy@3/all"]).configs] == ["toy@3/mean", "toy@3/std"]
