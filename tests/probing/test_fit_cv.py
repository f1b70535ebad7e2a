"""Splitters: grouped folds never share a group, folds are seeded and checked."""

from __future__ import annotations

import numpy as np
import pytest

from embedx.cli import flag
from embedx.errors import ConfigError, DataError
from embedx.probing.cv import available_splitters, check_inner_groups, make_folds


def _data(n=120, k=3, speakers=12):
    y = np.arange(n) % k
    groups = np.array([f"s{s:02d}" for s in (np.arange(n) // k) % speakers])
    return y, groups


@pytest.mark.parametrize("scheme,task", [("group", "classification"), ("group", "regression"),
                                         ("logo", "classification"), ("auto", "classification")])
def test_grouped_folds_never_share_a_group(scheme, task):
    y, groups = _data()
    target = y if task == "classification" else np.random.default_rng(0).normal(size=len(y))
    folds = make_folds(target, scheme=scheme, n_splits=4, seed=3, groups=groups, task=task,
                       num_classes=3 if task == "classification" else None)
    assert folds.scheme in ("group", "logo")
    tested = np.concatenate([te for _, te in folds.splits])
    assert sorted(tested) == list(range(len(y)))  # every item tested exactly once
    for train, test in folds.splits:
        assert len(np.intersect1d(train, test)) == 0
        assert not set(groups[train]) & set(groups[test])
    if scheme == "logo":
        assert folds.n_splits == 12


def test_stratified_folds_are_balanced_and_seeded():
    y, _ = _data()
    a = make_folds(y, scheme="stratified", n_splits=5, seed=0, num_classes=3)
    b = make_folds(y, scheme="stratified", n_splits=5, seed=0, num_classes=3)
    c = make_folds(y, scheme="stratified", n_splits=5, seed=1, num_classes=3)
    for (tr1, te1), (tr2, te2) in zip(a.splits, b.splits, strict=True):
        np.testing.assert_array_equal(te1, te2)
        np.testing.assert_array_equal(tr1, tr2)
        assert np.bincount(y[te1]).tolist() == [8, 8, 8]
    assert any(not np.array_equal(x[1], z[1]) for x, z in zip(a.splits, c.splits, strict=True))


def test_stratified_with_groups_is_flagged():
    y, groups = _data()
    folds = make_folds(y, scheme="stratified", groups=groups, num_classes=3)
    assert any("NOT speaker-independent" in n for n in folds.notes)


def test_predefined_split_with_dev_and_test():
    y, groups = _data()
    split = np.where(np.arange(120) < 80, "train", np.where(np.arange(120) < 100, "dev", "Test "))
    folds = make_folds(y, scheme="predefined", split=split, num_classes=3)
    (train, test), = folds.splits
    np.testing.assert_array_equal(train, np.arange(80))
    np.testing.assert_array_equal(test, np.arange(80, 100))
    np.testing.assert_array_equal(folds.holdout[0], np.arange(100))
    np.testing.assert_array_equal(folds.holdout[1], np.arange(100, 120))
    # without dev the test part is the fold, and the report is warned
    split2 = np.where(np.arange(120) < 80, "train", "test")
    folds2 = make_folds(y, scheme="predefined", split=split2, num_classes=3)
    assert folds2.holdout is None and any("optimistic" in n for n in folds2.notes)
    with pytest.raises(DataError, match="'valid'; accepted: train, dev, test"):
        make_folds(y, scheme="predefined", split=np.where(np.arange(120) < 80, "train", "valid"))
    with pytest.raises(ConfigError, match="split_col='COLUMN'"):
        make_folds(y, scheme="predefined")


def test_errors():
    y, groups = _data()
    with pytest.raises(ConfigError, match="unknown CV scheme 'kfolds'; accepted: auto, stratified, kfold"):
        make_folds(y, scheme="kfolds")
    with pytest.raises(ConfigError, match="needs a group column"):
        make_folds(y, scheme="group")
    with pytest.raises(DataError, match="only 12 groups cannot be split into 13"):
        make_folds(y, scheme="group", n_splits=13, groups=groups, num_classes=3)
    # one speaker holds all of class 2: a group fold without that class in training
    y2 = y.copy()
    y2[groups == "s00"] = 2
    y2[(groups != "s00") & (y2 == 2)] = 0
    with pytest.raises(DataError, match="class 'c2' occurs only in group \\(speaker\\) 's00', so no "
                                        "speaker-independent fold can train on it"):
        make_folds(y2, scheme="logo", groups=groups, num_classes=3, class_names=["c0", "c1", "c2"])
    with pytest.raises(DataError, match="use fewer folds"):
        make_folds(np.array([0] * 10 + [1] * 3), scheme="stratified", n_splits=5, num_classes=2)
    assert available_splitters() == ["auto", "stratified", "kfold", "group", "logo", "predefined"]


def test_auto_with_fewer_speakers_than_folds_is_leave_one_speaker_out():
    y, groups = _data(n=40, k=4, speakers=4)  # 10 items per speaker, every speaker every class
    folds = make_folds(y, groups=groups, num_classes=4, group_name="speaker")
    assert folds.scheme == "logo"
    assert folds.n_splits == len(np.unique(groups)) == 4
    assert folds.reason == "4 speakers < 5 folds: leave-one-speaker-out, 4 folds"
    held_out = []
    for train, test in folds.splits:
        assert not set(groups[train]) & set(groups[test])  # no speaker on both sides
        assert len(set(groups[test])) == 1  # one speaker per test part
        assert set(y[train]) == {0, 1, 2, 3}  # every class in every training part
        held_out.append(groups[test][0])
    assert sorted(held_out) == ["s00", "s01", "s02", "s03"]
    np.testing.assert_array_equal(np.sort(np.concatenate([te for _, te in folds.splits])), np.arange(40))
    # a column that is not a speaker column is named as what it is
    other = make_folds(y, groups=groups, num_classes=4, group_name="session")
    assert other.reason == "4 'session' groups < 5 folds: leave-one-group-out, 4 folds"


def test_auto_keeps_its_default_when_the_data_allow_it():
    y, groups = _data(n=60, k=3, speakers=5)
    folds = make_folds(y, groups=groups, num_classes=3)
    assert (folds.scheme, folds.n_splits, folds.reason) == ("group", 5, "")
    folds = make_folds(y, num_classes=3)
    assert (folds.scheme, folds.n_splits, folds.reason) == ("stratified", 5, "")


def test_auto_without_groups_uses_as_many_folds_as_the_smallest_class_has_items():
    y = np.array([0] * 10 + [1] * 3)
    folds = make_folds(y, num_classes=2)
    assert (folds.scheme, folds.n_splits) == ("stratified", 3)
    assert folds.reason == "smallest class has 3 items < 5 folds: stratified, 3 folds"
    for _, test in folds.splits:
        assert np.bincount(y[test], minlength=2)[1] == 1  # each fold tests one item of the small class


@pytest.mark.parametrize("kwargs", [{"n_splits": 5}, {"scheme": "group"}, {"scheme": "group", "n_splits": 5}])
def test_explicit_folds_or_scheme_that_cannot_work_fail_saying_what_works(kwargs):
    y, groups = _data(n=40, k=4, speakers=4)
    with pytest.raises(DataError) as err:
        make_folds(y, groups=groups, num_classes=4, **kwargs)
    assert str(err.value) == ("only 4 groups cannot be split into 5 group folds; use cv='logo' "
                              "(one fold per group, 4 folds) or folds=4 or fewer")
    assert err.value.render(flag) == ("only 4 groups cannot be split into 5 group folds; use --cv logo "
                                      "(one fold per group, 4 folds) or --folds 4 or fewer")


def test_explicit_fewer_folds_are_used_as_given():
    y, groups = _data(n=40, k=4, speakers=4)
    folds = make_folds(y, groups=groups, n_splits=2, num_classes=4)
    assert (folds.scheme, folds.n_splits, folds.reason) == ("group", 2, "")


def test_tuning_needs_as_many_groups_as_inner_folds_in_every_training_part():
    y, groups = _data(n=30, k=2, speakers=3)
    folds = make_folds(y, groups=groups, num_classes=2)  # leave-one-speaker-out: 2 per training part
    check_inner_groups(folds, groups, 2)
    with pytest.raises(ConfigError) as err:
        check_inner_groups(folds, groups, 3)
    assert str(err.value) == ("inner_folds=3 needs 3 groups (speakers) in every training part, but "
                              "fold 0 of the logo CV trains on 2; use inner_folds=2")
    assert err.value.render(flag) == ("--inner-folds 3 needs 3 groups (speakers) in every training part, "
                                      "but fold 0 of the logo CV trains on 2; use --inner-folds 2")


def test_auto_leave_one_speaker_out_with_a_speaker_of_one_class():
    y, groups = _data(n=40, k=4, speakers=4)
    y = y.copy()
    y[groups == "s03"] = 0  # s03 speaks class 0 only; the others every class
    folds = make_folds(y, groups=groups, num_classes=4)
    assert (folds.scheme, folds.n_splits) == ("logo", 4)
    tests = {groups[te][0]: set(y[te].tolist()) for _, te in folds.splits}
    assert tests["s03"] == {0}  # a test part of one class is allowed
    assert all(set(y[tr].tolist()) == {0, 1, 2, 3} for tr, _ in folds.splits)
