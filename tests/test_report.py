"""Report outputs: tables, JSON, figures and Markdown from a study on constructed data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from embedx.fit.data import Block, Dataset, FeatureConfig
from embedx.fit.study import StudySettings, run_study
from embedx.report import plot_confusion, plot_layer_curve, summary_records, write_report


def _study(task="classification", concat=False, num_groups=6, **settings):
    rng = np.random.default_rng(0)
    n, dim = 90, 6
    y = np.arange(n) % 3
    groups = np.array([f"s{s}" for s in (np.arange(n) // 3) % num_groups])
    configs, X = [], {}
    for layer in range(4):
        config = FeatureConfig((Block("set", layer, "mean"),))
        signal = (1.0 + layer) * np.eye(3, dim)[y]  # later layers know more
        X[config.name] = (rng.normal(size=(n, dim)) + signal).astype(np.float32)
        configs.append(config)
    if concat:
        fused = FeatureConfig(tuple(c.blocks[0] for c in configs[:2]))
        X = {fused.name: np.hstack([X[c.name] for c in configs[:2]])}
        configs = [fused]
    target = y if task == "classification" else X[configs[-1].name][:, 0].astype(np.float64)
    ds = Dataset(configs=configs, X=X, y=target, task=task,
                 classes=["angry", "happy", "sad"] if task == "classification" else None,
                 groups=groups, split=None, ids=np.array([f"u{i}" for i in range(n)]),
                 paths=np.array([f"u{i}.wav" for i in range(n)]), rows=np.arange(n), label="emotion",
                 group="speaker", store="mem.h5", skipped={"no label": 4})
    models = ["logreg", "ridge"] if task == "classification" else ["ridge"]
    return run_study(ds, StudySettings(models=models, n_boot=100, threads=1, **settings))


def test_write_report_classification(tmp_path):
    result = _study()
    files = write_report(result, tmp_path / "out", command="embedx fit -f mem.h5")
    for key in ("results", "summary", "summary_json", "layer_curve", "confusion", "report", "model",
                "predictions"):
        assert files[key].exists() and files[key].stat().st_size > 0, key
    assert files["layer_curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = pd.read_csv(files["results"])
    summary = pd.read_csv(files["summary"])
    assert len(results) == 4 * 2 * 5 and len(summary) == 8
    # summary = mean / std over the per-fold rows, which are kept
    row = summary.iloc[0]
    folds = results[(results["config"] == row["config"]) & (results["model"] == row["model"])]
    assert row["uar_mean"] == pytest.approx(folds["uar"].mean())
    assert row["uar_std"] == pytest.approx(folds["uar"].std(ddof=1))
    assert json.loads(row["fold_scores"]) == pytest.approx(folds["uar"].tolist())
    data = json.loads(files["summary_json"].read_text())
    assert data["best"]["config"] == row["config"] and data["data"]["classes"] == ["angry", "happy", "sad"]
    assert data["best"]["p_holm"] is None  # NaN -> null
    assert np.array(data["confusion_best"]).sum() == 90
    assert data["data"]["skipped"] == {"no label": 4}
    report = files["report"].read_text()
    assert "embedx fit -f mem.h5" in report and "Per-class recall" in report
    assert "optimistic" in report and "4 no label skipped" in report
    oof = pd.read_csv(files["predictions"])
    assert len(oof) == 90 and set(oof["prediction"]) <= {"angry", "happy", "sad"}


def test_write_report_regression_and_concat(tmp_path):
    result = _study(task="regression", concat=True)
    files = write_report(result, tmp_path / "out", save_model=False)
    assert "scatter" in files and "layer_curve" not in files and "model" not in files
    assert "ccc" in files["report"].read_text()


def test_plots_and_records(tmp_path):
    summary = pd.DataFrame({
        "feature_set": ["a"] * 4 + ["b"] * 2, "pooling": "mean", "layer": [0, 1, 0, 1, 0, 1],
        "model": ["m1", "m1", "m2", "m2", "m1", "m1"], "concat": False,
        "uar_mean": [0.5, 0.7, 0.4, 0.6, 0.3, 0.2], "uar_std": [0.1, 0.1, np.nan, 0.1, 0.0, 0.1],
    })
    assert plot_layer_curve(summary, "uar", tmp_path / "c.png")
    assert not plot_layer_curve(summary.assign(concat=True), "uar", tmp_path / "d.png")
    plot_confusion(np.array([[5, 1], [0, 0]]), ["x", "y"], tmp_path / "cm.png", "t")
    assert (tmp_path / "cm.png").stat().st_size > 0
    records = summary_records(summary)
    assert records[2]["uar_std"] is None and records[0]["layer"] == 0


def test_report_says_which_unit_the_bootstrap_resampled(tmp_path):
    six = write_report(_study(), tmp_path / "six", save_model=False)["report"].read_text()
    assert "resampling whole groups" in six
    # fewer than 5 groups: the bootstrap falls back to items, and the report must not claim groups
    four = write_report(_study(num_groups=4, n_splits=4), tmp_path / "four", save_model=False)["report"].read_text()
    assert "resampling whole groups" not in four
    assert "only 4 group(s) in the test parts, too few to resample groups" in four
