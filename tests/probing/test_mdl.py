"""MDL probing (`fit --mdl`): the online code by value, speaker blocks, and the report through the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import embedx
from embedx.errors import ConfigError, DataError
from embedx.probing.mdl import EPSILON, label_bits, online_code, speaker_blocks
from tests.clirun import run_embedx

from .conftest import LAYERS, planted, write_store


def _bits(p: float, k: int) -> float:
    """Bits of one label of probability ``p`` after the uniform mix (computed here, not by the module)."""
    return -np.log2((1 - EPSILON) * p + EPSILON / k)


def test_online_code_of_a_prior_probe_is_the_hand_computed_codelength():
    # K = 3; blocks [0 1 0 0] [1 1] [0 2 2]; the prior probe predicts the training class frequencies
    y = np.array([0, 1, 0, 0, 1, 1, 0, 2, 2])
    blocks = [np.arange(4), np.array([4, 5]), np.array([6, 7, 8])]
    code = online_code(DummyClassifier(strategy="prior"), np.zeros((9, 2)), y, blocks, 3)
    first = 4 * np.log2(3)  # the uniform code: log2 K bits per item
    second = 2 * _bits(1 / 4, 3)  # trained on [0 1 0 0]: p(1) = 1/4 -> 2 bits each
    third = _bits(3 / 6, 3) + 2 * _bits(0.0, 3)  # trained on [0 1 0 0 1 1]: class 2 never seen
    assert code.bits == pytest.approx([first, second, third], rel=1e-9)
    assert second == pytest.approx(4.0, abs=1e-4) and _bits(0.0, 3) == pytest.approx(np.log2(3e6), rel=1e-9)
    assert code.coders == ("uniform", "probe", "probe")
    assert code.uniform == pytest.approx(9 * np.log2(3))
    assert code.codelength == pytest.approx(first + second + third)
    assert code.compression == pytest.approx(9 * np.log2(3) / (first + second + third))


def test_a_block_after_one_class_is_sent_with_laplaces_rule():
    # logistic regression cannot learn from one class: the next block uses (n_k + 1) / (n + K)
    y = np.array([0, 0, 1, 0, 2, 1])
    X = np.random.default_rng(0).normal(size=(6, 3))
    blocks = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    code = online_code(LogisticRegression(), X, y, blocks, 3)
    assert code.coders == ("uniform", "prior", "probe")
    assert code.bits[1] == pytest.approx(_bits(1 / 5, 3) + _bits(3 / 5, 3), rel=1e-9)
    # the probe block against sklearn directly (an independent reference)
    ref = LogisticRegression().fit(X[:4], y[:4])
    p = ref.predict_proba(X[4:])  # classes 0 and 1 only: class 2 has probability 0
    assert list(ref.classes_) == [0, 1]
    assert code.bits[2] == pytest.approx(_bits(0.0, 3) + _bits(p[1, 1], 3), rel=1e-9)


def test_the_probe_is_trained_on_every_block_before_with_its_scaler_fitted_there_only():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 30)
    X = rng.normal(size=(60, 4)) + y[:, None] * 0.8
    order = rng.permutation(60)
    blocks = [order[:10], order[10:25], order[25:60]]
    est = make_pipeline(StandardScaler(), LogisticRegression())
    code = online_code(est, X, y, blocks, 2)
    expected = [10.0]  # 10 items * log2 2
    for j in (1, 2):
        train = np.concatenate(blocks[:j])
        ref = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[train], y[train])
        p = ref.predict_proba(X[blocks[j]])[np.arange(len(blocks[j])), y[blocks[j]]]
        expected.append(float(np.sum(_bits(p, 2))))
    assert code.bits == pytest.approx(expected, rel=1e-9)
    assert code.bits[0] == len(blocks[0]) * np.log2(2)


def test_label_bits_are_base_2():
    proba = np.array([[0.5, 0.25, 0.25], [0.125, 0.875, 0.0]])
    assert label_bits(proba, np.array([1, 0])) == pytest.approx(_bits(0.25, 3) + _bits(0.125, 3), rel=1e-9)
    assert label_bits(proba, np.array([1, 0])) == pytest.approx(5.0, abs=1e-4)


def test_speaker_blocks_cut_at_the_nearest_speaker_boundary():
    # 10 speakers x 10 items: the timesteps' items 0.1 ... 12.5 fall nearest the 1st boundary (10),
    # 25 is midway between 20 and 30 (the first wins), 50 is 5 speakers, 100 all ten
    groups = np.repeat([f"s{i}" for i in range(10)], 10)
    blocks = speaker_blocks(groups, 100, seed=0)
    assert [len(b) for b in blocks] == [10, 10, 30, 50]
    assert [len(np.unique(groups[b])) for b in blocks] == [1, 1, 3, 5]


def test_speaker_blocks_never_split_a_speaker_and_follow_the_seed():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 20, size=37)
    groups = np.repeat(np.arange(37), sizes)[rng.permutation(sizes.sum())]
    blocks = speaker_blocks(groups, len(groups), seed=5)
    assert np.array_equal(np.sort(np.concatenate(blocks)), np.arange(len(groups)))  # every item once
    owner = {}
    for j, b in enumerate(blocks):
        for g in np.unique(groups[b]):
            assert owner.setdefault(g, j) == j  # a speaker's items are all in one block
    # the last cut is the speaker boundary nearest half of the items: off by less than one speaker
    assert abs(len(blocks[-1]) - len(groups) / 2) <= sizes.max()
    same = speaker_blocks(groups, len(groups), seed=5)
    other = speaker_blocks(groups, len(groups), seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(blocks, same, strict=True))
    assert not np.array_equal(blocks[0], other[0]) or not np.array_equal(blocks[1], other[1])
    # every item its own unit: the blocks end at items 1, 2, 4, 8, 16, 32, 62 (62.5: a tie, the first wins), 125, ...
    ungrouped = speaker_blocks(None, 1000, seed=0)
    assert [len(b) for b in ungrouped] == [1, 1, 2, 4, 8, 16, 30, 63, 125, 250, 500]


def test_speaker_blocks_need_two_speakers():
    with pytest.raises(DataError, match="at least 2 speakers"):
        speaker_blocks(np.array(["a"] * 5), 5, seed=0)


def test_fit_mdl_ranks_the_planted_layer_first_and_writes_its_tables(tmp_path):
    items, pooled = planted(num_items=120, num_speakers=12)
    store = write_store(tmp_path / "f.h5", items, {"toy": (pooled, LAYERS)})
    res = embedx.fit(store, output=tmp_path / "out", models="logreg,svm", bootstrap=0, mdl=True,
                     save_model=False, progress=False)
    value = res.study.analyses["mdl"]
    t = value.table
    assert set(t["model"]) == {"logreg"} and value.skipped == ("svm",)
    assert t.loc[t["mdl_rank"] == 1, "layer"].tolist() == [3]
    planted_row = t[t["layer"] == 3].iloc[0]
    assert planted_row["compression"] > 2 and (t[t["layer"] != 3]["compression"] < 1.05).all()
    blocks = value.blocks
    assert blocks["items"].sum() == 120 and blocks["coder"].iloc[0] == "uniform"
    assert (t["bits_block_0"] == blocks["items"].iloc[0] * np.log2(3)).all()
    block_cols = [f"bits_block_{j}" for j in range(len(blocks))]
    assert t[block_cols].sum(axis=1).to_numpy() == pytest.approx(t["codelength_bits"].to_numpy())
    assert t["uniform_bits"].to_numpy() == pytest.approx(120 * np.log2(3))
    written = pd.read_csv(tmp_path / "out" / "mdl.csv")
    assert written["codelength_bits"].to_numpy() == pytest.approx(t["codelength_bits"].to_numpy())
    again = embedx.fit(store, output=None, models="logreg", bootstrap=0, mdl=True, save_model=False, progress=False)
    assert again.study.analyses["mdl"].table["codelength_bits"].to_numpy() == pytest.approx(
        t["codelength_bits"].to_numpy(), rel=1e-12)  # same seed, same code


def test_fit_mdl_refuses_regression_and_models_without_probabilities(tmp_path):
    items, pooled = planted(num_items=60, num_speakers=6)
    store = write_store(tmp_path / "f.h5", items, {"toy": (pooled, LAYERS)})
    with pytest.raises(ConfigError, match=r"mdl=True codes class labels; the task is regression"):
        embedx.fit(store, output=None, label="arousal", mdl=True, progress=False)
    with pytest.raises(ConfigError, match=r"needs a model with class probabilities; svm, ridge have none"):
        embedx.fit(store, output=None, models="svm,ridge", mdl=True, progress=False)
    with pytest.raises(ConfigError, match=r"needs a model with class probabilities; svm has none \(e\.g\."):
        embedx.fit(store, output=None, models="svm", mdl=True, progress=False)  # was "svm have none"


def test_cli_fit_mdl_writes_the_report_section_and_the_curve(tmp_path):
    items, pooled = planted(num_items=72, num_speakers=8)
    store = write_store(tmp_path / "f.h5", items, {"toy": (pooled, LAYERS)})
    res = run_embedx("fit", "-f", store, "--mdl", "--bootstrap", "100", "--no-save-model", "-q", "-o", "out",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # the folds' grouping first: MDL's "blocks of whole speakers" builds on it (it came first)
    lines = res.stderr.splitlines()
    assert lines[:2] == ["folds are speaker-independent: grouped by the items' 'speaker' column (--no-group "
                         "to turn off)", "MDL: 4 blocks of whole speakers, coded with logreg"], res.stderr
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "## MDL probing (online codelength)" in report and "![Online codelength (MDL) per layer](mdl.png)" in report
    section = report[report.index("## MDL probing"):]
    assert "| `toy` | mean | logreg | 3 |" in section
    table = pd.read_csv(out / "mdl.csv")
    assert len(table) == len(LAYERS) and table.loc[table["mdl_rank"] == 1, "layer"].tolist() == [3]
    assert (out / "mdl.png").stat().st_size > 0 and (out / "mdl_blocks.csv").exists()
    bad = run_embedx("fit", "-f", store, "--mdl", "--label", "arousal", "-q", "-o", "bad", cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode != 0 and len(lines) == 1 and "--mdl codes class labels" in lines[0], bad.stderr
    assert not (tmp_path / "bad").exists()
