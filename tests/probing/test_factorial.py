"""Factorial comparison (``fit --factors``): F statistics against textbook sums of squares,
permutation p-values against brute force, a planted interaction found, null p-values uniform,
and the whole path through the real CLI on a store of four tagged sets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import DataError
from embedx.probing.factorial import (
    between_test,
    contrasts,
    factorial_tests,
    read_factors,
    within_test,
)

from .conftest import LAYERS, write_store

LEVELS = {"arch": ["a0", "a1"], "lang": ["l0", "l1", "l2"]}


def _textbook(scores: np.ndarray) -> dict[str, tuple[float, int, int]]:
    """Repeated-measures ANOVA of a (speakers, 2 × 3) table from marginal means (Winer's formulas)."""
    s = len(scores)
    y = scores.reshape(s, 2, 3)  # (speaker, arch, lang)
    g = y.mean()
    m_s, m_a, m_l = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    m_sa, m_sl, m_al = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    ss_a = s * 3 * ((m_a - g) ** 2).sum()
    ss_l = s * 2 * ((m_l - g) ** 2).sum()
    ss_al = s * ((m_al - m_a[:, None] - m_l[None, :] + g) ** 2).sum()
    ss_as = 3 * ((m_sa - m_s[:, None] - m_a[None, :] + g) ** 2).sum()
    ss_ls = 2 * ((m_sl - m_s[:, None] - m_l[None, :] + g) ** 2).sum()
    resid = y - m_sa[:, :, None] - m_sl[:, None, :] - m_al[None] + m_s[:, None, None] + m_a[None, :, None] \
        + m_l[None, None, :] - g
    ss_als = (resid**2).sum()
    return {"arch": (ss_a / 1 / (ss_as / (s - 1)), 1, s - 1),
            "lang": (ss_l / 2 / (ss_ls / (2 * (s - 1))), 2, 2 * (s - 1)),
            "arch × lang": (ss_al / 2 / (ss_als / (2 * (s - 1))), 2, 2 * (s - 1))}


@pytest.mark.parametrize("seed", range(3))
def test_within_F_equals_the_textbook_repeated_measures_anova(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1, (9, 6)) + rng.normal(0, 2, (9, 1)) + np.array([0, 0.5, 0, 1, 0, 0.2])
    table = factorial_tests(scores, LEVELS, n_perm=10).set_index("effect")
    for effect, (f, df1, df2) in _textbook(scores).items():
        row = table.loc[effect]
        assert row["F"] == pytest.approx(f, rel=1e-10)
        assert (row["df_effect"], row["df_error"]) == (df1, df2)
        assert row["p_F"] == pytest.approx(stats.f.sf(f, df1, df2), rel=1e-8)


def test_between_F_equals_one_way_anova_of_the_speaker_contrasts():
    rng = np.random.default_rng(4)
    scores = rng.normal(0, 1, (10, 6))
    domains = np.array(list("xxxyyyyzzz"))
    table = factorial_tests(scores, LEVELS, domains=domains, domain_name="corpus", n_perm=50).set_index("effect")
    means = scores.mean(axis=1)
    f = stats.f_oneway(*(means[domains == d] for d in "xyz"))
    assert table.loc["corpus", "F"] == pytest.approx(f.statistic, rel=1e-10)
    assert table.loc["corpus", "p_F"] == pytest.approx(f.pvalue, rel=1e-8)
    arch = scores[:, :3].mean(axis=1) - scores[:, 3:].mean(axis=1)  # arch contrast, up to scale
    f = stats.f_oneway(*(arch[domains == d] for d in "xyz"))
    assert table.loc["corpus × arch", "F"] == pytest.approx(f.statistic, rel=1e-10)
    assert (table.loc["corpus × arch", "df_effect"], table.loc["corpus × arch", "df_error"]) == (2, 7)


def test_contrasts_are_orthonormal_and_orthogonal_between_effects():
    levels = [2, 3, 4]
    blocks = [contrasts(levels, e) for r in range(4) for e in itertools.combinations(range(3), r)]
    full = np.hstack(blocks)  # every effect's contrasts: an orthonormal basis of the 24 cells
    np.testing.assert_allclose(full.T @ full, np.eye(24), atol=1e-12)
    assert [b.shape[1] for b in blocks] == [1, 1, 2, 3, 2, 3, 6, 6]


def test_sign_flip_p_value_is_exact_by_brute_force():
    rng = np.random.default_rng(7)
    c = rng.normal(0.4, 1, (8, 2))  # 8 speakers, an effect with 2 contrasts

    def f_of(x):
        m = x.mean(axis=0)
        return len(x) * (m @ m) / (((x - m) ** 2).sum() / (len(x) - 1))

    observed = f_of(c)
    flips = [f_of(c * np.array(signs)[:, None]) for signs in itertools.product([1, -1], repeat=8)]
    expected = np.mean(np.array(flips) >= observed - 1e-12)
    got = within_test(c, 0, rng)
    assert got["n_perm"] == 256 and got["p_perm"] == pytest.approx(expected)
    assert got["F"] == pytest.approx(observed)  # d divides both mean squares: it cancels


def test_monte_carlo_p_values_count_the_observed_statistic():
    rng = np.random.default_rng(0)
    c = rng.normal(5.0, 1, (20, 1))  # 20 speakers (random flips), an effect no flip reaches
    assert within_test(c, 99, rng)["p_perm"] == 1 / 100
    groups = np.repeat(["x", "y"], 10)
    shifted = np.where(groups == "x", 10.0, 0.0)[:, None] + rng.normal(0, 1, (20, 1))
    assert between_test(shifted, groups, 99, rng)["p_perm"] == 1 / 100


def _simulate(rng, speakers, interaction=0.0, arch=0.0):
    """Per-speaker UAR of 2 × 2 sets (cells a0l0, a0l1, a1l0, a1l1) from 12 items per class (2 classes):
    bounded, discrete scores."""
    ability = rng.normal(0.8, 0.5, speakers)[:, None]  # (S, 1)
    effect = np.array([0, 0, arch, arch]) + interaction * np.array([1, -1, -1, 1]) / 2
    logit = ability + effect + rng.normal(0, 0.3, (speakers, 4))
    correct = rng.binomial(12, 1 / (1 + np.exp(-logit[..., None])), (speakers, 4, 2))  # (S, sets, classes)
    return correct.mean(axis=2) / 12


def test_a_planted_interaction_is_found_and_the_null_main_effects_are_not():
    levels = {"arch": ["a0", "a1"], "lang": ["l0", "l1"]}
    table = factorial_tests(_simulate(np.random.default_rng(1), 30, interaction=0.8), levels, n_perm=999,
                            seed=0).set_index("effect")
    assert table.loc["arch × lang", "p_perm"] == 1 / 1000  # no flip of 999 reaches it
    assert table.loc["arch", "p_perm"] > 0.05 and table.loc["lang", "p_perm"] > 0.05


def test_null_p_values_are_uniform_with_another_effect_planted():
    levels = {"arch": ["a0", "a1"], "lang": ["l0", "l1"]}
    rng = np.random.default_rng(2)
    p = np.array([factorial_tests(_simulate(rng, 15, arch=0.6), levels, n_perm=199, seed=i)
                  .set_index("effect").loc[["lang", "arch × lang"], "p_perm"].to_numpy() for i in range(150)])
    assert stats.kstest(p.ravel(), "uniform").pvalue > 0.01
    assert 0.02 <= (p < 0.05).mean() <= 0.08


def test_read_factors_checks_the_design(tmp_path):
    sets = ["h_en", "h_it", "w_en", "w_it", "egemaps"]
    path = tmp_path / "f.csv"
    path.write_text("set,arch,lang\nh_en,h,en\nh_it,h,it\nw_en,w,en\nw_it,w,it\n")
    table, left = read_factors(path, sets)
    assert table.loc["w_it"].tolist() == ["w", "it"] and left == ["egemaps"]
    for text, message in [
        ("set,arch\nh_en,h\nxx,w\n", "unknown feature set(s) 'xx'; the study's sets: h_en, h_it"),
        ("set,arch,lang\nh_en,h,en\nh_it,h,it\nw_en,w,en\n", "no set has arch=w, lang=it"),
        ("set,arch\nh_en,h\nh_it,h\n", "factor 'arch' has one level ('h')"),
        ("name,arch\nh_en,h\n", "needs a 'set' column"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_factors(path, sets)


@pytest.fixture
def tagged_store(tmp_path):
    """48 items of 12 speakers (2 corpora) and 4 sets (arch × lang): arch a1 knows the class well,
    a0 barely; lang changes nothing."""
    rng = np.random.default_rng(0)
    n, spk = 96, np.repeat(np.arange(12), 8)
    y = np.arange(n) % 2
    items = pd.DataFrame({
        "id": [f"u{i:03d}" for i in range(n)], "path": [f"wavs/u{i:03d}.wav" for i in range(n)], "duration": 1.0,
        "sample_rate": 16000, "num_samples": 16000, "label": [f"c{c}" for c in y],
        "speaker": [f"s{s:02d}" for s in spk], "corpus": np.where(spk < 6, "A", "B")})
    sets = {}
    for arch, strength in (("a0", 0.3), ("a1", 2.5)):
        for lang in ("l0", "l1"):
            pooled = rng.normal(0, 1, (len(LAYERS), n, 6)).astype(np.float32)  # (layers, items, dim)
            pooled[2, :, 0] += strength * y
            sets[f"{arch}_{lang}"] = (pooled, LAYERS)
    path = write_store(tmp_path / "feats.h5", items, sets)
    factors = tmp_path / "factors.csv"
    factors.write_text("set,arch,lang\n" + "".join(f"{a}_{b},{a},{b}\n" for a in ("a0", "a1") for b in ("l0", "l1")))
    return path, factors


def test_fit_factors_through_the_cli(tagged_store, tmp_path):
    path, factors = tagged_store
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["fit", "-f", str(path), "--layers", "1,2", "--factors", str(factors),
                                   "--domain", "corpus", "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "factorial.csv").set_index("effect")
    assert list(table.index) == ["corpus", "arch", "corpus × arch", "lang", "corpus × lang", "arch × lang",
                                 "corpus × arch × lang"]
    assert table.loc["arch", "p_holm"] < 0.05 and table.loc["arch", "n_perm"] == 4096  # 12 speakers: exact
    assert table.loc["lang", "p_perm"] > 0.05
    scores = pd.read_csv(out / "factorial_scores.csv")
    assert len(scores) == 12 * 4 and set(scores.groupby("speaker")["corpus"].nunique()) == {1}
    # the cells are the mean per-speaker scores, and the arch F is the one-sample F of the speakers' arch contrast
    cells = pd.read_csv(out / "factorial_cells.csv")
    means = scores.groupby(["arch", "lang"])["score"].mean()
    np.testing.assert_allclose(cells["mean"], [means[(r.arch, r.lang)] for r in cells.itertuples()])
    wide = scores.pivot(index="speaker", columns="set", values="score")
    contrast = (wide["a1_l0"] + wide["a1_l1"] - wide["a0_l0"] - wide["a0_l1"]).to_numpy()
    t = stats.ttest_1samp(contrast, 0.0).statistic
    assert table.loc["arch", "F"] == pytest.approx(t**2, rel=1e-9)
    report = (out / "report.md").read_text()
    assert "## Factorial comparison" in report and "| arch | within |" in report


def test_per_speaker_scores_are_each_speakers_balanced_accuracy(tagged_store):
    from sklearn.metrics import balanced_accuracy_score

    import embedx

    path, factors = tagged_store
    fitted = embedx.fit(path, output=None, sets=["a0_l0@2", "a0_l1@2", "a1_l0@2", "a1_l1@2"], factors=factors,
                        bootstrap=200, progress=False)
    study = fitted.study
    scores = study.analyses["factorial"].scores
    ds = study.dataset
    for r in scores.sample(10, random_state=0).itertuples():
        rows = ds.groups == r.speaker
        pred = study.predictions[(f"{r.set}@2/mean", "logreg")][rows]
        assert r.score == pytest.approx(balanced_accuracy_score(ds.y[rows], pred))


def test_factors_file_errors_are_one_line(tagged_store, tmp_path):
    path, _ = tagged_store
    bad = tmp_path / "bad.csv"
    bad.write_text("set,arch\na0_l0,a0\nhubert,a1\n")
    res = CliRunner().invoke(app, ["fit", "-f", str(path), "--factors", str(bad), "-o", str(tmp_path / "r")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--factors: unknown feature set(s) 'hubert'; the study's sets: a0_l0, a0_l1, a1_l0, a1_l1" in \
        " ".join(res.output.split())
    assert not (tmp_path / "r").exists()  # refused before any fit


def test_equal_scores_in_every_cell_are_no_effect_not_a_rounding_f():
    # a user's four sets that score the same for every speaker: the contrasts are rounding
    # noise, and an F of noise over noise (5.87 in a new user's run) must read as no effect
    rng = np.random.default_rng(3)
    per_speaker = rng.uniform(0.2, 0.9, size=(6, 1))
    scores = np.repeat(per_speaker, 4, axis=1) * (1 / 3) * 3  # (S, cells), equal across cells
    table = factorial_tests(scores, {"init": ["a", "b"], "dtype": ["x", "y"]}, n_perm=200, seed=0)
    assert table["F"].tolist() == [0.0, 0.0, 0.0]
    assert table["p_perm"].tolist() == [1.0, 1.0, 1.0] and table["p_F"].tolist() == [1.0, 1.0, 1.0]
    assert table["partial_eta2"].tolist() == [0.0, 0.0, 0.0]
