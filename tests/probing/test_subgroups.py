"""Subgroup breakdowns (`--by`) against metrics computed directly on out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error

import embedx
from embedx.errors import DataError
from embedx.probing import metrics as M
from embedx.probing.subgroups import _replicates, gap_ci

from .conftest import LAYERS, planted, write_store


def _store(tmp_path):
    items, pooled = planted()
    spk = items["speaker"].str[1:].astype(int).to_numpy()
    items["sex"] = np.where(spk < 6, "f", "m")
    items["age"] = np.where(spk % 2 == 0, "old", "young")
    return write_store(tmp_path / "s.h5", items, {"toy": (pooled, LAYERS)}), items


def test_subgroup_scores_equal_metric_on_oof_predictions(tmp_path):
    path, items = _store(tmp_path)
    res = embedx.fit(path, output=tmp_path / "out", by=["sex", "age"], layers="2,3", models="logreg",
                     bootstrap=200, save_model=False, progress=False)
    study = res.study
    table = pd.read_csv(tmp_path / "out" / "subgroups.csv")
    assert set(table["by"]) == {"sex", "age"} and len(table) == 2 * (2 + 2)
    ds = study.dataset
    for r in table.itertuples():
        pred = study.predictions[(r.config, r.model)]
        part = (items[r.by] == r.subgroup).to_numpy()
        assert r.score == pytest.approx(balanced_accuracy_score(ds.y[part], pred[part]), abs=1e-12)
        assert r.n_items == part.sum() and r.n_speakers == items["speaker"][part].nunique()
    gaps = pd.read_csv(tmp_path / "out" / "subgroup_gaps.csv")
    assert len(gaps) == 4
    for g in gaps.itertuples():
        part = table[(table["config"] == g.config) & (table["by"] == g.by)].set_index("subgroup")["score"]
        assert g.gap == pytest.approx(part[g.high] - part[g.low]) and g.gap >= 0 and g.high != g.low
        assert g.gap == pytest.approx(part.max() - part.min())
        assert g.ci_low <= g.gap <= g.ci_high
        assert g.excludes_zero == (g.ci_low > 0 or g.ci_high < 0)
    speakers = pd.read_csv(tmp_path / "out" / "speakers.csv")
    best = study.predictions[study.best]
    assert len(speakers) == 12
    for s in speakers.itertuples():
        part = (items["speaker"] == s.speaker).to_numpy()
        assert s.score == pytest.approx(balanced_accuracy_score(ds.y[part], best[part]))
        assert s.sex == items["sex"][part].iloc[0]
    assert (tmp_path / "out" / "subgroups.png").stat().st_size > 0
    assert "## Subgroups" in (tmp_path / "out" / "report.md").read_text()


def test_speaker_bootstrap_replicates_match_a_direct_loop():
    rng = np.random.default_rng(3)
    n, k = 60, 3
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    spk = rng.integers(0, 7, n).astype(str)
    metric = M.get_metric("uar", M.CLASSIFICATION)
    reps = _replicates(y, pred, spk, metric, k, 20, np.random.default_rng(0))
    names, codes = np.unique(spk, return_inverse=True)
    draws = np.random.default_rng(0).integers(0, len(names), size=(20, len(names)))
    for b in range(20):
        rows = np.concatenate([np.flatnonzero(codes == s) for s in draws[b]])
        assert reps[b] == pytest.approx(balanced_accuracy_score(y[rows], pred[rows]), abs=1e-12)
    # regression: MAE of the resampled speakers' items
    yt, pt = rng.normal(size=n), rng.normal(size=n)
    mae = M.get_metric("mae", M.REGRESSION)
    reps = _replicates(yt, pt, spk, mae, 0, 10, np.random.default_rng(1))
    draws = np.random.default_rng(1).integers(0, len(names), size=(10, len(names)))
    for b in range(10):
        rows = np.concatenate([np.flatnonzero(codes == s) for s in draws[b]])
        assert reps[b] == pytest.approx(mean_absolute_error(yt[rows], pt[rows]), abs=1e-12)


def test_gap_ci_t_is_wider_than_percentile_and_needs_five_speakers_per_subgroup():
    rng = np.random.default_rng(0)
    n = 100
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.7, y, 1 - y)
    spk = np.repeat(np.arange(10), 10).astype(str)
    high, low = np.arange(n) < 50, np.arange(n) >= 50
    metric = M.get_metric("uar", M.CLASSIFICATION)
    gap, lo_t, hi_t = gap_ci(y, pred, spk, high, low, metric, num_classes=2, n_boot=2000, seed=0)
    _, lo_p, hi_p = gap_ci(y, pred, spk, high, low, metric, num_classes=2, n_boot=2000, seed=0, method="percentile")
    direct = balanced_accuracy_score(y[high], pred[high]) - balanced_accuracy_score(y[low], pred[low])
    assert gap == pytest.approx(direct)
    assert lo_t < gap < hi_t and (hi_t - lo_t) > (hi_p - lo_p)
    four = np.where(high & (np.arange(n) >= 40), "0", spk)  # 4 speakers in `high`: no CI
    assert np.isnan(gap_ci(y, pred, four, high, low, metric, num_classes=2, n_boot=100)[1])
    assert np.isfinite(gap_ci(y, pred, four, high, low, metric, num_classes=2, n_boot=100, min_clusters=4)[1])


def test_by_validation(tmp_path):
    path, _ = _store(tmp_path)
    with pytest.raises(DataError, match=r"by 'gender': no such item column; available: .*sex"):
        embedx.fit(path, output=None, by=["gender"], progress=False)
    items, pooled = planted()
    items["site"] = "x"
    one = write_store(tmp_path / "one.h5", items, {"toy": (pooled, LAYERS)})
    with pytest.raises(DataError, match=r"by 'site' has a single value \('x'\)"):
        embedx.fit(one, output=None, by=["site"], progress=False)


def test_gap_ci_t_tends_to_welchs_interval_on_the_speakers_scores():
    # Equal items per speaker: a subgroup's MAE is the mean of its speakers' MAEs, whose speaker
    # bootstrap variance is (S-1)/S · s²/S. Corrected by S/(S-1) it is s²/S, so with many
    # resamples the t interval is Welch's interval for the difference of the two means of
    # speaker scores (scipy). Few speakers of unequal spread: Welch's df is far below S1+S2-2.
    rng = np.random.default_rng(7)
    per, sizes = 6, (5, 9)
    spk = np.repeat(np.arange(sum(sizes)), per)
    high = spk < sizes[0]
    scale = np.where(np.arange(sum(sizes)) < sizes[0], rng.uniform(0.5, 3.0, sum(sizes)),
                     rng.uniform(0.8, 1.2, sum(sizes)))  # error scale of every speaker
    y = rng.normal(size=len(spk))
    pred = y + rng.normal(size=len(spk)) * scale[spk]
    per_speaker = np.bincount(spk, weights=np.abs(pred - y)) / per  # each speaker's MAE
    a, b = per_speaker[: sizes[0]], per_speaker[sizes[0]:]
    welch = sst.ttest_ind(a, b, equal_var=False)
    want = welch.confidence_interval(0.95)
    assert welch.df < sum(sizes) - 2 - 4  # the test separates Welch's df from the pooled one
    mae = M.get_metric("mae", M.REGRESSION)
    gap, low, hi = gap_ci(y, pred, spk.astype(str), high, ~high, mae, n_boot=50_000, seed=0)
    assert gap == pytest.approx(a.mean() - b.mean())
    assert (low + hi) / 2 == pytest.approx(gap)
    # the bootstrap estimates the variance to ~0.6% with 50,000 resamples: the half width to 2%
    assert (hi - low) / (want.high - want.low) == pytest.approx(1.0, abs=0.02)
