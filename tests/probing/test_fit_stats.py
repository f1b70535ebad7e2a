"""Per-fold reference tests: one-sided, float noise is a tie, the Wilcoxon floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from embedx.probing.stats import corrected_ttest, wilcoxon, wilcoxon_floor


def test_corrected_ttest_formula_and_direction():
    a = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    b = np.array([0.65, 0.69, 0.66, 0.70, 0.64])
    d = a - b
    t_expected = d.mean() / np.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    t, p = corrected_ttest(a, b, 0.25)
    assert t == pytest.approx(t_expected)
    assert p == pytest.approx(2 * sst.t.sf(abs(t_expected), 4))
    assert p > sst.ttest_rel(a, b).pvalue  # the correction is more conservative
    # one-sided: small when a is better, large when a is worse (a better b is never "worse")
    assert corrected_ttest(a, b, 0.25, alternative="greater")[1] == pytest.approx(sst.t.sf(t_expected, 4))
    assert corrected_ttest(b, a, 0.25, alternative="greater")[1] == pytest.approx(sst.t.sf(-t_expected, 4))
    assert corrected_ttest(b, a, 0.25, alternative="greater")[1] > 0.9
    assert corrected_ttest(a, a, 0.25) == (0.0, 1.0)
    assert corrected_ttest(a + 0.1, a, 0.25, alternative="greater")[1] == 0.0
    assert corrected_ttest(a, a + 0.1, 0.25, alternative="greater")[1] == 1.0
    assert np.isnan(corrected_ttest(a[:1], b[:1], 0.25)[1])


def test_wilcoxon_ties_direction_and_floor():
    a = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    b = np.array([0.65, 0.69, 0.66, 0.70, 0.64])
    assert wilcoxon(a, b) == pytest.approx(sst.wilcoxon(a - b).pvalue)
    assert wilcoxon(a, b) == pytest.approx(wilcoxon_floor(5)) == pytest.approx(0.0625)
    assert wilcoxon(a, b, alternative="greater") == pytest.approx(1 / 32) == pytest.approx(wilcoxon_floor(5, "greater"))
    assert wilcoxon(b, a, alternative="greater") == pytest.approx(1.0)
    assert wilcoxon(a, a) == 1.0
    # recalls summed in another order differ by ~1e-16: a tie, not a loss
    noisy = a.copy()
    noisy[[0, 2]] += np.array([1e-16, -2e-16])
    assert wilcoxon(a, noisy) == 1.0
    c = a + np.array([0.02, 0.0, 0.03, 0.01, 0.04])
    c_noisy = c.copy()
    c_noisy[1] -= 1e-16  # the zero difference must stay a tie (zsplit), not count as a loss
    expected = sst.wilcoxon(np.array([0.02, 0.0, 0.03, 0.01, 0.04]), zero_method="zsplit",
                            alternative="greater").pvalue
    assert wilcoxon(c_noisy, a, alternative="greater") == pytest.approx(expected)
