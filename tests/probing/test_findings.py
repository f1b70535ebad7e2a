"""The headline of a study (issue 19): ties, the confidence set, chance, why no CIs, the 80-column table."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from embedx.cli import app
from embedx.probing.data import Block, Dataset, FeatureConfig
from embedx.probing.findings import findings, headline_lines
from embedx.probing.study import StudySettings, run_study
from embedx.store import FeatureSetSpec, StoreWriter

LAYERS = (0, 1, 2, 3, 4)


def _store(path, *, num_speakers=10, same_layers=True, seed=0):
    """A store of 3 classes x ``num_speakers`` speakers; with ``same_layers`` every layer holds the same features."""
    rng = np.random.default_rng(seed)
    n, dim = 12 * num_speakers, 8
    y = np.arange(n) % 3
    spk = (np.arange(n) // 3) % num_speakers
    items = pd.DataFrame({"id": [f"u{i:03d}" for i in range(n)], "path": [f"w/u{i:03d}.wav" for i in range(n)],
                          "duration": 1.0, "sample_rate": 16000, "num_samples": 16000,
                          "label": [f"c{c}" for c in y], "speaker": [f"s{s:02d}" for s in spk]})
    one = rng.normal(size=(n, dim)) + 0.8 * np.eye(3, dim)[y]  # a modest class signal
    pooled = np.stack([one if same_layers else rng.normal(size=(n, dim)) + layer * 0.3 * np.eye(3, dim)[y]
                       for layer in LAYERS]).astype(np.float32)  # (layers, items, dim)
    with StoreWriter(path) as w:
        w.write_items(items)
        w.create_feature_set(FeatureSetSpec(
            name="toy", backend="hf", layers=LAYERS, dim=dim, poolings=("mean",), frames=False,
            dtype="float32", attrs={"model_id": "test/toy"}, config={"backend": "hf", "model": "test/toy"}))
        w.write("toy", np.arange(n), pooled={"mean": pooled})
    return path


def _fit(path, out, *extra):
    res = CliRunner().invoke(app, ["fit", "-f", str(path), "--label", "label", "--group", "speaker",
                                   "--threads", "1", "--no-save-model", "-q", "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_tie_is_named_and_no_configuration_is_called_best(tmp_path):
    """Every layer holds the same features: the 5 layers and the weighted configuration tie."""
    out = tmp_path / "r"
    console = _fit(_store(tmp_path / "same.h5"), out, "--models", "logreg", "--weighted-layers",
                   "--bootstrap", "100")
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 and summary["uar_pooled"].nunique() == 1  # the premise: a 6-way tie
    assert summary["fold_scores"].nunique() == 1
    score = f"{summary['uar_pooled'].iloc[0]:.3f}"
    assert f"6 configurations tie at uar {score}" in console and "none of them is best" in console
    assert "Their out-of-fold predictions are identical" in console
    rows = [line for line in console.splitlines() if "toy@" in line and "│" in line]
    assert len(rows) == 6 and all(re.search(r"│ tie\s+│$", line) for line in rows)
    assert "best " not in "".join(rows) and "│ best" not in console
    report = (out / "report.md").read_text()
    assert "## Best configuration: a 6-way tie" in report
    assert f"**6 configurations tie at uar {score}**" in report and "none of them is best" in report
    assert "**toy@0/mean** with" not in report and "| best |" not in report
    ranking = [line for line in report.splitlines() if line.startswith("| ") and "`toy@" in line]
    assert len(ranking) == 6 and all(line.endswith("| tie |") for line in ranking)
    data = json.loads((out / "summary.json").read_text())
    assert len(data["tied"]) == 6 and data["chance_level"] == pytest.approx(1 / 3)


def _study(**settings):
    rng = np.random.default_rng(0)
    n, dim = 90, 6
    y = np.arange(n) % 3
    groups = np.array([f"s{s}" for s in (np.arange(n) // 3) % 6])
    configs, X = [], {}
    for layer in range(4):
        config = FeatureConfig((Block("set", layer, "mean"),))
        X[config.name] = (rng.normal(size=(n, dim)) + (1.0 + layer) * np.eye(3, dim)[y]).astype(np.float32)
        configs.append(config)
    ds = Dataset(configs=configs, X=X, y=y, task="classification", classes=["a", "b", "c"], groups=groups,
                 split=None, ids=np.array([f"u{i}" for i in range(n)]), paths=np.array([f"u{i}.wav" for i in range(n)]),
                 rows=np.arange(n), label="emotion", group="speaker", store="mem.h5", skipped={})
    return run_study(ds, StudySettings(models=["logreg", "ridge"], **{"n_boot": 100, "threads": 1, **settings}))


@pytest.fixture(scope="module")
def study():
    return _study()


def test_tie_detection_by_value(study):
    s = study.summary
    base = findings(study)
    assert not base.is_tie and base.tied == [tuple(s.loc[0, ["config", "model"]])]
    patched = study.summary.copy()
    best = patched.loc[0, "uar_pooled"]
    patched.loc[[1, 2], "uar_pooled"] = best
    patched.loc[3, "uar_pooled"] = best - 1e-6  # close is not equal
    tied = dataclasses.replace(study, summary=patched)
    found = findings(tied)
    assert found.tied == [tuple(patched.loc[i, ["config", "model"]]) for i in range(3)]
    assert not found.tied_predictions and not found.tied_folds
    assert "They tie on the pooled score only; their per-fold scores differ." in headline_lines(found)[0]
    patched["fold_scores"] = [list(patched.loc[0, "fold_scores"])] * len(patched)
    found = findings(tied)
    assert found.tied_folds and "Their per-fold scores are identical too" in headline_lines(found)[0]
    assert headline_lines(found)[0].startswith("3 configurations tie at uar")


def test_best_versus_chance_by_value(study):
    chance = findings(study).chance
    assert chance.value == pytest.approx(1 / 3)
    for (low, high), verdict in (((0.40, 0.50), "better"), ((0.30, 0.50), "includes"), ((0.10, 0.30), "worse")):
        assert findings(_with_ci(study, low, high)).versus_chance == verdict
    assert "includes chance" in _chance(findings(_with_ci(study, 0.3, 0.5)))
    assert "lies above chance" in _chance(findings(_with_ci(study, 0.4, 0.5)))


def _with_ci(study, low, high, **changes):
    summary = study.summary.copy()
    summary.loc[0, ["ci_low", "ci_high"]] = [low, high]
    return dataclasses.replace(study, summary=summary, **changes)


def _chance(found):
    return next(line for line in headline_lines(found) if line.startswith("Chance level"))


def test_lower_is_better_metric_beats_chance_below_it():
    result = _study(metric="accuracy")
    found = findings(result)
    assert found.chance.value == pytest.approx(1 / 3)  # balanced classes: the majority share
    assert findings(_with_ci(result, 0.2, 0.3)).versus_chance == "worse"
    # a metric where lower is better: the same CI on the good side of chance is "better"
    lower = _with_ci(result, 0.2, 0.3, greater_is_better=False)
    assert findings(lower).versus_chance == "better"
    assert "lies below chance (lower is better)" in _chance(findings(lower))


def test_console_says_why_there_are_no_cis(tmp_path):
    path = _store(tmp_path / "s.h5", same_layers=False)
    console = _fit(path, tmp_path / "a", "--models", "logreg", "--bootstrap", "0")
    assert "No CIs or comparisons: --bootstrap 0 was given." in console
    assert "Chance level of uar: 0.333 (1/3 for 3 classes" in console and "untested without a CI" in console
    few = _store(tmp_path / "few.h5", num_speakers=4, same_layers=False)
    console = _fit(few, tmp_path / "b", "--models", "logreg", "--bootstrap", "50", "--folds", "4")
    reason = "No CIs or comparisons: only 4 speakers in the evaluated items; CIs and tests need at least 5."
    assert reason in console and reason in (tmp_path / "b" / "report.md").read_text()


def _console_of(monkeypatch, result, width=80):
    import embedx.cli as cli

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=width, color_system=None))
    cli._print_fit_summary(result, top=6)
    return buffer.getvalue()


def test_ranking_at_80_columns_never_breaks_a_name(monkeypatch, study):
    s = study.summary.copy()
    s["config"] = [f"hubert-large-ll60k@{i}/mean" if i % 2 else f"hubert-large-ll60k@weighted/mean-{i}"
                   for i in range(len(s))]
    s["model"] = ["weighted-linear" if i % 2 else "logreg" for i in range(len(s))]
    renamed = dataclasses.replace(study, summary=s)
    text = _console_of(monkeypatch, renamed)
    table = [line for line in text.splitlines() if "│" in line]
    frame = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]  # the table's lines
    assert len(table) == 6 and max(len(line) for line in frame) <= 80
    for config, model in zip(s["config"][:6], s["model"][:6], strict=True):
        assert any(config in line and model in line for line in table), config
    assert "2 more rows in summary.csv" in text
    assert "95% CI" in text  # the least important columns go first
    # names wider than the terminal: the table grows rather than breaking them
    s["config"] = ["x" * 85 + str(i) for i in range(len(s))]
    text = _console_of(monkeypatch, renamed)
    assert all(any(c in line for line in text.splitlines()) for c in s["config"][:6])


def test_a_wide_table_drops_columns_before_it_breaks_a_name():
    from embedx.probing.findings import fitted_table

    header = ["feature set", "best layer", "uar", "95% CI", "selection-aware", "95% CI ", "Δ to best set",
              "p (set)", "worse?"]
    rows = [["tiny-hubert-random", "0 (mean, weighted-linear)", "0.602", "0.440–0.763", "0.594",
             "0.437–0.751", "–", "–", "best"],
            ["tiny-hubert", "4 (mean, logreg)", "0.586", "0.463–0.709", "0.586", "0.463–0.709", "0.016",
             "0.058", "no"]]
    drop = ["95% CI ", "selection-aware", "p (set)", "Δ to best set", "95% CI"]
    table, need = fitted_table("sets", header, rows, names=2, drop=drop, width=80)
    text = io.StringIO()
    Console(file=text, width=80).print(table)
    lines = text.getvalue().splitlines()
    assert need <= 80 and max(len(line) for line in lines) <= 80
    for name, best in ((r[0], r[1]) for r in rows):  # whole, on one line
        assert any(name in line and best in line for line in lines), name
    assert "worse?" in text.getvalue() and "selection-aware" not in text.getvalue()
    wide, need = fitted_table("sets", header, rows, names=2, drop=drop, width=200)
    assert need <= 200 and len(wide.columns) == len(header)  # room: nothing dropped


def test_without_a_ci_the_permutation_test_is_named_as_the_test_of_chance():
    import dataclasses

    found = findings(_study(metric="accuracy"))
    untested = dataclasses.replace(found, versus_chance=None, p_permutation=None)
    assert _chance(untested).endswith(", untested without a CI.")
    tested = dataclasses.replace(found, versus_chance=None, p_permutation=0.0476)
    line = _chance(tested)
    assert "untested" not in line and line.endswith("; tested by label permutations: p_permutation = 0.0476.")
