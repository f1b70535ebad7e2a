"""Layer similarity (linear CKA): properties, independent references, the store path, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx.cka as sim
from embedx.api import similarity
from embedx.cka import linear_cka
from embedx.cli import app
from embedx.errors import ConfigError, DataError
from embedx.store import FeatureSetSpec, StoreReader, StoreWriter
from tests.probing.conftest import write_store

# --- independent references: the Gram-matrix formulas, written out with explicit matrices ---


def cka_gram_reference(x: np.ndarray, y: np.ndarray) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC = tr(K H L H) / (n-1)^2."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n  # (n, n) centring matrix
    k, l_ = x @ x.T, y @ y.T  # (n, n) linear kernels of the raw (uncentred) features

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def unbiased_hsic_reference(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012), eq. 5: the unbiased HSIC estimator, term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), l_.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def debiased_cka_reference(x: np.ndarray, y: np.ndarray) -> float:
    k, l_ = x @ x.T, y @ y.T  # uncentred: the unbiased estimator needs no centring
    return unbiased_hsic_reference(k, l_) / np.sqrt(
        unbiased_hsic_reference(k, k) * unbiased_hsic_reference(l_, l_))


def pair(n=40, dx=6, dy=9, seed=0):
    """Two related representations with offsets (so centring matters)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx)) + 2.0
    y = x @ rng.normal(size=(dx, dy)) + 0.7 * rng.normal(size=(n, dy)) - 1.0
    return x, y


def orthogonal(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# --- properties ---


@pytest.mark.parametrize("debiased", [False, True])
def test_layer_with_itself_is_one(debiased):
    x, _ = pair()
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_symmetric(debiased):
    x, y = pair()
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(
        linear_cka(y, x, debiased=debiased), abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(debiased):
    x, y = pair()
    base = linear_cka(x, y, debiased=debiased)
    assert 0.2 < base < 0.99  # a non-trivial value, so invariance means something
    assert linear_cka(x @ orthogonal(x.shape[1]), y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ orthogonal(y.shape[1], seed=2), debiased=debiased) == pytest.approx(
        base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y, debiased=debiased) == pytest.approx(base, abs=1e-10)  # translation


def test_not_invariant_to_a_general_invertible_map():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    a = np.diag([10.0, 1.0, 1.0, 0.1, 0.1]) @ orthogonal(5)  # invertible, anisotropic
    assert np.linalg.matrix_rank(a) == 5
    value = linear_cka(x, x @ a)
    assert value < 0.9  # CKA tells a stretched space from the original (CCA would say 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_gram_formula_with_centering_matrix(seed):
    x, y = pair(n=25, seed=seed)
    assert linear_cka(x, y) == pytest.approx(cka_gram_reference(x, y), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_matches_unbiased_hsic_formula(seed):
    x, y = pair(n=25, seed=seed)
    value = linear_cka(x, y, debiased=True)
    assert value == pytest.approx(debiased_cka_reference(x, y), rel=1e-10)
    assert value != pytest.approx(linear_cka(x, y), rel=1e-3)  # it is a different estimator


def test_debiased_removes_the_small_sample_bias():
    # independent noise: biased CKA is far from 0 when dims are not << n; debiased is near 0
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 50)), rng.normal(size=(60, 50))
    assert linear_cka(x, y) > 0.4
    assert abs(linear_cka(x, y, debiased=True)) < 0.1


def test_too_few_rows_and_mismatch_are_refused():
    x, y = pair(n=3)
    with pytest.raises(DataError, match="at least 4 items"):
        linear_cka(x, y, debiased=True)
    with pytest.raises(DataError, match="same items"):
        linear_cka(x, y[:2])


# --- the store path ---


def items(n):
    return pd.DataFrame({"id": [f"u{i:03d}" for i in range(n)], "path": [f"u{i:03d}.wav" for i in range(n)],
                         "duration": 1.0, "sample_rate": 16000, "num_samples": 16000})


def two_sets(n=30, seed=0):
    """Set ``a`` (layers 0-3, dim 8) and ``b`` (layers 0, 2, 5, dim 5), partly related."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(4, n, 8)).astype(np.float32)
    a[1] = a[0] @ rng.normal(size=(8, 8)).astype(np.float32) + 0.5 * a[1]
    b = np.stack([a[k] @ rng.normal(size=(8, 5)) + rng.normal(size=(n, 5)) for k in (0, 1, 3)])
    return a, b.astype(np.float32)


@pytest.fixture
def store(tmp_path):
    a, b = two_sets()
    path = write_store(tmp_path / "feats.h5", items(30), {"a": (a, (0, 1, 2, 3)), "b": (b, (0, 2, 5))},
                       poolings=("mean", "std"))
    return path, a, b


def expected(a, b, la, lb, debiased, rows=slice(None)):
    ref = debiased_cka_reference if debiased else cka_gram_reference
    return ref(a[la][rows].astype(np.float64), b[lb][rows].astype(np.float64))


@pytest.mark.parametrize("method", ["gram", "features"])
@pytest.mark.parametrize("debiased", [False, True])
def test_store_matrix_matches_reference(store, tmp_path, monkeypatch, method, debiased):
    path, a, b = store
    if method == "features":
        monkeypatch.setattr(sim, "GRAM_BUDGET_BYTES", 0)
    result = similarity(path, tmp_path / "sim", debiased=debiased, progress=False)
    assert result.method == method
    t = result.table
    assert list(t.columns) == ["set_a", "layer_a", "set_b", "layer_b", "cka"]
    # a x a (16) + b x b (9) + a x b (12), never b x a
    assert len(t) == 16 + 9 + 12 and not ((t.set_a == "b") & (t.set_b == "a")).any()
    data, layers = {"a": a, "b": b}, {"a": [0, 1, 2, 3], "b": [0, 2, 5]}
    for row in t.itertuples(index=False):
        la, lb = layers[row.set_a].index(row.layer_a), layers[row.set_b].index(row.layer_b)
        want = expected(data[row.set_a], data[row.set_b], la, lb, debiased)
        assert row.cka == pytest.approx(want, rel=1e-6, abs=1e-9), row
    csv = pd.read_csv(tmp_path / "sim" / "cka.csv")
    assert np.allclose(csv["cka"].to_numpy(), t["cka"].to_numpy())
    diag = t[(t.set_a == t.set_b) & (t.layer_a == t.layer_b)]
    assert np.allclose(diag["cka"], 1.0)


def test_only_items_done_in_both_sets(tmp_path):
    a, b = two_sets()
    n = 30
    path = tmp_path / "feats.h5"
    done_b = np.ones(n, bool)
    done_b[[2, 5, 11]] = False
    with StoreWriter(path) as w:
        w.write_items(items(n))
        for name, data, layers, done in (("a", a, (0, 1, 2, 3), np.ones(n, bool)),
                                         ("b", b, (0, 2, 5), done_b)):
            w.create_feature_set(FeatureSetSpec(name=name, backend="hf", layers=layers,
                                                dim=data.shape[-1], poolings=("mean",),
                                                frames=False, dtype="float32"))
            rows = np.flatnonzero(done)
            w.write(name, rows, pooled={"mean": data[:, rows]})
    result = similarity(path, tmp_path / "sim", progress=False)
    assert result.rows == {("a", "a"): 30, ("b", "b"): 27, ("a", "b"): 27}
    t = result.table.set_index(["set_a", "layer_a", "set_b", "layer_b"])["cka"]
    assert t["a", 1, "b", 5] == pytest.approx(expected(a, b, 1, 2, False, rows=done_b), rel=1e-6)
    assert t["a", 1, "a", 3] == pytest.approx(expected(a, a, 1, 3, False), rel=1e-6)


def test_other_pooling_and_set_selection(store, tmp_path):
    path, a, _ = store
    result = similarity(path, tmp_path / "sim", sets=["a"], pooling="std", progress=False)
    assert set(result.table.set_a) == {"a"} and len(result.table) == 16
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["cka.csv", "cka_a__a.png",
                                                                     "similarity.md"]


# --- frames ---


def frame_store(path, counts_b=None, seed=0):
    """Sets ``f`` and ``g`` with frames; ``g``'s layer k is ``f``'s layer k rotated (CKA 1)."""
    rng = np.random.default_rng(seed)
    counts = np.array([5, 9, 3, 7, 6, 4])
    counts_b = counts if counts_b is None else np.asarray(counts_b)
    q = orthogonal(6, seed=5)
    fr_f = [rng.normal(size=(c, 3, 6)).astype(np.float32) for c in counts]
    fr_g = [(x @ q).astype(np.float32) for x in fr_f] if counts_b is counts else [
        rng.normal(size=(c, 3, 6)).astype(np.float32) for c in counts_b]
    with StoreWriter(path) as w:
        w.write_items(items(len(counts)))
        for name, fr, cts in (("f", fr_f, counts), ("g", fr_g, counts_b)):
            w.create_feature_set(FeatureSetSpec(name=name, backend="hf", layers=(0, 1, 2), dim=6,
                                                poolings=("mean",), frames=True, dtype="float32",
                                                frame_rate=50.0), num_frames=cts)
            pooled = np.stack([x.mean(0) for x in fr]).transpose(1, 0, 2)  # (layers, items, dim)
            w.write(name, np.arange(len(cts)), pooled={"mean": pooled}, frames=fr)
    return path, fr_f, fr_g


def test_frames_all_frames_match_reference(tmp_path):
    path, fr_f, fr_g = frame_store(tmp_path / "fr.h5")
    result = similarity(path, tmp_path / "sim", frames=True, max_frames=1000, progress=False)
    assert result.rows[("f", "g")] == 34
    t = result.table.set_index(["set_a", "layer_a", "set_b", "layer_b"])["cka"]
    f_all = np.concatenate(fr_f)  # (34, layers, dim)
    g_all = np.concatenate(fr_g)
    assert t["f", 0, "f", 2] == pytest.approx(cka_gram_reference(f_all[:, 0], f_all[:, 2]), rel=1e-6)
    assert t["f", 1, "g", 0] == pytest.approx(cka_gram_reference(f_all[:, 1], g_all[:, 0]), rel=1e-6)
    for k in range(3):  # a rotation of the same frames: the subsample pairs the same frames
        assert t["f", k, "g", k] == pytest.approx(1.0, abs=1e-6)


def test_frames_subsample_is_seeded_and_pairs_the_same_frames(tmp_path):
    path, _, _ = frame_store(tmp_path / "fr.h5")
    runs = [similarity(path, tmp_path / f"sim{s}", frames=True, max_frames=12, seed=s,
                       progress=False) for s in (0, 0, 1)]
    assert runs[0].rows[("f", "g")] == 12
    assert np.array_equal(runs[0].table["cka"], runs[1].table["cka"])
    assert not np.allclose(runs[0].table["cka"], runs[2].table["cka"])
    t = runs[2].table.set_index(["set_a", "layer_a", "set_b", "layer_b"])["cka"]
    assert t["f", 2, "g", 2] == pytest.approx(1.0, abs=1e-6)


def test_frames_unequal_counts_are_refused(tmp_path):
    path, _, _ = frame_store(tmp_path / "fr.h5", counts_b=[5, 9, 4, 7, 6, 4])
    with pytest.raises(DataError, match=r"item 'u002' has 3 frames in 'f' and 4 in 'g'"):
        similarity(path, tmp_path / "sim", frames=True, progress=False)


def test_frames_on_a_set_without_frames_is_refused(store, tmp_path):
    path, _, _ = store
    with pytest.raises(ConfigError, match="sets 'a' has no frames"):
        similarity(path, tmp_path / "sim", sets=["a"], frames=True, progress=False)


# --- the CLI ---


def run_cli(*args):
    return CliRunner().invoke(app, ["similarity", *map(str, args)])


def one_line_error(result, *parts):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    for p in parts:
        assert p in text, text


def test_cli_writes_outputs(store, tmp_path):
    path, a, b = store
    res = run_cli(path, "-o", tmp_path / "out", "--debiased", "--quiet")
    assert res.exit_code == 0, res.output
    assert "wrote 37 CKA values of 3 set pairs" in res.output
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"cka.csv", "cka_a__a.png", "cka_b__b.png",
                                                "cka_a__b.png", "similarity.md"}
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in ("cka_a__b.png", "cka_b__b.png"))
    csv = pd.read_csv(out / "cka.csv")
    row = csv[(csv.set_a == "a") & (csv.layer_a == 3) & (csv.set_b == "b") & (csv.layer_b == 5)]
    assert row["cka"].item() == pytest.approx(expected(a, b, 3, 2, True), rel=1e-6)
    md = (out / "similarity.md").read_text()
    assert "debiased" in md and "| a | b | 30 |" in md and "Command: `embedx " in md


def test_cli_unknown_set(store, tmp_path):
    path, _, _ = store
    one_line_error(run_cli(path, "-o", tmp_path / "o", "--set", "wavlm"),
                   "invalid option", "--set 'wavlm'", "available: a, b")


def test_cli_unknown_pooling(store, tmp_path):
    path, _, _ = store
    one_line_error(run_cli(path, "-o", tmp_path / "o", "--pooling", "max"),
                   "--pooling 'max'", "stored: mean, std")


def test_cli_unwritable_output(store, tmp_path):
    path, _, _ = store
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    one_line_error(run_cli(path, "-o", blocker), "-o", "is a file")
    one_line_error(run_cli(path, "-o", blocker / "sub"), "lies under", "which is a file")


def test_cli_bad_max_frames_and_missing_store(tmp_path):
    path, _, _ = frame_store(tmp_path / "fr.h5")
    one_line_error(run_cli(path, "-o", tmp_path / "o", "--frames", "--max-frames", "2"),
                   "--max-frames must be an integer >= 4; got 2")
    one_line_error(run_cli(tmp_path / "nope.h5", "-o", tmp_path / "o"), "store")


def test_the_api_function_runs_and_leaves_the_store_unchanged(store, tmp_path):
    import embedx

    path, _, _ = store
    result = embedx.similarity(path, tmp_path / "sim", progress=False)
    assert len(result.table) == 37
    with StoreReader(path) as r:  # read-only: the store is untouched
        assert r.feature_sets() == ["a", "b"]


def test_non_finite_features_are_refused(tmp_path):
    a, b = two_sets()
    a[2, 7, 3] = np.nan
    path = write_store(tmp_path / "feats.h5", items(30), {"a": (a, (0, 1, 2, 3))})
    with pytest.raises(DataError, match="feature set 'a' layer 2 holds NaN"):
        similarity(path, tmp_path / "sim", progress=False)


def test_api_names_mirror_the_cli():
    import inspect

    import typer

    command = typer.main.get_command(app).commands["similarity"]  # type: ignore[attr-defined]
    cli = {p.name for p in command.params} - {"quiet"}  # --quiet is progress=False in Python
    api = set(inspect.signature(similarity).parameters)
    assert cli <= api and {"progress", "command"} <= api, cli - api


# -------------------------------------------- the heatmap's cell precision and title (issue 19)


def test_cell_digits_follow_the_spread_of_the_values():
    assert sim.cell_digits(np.array([[0.21, 1.0], [0.5, np.nan]])) == 2
    assert sim.cell_digits(np.array([0.95, 1.0])) == 3  # spread 0.05: one step 0.001
    close = np.array([[1.0, 0.99983], [0.99991, 0.9998]])
    digits = sim.cell_digits(close)
    assert digits == 5  # spread 2e-4: two decimals would print 1.00 in every cell
    assert len({f"{v:.{digits}f}" for v in close.ravel()}) == 4 and {f"{v:.2f}" for v in close.ravel()} == {"1.00"}
    assert sim.cell_digits(np.ones((2, 2))) == 2 and sim.cell_digits(np.array([1.0, 1.0 - 1e-12])) == 5


def test_heatmap_title_says_what_it_compares_and_the_precision(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "close", shown.append)  # keep the figure to read it
    m = np.array([[1.0, 0.99983], [0.99983, 1.0]])
    sim._heatmap(m, "hubert", "wavlm", [0, 1], [0, 1], tmp_path / "h.png", False, "40 items, mean-pooled")
    ax = shown[0].axes[0]
    assert ax.get_title() == ("linear CKA: hubert vs wavlm\n40 items, mean-pooled; cells: 5 decimals "
                              "(values 0.99983–1.00000)")
    assert sorted(t.get_text() for t in ax.texts) == ["0.99983", "0.99983", "1.00000", "1.00000"]
    shown[0].clf()
