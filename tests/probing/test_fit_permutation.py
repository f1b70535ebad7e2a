"""Chance control: permutation p-values by hand, label permutations that keep the folds, the study."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from embedx.errors import ConfigError
from embedx.probing.data import load_dataset
from embedx.probing.permutation import permutation_p, permutation_scheme, permuted_labels
from embedx.probing.study import StudySettings, run_study

FAST = {"n_boot": 100, "threads": 1}


def test_permutation_p_hand_computed():
    # 2 of 4 permuted scores are >= 0.8 (0.8 ties count): p = (1 + 2) / (1 + 4)
    assert permutation_p(0.8, np.array([0.5, 0.8, 0.9, 0.3])) == pytest.approx(3 / 5)
    # nothing reaches 0.95: the smallest possible p, 1 / (1 + N)
    assert permutation_p(0.95, np.array([0.5, 0.8, 0.9, 0.3])) == pytest.approx(1 / 5)
    # an error metric: "as good" is "as low"; 0.1 and 0.2 are <= 0.2, NaN never counts
    assert permutation_p(0.2, np.array([0.1, 0.3, 0.2, np.nan]), greater_is_better=False) == pytest.approx(3 / 5)
    # two configurations at once: 0.9 >= 0.8 once; 0.6 >= 0.55 once
    null = np.array([[0.5, 0.6], [0.7, 0.4], [0.9, 0.5]])
    np.testing.assert_allclose(permutation_p(np.array([0.8, 0.55]), null), [2 / 4, 2 / 4])
    # the max-statistic (family-wise) version: each permutation's best is 0.6, 0.7, 0.9
    np.testing.assert_allclose(permutation_p(np.array([0.8, 0.55]), null.max(axis=1)[:, None]), [2 / 4, 4 / 4])


def test_permuted_labels_keep_every_group_and_are_seeded():
    y = np.arange(60) % 3
    groups = np.array([f"s{(i // 3) % 10}" for i in range(60)])
    perms = permuted_labels(y, groups, 50, seed=7)
    assert perms.shape == (50, 60) and perms.dtype == y.dtype
    assert permutation_scheme(y, groups) == "within groups"
    for g in np.unique(groups):
        rows = groups == g
        assert (np.sort(perms[:, rows], axis=1) == np.sort(y[rows])).all()  # each speaker's labels kept
    assert (perms != y).any(axis=1).mean() > 0.9  # and their order broken
    np.testing.assert_array_equal(perms, permuted_labels(y, groups, 50, seed=7))
    assert not np.array_equal(perms, permuted_labels(y, groups, 50, seed=8))


def test_a_speaker_level_label_is_permuted_among_speakers():
    groups = np.repeat([f"s{g}" for g in range(8)], 5)
    y = np.repeat([0, 1, 0, 1, 0, 1, 0, 1], 5)  # e.g. gender: constant within a speaker
    assert permutation_scheme(y, groups) == "among groups"
    perms = permuted_labels(y, groups, 30, seed=0)
    for p in perms:
        assert all(len(np.unique(p[groups == g])) == 1 for g in np.unique(groups))  # still per speaker
        assert p.sum() == y.sum()
    assert (perms != y).any(axis=1).mean() > 0.5
    assert permutation_scheme(y, None) == "all items"


def test_study_p_values_match_an_independent_recomputation(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="2,3")
    n = 19
    result = run_study(ds, StudySettings(models=["logreg"], permutations=n, refit=False, **FAST))
    s = result.summary.set_index("config")
    # reference: the same folds and permutations through scikit-learn directly
    null = {}
    for name in ("toy@2/mean", "toy@3/mean"):
        scores = []
        for y in permuted_labels(ds.y, ds.groups, n, seed=0):
            pred = np.empty_like(y)
            for train, test in result.folds.splits:
                model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=0))
                pred[test] = model.fit(ds.X[name][train], y[train]).predict(ds.X[name][test])
            scores.append(balanced_accuracy_score(y, pred))
        null[name] = np.array(scores)
        observed = s.loc[name, "uar_pooled"]
        expected = (1 + np.sum(null[name] >= observed - 1e-12)) / (1 + n)
        assert s.loc[name, "p_permutation"] == pytest.approx(expected)
    best_null = np.maximum(null["toy@2/mean"], null["toy@3/mean"])
    for name in ("toy@2/mean", "toy@3/mean"):
        expected = (1 + np.sum(best_null >= s.loc[name, "uar_pooled"] - 1e-12)) / (1 + n)
        assert s.loc[name, "p_permutation_fwer"] == pytest.approx(expected)
    assert s.loc["toy@3/mean", "p_permutation"] == pytest.approx(1 / 20)  # the planted layer
    assert result.chance["beats_chance"] is True and result.chance["p_best"] == pytest.approx(1 / 20)
    assert not any(note.startswith("The best configuration does not beat chance") for note in result.notes)


def test_a_study_without_signal_says_first_that_it_does_not_beat_chance(toy_store):
    ds = load_dataset(toy_store(strength=0.0), label="label", group="speaker", layers="0,1")
    result = run_study(ds, StudySettings(models=["logreg"], permutations=19, refit=False, **FAST))
    assert result.chance["beats_chance"] is False and result.chance["p_best"] > 0.05
    assert result.notes[0].startswith("The best configuration does not beat chance")
    assert (result.summary["p_permutation_fwer"] >= result.summary["p_permutation"]).all()


def test_too_few_permutations_give_no_verdict_and_negative_is_refused(toy_store):
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="3")
    result = run_study(ds, StudySettings(models=["logreg"], permutations=4, refit=False, **FAST))
    assert result.chance["beats_chance"] is None and result.chance["min_p"] == pytest.approx(0.2)
    assert result.notes[0].startswith("The chance control is undecided")
    with pytest.raises(ConfigError, match="permutations=-1 not accepted; it must be >= 0"):
        run_study(ds, StudySettings(permutations=-1, **FAST))
