"""Two-way folds (``fit --cross-group sentence``): neither a speaker nor a sentence on both sides.

The property is checked on random designs over several seeds (complete and with items missing),
the left-out counts against an independent count of the items that share a held-out speaker or
a held-out sentence (but not both), and the whole path through the real CLI on a store whose
items carry a sentence column.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import ConfigError, DataError
from embedx.probing.cv import make_folds
from embedx.probing.twoway import balanced_assignment, two_way_splits

from .conftest import LAYERS, write_store


def _design(rng, num_speakers, num_sentences, reps=1, drop=0.0):
    """Items of a speaker × sentence design (``reps`` per cell, a fraction ``drop`` missing)."""
    spk = np.repeat(np.arange(num_speakers), num_sentences * reps)
    sent = np.tile(np.repeat(np.arange(num_sentences), reps), num_speakers)
    keep = rng.random(len(spk)) >= drop
    return np.char.add("s", spk[keep].astype(str)), np.char.add("t", sent[keep].astype(str))


def _independent_left_out(spk, sent, test):
    """Items that share exactly one of (speaker, sentence) with the test part of a fold."""
    held_spk, held_sent = np.isin(spk, spk[test]), np.isin(sent, sent[test])
    return int((held_spk ^ held_sent).sum())


@pytest.mark.parametrize("seed", range(8))
def test_no_speaker_and_no_sentence_is_on_both_sides_of_any_fold(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 6))
    drop = 0.0 if seed % 2 == 0 else 0.15
    spk, sent = _design(rng, int(rng.integers(k, 13)), int(rng.integers(k, 11)), int(rng.integers(1, 4)), drop)
    splits, left_out = two_way_splits(spk, sent, k, seed)
    assert len(splits) == len(left_out) == k
    tested = np.concatenate([te for _, te in splits])
    assert len(tested) == len(np.unique(tested))  # every item tested at most once
    for (train, test), out in zip(splits, left_out, strict=True):
        assert len(test) and len(train) and not np.intersect1d(train, test).size
        assert not np.intersect1d(spk[train], spk[test]).size, "a speaker crosses the split"
        assert not np.intersect1d(sent[train], sent[test]).size, "a sentence crosses the split"
        assert out == len(spk) - len(train) - len(test)
        if drop == 0.0:  # complete design: every held-out speaker reads every held-out sentence
            assert out == _independent_left_out(spk, sent, test)
            # the training part is everything that shares neither with the test part
            expected = np.flatnonzero(~np.isin(spk, spk[test]) & ~np.isin(sent, sent[test]))
            np.testing.assert_array_equal(train, expected)
    # the test blocks tile the speakers and the sentences: no speaker or sentence tested twice
    assert sum(len(np.unique(spk[te])) for _, te in splits) == len(np.unique(spk[tested]))
    assert sum(len(np.unique(sent[te])) for _, te in splits) == len(np.unique(sent[tested]))


def test_left_out_counts_of_a_complete_design_by_formula():
    """6 speakers × 4 sentences × 2 repetitions in 2 folds: each fold holds out 3 speakers and 2
    sentences, tests 3·2·2 = 12 items, trains on 12 and leaves out (3·2 + 3·2)·2 = 24."""
    spk, sent = _design(np.random.default_rng(0), 6, 4, reps=2)
    splits, left_out = two_way_splits(spk, sent, 2, seed=3)
    assert left_out == (24, 24)
    assert [(len(tr), len(te)) for tr, te in splits] == [(12, 12), (12, 12)]


def test_assignment_is_balanced_seeded_and_uses_every_fold():
    values = np.repeat([f"v{i}" for i in range(11)], 3)
    a, b = balanced_assignment(values, 4, np.random.default_rng(1)), balanced_assignment(values, 4, np.random.default_rng(1))
    assert a == b
    assert sorted(np.bincount(list(a.values()), minlength=4).tolist()) == [2, 3, 3, 3]
    assert a != balanced_assignment(values, 4, np.random.default_rng(2))


def test_make_folds_chooses_fewer_folds_for_few_speakers_and_leave_one_speaker_out():
    spk, sent = _design(np.random.default_rng(0), 3, 8, reps=2)
    y = np.arange(len(spk)) % 2
    folds = make_folds(y, groups=spk, crossed=sent, num_classes=2, group_name="speaker", crossed_name="sentence")
    assert (folds.scheme, folds.n_splits) == ("two-way", 3)
    assert folds.reason == "3 'speaker' values < 5 folds: two-way, 3 folds"
    assert len(folds.left_out) == 3 and "no 'speaker' and no 'sentence'" in folds.notes[0]
    logo = make_folds(y, scheme="logo", groups=spk, crossed=sent, num_classes=2)
    assert logo.n_splits == 3 and all(len(np.unique(spk[te])) == 1 for _, te in logo.splits)
    with pytest.raises(DataError, match=r"only 3 values of 'speaker' cannot be split into 5 two-way folds; use folds=3 or fewer"):
        make_folds(y, n_splits=5, groups=spk, crossed=sent)
    with pytest.raises(ConfigError, match="cannot be two-way"):
        make_folds(y, scheme="stratified", groups=spk, crossed=sent)
    with pytest.raises(ConfigError, match="need a first group column"):
        make_folds(y, groups=None, crossed=sent)


def test_a_design_where_no_item_pairs_a_fold_fails_in_one_line():
    # 3 folds of 3 speakers and 3 sentences need 3 diagonal cells; a reads x and y, b and c only z
    spk, sent = np.array(["a", "a", "b", "c"]), np.array(["x", "y", "z", "z"])
    with pytest.raises(DataError, match="no assignment of 50 tried gives every two-way fold a test and a training item"):
        two_way_splits(spk, sent, 3, 0)


@pytest.fixture
def read_sentences(tmp_path):
    """72 items: 6 speakers × 6 sentences × 2 classes (every speaker reads every sentence in both);
    the class is planted in layer 3."""
    rng = np.random.default_rng(0)
    spk, sent = _design(rng, 6, 6, reps=2)
    y = np.arange(len(spk)) % 2
    n = len(spk)
    items = pd.DataFrame({
        "id": [f"u{i:03d}" for i in range(n)], "path": [f"wavs/u{i:03d}.wav" for i in range(n)],
        "duration": 1.0, "sample_rate": 16000, "num_samples": 16000,
        "label": [f"c{c}" for c in y], "speaker": spk, "sentence": sent,
    })
    pooled = rng.normal(0, 1, (len(LAYERS), n, 8)).astype(np.float32)  # (layers, items, dim)
    pooled[3, :, 0] += 3.0 * y
    return write_store(tmp_path / "feats.h5", items, {"toy": (pooled, LAYERS)}), items


def test_fit_cross_group_through_the_cli(read_sentences, tmp_path):
    path, items = read_sentences
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--group", "speaker",
                                   "--cross-group", "sentence", "--folds", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    folds = json.loads((out / "summary.json").read_text())["folds"]
    assert (folds["scheme"], folds["n_splits"]) == ("two-way", 3)
    preds = pd.read_csv(out / "predictions_best.csv").merge(items, on="id")
    results = pd.read_csv(out / "results.csv")
    best = results[(results["config"] == "toy@3/mean") & (results["model"] == "logreg")].sort_values("fold")
    spk, sent = items["speaker"].to_numpy(), items["sentence"].to_numpy()
    for k, part in preds.groupby("fold"):
        held_spk, held_sent = np.isin(spk, part["speaker"]), np.isin(sent, part["sentence"])
        assert len(part) == (held_spk & held_sent).sum() == 8  # the whole 2 × 2 × 2 block is tested
        n_train = int((~held_spk & ~held_sent).sum())  # 4 × 4 × 2: 2 speakers, 2 sentences held out
        assert best["n_train"].iloc[k] == n_train == 32
        assert folds["left_out"][k] == int((held_spk ^ held_sent).sum()) == len(items) - n_train - len(part)
        other = preds[preds["fold"] != k]
        assert not set(part["speaker"]) & set(other["speaker"])
        assert not set(part["sentence"]) & set(other["sentence"])
    line = "items left out of each fold: " + ", ".join(map(str, folds["left_out"]))
    assert line in " ".join(res.output.split())
    report = (out / "report.md").read_text()
    assert ("neither a `speaker` nor a `sentence` value is on both sides of a fold; items left out of each "
            "fold (a held-out one with a training other): " + ", ".join(map(str, folds["left_out"]))) in report
    # the report's data section says how few of the items are scored and trained on
    assert "- items used: 72\n- items scored (in a test part): 24 of 72; training parts of 32–32 items" in report
    assert pd.read_csv(out / "summary.csv").iloc[0]["config"] == "toy@3/mean"  # the planted layer wins


def test_quiet_fit_still_says_how_many_items_two_way_folds_score(read_sentences, tmp_path):
    """-q hid the left-out line, and no line said that only 24 of the 72 items were scored."""
    path, _ = read_sentences
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "--group", "speaker", "--cross-group",
                                   "sentence", "--folds", "3", "-q", "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    folds = json.loads((tmp_path / "r" / "summary.json").read_text())["folds"]
    scored = len(pd.read_csv(tmp_path / "r" / "predictions_best.csv"))
    assert scored == sum(folds["test_sizes"]) == 24
    line = ("two-way folds (speaker × sentence): 24 of 72 items scored (each once), items left out of each "
            "fold: " + ", ".join(map(str, folds["left_out"])))
    assert line in res.output.splitlines(), res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--cross-group", "sentense"], "unknown cross-group column 'sentense'; available: id, path, duration, "
                                    "sample_rate, num_samples, label, speaker, sentence"),
    (["--cross-group", "sentence", "--no-group"], "--cross-group sentence crosses a second group with the first"),
    (["--cross-group", "sentence", "--cv", "stratified"], "--cv stratified cannot be two-way"),
])
def test_cross_group_errors_are_one_line(read_sentences, tmp_path, args, message):
    path, _ = read_sentences
    res = CliRunner().invoke(app, ["fit", "--features", str(path), "-o", str(tmp_path / "r"), *args])
    assert res.exit_code != 0
    assert message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output
