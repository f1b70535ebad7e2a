"""Frame-level and segment-level probing: labels, honest folds, the training cap, counts as
sufficient statistics, the reader's layer reads, and the promise through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from embedx.cli import app
from embedx.probing import metrics as M
from embedx.probing.compare import ClusterScores, compare_configurations, compare_scores
from embedx.probing.frames.labels import cap_training, frame_folds, label_frames
from embedx.store import StoreReader

from .conftest import planted, write_store
from .frames_support import (
    alignments_of,
    planted_frames,
    write_alignment_csv,
    write_frames_store,
)

LAYERS = (0, 1, 2, 3)


@pytest.fixture
def planted_store(tmp_path):
    items, segs, frames = planted_frames(unaligned=2)
    path = write_frames_store(tmp_path / "feats.h5", items, frames, LAYERS)
    csv = write_alignment_csv(tmp_path / "align.csv", segs, items)
    return path, csv, items, segs


def _table(items, segs, path, unlabelled="drop"):
    with StoreReader(path) as r:
        offsets, spec = r.frame_offsets("toy"), r.spec("toy")
    used = items.assign(row=np.arange(len(items)))
    return label_frames(offsets, spec, used, alignments_of(segs, items), unlabelled=unlabelled), offsets


def test_every_frame_gets_the_label_of_the_segment_covering_its_centre(planted_store):
    path, _, items, segs = planted_store
    table, offsets = _table(items, segs, path)
    # reference: frame i of an item is covered by [start, end) iff start <= 0.02 i + 0.0125 < end
    expect_rows, expect_labels = [], []
    for s in segs.itertuples():
        a = int(offsets[s.item])
        for i in range(int(offsets[s.item + 1] - a)):
            if s.start <= 0.02 * i + 0.0125 < s.end:
                expect_rows.append(a + i)
                expect_labels.append(s.label)
    order = np.argsort(expect_rows)
    np.testing.assert_array_equal(table.rows, np.asarray(expect_rows)[order])
    assert [table.classes[c] for c in table.y] == list(np.asarray(expect_labels)[order])
    # 22 aligned items lead with 3 uncovered frames (and 60 - 3 = 57 leave 3 at the end), 2 unaligned
    assert table.dropped == {"frames no segment covers (dropped)": 22 * 6,
                             "frames of items without alignments (dropped)": 2 * 60}
    assert len(table.items) == 22 and table.total_frames == 24 * 60


def test_unlabelled_frames_can_get_a_label_of_their_own(planted_store):
    path, _, items, segs = planted_store
    table, _ = _table(items, segs, path, unlabelled="sil")
    assert table.num_frames == 24 * 60 and "sil" in table.classes
    assert int((np.asarray(table.classes)[table.y] == "sil").sum()) == 22 * 6 + 2 * 60


def test_no_item_and_no_speaker_has_frames_in_train_and_test_of_any_fold(planted_store):
    path, _, items, segs = planted_store
    table, _ = _table(items, segs, path)
    speakers = table.items["speaker"].to_numpy()
    item_folds, folds = frame_folds(table, speakers, scheme="auto", n_splits=None, seed=0,
                                    group_name="speaker")
    assert folds.n_splits == 5
    tested = np.zeros(table.num_frames, int)
    for train, test in folds.splits:
        tested[test] += 1
        assert not set(table.item[train]) & set(table.item[test])
        assert not set(speakers[table.item[train]]) & set(speakers[table.item[test]])
    assert (tested == 1).all()  # every labelled frame is evaluated exactly once


def test_training_cap_is_seeded_class_stratified_and_bounded():
    y = np.repeat([0, 1, 2], [6000, 3000, 1000])
    train = np.arange(len(y))
    sample = cap_training(train, y, 1000, seed=3)
    assert len(sample) <= 1000 and len(np.unique(sample)) == len(sample)
    np.testing.assert_array_equal(np.bincount(y[sample]), [600, 300, 100])
    np.testing.assert_array_equal(sample, cap_training(train, y, 1000, seed=3))
    assert not np.array_equal(sample, cap_training(train, y, 1000, seed=4))
    np.testing.assert_array_equal(cap_training(train[:500], y, 1000, seed=0), train[:500])


def test_per_speaker_counts_reproduce_the_prediction_based_comparison():
    rng = np.random.default_rng(0)
    n, k, s = 3000, 3, 8
    y = rng.integers(0, k, n)
    groups = rng.integers(0, s, n)
    preds = [np.where(rng.random(n) < q, y, rng.integers(0, k, n)) for q in (0.7, 0.5, 0.45)]
    metric = M.get_metric("uar", M.CLASSIFICATION)
    ref, _ = compare_configurations(y, preds, metric, groups=groups, num_classes=k, alpha=0.05,
                                    n_perm=200, seed=1)
    counts = np.zeros((3, s, k, k))
    for j, p in enumerate(preds):
        np.add.at(counts[j], (groups, y, p), 1)
    got, _ = compare_scores(ClusterScores.from_counts(counts, metric), "group", alpha=0.05,
                            n_perm=200, seed=1)
    np.testing.assert_allclose(got.pooled, ref.pooled)
    np.testing.assert_allclose(got.ci_low, ref.ci_low)
    np.testing.assert_allclose(got.p_set, ref.p_set)
    np.testing.assert_array_equal(got.in_set, ref.in_set)
    assert got.nested["estimate"] == pytest.approx(ref.nested["estimate"])


def test_frames_layers_reads_what_frames_reads(planted_store):
    path = planted_store[0]
    with StoreReader(path) as r:
        got = r.frames_layers("toy", [3, 1], block_rows=100)
        every = np.concatenate([r.frames("toy", i) for i in range(r.num_items)])
    np.testing.assert_array_equal(got, every[:, [3, 1]].transpose(1, 0, 2))


def _fit(args):
    return CliRunner().invoke(app, ["fit", *map(str, args)])


@pytest.mark.parametrize("level,pooling", [("--frames", "frames"), ("--segments", "segment-mean")])
def test_the_planted_layer_wins_through_the_cli(planted_store, tmp_path, level, pooling):
    path, csv, _, _ = planted_store
    out = tmp_path / level.strip("-")
    res = _fit(["--features", path, "--alignments", csv, level, "-o", out, "--quiet"])
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(out / "summary.csv")
    assert {"config", "layer", "uar_pooled", "ci_low", "ci_high", "worse_than_best"} <= set(summary)
    assert summary.loc[0, "config"] == f"toy@2/{pooling}" and summary.loc[0, "layer"] == 2
    assert summary.loc[0, "uar_pooled"] > 0.85
    assert summary["worse_than_best"].iloc[1:].all()  # the other layers are significantly worse
    preds = pd.read_csv(out / "predictions_best.csv")
    # the estimand from per-speaker counts is the UAR of every held-out frame's prediction
    assert summary.loc[0, "uar_pooled"] == pytest.approx(
        balanced_accuracy_score(preds["true"], preds["prediction"]), abs=1e-12)
    assert (preds.groupby("id")["fold"].nunique() == 1).all()  # an item is tested in one fold
    report = (out / "report.md").read_text()
    assert f"## {'Frame' if level == '--frames' else 'Segment'}-level probing" in report
    assert "120 frames of items without alignments (dropped)" in report
    info = json.loads((out / "frames.json").read_text())
    assert info["labelled_frames"] == 22 * 54 and info["speakers"] == 6


def test_frame_study_with_lgbm_and_a_cap(planted_store, tmp_path):
    path, csv, _, _ = planted_store
    out = tmp_path / "r"
    res = _fit(["--features", path, "--alignments", csv, "--frames", "-m", "sgd,lgbm", "-o", out,
                "--max-train-frames", 300, "--quiet", "--layers", "1,2"])
    assert res.exit_code == 0, res.output
    results = pd.read_csv(out / "results.csv")
    assert (results["n_train_used"] <= 300).all() and (results["n_train"] > 300).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == {"sgd", "lgbm"}
    assert summary.loc[0, "layer"] == 2


@pytest.mark.parametrize("extra,message", [
    (["--frames"], "--frames needs --alignments PATH"),
    (["--frames", "--alignments", "A", "--weighted-layers"], "--weighted-layers is not available with --frames"),
    (["--frames", "--alignments", "A", "--permutations", "5"], "--permutations is not available with --frames"),
    (["--frames", "--segments", "--alignments", "A"], "--frames and --segments are two studies"),
])
def test_frame_option_errors_are_one_line(planted_store, tmp_path, extra, message):
    path, csv, _, _ = planted_store
    args = [a if a != "A" else csv for a in extra]
    res = _fit(["--features", path, *args, "-o", tmp_path / "r"])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_frames_on_a_store_without_frames_fails_in_one_line(tmp_path):
    items, pooled = planted(num_items=30)
    path = write_store(tmp_path / "p.h5", items, {"toy": (pooled, (0, 1, 2, 3, 4))})
    csv = tmp_path / "a.csv"
    pd.DataFrame({"id": ["u000"], "start": [0.0], "end": [0.5], "label": ["x"]}).to_csv(csv, index=False)
    res = _fit(["--features", path, "--frames", "--alignments", csv, "-o", tmp_path / "r"])
    assert res.exit_code != 0 and "extract with --frames" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_the_frame_benchmark_runs_small_and_finds_the_planted_layer(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "frame_probe.py"), "--items", "40", "--frames-per-item",
         "60", "--dim", "16", "--layers", "4", "--speakers", "5", "--classes", "3", "--strength", "1.5",
         "--max-train-frames", "1000", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2400 frames x 4 layers x 16 dims" in done.stdout
    for phase in ("write store", "read (1 passes", "fit", "evaluate", "statistics", "peak RSS overall"):
        assert phase in done.stdout
    assert "best: bench@3/frames (softmax)" in done.stdout
    results = pd.read_csv(tmp_path / "results" / "results.csv")
    assert (results["n_train_used"] <= 1000).all()


def test_softmax_probe_agrees_with_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from embedx.probing.frames.softmax import SoftmaxClassifier

    rng = np.random.default_rng(0)
    means = rng.normal(0, 0.5, (4, 20))
    y = rng.integers(0, 4, 6000)
    X = rng.normal(0, 1, (6000, 20)) + means[y]
    ours = SoftmaxClassifier(epochs=30, batch_size=256, random_state=0).fit(X[:4000], y[:4000])
    ref = LogisticRegression(max_iter=1000).fit(X[:4000], y[:4000])
    agree = np.mean(ours.predict(X[4000:]) == ref.predict(X[4000:]))
    assert agree > 0.97
    np.testing.assert_allclose(ours.predict_proba(X[:5]).sum(axis=1), 1.0, rtol=1e-5)
    assert abs(np.mean(ours.predict(X[4000:]) == y[4000:]) - np.mean(ref.predict(X[4000:]) == y[4000:])) < 0.02
    with pytest.raises(ValueError, match="classes must be given"):
        SoftmaxClassifier().partial_fit(X[:10], y[:10])
