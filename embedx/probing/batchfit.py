"""One training part, many label vectors: the chance control's refits of linear models at once.

A permutation test refits the same model on the same training features ``N`` times, only the
labels change. For two model families the ``N`` fits share nearly all of their work:

* **logistic regression** (:func:`logreg_many`): the ``N`` problems are independent and convex,
  so one L-BFGS runs them in lockstep. Every iteration is one matrix product for all of them
  (``(n, d+1) @ (d+1, N·K)``) instead of ``N`` small ones, each with its Python overhead. It
  minimises scikit-learn's own objective (:class:`~sklearn.linear_model.LogisticRegression`
  with ``solver="lbfgs"``: the mean, class-weighted multinomial or binomial log loss plus
  ``||W||² / (2·C·Σweights)``, intercepts unpenalised) to a gradient far below scikit-learn's
  stopping tolerance, so it lands on the same optimum, closer than scikit-learn itself does.
* **ridge** (:func:`ridge_many`): the prediction is linear in the labels, ``Xte W = A Y`` with
  ``A = Xc_te (XcᵀXc + αI)⁻¹ Xcᵀ`` (centred for the intercept): one solve per training part, then
  one product with all ``N`` label matrices (the "hat matrix" closed form).

Both return decision values. The caller (:mod:`embedx.probing.permfit`) turns them into
predictions and refits with the estimator itself every label vector whose prediction the two
routes could disagree on (a test item whose two best classes are within the routes' numerical
difference), so the predictions, hence the permutation p-values, are those of the estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["balanced_weights", "logreg_many", "ridge_many", "supports"]

#: L-BFGS of the lockstep solver: history length, gradient tolerance (max-norm, on the mean
#: objective; scikit-learn stops at 1e-4), iteration cap, Armijo constant
MEMORY, GTOL, MAX_ITER, ARMIJO = 10, 1e-10, 2000, 1e-4


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
              and params["class_weight"] in (None, "balanced") and np.isfinite(params["C"]))
        return "logreg" if ok else None
    if type(est) in (Ridge, RidgeClassifier):
        ok = (params["fit_intercept"] and not params["positive"]
              and params["solver"] in ("auto", "cholesky", "svd")
              and params.get("class_weight") is None and np.ndim(params["alpha"]) == 0)
        return "ridge" if ok else None
    return None


def balanced_weights(codes: np.ndarray, num_classes: int) -> np.ndarray:
    """``class_weight="balanced"`` sample weights ``n / (K · count(class))`` of every row.

    Args:
        codes: ``(P, n)`` class codes ``0..K-1`` (every class present in every row).
        num_classes: ``K``.

    Returns:
        ``(P, n)`` weights.
    """
    counts = np.stack([np.bincount(row, minlength=num_classes) for row in codes])  # (P, K)
    per_class = codes.shape[1] / (num_classes * counts)
    return np.take_along_axis(per_class, codes, axis=1)


def _objective(Xa: np.ndarray, targets: np.ndarray, weights: np.ndarray, l2: np.ndarray, binary: bool):
    """``fg(W, rows) -> (f, g)`` of the problems ``rows``, ``W`` ``(len(rows), d+1, K)``."""
    n, m = Xa.shape

    def fg(W: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P, _, K = W.shape
        # (P, d+1, K) -> (d+1, P·K): one product for every problem
        Z = (Xa @ W.transpose(1, 0, 2).reshape(m, P * K)).reshape(n, P, K).transpose(1, 0, 2)
        sw = weights[rows]  # (P, n), each row sums to 1
        if binary:
            z = Z[..., 0]  # (P, n)
            loss = np.logaddexp(0.0, z) - targets[rows] * z
            resid = (1.0 / (1.0 + np.exp(-z)) - targets[rows])[..., None]  # (P, n, 1)
        else:
            top = Z.max(axis=2, keepdims=True)
            lse = top[..., 0] + np.log(np.exp(Z - top).sum(axis=2))  # (P, n)
            picked = np.take_along_axis(Z, targets[rows][..., None], axis=2)[..., 0]
            loss = lse - picked
            resid = np.exp(Z - lse[..., None])  # softmax, (P, n, K)
            np.put_along_axis(resid, targets[rows][..., None],
                              np.take_along_axis(resid, targets[rows][..., None], axis=2) - 1.0, axis=2)
        coef = W[:, :-1, :]  # the intercept (last row) is not penalised
        f = np.einsum("pn,pn->p", sw, loss) + 0.5 * l2[rows] * np.einsum("pdk,pdk->p", coef, coef)
        G = resid * sw[..., None]  # (P, n, K)
        # (n, P·K) -> (d+1, P, K) -> (P, d+1, K)
        g = (Xa.T @ G.transpose(1, 0, 2).reshape(n, P * K)).reshape(m, P, K).transpose(1, 0, 2)
        g[:, :-1, :] += l2[rows, None, None] * coef
        return f, g

    return fg


def _two_loop(g: np.ndarray, S: np.ndarray, Yh: np.ndarray, rho: np.ndarray, gamma: np.ndarray,
              order: list[int]) -> np.ndarray:
    """L-BFGS direction ``-H g`` of every problem (``S``, ``Yh``: ``(P, M, m)`` history)."""
    q = g.copy()
    alpha = np.zeros(rho.shape)
    for j in reversed(order):  # newest first
        alpha[:, j] = rho[:, j] * np.einsum("pm,pm->p", S[:, j], q)
        q -= alpha[:, j, None] * Yh[:, j]
    r = gamma[:, None] * q
    for j in order:
        beta = rho[:, j] * np.einsum("pm,pm->p", Yh[:, j], r)
        r += (alpha[:, j] - beta)[:, None] * S[:, j]
    return -r


def _lbfgs(fg, W0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise every problem of ``fg`` from ``W0`` ``(P, d+1, K)`` in lockstep.

    Returns:
        ``(W, converged)``: the minimisers and whether each reached :data:`GTOL`.
    """
    P, shape = W0.shape[0], W0.shape[1:]
    x = W0.reshape(P, -1).copy()  # (P, d+1, K) -> (P, m)
    m = x.shape[1]
    f, g = fg(x.reshape(P, *shape), np.arange(P))
    g = g.reshape(P, m)
    S, Yh = np.zeros((P, MEMORY, m)), np.zeros((P, MEMORY, m))
    rho, gamma = np.zeros((P, MEMORY)), 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)
    converged = np.abs(g).max(axis=1) <= GTOL
    stuck = np.zeros(P, dtype=bool)
    for it in range(MAX_ITER):
        act = np.flatnonzero(~converged & ~stuck)
        if act.size == 0:
            break
        order = [(it - 1 - k) % MEMORY for k in range(min(it, MEMORY))][::-1]  # oldest first
        d = _two_loop(g[act], S[act], Yh[act], rho[act], gamma[act], order)
        slope = np.einsum("pm,pm->p", d, g[act])
        bad = slope >= 0  # not a descent direction (never for a convex problem; kept safe)
        d[bad], slope[bad] = -g[act][bad], -np.einsum("pm,pm->p", g[act][bad], g[act][bad])
        step = np.ones(act.size)
        f_new, g_new = np.empty(act.size), np.empty((act.size, m))
        todo = np.arange(act.size)
        for _ in range(60):  # backtracking Armijo line search, only on the problems not yet done
            trial = x[act[todo]] + step[todo, None] * d[todo]
            ft, gt = fg(trial.reshape(todo.size, *shape), act[todo])
            ok = ft <= f[act[todo]] + ARMIJO * step[todo] * slope[todo]
            f_new[todo[ok]], g_new[todo[ok]] = ft[ok], gt.reshape(todo.size, m)[ok]
            todo = todo[~ok]
            if todo.size == 0:
                break
            step[todo] *= 0.5
        stuck[act[todo]] = True
        done = np.setdiff1d(np.arange(act.size), todo)
        rows = act[done]
        s = step[done, None] * d[done]
        y = g_new[done] - g[rows]
        sy = np.einsum("pm,pm->p", s, y)
        slot = it % MEMORY
        keep = sy > 1e-12 * np.einsum("pm,pm->p", y, y)
        S[rows, slot], Yh[rows, slot] = s, y
        rho[rows, slot] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        gamma[rows] = np.where(keep, sy / np.maximum(np.einsum("pm,pm->p", y, y), 1e-300), gamma[rows])
        x[rows] += s
        f[rows], g[rows] = f_new[done], g_new[done]
        converged[rows] = np.abs(g[rows]).max(axis=1) <= GTOL
    return x.reshape(P, *shape), converged


def logreg_many(est: Any, Xtr: np.ndarray, codes: np.ndarray, Xte: np.ndarray,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Decision values of ``est`` (a :class:`~sklearn.linear_model.LogisticRegression`) fitted
    on ``Xtr`` with every label vector of ``codes``.

    Args:
        est: the unfitted estimator (its ``C`` and ``class_weight`` are read).
        Xtr: ``(n, d)`` training features (already scaled as the pipeline scales them).
        codes: ``(P, n)`` class codes ``0..K-1``, every class present in every row.
        Xte: ``(n_test, d)`` test features.
        num_classes: ``K``.

    Returns:
        ``(decision, converged)``: ``(P, n_test, K)`` decision values (``K = 1`` for two
        classes: the positive class's, as ``decision_function``), and ``(P,)`` whether each
        fit reached the tolerance.
    """
    n, dim = Xtr.shape
    P = codes.shape[0]
    Xa = np.hstack([Xtr.astype(np.float64), np.ones((n, 1))])  # (n, d+1): the intercept column
    binary = num_classes == 2
    weights = (balanced_weights(codes, num_classes) if est.get_params()["class_weight"] == "balanced"
               else np.ones((P, n)))
    sw_sum = weights.sum(axis=1)
    l2 = 1.0 / (est.get_params()["C"] * sw_sum)  # scikit-learn's penalty on the mean loss
    targets = codes.astype(np.float64) if binary else codes
    fg = _objective(Xa, targets, weights / sw_sum[:, None], l2, binary)
    K = 1 if binary else num_classes
    W, converged = _lbfgs(fg, np.zeros((P, dim + 1, K)))
    # (n_test, d) @ (P, d, K) -> (P, n_test, K)
    decision = np.einsum("td,pdk->ptk", Xte.astype(np.float64), W[:, :-1, :]) + W[:, None, -1, :]
    return decision, converged


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
