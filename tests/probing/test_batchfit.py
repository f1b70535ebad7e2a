"""The batched L-BFGS-B of the chance control follows scipy's and scikit-learn's fits.

Two references: scipy's own L-BFGS-B (``scipy.optimize.minimize``, scikit-learn's settings) on
the same objective, which the batched runs must follow step for step (iterations, function
evaluations, iterates), and ``LogisticRegression`` itself (coefficients, ``n_iter_``,
predictions). The problems cover the branches: first trials accepted and refused (Moré-Thuente
steps), a memory that wraps (more than 10 iterations), the gradient, ``ftol`` and ``max_iter``
stops, d > n, ill-conditioned columns, two to five classes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from embedx.probing import batchfit

# (items, features, classes, C, tol, max_iter, column scales over decades, separable)
CASES = [
    (120, 20, 2, 1.0, 1e-4, 100, 0, False),
    (80, 150, 3, 0.1, 1e-4, 2000, 0, False),  # d > n
    (200, 30, 5, 1.0, 1e-4, 2000, 1, False),  # ill-conditioned
    (60, 12, 4, 100.0, 1e-4, 25, 0, True),  # separable, weakly penalised: stops at max_iter
    (150, 25, 3, 1.0, 1e-12, 2000, 1, False),  # tol below reach: the ftol test stops it
    (90, 8, 2, 0.01, 1e-4, 100, 2, False),
]


def _problem(n, d, K, scales, separable, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 40, d)) * (np.logspace(0, scales, d) if scales else 1.0)
    beta = rng.normal(size=(d, K)) * (50.0 if separable else 1.0)
    noise = 0.0 if separable else rng.gumbel(size=(n + 40, K))
    y = (X @ beta / np.sqrt(d) / X.std() + noise).argmax(axis=1)
    ytr = np.stack([y[:n]] + [rng.permutation(y[:n]) for _ in range(3)])
    return X[:n], ytr, X[n:]


def _scipy_fit(fg, size, p, tol, max_iter):
    """scipy's L-BFGS-B on problem ``p`` of ``fg``, called as scikit-learn calls it."""
    res = minimize(lambda w: tuple(v[0] for v in fg(w[None], np.array([p]))), np.zeros(size),
                   method="L-BFGS-B", jac=True,
                   options=dict(maxiter=max_iter, maxls=50, gtol=tol, ftol=64 * np.finfo(float).eps))
    return res.x, res.nit, res.nfev


@pytest.mark.parametrize("case", range(len(CASES)))
def test_batched_runs_follow_scipy_step_for_step(case):
    n, d, K, C, tol, max_iter, scales, separable = CASES[case]
    X, ytr, _ = _problem(n, d, K, scales, separable, seed=case)
    K = 1 if K == 2 else K
    fg = batchfit._objective(X, np.searchsorted(np.unique(ytr[0]), ytr), 1.0 / (C * n), K)
    size = K * (d + 1)
    x, n_iter, nfev = batchfit._Fits(fg, len(ytr), size, pgtol=tol, max_iter=max_iter).run()
    for p in range(len(ytr)):
        ref, nit, ref_nfev = _scipy_fit(fg, size, p, tol, max_iter)
        assert (n_iter[p], nfev[p]) == (min(nit, max_iter), ref_nfev), f"problem {p}"
        np.testing.assert_allclose(x[p], ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    if separable:
        assert (n_iter == max_iter).any()


def test_the_cases_reach_every_branch():
    """The cases above take refused first trials, wrap the memory, stop on each test."""
    seen = {"more trials": False, "wrap": False, "max_iter": False, "ftol": False, "gradient": False}
    for case, (n, d, K, C, tol, max_iter, scales, separable) in enumerate(CASES):
        X, ytr, _ = _problem(n, d, K, scales, separable, seed=case)
        K = 1 if K == 2 else K
        fg = batchfit._objective(X, np.searchsorted(np.unique(ytr[0]), ytr), 1.0 / (C * n), K)
        x, n_iter, nfev = batchfit._Fits(fg, len(ytr), K * (d + 1), pgtol=tol, max_iter=max_iter).run()
        grad = np.abs(fg(x, np.arange(len(ytr)))[1]).max(axis=1)
        seen["more trials"] |= bool((nfev > n_iter + 1).any())
        seen["wrap"] |= bool((n_iter > batchfit.MEMORY).any())
        seen["max_iter"] |= bool((n_iter == max_iter).any())
        seen["gradient"] |= bool(((grad <= tol) & (n_iter < max_iter)).any())
        seen["ftol"] |= bool(((grad > tol) & (n_iter < max_iter)).any())
    assert all(seen.values()), seen


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_logreg_fits_are_logistic_regression_s(case, dtype):
    n, d, K, C, tol, max_iter, scales, separable = CASES[case]
    X, ytr, Xte = _problem(n, d, K, scales, separable, seed=case)
    X, Xte = X.astype(dtype), Xte.astype(dtype)
    est = LogisticRegression(C=C, tol=tol, max_iter=max_iter)
    coef, intercept, n_iter = batchfit.logreg_fits(est, X, ytr)
    preds, _ = batchfit.logreg_many(est, X, ytr, Xte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the separable case stops at max_iter
        for p in range(len(ytr)):
            sk = LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit(X, ytr[p])
            assert coef[p].dtype == sk.coef_.dtype and coef[p].shape == sk.coef_.shape
            np.testing.assert_array_equal(preds[p], sk.predict(Xte))
            if dtype is np.float32:  # scikit-learn computes this objective in float32
                continue
            assert n_iter[p] == sk.n_iter_[0]
            scale = np.abs(sk.coef_).max()
            np.testing.assert_allclose(coef[p], sk.coef_, rtol=0, atol=1e-6 * scale)
            np.testing.assert_allclose(intercept[p], sk.intercept_, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_objective_is_scikit_learn_s_loss_and_gradient(dtype):
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 7)).astype(dtype)
    # float32: scikit-learn's float32 products add in another order than one product for all
    rel = 1e-13 if dtype is np.float64 else 1e-6
    for K in (2, 4):
        codes = rng.integers(0, K, size=(3, 50))
        k = 1 if K == 2 else K
        fg = batchfit._objective(X, codes, 0.3, k)
        x = rng.normal(size=(3, k * 8))
        f, g = fg(x, np.arange(3))
        loss = LinearModelLoss(HalfBinomialLoss() if K == 2 else HalfMultinomialLoss(n_classes=K), True)
        for p in range(3):
            # scikit-learn's layout: (n_classes, n_dof) raveled in F order (classes fastest)
            w = x[p] if K == 2 else x[p].reshape(K, 8).ravel(order="F")
            ref_f, ref_g = loss.loss_gradient(w, X, codes[p].astype(dtype), None, 0.3)
            assert f[p] == pytest.approx(ref_f, rel=rel)
            ref_g = ref_g if K == 2 else ref_g.reshape(K, 8, order="F").ravel()
            np.testing.assert_allclose(g[p], ref_g, rtol=rel * 10, atol=rel / 10)
        # the start (x = 0) skips the decision values' product: the same loss and gradient
        f0, g0 = fg(np.zeros_like(x), np.arange(3), zero=True)
        ref0 = fg(np.zeros_like(x), np.arange(3))
        np.testing.assert_array_equal(f0, ref0[0])
        np.testing.assert_array_equal(g0, ref0[1])
        w0 = np.zeros(k * 8)
        assert f0[0] == pytest.approx(loss.loss_gradient(w0, X, codes[0].astype(dtype), None, 0.3)[0], rel=rel)


def test_the_fits_leave_the_garbage_collector_as_they_found_it():
    import gc

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    y = np.array([rng.permutation(np.arange(40) % 3) for _ in range(4)])
    est = LogisticRegression()
    assert gc.isenabled()
    coef, _, _ = batchfit.logreg_fits(est, X, y)
    assert gc.isenabled()
    np.testing.assert_allclose(coef[0], LogisticRegression().fit(X, y[0]).coef_, atol=1e-5)
    gc.disable()
    try:  # a caller that paused it keeps it paused
        batchfit.logreg_fits(est, X, y)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def failing(x, ids, zero=False):
        if not zero:
            raise FloatingPointError("bad features")
        return np.zeros(len(ids)), np.ones((len(ids), x.shape[1]))

    fits = batchfit._Fits(failing, 2, 6, pgtol=1e-4, max_iter=10)
    with pytest.raises(FloatingPointError):
        fits.run()
    assert gc.isenabled()  # restored on the way out of a failure too
