"""A small corpus (4 speakers, 10 files each) works with `embedx fit`'s default options.

With fewer speakers than the default 5 folds, ``--cv auto`` runs leave-one-speaker-out and says
so on the console and in report.md; folds or a scheme given explicitly that cannot work fail in
one line that says what would.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx
from embedx.cli import app
from embedx.errors import DataError

from .conftest import LAYERS, planted, write_store

CHOICE = "4 speakers < 5 folds: leave-one-speaker-out, 4 folds"


@pytest.fixture
def four_speakers(tmp_path):
    """40 items, 4 speakers with 10 items each (5 of each of 2 classes); class info in layer 3."""
    items, pooled = planted(num_items=40, num_speakers=4, num_classes=2)
    assert items.groupby("speaker").size().tolist() == [10, 10, 10, 10]
    return write_store(tmp_path / "feats.h5", items, {"toy": (pooled, LAYERS)}), items


def _speakers_per_fold(out, items):
    preds = pd.read_csv(out / "predictions_best.csv").merge(items[["id", "speaker"]], on="id")
    return preds.groupby("fold")["speaker"].unique()


def test_default_fit_on_four_speakers_is_leave_one_speaker_out_and_says_so(four_speakers, tmp_path):
    path, items = four_speakers
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).count(CHOICE) == 1, res.output
    assert "(logo CV, 4 folds)" in res.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary.iloc[0]["config"] == "toy@3/mean"  # the planted layer still wins
    per_fold = _speakers_per_fold(out, items)
    assert len(per_fold) == 4 and all(len(s) == 1 for s in per_fold)  # one speaker per test part
    assert sorted(s[0] for s in per_fold) == ["s00", "s01", "s02", "s03"]
    report = (out / "report.md").read_text()
    assert f"- cross-validation: `logo`, 4 folds, seed 0; the same folds for every configuration and model " \
           f"(chosen by `--cv auto`: {CHOICE})" in report
    assert "too few for confidence intervals or tests over speakers" in report  # what it cannot say
    folds = json.loads((out / "summary.json").read_text())["folds"]
    assert (folds["scheme"], folds["n_splits"], folds["reason"]) == ("logo", 4, CHOICE)


def test_weighted_layers_and_chance_control_on_four_speakers(four_speakers, tmp_path):
    path, items = four_speakers
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--weighted-layers", "--permutations", "20",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert CHOICE in " ".join(res.output.split())
    summary = pd.read_csv(out / "summary.csv")
    assert "toy@weighted/mean" in set(summary["config"])
    p = summary["p_permutation"].to_numpy()
    assert np.all((p >= 1 / 21 - 1e-12) & (p <= 1))
    # the planted layer beats every permutation (within-speaker shuffles keep the 4 folds)
    assert summary.set_index("config").loc["toy@3/mean", "p_permutation"] == pytest.approx(1 / 21)
    weights = pd.read_csv(out / "layer_weights.csv")
    assert [c for c in weights.columns if c.startswith("fold_")] == ["fold_0", "fold_1", "fold_2", "fold_3"]
    assert np.allclose(weights[["fold_0", "fold_1", "fold_2", "fold_3"]].sum(), 1.0)
    report = (out / "report.md").read_text()
    assert "## Chance control" in report and CHOICE in report
    assert len(_speakers_per_fold(out, items)) == 4


@pytest.mark.parametrize("args", [["--folds", "5"], ["--cv", "5"], ["--cv", "group"]])
def test_explicit_folds_that_cannot_work_fail_in_one_line(four_speakers, tmp_path, args):
    path, _ = four_speakers
    out = tmp_path / "o"
    # -g speaker: no found-a-speaker-column line before the error
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "-g", "speaker", *args, "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == ("embedx: bad data: only 4 groups cannot be split into 5 group folds; "
                                  "use --cv logo (one fold per group, 4 folds) or --folds 4 or fewer")
    assert not out.exists()


def test_python_api_distinguishes_default_from_explicit_folds(four_speakers):
    path, _ = four_speakers
    lines = []
    result = embedx.fit(path, output=None, progress=False, log=lines.append)
    assert (result.study.folds.scheme, result.study.folds.n_splits) == ("logo", 4)
    assert result.study.folds.reason == CHOICE and CHOICE in lines
    with pytest.raises(DataError, match="only 4 groups cannot be split into 5 group folds; use cv='logo'"):
        embedx.fit(path, output=None, progress=False, folds=5)
