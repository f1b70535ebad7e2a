"""Report outputs: tables, JSON, figures and Markdown from a study on constructed data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from embedx.figures import plot_confusion, plot_layer_curve
from embedx.probing.data import Block, Dataset, FeatureConfig
from embedx.probing.report import summary_records, write_report
from embedx.probing.study import StudySettings, run_study


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
    return run_study(ds, StudySettings(models=models, **{"n_boot": 100, "threads": 1, **settings}))


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
    assert data["best"]["p_set"] is None or data["best"]["p_set"] >= 0.05  # NaN -> null
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


# -------------------------------------------- issue 13 / 9: statistics text and figures


def test_report_states_estimand_set_and_wilcoxon_floor(tmp_path):
    result = _study()
    report = write_report(result, tmp_path / "out")["report"].read_text()
    assert "estimand: the **uar of the pooled out-of-fold predictions**" in report
    assert "confidence set for the best configuration" in report
    assert "cannot go below 0.0312" in report  # 1 / 2**5, one-sided, 5 folds
    assert "selection-aware estimate" in report and "optimistic" in report
    worse = int(result.summary["worse_than_best"].sum())
    assert 0 < worse < 7  # the set holds some, not all: named in the report with the count outside
    assert f"The 95% confidence set for the best holds {8 - worse} of 8 configurations: `" in report
    assert f"the data do not single out one best ({worse} significantly worse)" in report


def test_bootstrap_zero_makes_no_comparison_claim(tmp_path):
    result = _study(n_boot=0)
    assert not result.summary["worse_than_best"].any() and result.summary["ci_low"].isna().all()
    report = write_report(result, tmp_path / "out")["report"].read_text()
    assert "statistics: none (--bootstrap 0)" in report
    assert "not significantly worse" not in report and "confidence set for the best configuration (" not in report
    assert "No configuration was compared with the best" in report


def test_constant_predictions_warning_in_summary_csv_and_report(tmp_path):
    result = _study()
    s = result.summary
    s.loc[3, "warning"] = "constant out-of-fold predictions (always 'sad'): the model learned nothing"
    files = write_report(result, tmp_path / "out")
    summary = pd.read_csv(files["summary"], dtype={"warning": str}, keep_default_na=False)
    assert summary.loc[3, "warning"].startswith("constant out-of-fold predictions")
    assert "## Warnings" in files["report"].read_text()
    assert "always 'sad'" in files["report"].read_text()


def _curve_summary():
    return pd.DataFrame({
        "feature_set": ["b", "b", "a", "a", "b", "b"], "pooling": "mean", "layer": [0, 1, 0, 1, 0, 1],
        "model": ["m2", "m2", "m1", "m1", "m1", "m1"], "concat": False,
        "uar_pooled": [0.9, 0.95, 0.5, 0.7, 0.3, 0.2], "ci_low": [0.8, 0.9, 0.4, 0.6, 0.2, 0.1],
        "ci_high": [0.97, 1.0, 0.6, 0.8, 0.4, 0.3],
    })


def test_layer_curve_chance_legend_order_and_labels(tmp_path):
    from embedx.figures import layer_curve_figure
    from embedx.probing.metrics import chance_level

    assert chance_level("uar", np.arange(8) % 4)[:2] == (0.25, "chance = 1/4 (random guess)")
    assert chance_level("ccc", np.ones(3))[0] == 0.0 and chance_level("nope", np.ones(3)) is None
    fig = layer_curve_figure(_curve_summary(), "uar", panels=[("a", "mean"), ("b", "mean")],
                             models=["m1", "m2"], chance=chance_level("uar", np.arange(6) % 3))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["a (mean)", "b (mean)"]  # order requested
    chance = [line for line in axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(1 / 3)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["m1", "m2", "chance = 1/3 (random guess)"]
    assert axes[0].get_ylabel() == "uar (pooled out-of-fold, 95% CI)"
    # the legend lies outside every axes: it covers no data
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent())
    # the same model has the same colour in every panel
    colours = [(c.get_label(), c.lines[0].get_color()) for ax in axes for c in ax.containers]
    assert [c[0] for c in colours] == ["m1", "m1", "m2"]
    assert colours[0][1] == colours[1][1] != colours[2][1]
    # CI error bars: asymmetric, from ci_low to ci_high
    bars = axes[0].collections[0].get_segments()
    assert bars[0][0][1] == pytest.approx(0.4) and bars[0][1][1] == pytest.approx(0.6)
    import matplotlib.pyplot as plt

    plt.close(fig)
    one = layer_curve_figure(_curve_summary().assign(ci_low=np.nan, ci_high=np.nan), "uar", single_split=True)
    assert one.axes[0].get_ylabel() == "uar (on the dev/test part (one split))"
    plt.close(one)
    assert plot_layer_curve(_curve_summary(), "uar", tmp_path / "c.png",
                            chance=chance_level("uar", np.arange(6) % 3))


def test_layer_curve_dodges_models_and_marks_the_confidence_set():
    import matplotlib.pyplot as plt

    from embedx.figures import SET_LABEL, WORSE_LABEL, layer_curve_figure

    summary = _curve_summary().assign(worse_than_best=[False, False, True, False, True, True])
    fig = layer_curve_figure(summary, "uar", panels=[("a", "mean"), ("b", "mean")], models=["m1", "m2"])
    b = fig.axes[1]
    # the two models' points in panel b sit either side of each layer, so their error bars differ in x
    x = {c.get_label(): c.lines[0].get_xdata() for c in b.containers}
    assert x["m1"] == pytest.approx([-0.04, 0.96]) and x["m2"] == pytest.approx([0.04, 1.04])
    # filled markers: in the confidence set (m2 at layers 0, 1 of b); hollow: significantly worse (m1 in b)
    from matplotlib.colors import to_rgba

    marks = [line for line in b.get_lines()
             if line.get_linestyle() == "None" and line.get_marker() == "o" and len(line.get_xdata())]
    white = to_rgba("white")
    filled = {(line.get_color(), tuple(line.get_xdata())) for line in marks
              if to_rgba(line.get_markerfacecolor()) != white}
    hollow = {(line.get_color(), tuple(line.get_xdata())) for line in marks
              if to_rgba(line.get_markerfacecolor()) == white}
    assert filled == {("C1", (0.04, 1.04))} and hollow == {("C0", (-0.04, 0.96))}
    assert [t.get_text() for t in fig.legends[0].get_texts()][-2:] == [SET_LABEL, WORSE_LABEL]
    plt.close(fig)
