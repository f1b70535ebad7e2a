"""`embedx fit` / `embedx predict` end to end, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from embedx.cli import app

from .conftest import LAYERS, planted, write_store

OUTPUTS = ("results.csv", "summary.csv", "summary.json", "layer_curve.png", "confusion_best.png",
           "report.md", "model.skops", "predictions_best.csv")


def test_fit_writes_every_output_and_predict_reads_the_model(toy_store, tmp_path):
    path = toy_store()
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--label", "label", "--group", "speaker",
                                   "--models", "logreg,svm", "--bootstrap", "100", "--threads", "1",
                                   "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "toy@3/mean" in res.output
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 5 * 2 * 5 and {"fold", "uar", "recall_c0"} <= set(results.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["config"] == "toy@3/mean" and summary["folds"]["scheme"] == "group"
    assert len(summary["configurations"]) == 10
    assert len(pd.read_csv(out / "summary.csv")) == 10
    report = (out / "report.md").read_text()
    assert "## Ranking" in report and "toy@3/mean" in report and "layer_curve.png" in report

    preds = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", str(out / "model.skops"), str(path), "-o", str(preds)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(preds)
    assert len(table) == 120 and (table["prediction"] == [f"c{i % 3}" for i in range(120)]).mean() > 0.95
    res = CliRunner().invoke(app, ["predict", str(out / "model.skops"), str(path)])  # not a terminal: CSV
    assert res.exit_code == 0 and res.stdout == preds.read_text()


def test_fit_cv_number_concat_and_regression(toy_store, tmp_path):
    path = toy_store()
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["fit", "-f", str(path), "--label", "arousal", "--cv", "3", "--set", "toy@2,3",
                                   "--concat", "--bootstrap", "50", "--threads", "1", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["task"] == "regression" and summary["folds"]["n_splits"] == 3
    assert summary["best"]["config"] == "toy@2/mean+toy@3/mean" and summary["metric"] == "ccc"
    assert (out / "scatter_best.png").exists() and not (out / "layer_curve.png").exists()


def _one_line_error(args, message):
    # --no-group: the found-a-speaker-column line would precede the error (tested elsewhere)
    extra = [] if {"--group", "-g"} & set(args) else ["--no-group"]
    res = CliRunner().invoke(app, ["fit", *args, *extra, "--quiet"])
    assert res.exit_code not in (0, 1), res.output  # 2: an embedx error, not a crash
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize("args,message", [
    (["--label", "emotion"], "no label column 'emotion' among the items' columns (id, path"),
    (["--group", "spk"], "unknown group column 'spk'"),
    (["--set", "hubert"], "no feature set 'hubert'; available: toy"),
    (["--layers", "7"], "has no layer 7; stored layers: 0, 1, 2, 3, 4"),
    (["--pooling", "max"], "has no pooling 'max'; stored: mean"),
    (["--models", "xgb"], "unknown classification model 'xgb'"),
    (["--cv", "kfolds"], "unknown CV scheme 'kfolds'"),
    (["--speaker-norm"], "--speaker-norm needs a group column"),
    (["--folds", "50"], "use fewer --folds"),
])
def test_fit_errors_are_one_line(toy_store, tmp_path, args, message):
    _one_line_error(["-f", str(toy_store()), "-o", str(tmp_path / "o"), *args], message)


def test_data_errors_are_one_line(tmp_path):
    items, pooled = planted()
    single = items.assign(label="same")
    path = write_store(tmp_path / "single.h5", single, {"toy": (pooled, LAYERS)})
    _one_line_error(["-f", str(path), "-o", str(tmp_path / "o")], "single class ('same')")
    pooled = pooled.copy()
    pooled[1, 3] = np.nan
    path = write_store(tmp_path / "nan.h5", items, {"toy": (pooled, LAYERS)})
    _one_line_error(["-f", str(path), "-o", str(tmp_path / "o")], "toy@1/mean hold NaN/inf values")
    # one speaker holds every 'c2' item: a speaker-independent fold cannot train on c2
    items = items.copy()
    items.loc[items["label"] == "c2", "speaker"] = "s99"
    path = write_store(tmp_path / "fold.h5", items, {"toy": (pooled[[0]], (0,))})
    _one_line_error(["-f", str(path), "-g", "speaker", "--cv", "logo", "-o", str(tmp_path / "o")],
                    "class 'c2' occurs only in group (speaker) 's99', so no speaker-independent fold")
    _one_line_error(["-f", str(tmp_path / "absent.h5"), "-o", str(tmp_path / "o")], "absent.h5")


def test_predict_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "none.skops"), str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "does not exist" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_fit_tune_with_a_grid_file(toy_store, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("logreg:\n  C: [0.01, 1.0]\n")
    out = tmp_path / "t"
    res = CliRunner().invoke(app, ["fit", "-f", str(toy_store()), "--layers", "3", "--tune", "--grid", str(grid),
                                   "--inner-folds", "2", "--bootstrap", "0", "--threads", "1", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    params = pd.read_csv(out / "results.csv")["params"].map(json.loads)
    assert all(p["C"] in (0.01, 1.0) for p in params)
    assert "nested grid search" in (out / "report.md").read_text()


def test_fit_console_shows_selection_aware_score_and_bootstrap_zero(toy_store, tmp_path):
    path = toy_store()
    args = ["fit", "-f", str(path), "--label", "label", "--group", "speaker", "--models", "logreg",
            "--threads", "1", "--no-save-model", "-q"]
    res = CliRunner().invoke(app, [*args, "--bootstrap", "100", "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    best = summary["best"]["uar_pooled"]
    assert f"best uar {best:.3f} is the best of 5, so optimistic; selection-aware estimate" in res.output
    assert "The 95% confidence set for the best holds" in res.output
    res = CliRunner().invoke(app, [*args, "--bootstrap", "0", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "No CIs or comparisons: --bootstrap 0 was given." in res.output
    assert "confidence set" not in res.output
    assert "not significantly worse" not in (tmp_path / "b" / "report.md").read_text()


def test_fit_weighted_layers_and_chance_verdict_on_the_console(toy_store, tmp_path):
    path = toy_store(strength=0.0)  # no layer knows the class
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--group", "speaker", "--layers", "0,1",
                                   "--weighted-layers", "--permutations", "19", "--bootstrap", "100",
                                   "--threads", "1", "-o", str(out), "--quiet", "--no-save-model"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    verdict = text.find("the best configuration does not beat chance")
    assert 0 <= verdict < text.find("uar, pooled out of fold")  # said first
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["config"]) == {"toy@0/mean", "toy@1/mean", "toy@weighted/mean"}
    assert (summary["p_permutation"] > 0.05).all() and (summary["p_permutation"] >= 1 / 20).all()
    weights = pd.read_csv(out / "layer_weights.csv")
    assert list(weights["layer"]) == [0, 1] and np.allclose(weights["weight_mean"].sum(), 1.0)
    report = (out / "report.md").read_text()
    assert report.index("## ⚠ The best configuration does not beat chance") < report.index("## Data")
    assert "## Chance control" in report and "## Weighted layers" in report
    assert json.loads((out / "summary.json").read_text())["chance"]["beats_chance"] is False
