"""The model comparison table: one row per feature set, selection-aware, tested over speakers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

import embedx
from embedx.probing import metrics as M
from embedx.probing.sets import nested_predictions, set_verdicts

from .conftest import LAYERS, planted, write_store


def test_nested_predictions_equal_a_direct_leave_one_speaker_out_choice():
    rng = np.random.default_rng(0)
    n, k, s = 90, 3, 9
    y = rng.integers(0, k, n)
    clusters = rng.integers(0, s, n)
    preds = [np.where(rng.random(n) < q, y, rng.integers(0, k, n)) for q in (0.3, 0.5, 0.45)]
    metric = M.get_metric("uar", M.CLASSIFICATION)
    nested, choice = nested_predictions(y, preds, metric, clusters, k)
    for c in range(s):
        others = clusters != c
        scores = [balanced_accuracy_score(y[others], p[others]) for p in preds]
        assert choice[c] == int(np.argmax(scores))
        assert np.array_equal(nested[clusters == c], preds[choice[c]][clusters == c])


def test_set_table_rows_match_the_study(tmp_path):
    items, strong = planted(signal_layer=3, strength=1.5)
    _, weak = planted(signal_layer=1, strength=0.3, seed=1)
    path = write_store(tmp_path / "two.h5", items, {"strong": (strong, LAYERS), "weak": (weak, LAYERS)})
    res = embedx.fit(path, output=tmp_path / "out", models="logreg", bootstrap=300, save_model=False,
                     progress=False)
    study = res.study
    table = pd.read_csv(tmp_path / "out" / "sets.csv")
    assert list(table["feature_set"]) == ["strong", "weak"]
    records = json.loads((tmp_path / "out" / "summary.json").read_text())["sets"]
    assert [r["feature_set"] for r in records] == ["strong", "weak"] and records[1]["worse_than_best_set"]
    s = study.summary
    ds = study.dataset
    _, clusters = np.unique(ds.groups, return_inverse=True)
    metric = M.get_metric("uar", M.CLASSIFICATION)
    for r in table.itertuples():
        own = s[s["feature_set"] == r.feature_set].iloc[0]
        assert r.best_config == own["config"] and r.score == pytest.approx(own["uar_pooled"])
        preds = [study.predictions[(c, m)] for c, m in zip(s[s["feature_set"] == r.feature_set]["config"],
                                                           s[s["feature_set"] == r.feature_set]["model"],
                                                           strict=True)]
        nested, _ = nested_predictions(ds.y, preds, metric, clusters, ds.num_classes)
        assert r.selection_aware == pytest.approx(balanced_accuracy_score(ds.y, nested))
        assert r.candidates == 5
    assert table.loc[0, "best_layer"] == 3
    weak_row = table.iloc[1]
    assert weak_row["worse_than_best_set"] and weak_row["diff_to_best_set"] > 0.3
    # the set's p-value: the largest confidence-set p-value of its configurations
    assert weak_row["p_set"] == pytest.approx(s[s["feature_set"] == "weak"]["p_set"].max())
    assert table.loc[0, "p_set"] == 1.0 and not table.loc[0, "worse_than_best_set"]
    # the layer-similarity line: linear CKA of the sets' best features, against the formula
    a = strong[LAYERS.index(3)].astype(np.float64)
    b = weak[LAYERS.index(1)].astype(np.float64)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    cka = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert table.loc[1, "cka_to_best_set"] == pytest.approx(cka, rel=1e-5)
    assert table.loc[0, "cka_to_best_set"] == pytest.approx(1.0)
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.index("## Model comparison") < report.index("## Data")
    assert f"`weak@1/mean` {cka:.3f}" in report


def test_one_set_has_no_table(tmp_path, toy_store):
    res = embedx.fit(toy_store(), output=None, layers="2,3", models="logreg", bootstrap=0, progress=False)
    assert "sets" not in res.study.analyses


def test_a_set_is_worse_only_when_none_of_its_configurations_is_in_the_confidence_set():
    p_set = np.array([np.nan, 0.2, 0.01, 0.03, 0.01])
    in_set = np.array([True, True, False, False, False])
    p, worse = set_verdicts(p_set, in_set, [np.array([0, 2]), np.array([1, 3]), np.array([4])])
    assert worse.tolist() == [False, False, True]
    assert p.tolist() == [1.0, 0.2, 0.01]


def test_the_console_set_table_calls_equal_sets_a_tie_and_prints_a_missing_ci_as_one_dash(tmp_path):
    """Two sets holding the same features tie, as the ranking says (the set table named one of them
    "best"); with no CI (--bootstrap 0) the CI cell is one "–" (it read "–––")."""
    from typer.testing import CliRunner

    from embedx.cli import app

    items, strong = planted(signal_layer=3, strength=1.5)
    _, weak = planted(signal_layer=1, strength=0.3, seed=1)
    path = write_store(tmp_path / "three.h5", items,
                       {"a": (strong, LAYERS), "b": (strong.copy(), LAYERS), "weak": (weak, LAYERS)})
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--models", "logreg", "--bootstrap", "0",
                                   "--no-save-model", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "out" / "sets.csv")
    cells = {r.feature_set: r for r in table.itertuples()}
    assert cells["a"].score == cells["b"].score > cells["weak"].score
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in res.output.splitlines() if line.startswith("│") and "(mean, logreg)" in line}
    score = f"{cells['a'].score:.3f}"
    assert rows["a"] == ["3 (mean, logreg)", score, "–", "–", "tie"]
    assert rows["b"] == ["3 (mean, logreg)", score, "–", "–", "tie"]
    assert rows["weak"][2:] == ["–", f"{cells['weak'].diff_to_best_set:.3f}", "–"]
    assert "–––" not in res.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"| a | 3 (mean, logreg) | {score} | – |" in report and "| tie |" in report
