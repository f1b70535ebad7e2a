"""One training part, many label vectors: the chance control's refits of linear models at once.

A permutation test refits the same model on the same training features ``N`` times; only the
labels change. For two model families the ``N`` fits share most of their work:

* **logistic regression** (:func:`logreg_many`): scikit-learn fits it with scipy's L-BFGS-B.
  The ``N`` fits here run that same optimiser (scipy's own ``setulb`` step, with scikit-learn's
  settings, on scikit-learn's objective: the mean multinomial or binomial log loss plus
  ``||W||² / (2·C·n)``, intercepts unpenalised), stepped together: whenever the fits ask for
  their function values they get them from one matrix product ``(n, d) @ (d, N·K)`` instead of
  ``N`` small ones, each with its Python overhead. Each fit takes the path it takes alone (the
  products differ from scikit-learn's only in rounding, ~1e-16), and its coefficients predict
  through the same product as ``LogisticRegression.predict``.
* **ridge** (:func:`ridge_many`): the prediction is linear in the labels, ``Xte W = A Y`` with
  ``A = Xc_te (XcᵀXc + αI)⁻¹ Xcᵀ`` (centred for the intercept): one solve per training part, then
  one product with all ``N`` label matrices (the "hat matrix" closed form).

The caller (:mod:`embedx.probing.permfit`) refits with the estimator itself every label vector
with a test item whose two best classes are closer than the two routes' rounding could explain,
so the predictions, hence the permutation p-values, are the estimator's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["logreg_many", "ridge_many", "supports"]


def supports(est: Any) -> str | None:
    """Which closed form fits ``est`` on many label vectors: ``"logreg"``, ``"ridge"`` or ``None``.

    Only the settings the closed forms reproduce qualify (the registry's, or a user's that keep
    them): L2 logistic regression by L-BFGS with an intercept; ridge (classifier or regressor)
    with an intercept and a dense solver, without ``positive``.
    """
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier

    params = est.get_params()
    if type(est) is LogisticRegression:
        ok = (params["solver"] == "lbfgs" and params["penalty"] in ("l2", "deprecated")
              and params.get("l1_ratio") in (None, 0, 0.0) and params["fit_intercept"]
              and params["class_weight"] is None and np.isfinite(params["C"]) and not params["warm_start"]
              and params.get("multi_class", "auto") in ("auto", "multinomial", "deprecated"))
        return "logreg" if ok else None
    if type(est) in (Ridge, RidgeClassifier):
        ok = (params["fit_intercept"] and not params["positive"]
              and params["solver"] in ("auto", "cholesky", "svd")
              and params.get("class_weight") is None and np.ndim(params["alpha"]) == 0)
        return "ridge" if ok else None
    return None


def _objective(X: np.ndarray, targets: np.ndarray, l2: float, binary: bool, K: int):
    """``fg(x, rows) -> (f, g)`` of scikit-learn's loss (``LinearModelLoss.loss_gradient``) for
    the problems ``rows`` at once; ``x`` ``(len(rows), (d+1)·K)`` in scipy's layout of the
    coefficients (class fastest, the intercept last); ``targets`` ``(n, K, P)``.

    The work arrays are ``(n, K, P)``: the problems vary fastest, so every reduction over the
    classes or the items runs over contiguous rows.
    """
    n, dim = X.shape

    def fg(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P = len(rows)
        W = x.reshape(P, dim + 1, K).transpose(1, 2, 0)  # (P, (d+1)·K) -> (d+1, K, P)
        coef = W[:-1]  # (d, K, P); the intercept W[-1] is not penalised
        # (n, d) @ (d, K·P): one product for every problem -> (n, K, P)
        Z = (X @ coef.reshape(dim, K * P)).reshape(n, K, P) + W[-1]
        t = targets[:, :, rows]  # (n, K, P): 0/1 labels (binary) or one-hot classes
        if binary:
            loss = np.logaddexp(0.0, Z) - t * Z
            resid = 1.0 / (1.0 + np.exp(-Z)) - t
        else:
            top = Z.max(axis=1, keepdims=True)
            E = np.exp(Z - top)
            total = E.sum(axis=1, keepdims=True)
            loss = top + np.log(total) - (Z * t).sum(axis=1, keepdims=True)  # (n, 1, P)
            resid = E / total - t  # softmax minus one-hot
        f = loss.sum(axis=(0, 1)) / n + 0.5 * l2 * (coef * coef).sum(axis=(0, 1))
        resid /= n
        g = np.empty((dim + 1, K, P))
        g[:-1] = (X.T @ resid.reshape(n, K * P)).reshape(dim, K, P) + l2 * coef  # (d, n) @ (n, K·P)
        g[-1] = resid.sum(axis=0)
        return f, g.transpose(2, 0, 1).reshape(P, -1)  # (d+1, K, P) -> (P, (d+1)·K)

    return fg


def _setulb():
    """scipy's L-BFGS-B step (reverse communication), when it has the interface this drives."""
    try:
        from scipy.optimize import _lbfgsb
    except ImportError:  # pragma: no cover - scipy moved its internals
        return None
    doc = (getattr(_lbfgsb.setulb, "__doc__", "") or "").split("\n")[0]
    return _lbfgsb.setulb if doc.replace(" ", "") == SETULB else None


#: the signature of scipy's (>= 1.15) ``setulb`` that :func:`_lockstep` drives
SETULB = "setulb(m,x,l,u,nbd,f,g,factr,pgtol,wa,iwa,task,lsave,isave,dsave,maxls,ln_task)"


def _lockstep(setulb, fg, P: int, size: int, *, pgtol: float, max_iter: int) -> np.ndarray:
    """``P`` runs of scipy's L-BFGS-B from zero, as ``scipy.optimize.minimize`` runs them for
    scikit-learn, stepped together so every round's function values come from one ``fg`` call.

    Returns:
        ``(P, size)`` the minimisers.
    """
    mem, maxls, maxfun = 10, 50, 15000  # scipy's maxcor and maxfun defaults, scikit-learn's maxls
    factr = 64.0  # scikit-learn's ftol = 64 * eps, as scipy turns it into factr
    x = np.zeros((P, size))
    g = np.zeros((P, size))
    f = np.zeros(P)
    zeros, nbd = np.zeros(size), np.zeros(size, np.int32)
    wa = np.zeros((P, 2 * mem * size + 5 * size + 11 * mem * mem + 8 * mem))
    iwa = np.zeros((P, 3 * size), np.int32)
    task, ln_task, lsave = (np.zeros((P, k), np.int32) for k in (2, 2, 4))
    isave, dsave = np.zeros((P, 44), np.int32), np.zeros((P, 29))
    iters, nfev = np.zeros(P, int), np.ones(P, int)  # scipy evaluates x0 once up front
    f[:], g[:] = fg(x, np.arange(P))
    active, first = list(range(P)), True
    while active:
        need = []
        for p in active:
            while True:  # step problem p until it asks for f and g, or stops
                setulb(mem, x[p], zeros, zeros, nbd, f[p], g[p], factr, pgtol, wa[p], iwa[p], task[p],
                       lsave[p], isave[p], dsave[p], maxls, ln_task[p])
                if task[p, 0] == 3:
                    need.append(p)
                    break
                if task[p, 0] != 1:
                    break
                iters[p] += 1
                if iters[p] >= max_iter:
                    task[p] = (5, 504)
                elif nfev[p] > maxfun:
                    task[p] = (5, 502)
        if need and not first:  # the first request is for x0, evaluated above (as scipy caches it)
            rows = np.array(need)
            f[rows], g[rows] = fg(x[rows], rows)
            nfev[rows] += 1
        active, first = need, False
    return x


def logreg_many(est: Any, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> tuple[list, np.ndarray] | None:
    """Predictions of ``est`` (a :class:`~sklearn.linear_model.LogisticRegression`, without
    class weights) fitted on ``Xtr`` with every label vector of ``ytr``.

    The ``P`` fits run scikit-learn's own optimiser, scipy's L-BFGS-B with scikit-learn's
    settings, on scikit-learn's objective, stepped in lockstep so that each round of function
    evaluations is one matrix product for every fit. Each fit's coefficients, cast to the dtype
    scikit-learn keeps, predict through the product ``LogisticRegression.predict`` computes.

    Args:
        est: the unfitted estimator (its ``C``, ``tol`` and ``max_iter`` are read).
        Xtr: ``(n, d)`` training features (already scaled as the pipeline scales them).
        ytr: ``(P, n)`` labels, the same classes in every row.
        Xte: ``(n_test, d)`` test features.

    Returns:
        ``(preds, margins)``: ``P`` prediction arrays, and ``(P,)`` each fit's smallest gap
        between a test item's two best classes (the caller refits where rounding could swap
        them); ``None`` when scipy lacks the interface or the rows' classes differ.
    """
    setulb = _setulb()
    classes = np.unique(ytr[0])
    if setulb is None or any(not np.array_equal(np.unique(row), classes) for row in ytr[1:]):
        return None
    params = est.get_params()
    n, dim = Xtr.shape
    binary = len(classes) == 2
    K = 1 if binary else len(classes)
    codes = np.searchsorted(classes, ytr)  # (P, n) class codes
    # (P, n) -> (n, K, P): the positive class's 0/1 (binary) or one-hot classes
    targets = (codes.T[:, None, :] == (np.array([1]) if binary else np.arange(K))[:, None]).astype(np.float64)
    fg = _objective(np.asarray(Xtr, dtype=np.float64), targets, 1.0 / (params["C"] * n), binary, K)
    x = _lockstep(setulb, fg, len(ytr), (dim + 1) * K, pgtol=params["tol"], max_iter=params["max_iter"])
    W = x.reshape(len(ytr), dim + 1, K).astype(Xtr.dtype)  # scikit-learn keeps the features' dtype
    preds, margins = [], np.empty(len(ytr))
    for p in range(len(ytr)):
        # LinearClassifierMixin.predict: the same product, so the same rounding
        scores = Xte @ np.ascontiguousarray(W[p, :-1].T).T + W[p, -1]  # (n_test, K)
        if binary:
            preds.append(classes[(scores[:, 0] > 0).astype(int)])
            margins[p] = np.abs(scores).min()
        else:
            preds.append(classes[scores.argmax(axis=1)])
            top2 = np.sort(scores, axis=1)[:, -2:]
            margins[p] = (top2[:, 1] - top2[:, 0]).min()
    return preds, margins


def ridge_many(est: Any, Xtr: np.ndarray, targets: np.ndarray, Xte: np.ndarray) -> np.ndarray:
    """Predictions of ``est`` (:class:`~sklearn.linear_model.Ridge` or ``RidgeClassifier``)
    fitted on ``Xtr`` with every target matrix of ``targets``: one solve, then one product.

    Args:
        est: the unfitted estimator (its ``alpha`` is read).
        Xtr: ``(n, d)`` training features.
        targets: ``(P, n, K)`` targets (the classifier's ±1 class indicators).
        Xte: ``(n_test, d)`` test features.

    Returns:
        ``(P, n_test, K)`` decision values (the regressor's predictions for ``K = 1``).
    """
    from scipy.linalg import solve

    Xtr = Xtr.astype(np.float64)
    mean = Xtr.mean(axis=0)
    Xc, Tc = Xtr - mean, Xte.astype(np.float64) - mean
    n, dim = Xc.shape
    alpha = float(est.get_params()["alpha"])
    if dim > n:  # kernel form, as scikit-learn's cholesky solver takes it: W = Xcᵀ (XcXcᵀ + αI)⁻¹ Yc
        A = (Tc @ Xc.T) @ solve(Xc @ Xc.T + alpha * np.eye(n), np.eye(n), assume_a="pos")
    else:  # W = (XcᵀXc + αI)⁻¹ Xcᵀ Yc
        A = Tc @ solve(Xc.T @ Xc + alpha * np.eye(dim), Xc.T, assume_a="pos")  # (n_test, n)
    P, _, K = targets.shape
    Yc = targets - targets.mean(axis=1, keepdims=True)  # (P, n, K): centred for the intercept
    # (n_test, n) @ (n, P·K) -> (P, n_test, K), plus the intercept (the targets' mean)
    out = (A @ Yc.transpose(1, 0, 2).reshape(n, P * K)).reshape(-1, P, K).transpose(1, 0, 2)
    return out + targets.mean(axis=1, keepdims=True)
