"""Random-network control: a trained set against its NAME-random twin, layer by layer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from embedx.figures import layer_curve_figure
from embedx.probing import compare
from embedx.probing.compare import null_inflation
from embedx.probing.data import load_dataset
from embedx.probing.report import write_report
from embedx.probing.selectivity import random_twins, selectivity_table
from embedx.probing.study import StudySettings, run_study

from .conftest import LAYERS, planted, regression_dataset, write_store


@pytest.fixture
def twin_store(tmp_path):
    items, trained = planted(signal_layer=3, strength=1.5, seed=0)
    _, rand = planted(signal_layer=3, strength=0.0, seed=1)  # same items, no class information
    return write_store(tmp_path / "twins.h5", items, {"toy": (trained, LAYERS), "toy-random": (rand, LAYERS)})


def test_selectivity_per_layer_with_the_studys_paired_test(twin_store, tmp_path, monkeypatch):
    # a family inflation of its own, so the test sees whether the model's inflation is used
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"logreg": 1.3})
    ds = load_dataset(twin_store, label="label", group="speaker")
    result = run_study(ds, StudySettings(models=["logreg"], n_boot=200, threads=1, refit=False))
    table = selectivity_table(result)
    assert list(table["layer"]) == list(LAYERS) and (table["random_set"] == "toy-random").all()
    pooled = result.summary.set_index("config")["uar_pooled"]
    for _, r in table.iterrows():
        assert r["trained"] == pooled[f"toy@{r['layer']}/mean"]
        assert r["random"] == pooled[f"toy-random@{r['layer']}/mean"]
        assert r["selectivity"] == pytest.approx(r["trained"] - r["random"])
    # reference: the exact sign-flip test over the 12 speakers, by enumeration with scikit-learn
    y, spk = ds.y, ds.groups
    speakers = np.unique(spk)
    for layer in (3, 0):
        a = result.predictions[(f"toy@{layer}/mean", "logreg")]
        b = result.predictions[(f"toy-random@{layer}/mean", "logreg")]
        observed = balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b)
        # UAR = mean over classes of (correct / items of the class); a swap moves whole speakers
        correct_a = np.array([[np.sum((spk == s) & (y == c) & (a == y)) for c in range(3)] for s in speakers])
        correct_b = np.array([[np.sum((spk == s) & (y == c) & (b == y)) for c in range(3)] for s in speakers])
        flips = np.array(list(itertools.product([0, 1], repeat=len(speakers))))  # (4096, speakers)
        per_class = np.bincount(y, minlength=3)
        uar_a = ((1 - flips) @ correct_a + flips @ correct_b) / per_class
        uar_b = ((1 - flips) @ correct_b + flips @ correct_a) / per_class
        diff = uar_a.mean(axis=1) - uar_b.mean(axis=1)
        assert diff[0] == pytest.approx(observed)  # the identity swap
        assert null_inflation("logreg") == 1.3
        expected = np.sum(1.3 * diff >= observed - 1e-12) / 2 ** len(speakers)
        assert table.set_index("layer").loc[layer, "p_selectivity"] == pytest.approx(expected)
    row3 = table.set_index("layer").loc[3]
    assert row3["selectivity"] > 0.5 and row3["p_selectivity"] < 0.01

    files = write_report(result, tmp_path / "out", save_model=False)
    written = pd.read_csv(files["selectivity"])
    assert list(written.columns) == ["set", "random_set", "pooling", "model", "layer", "trained", "random",
                                     "selectivity", "p_selectivity"]
    report = files["report"].read_text()
    assert "## Random-network control (selectivity)" in report and "Largest selectivity: layer 3" in report
    fig = layer_curve_figure(result.summary, "uar")
    assert len(fig.axes[0].lines) > 0 and len(fig.get_axes()) == 1  # the twin shares the trained panel
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "logreg (random init)" in labels


def test_no_twin_no_table():
    assert random_twins(["a", "b-random", "c"]) == {}
    assert random_twins(["a", "a-random"]) == {"a": "a-random"}


def test_regression_selectivity_uses_the_regression_inflation(monkeypatch):
    from embedx.probing import metrics as M
    from embedx.probing.compare import ClusterScores, signflip_test

    ds = regression_dataset([("toy", 0, 0.8), ("toy-random", 0, 0.5)], seed=5)
    configs, y, groups = ds.configs, ds.y, ds.groups
    monkeypatch.setattr(compare, "FAMILY_INFLATION", {"ridge": 1.0})
    monkeypatch.setattr(compare, "REGRESSION_INFLATION", {"ridge": 1.9})
    result = run_study(ds, StudySettings(models=["ridge"], n_boot=300, threads=1, refit=False, seed=2))
    table = selectivity_table(result)
    assert len(table) == 1
    preds = [result.predictions[(c.name, "ridge")] for c in configs]
    _, codes = np.unique(groups, return_inverse=True)
    scores = ClusterScores(y, preds, M.get_metric("ccc", "regression"), codes, None)
    p = {c: signflip_test(scores, 0, 1, greater_is_better=True, n_perm=300, seed=2, inflation=c) for c in (1.9, 1.0)}
    assert p[1.9] != p[1.0]
    assert table["p_selectivity"].iloc[0] == pytest.approx(p[1.9])
