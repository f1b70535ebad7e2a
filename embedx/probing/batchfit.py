"""One training part, many label vectors: the chance control's refits of linear models at once.

A permutation test refits the same model on the same training features ``N`` times; only the
labels change. For two model families the ``N`` fits share most of their work:

* **logistic regression** (:func:`logreg_fits`, :func:`logreg_many`): scikit-learn fits it with
  scipy's L-BFGS-B (no bounds, its settings) on its objective, the mean multinomial or binomial
  log loss plus ``||W||² / (2·C·n)``, intercepts unpenalised. The ``N`` fits here run that
  algorithm batched (:class:`_Fits`): one matrix product ``(N·K, d) @ (d, n)`` gives every fit's
  decision values, the quasi-Newton algebra runs on ``(N, 2m, size)`` arrays, and each fit keeps
  its own line search and stopping tests, so each takes scipy's path (its iterations and
  function evaluations; the iterates differ in rounding, ~1e-15 where the path is stable). The
  objective is computed as scikit-learn computes it, in the features' dtype.
* **ridge** (:func:`ridge_many`): the prediction is linear in the labels, ``Xte W = A Y`` with
  ``A = Xc_te (XcᵀXc + αI)⁻¹ Xcᵀ`` (centred for the intercept): one solve per training part, then
  one product with all ``N`` label matrices (the "hat matrix" closed form).

The caller (:mod:`embedx.probing.permfit`) refits with the estimator itself every label vector
with a test item whose two best classes are closer than the two routes' rounding could explain,
so the predictions, hence the permutation p-values, are the estimator's.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np

__all__ = ["logreg_fits", "logreg_many", "ridge_many", "supports"]


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


def _multinomial(Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-item multinomial loss of decision values ``Z`` ``(P, K, n)`` and labels ``y``
    ``(P, n)``, and the residual, softmax minus one-hot (``Z``'s dtype; ``Z`` may be reused).

    Step for step as scikit-learn's ``HalfMultinomialLoss.loss_gradient`` (``_loss.pyx.tp``) in
    the features' dtype: the exponentials of ``z - max`` in double stored in that dtype, summed
    in double by class, the loss ``log(sum) + max`` stored in the dtype, minus the true class's
    value, the probabilities divided in the dtype.
    """
    P, K, n = Z.shape
    top = Z.max(axis=1)  # (P, n)
    # flat index of (problem, true class, item) in Z: gather the true class, no one-hot
    true = (np.arange(P)[:, None] * K + y) * n + np.arange(n)  # (P, n)
    zt = Z.reshape(-1)[true]  # (P, K, n) -> (P·K·n,): the true class's values
    R = np.subtract(Z, top[:, None, :], dtype=np.float64)
    np.exp(R, out=R)
    R = R.astype(Z.dtype, copy=False)
    total = R.sum(axis=1, dtype=np.float64).astype(Z.dtype, copy=False)  # class after class
    loss = (np.log(total.astype(np.float64, copy=False)) + top).astype(Z.dtype, copy=False)
    loss -= zt
    R /= total[:, None, :]
    R.reshape(-1)[true] -= 1
    return loss, R


def _binomial(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The per-item binomial loss of decision values ``z`` ``(P, n)`` and 0/1 labels ``y``; ``z``
    is overwritten by the residual. As scikit-learn's ``closs_grad_half_binomial``: in double,
    the same four branches, stored in the features' dtype."""
    r, t = z.astype(np.float64), y.astype(np.float64)
    low = r <= -2
    e = np.exp(np.where(low, r, -r))
    loss = np.where(r <= -37, e - t * r, np.where(low, np.log1p(e) - t * r, np.where(
        r <= 18, np.log1p(e) + (1 - t) * r, e + (1 - t) * r)))
    z[:] = np.where(r <= -37, e - t, np.where(low, ((1 - t) * e - t) / (1 + e), ((1 - t) - t * e) / (1 + e)))
    return loss.astype(z.dtype)


def _objective(X: np.ndarray, codes: np.ndarray, l2: float, K: int):
    """``fg(x, ids, zero=False) -> (f, g)``: scikit-learn's loss (``LinearModelLoss.loss_gradient``: the mean
    binomial or multinomial log loss plus ``l2·||W||²/2``, intercepts unpenalised) and its gradient
    for the problems ``ids`` at once, in float64 from the features' dtype as scikit-learn computes
    it (coefficients cast to that dtype for the decision values, per-item losses and residuals in
    it, the loss summed pairwise in it).

    ``x`` is ``(len(ids), K·(d+1))``, each row one problem's ``(K, d+1)`` coefficients (scikit-learn's
    ``(n_classes, n_dof)`` matrix, the intercept last); ``codes`` ``(P, n)`` each problem's class
    codes (binary: 1 for the positive class). The work arrays are ``(problems, K, n)``: one matrix
    product gives every problem's decision values, and the softmax runs over ``K`` slices.
    ``zero`` says that ``x`` is all zeros (the fits' start), where that product is skipped.
    """
    n, dim = X.shape
    XT = X.T  # (d, n), a view: BLAS reads it transposed (a contiguous copy sums in another order)

    def fg(x: np.ndarray, ids: np.ndarray, zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        P = len(ids)
        W = x.reshape(P, K, dim + 1)  # (P, K·(d+1)) -> (P, K, d+1)
        coef = W[:, :, :dim]
        if zero:  # x = 0 (the start): every decision value is 0
            Z = np.zeros((P, K, n), X.dtype)
        else:  # (P·K, d) @ (d, n) -> (P, K, n): every problem's decision values in one product
            Z = (coef.reshape(P * K, dim).astype(X.dtype, copy=False) @ XT).reshape(P, K, n)
            Z += W[:, :, dim:].astype(X.dtype)
        loss, R = (_binomial(Z[:, 0], codes[ids]), Z) if K == 1 else _multinomial(Z, codes[ids])
        f = (loss.sum(axis=1) / n).astype(np.float64) + 0.5 * l2 * np.einsum("pkd,pkd->p", coef, coef)
        R /= n
        g = np.empty((P, K, dim + 1))
        np.multiply(coef, l2, out=g[:, :, :dim])
        # (P·K, n) @ (n, d) -> (P, K, d), added in float64 as scikit-learn adds it
        g[:, :, :dim] += (R.reshape(P * K, n) @ X).reshape(P, K, dim)
        g[:, :, dim] = R.sum(axis=2)
        return f, g.reshape(P, -1)  # (P, K, d+1) -> (P, K·(d+1))

    return fg


#: scipy's L-BFGS-B as scikit-learn's lbfgs solver calls it: ``maxcor`` (scipy's default memory),
#: ``maxls`` (scikit-learn's 50), ``factr = ftol / eps`` for scikit-learn's ``ftol = 64·eps``,
#: and scipy's ``maxfun``
MEMORY, MAXLS, FACTR, MAXFUN = 10, 50, 64.0, 15000
#: the line search's constants, as scipy's ``lnsrlb`` hands them to ``dcsrch`` (no bounds: the
#: largest step is ``1e10``)
LS_FTOL, LS_GTOL, LS_XTOL, STPMAX = 1e-3, 0.9, 0.1, 1e10
EPSMCH = np.finfo(np.float64).eps


def _rows_matmul(A: np.ndarray, rows: np.ndarray, B: np.ndarray, left: bool = False,
                 trans: bool = False) -> np.ndarray:
    """``A[rows] @ B`` (or ``B @ A[rows]`` with ``left``; ``A[rows]`` transposed in its last two
    axes with ``trans``), batched over the first axis, without copying ``A[rows]`` when the rows
    are most of ``A`` (``A`` is the fits' ``(L, 2m, size)`` memory: a copy would cost more than
    the product)."""
    if len(rows) == len(A):  # rows come sorted from flatnonzero: all of A
        part = A
    elif 4 * len(rows) < 3 * len(A):
        part = A[rows]
    else:
        full = np.zeros((len(A), *B.shape[1:]))
        full[rows] = B
        return _rows_matmul(A, np.arange(len(A)), full, left, trans)[rows]
    if trans:
        part = part.transpose(0, 2, 1)
    return B @ part if left else part @ B


#: the per-fit state that :meth:`_Fits._compress` cuts to the running fits
_ROW_STATE = ("ids", "x", "f", "g", "nfev", "iters", "W", "SY", "YY", "col", "head", "theta", "ab", "yd",
              "z", "d", "xt", "stp", "gd0", "ifun", "need_dir", "pending", "done")


class _Fits:
    """``P`` runs of scipy's L-BFGS-B without bounds from zero, as ``scipy.optimize.minimize``
    runs them for scikit-learn, stepped together: every round's function values come from one
    ``fg`` call, and the quasi-Newton algebra is batched over the fits.

    It follows scipy's ``mainlb`` (``scipy/optimize/__lbfgsb.c``, scipy 1.17) where no variable
    has a bound, the case scikit-learn runs:

    * the first step (and the step after a reset of the memory, where ``theta = 1``) is the
      Cauchy point ``x - g``; later steps are the subspace minimisation over all (free)
      variables from ``x``, i.e. the quasi-Newton point ``x - H g``, ``H`` the inverse of the
      compact L-BFGS matrix (``B0 = theta·I``, ``theta = y'y / s'y`` of the newest pair, the
      last :data:`MEMORY` pairs kept); computed here in the compact inverse form (Byrd, Nocedal
      & Schnabel 1994), equal in exact arithmetic;
    * ``lnsrlb``'s line search: Moré-Thuente ``dcsrch`` (scipy's translation,
      ``scipy.optimize._dcsrch.DCSRCH``, one per fit whose first trial is not accepted; the first
      verdict is computed for all fits at once, as ``dcsrch`` computes it) with ftol 1e-3, gtol
      0.9, xtol 0.1, steps in ``[0, 1e10]``; the first trial ``min(1/||d||, 1e10)`` in the first
      iteration, else 1; at most :data:`MAXLS` evaluations, then ``x`` is restored and the run
      stops (no memory) or forgets its memory and starts over; the same for an ascent direction;
    * the stopping tests in scipy's order: the driver's ``maxiter`` and ``maxfun``, then
      ``max|g| <= pgtol``, then ``(f_old - f) / max(|f_old|, |f|, 1) <= factr·eps``;
    * the update ``s = stp·d``, ``y = g - g_old``, skipped when ``s'y <= eps·(-g_old'd)·stp``.

    Each iteration reads the memory twice, for ``[S Y]ᵀg`` and for ``H g`` (one matrix-vector
    product per fit each); the products the update needs besides, ``[S Y]ᵀy`` and ``Yᵀs``, follow
    from those without another pass: ``[S Y]ᵀg`` less the search's ``[S Y]ᵀg_old``, and
    ``stp·Yᵀd`` with ``Yᵀd = -(γ Yᵀg_old + YᵀS c_S + YᵀY c_Y)`` from the memory's ``SᵀY`` and
    ``YᵀY`` (``d = -H g_old = -(γ g_old + [S Y] c)``). They equal scipy's dot products up to
    rounding.

    The iterates differ from scipy's in rounding only (its products and norms add in another
    order); a discrete decision (a line-search branch, a stopping test) can differ only where
    a quantity lies within that rounding of its threshold.
    """

    def __init__(self, fg, P: int, size: int, *, pgtol: float, max_iter: int) -> None:
        m = MEMORY
        self.fg, self.pgtol, self.max_iter = fg, pgtol, max_iter
        self.ids = np.arange(P)
        self.x = np.zeros((P, size))
        self.f, self.g = fg(self.x, self.ids, zero=True)
        self.nfev, self.iters = np.ones(P, int), np.zeros(P, int)  # scipy counts x0's evaluation
        # the memory by slot: S in W[:, :m], Y in W[:, m:]; s_i'y_j and y_i'y_j
        self.W = np.zeros((P, 2 * m, size))
        self.SY, self.YY = np.zeros((P, m, m)), np.zeros((P, m, m))
        self.col, self.head, self.theta = np.zeros(P, int), np.zeros(P, int), np.ones(P)
        # by slot, for the direction d of the running line search: [S Y]ᵀg at its start, and Yᵀd
        self.ab, self.yd = np.zeros((P, 2 * m)), np.zeros((P, m))
        # the line search: the quasi-Newton point z, d = z - x, the trial point, step, g'd at 0
        self.z, self.d, self.xt = np.zeros((P, size)), np.zeros((P, size)), np.zeros((P, size))
        self.stp, self.gd0, self.ifun = np.zeros(P), np.zeros(P), np.zeros(P, int)
        self.search: dict[int, Any] = {}  # dcsrch's state, by fit, past a first trial
        self.need_dir, self.pending, self.done = np.zeros(P, bool), np.zeros(P, bool), np.zeros(P, bool)
        self.out_x, self.out_iter, self.out_nfev = np.zeros((P, size)), np.zeros(P, int), np.zeros(P, int)
        self._finish(np.flatnonzero(np.abs(self.g).max(axis=1) <= pgtol))
        self.need_dir = ~self.done

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every fit to its stop. Returns ``(P, size)`` the minimisers, and ``(P,)`` the
        iterations and function evaluations scipy reports (``nit``, ``nfev``)."""
        # the loop makes no reference cycles but enough small objects to start the cyclic
        # collector, whose full passes walk every object of the process (~5 % of the fits)
        collecting = gc.isenabled()
        gc.disable()
        try:
            while not self.done.all():
                if 8 * self.done.sum() >= len(self.done):
                    self._compress()
                self._begin(np.flatnonzero(self.need_dir))  # the start, and restarts without memory
                rows = np.flatnonzero(self.pending)
                if len(rows):
                    ft, gt = self.fg(self.xt[self._at(rows)], self.ids[rows])
                    self.nfev[rows] += 1
                    self._judge(rows, ft, gt)
        finally:
            if collecting:
                gc.enable()
        return self.out_x, self.out_iter, self.out_nfev

    def _compress(self) -> None:
        keep = np.flatnonzero(~self.done)
        for name in _ROW_STATE:
            setattr(self, name, getattr(self, name)[keep])

    def _finish(self, rows: np.ndarray) -> None:
        self.out_x[self.ids[rows]] = self.x[rows]
        self.out_iter[self.ids[rows]] = self.iters[rows]
        self.out_nfev[self.ids[rows]] = self.nfev[rows]
        self.done[rows], self.need_dir[rows], self.pending[rows] = True, False, False

    def _at(self, rows: np.ndarray) -> np.ndarray | slice:
        """``rows`` as an index that reads the per-fit arrays without a copy when it is all of
        them (``rows`` come sorted from ``flatnonzero``)."""
        return slice(None) if len(rows) == len(self.done) else rows

    def _begin(self, rows: np.ndarray, ab: np.ndarray | None = None) -> None:
        """Directions and first trial points for ``rows`` (``mainlb`` from the loop's start to
        ``lnsrlb``'s first request for ``f`` and ``g``); ``ab`` ``(len(rows), 2m)`` the rows'
        ``[S Y]ᵀg`` by slot, where they have a memory."""
        while len(rows):
            at, mem = self._at(rows), self.col[rows] > 0
            x, g = self.x[at], self.g[at]
            if mem.all():  # no bounds: the Cauchy point is x, the subspace step -H g
                z = x - self._hess_times(rows, g, ab)
            else:  # no memory (theta 1): the Cauchy point x - g/theta, no subspace step
                z = x - g
                if mem.any():
                    z[mem] = x[mem] - self._hess_times(rows[mem], g[mem], ab[mem])
            d = z - x
            gd = np.einsum("ps,ps->p", g, d)
            ok = gd < 0.0  # else not a descent direction (scipy's info -4): as a failed search
            if not ok.all():
                self._fail(rows[~ok])
                rows, x, z, d, gd = rows[ok], x[ok], z[ok], d[ok], gd[ok]
                at = rows
            stp = np.ones(len(rows))
            first = self.iters[rows] == 0
            if first.any():  # scipy's first trial step: 1/||d||
                stp[first] = np.minimum(1.0 / np.sqrt(np.einsum("ps,ps->p", d[first], d[first])), STPMAX)
            if isinstance(at, slice):  # every fit: take the new arrays over rather than copy them
                self.z, self.d = z, d
            else:
                self.z[at], self.d[at] = z, d
            self.stp[at], self.gd0[at], self.ifun[at] = stp, gd, 1
            # lnsrlb: x = z at a unit step, else x + stp·d
            unit = stp == 1.0
            self.xt[at] = z if unit.all() else np.where(unit[:, None], z, stp[:, None] * d + x)
            self.need_dir[at], self.pending[at] = False, True
            if self.search:  # the line searches these fits ran before
                for key in self.search.keys() & set(self.ids[rows].tolist()):
                    del self.search[key]
            rows, ab = np.flatnonzero(self.need_dir), None  # those _fail sent back, memory reset

    def _hess_times(self, rows: np.ndarray, g: np.ndarray, ab: np.ndarray) -> np.ndarray:
        """``H g`` for each row's L-BFGS matrix: ``H = γI + [S γY] M [S γY]ᵀ``, ``γ = 1/theta``,
        ``M = [[R⁻ᵀ(D + γYᵀY)R⁻¹, -R⁻ᵀ], [-R⁻¹, 0]]``, ``R`` the upper triangle of ``SᵀY`` and
        ``D`` its diagonal, pairs oldest first (Byrd, Nocedal & Schnabel 1994, Theorem 2.2), from
        ``ab = [S Y]ᵀg`` by slot; unused slots are padded with an identity block so all rows
        solve ``m × m`` systems."""
        m, k = MEMORY, np.arange(MEMORY)
        order = (self.head[rows, None] + k) % m  # (b, m): the slots, oldest pair first
        valid = k < self.col[rows, None]  # (b, m)
        a = np.where(valid, np.take_along_axis(ab[:, :m], order, 1), 0.0)[..., None]  # Sᵀg (b, m, 1)
        b = np.where(valid, np.take_along_axis(ab[:, m:], order, 1), 0.0)[..., None]  # Yᵀg
        pair = valid[:, :, None] & valid[:, None, :]
        at = (rows[:, None, None], order[:, :, None], order[:, None, :])  # (b, m, m) by age
        sy, yy = np.where(pair, self.SY[at], 0.0), np.where(pair, self.YY[at], 0.0)
        R = np.triu(sy) + np.eye(m) * ~valid[:, None, :]
        gamma = (1.0 / self.theta[rows])[:, None, None]
        u = np.linalg.solve(R, a)  # R⁻¹Sᵀg
        v = np.diagonal(sy, axis1=1, axis2=2)[..., None] * u + gamma * (yy @ u) - gamma * b
        c = np.zeros((len(rows), 2 * m))
        np.put_along_axis(c[:, :m], order, np.linalg.solve(R.transpose(0, 2, 1), v)[..., 0], 1)
        np.put_along_axis(c[:, m:], order, -(gamma * u)[..., 0], 1)
        # Yᵀd for d = -H g by slot, from the memory's products (no pass over the memory):
        # -(γ Yᵀg + YᵀS c_S + YᵀY c_Y), YᵀS the transpose of SY (SY[i, j] = s_i'y_j)
        self.ab[rows] = ab
        self.yd[rows] = -(gamma[:, :, 0] * ab[:, m:] + np.einsum("pji,pj->pi", self.SY[rows], c[:, :m])
                          + np.einsum("pij,pj->pi", self.YY[rows], c[:, m:]))
        # (b, 1, 2m) @ (b, 2m, s) -> (b, s)
        return gamma[:, :, 0] * g + _rows_matmul(self.W, rows, c[:, None, :], left=True)[:, 0]

    def _judge(self, rows: np.ndarray, ft: np.ndarray, gt: np.ndarray) -> None:
        """``dcsrch``'s verdict on each evaluated trial: accept, try another step, or fail."""
        from scipy.optimize._dcsrch import DCSRCH

        gdn = np.einsum("ps,ps->p", gt, self.d[self._at(rows)])
        f0, g0, stp = self.f[rows], self.gd0[rows], self.stp[rows]
        fresh = self.ifun[rows] == 1
        # dcsrch's verdict on a first trial: sufficient decrease and curvature (its warnings
        # need a bracket or a step at a bound; such trials go through DCSRCH below)
        accept = fresh & (ft <= f0 + stp * (LS_FTOL * g0)) & (np.abs(gdn) <= LS_GTOL * -g0)
        fail = np.zeros(len(rows), bool)
        for i in np.flatnonzero(~accept):
            row, key = rows[i], self.ids[rows[i]]
            if fresh[i]:  # replay dcsrch's start, which only stores f(0), g(0) and the step
                self.search[key] = DCSRCH(None, None, LS_FTOL, LS_GTOL, LS_XTOL, 0.0, STPMAX)
                self.search[key]._iterate(stp[i], f0[i], g0[i], b"START")
            step, _, _, task = self.search[key]._iterate(stp[i], ft[i], gdn[i], b"FG")
            if task[:4] in (b"CONV", b"WARN"):  # lnsrlb takes a warning's step as well
                accept[i] = True
            elif self.ifun[row] >= MAXLS:  # lnsrlb: iback = ifun - 1 >= maxls
                fail[i] = True
            else:
                self.ifun[row] += 1
                self.stp[row] = step
                self.xt[row] = self.z[row] if step == 1.0 else step * self.d[row] + self.x[row]
        self.pending[rows[accept | fail]] = False
        self._fail(rows[fail])  # x is still the search's start, as scipy restores it
        if accept.all():
            self._accept(rows, ft, gt, gdn)
        elif accept.any():
            self._accept(rows[accept], ft[accept], gt[accept], gdn[accept])

    def _fail(self, rows: np.ndarray) -> None:
        """No step found (or an ascent direction): with no memory scipy stops, else it forgets
        its memory and starts over from the same point."""
        self._finish(rows[self.col[rows] == 0])
        rows = rows[self.col[rows] > 0]
        self.col[rows], self.head[rows], self.theta[rows] = 0, 0, 1.0
        self.need_dir[rows] = True

    def _accept(self, rows: np.ndarray, ft: np.ndarray, gt: np.ndarray, gdn: np.ndarray) -> None:
        """A new iterate: the stopping tests, the memory's update and the next direction
        (``mainlb`` after ``NEW_X``, with scipy's driver counting the iteration first)."""
        at, fold = self._at(rows), self.f[rows]
        y = gt - self.g[at]
        if isinstance(at, slice):  # every fit: take the arrays over rather than copy them
            self.x, self.xt, self.g = self.xt, self.x, gt
        else:
            self.x[at], self.g[at] = self.xt[at], gt
        self.f[at] = ft
        self.iters[at] += 1
        ddum = np.maximum(np.maximum(np.abs(fold), np.abs(ft)), 1.0)
        stop = ((self.iters[rows] >= self.max_iter) | (self.nfev[rows] > MAXFUN)
                | (np.maximum(gt.max(axis=1), -gt.min(axis=1)) <= self.pgtol)
                | (fold - ft <= FACTR * EPSMCH * ddum))
        if stop.any():
            self._finish(rows[stop])
            rows, gt, y, gdn = rows[~stop], gt[~stop], y[~stop], gdn[~stop]
        stp, g0, d = self.stp[rows], self.gd0[rows], self.d[self._at(rows)]
        unit = stp == 1.0  # scipy scales d (and s'y, g'd) only for a step other than 1
        dr = np.where(unit, gdn - g0, (gdn - g0) * stp)  # s'y
        s = d if unit.all() else np.where(unit[:, None], d, d * stp[:, None])
        # one pass over the memory: (u, 1, s) @ (u, s, 2m) -> (u, 2m), [S Y]ᵀg, the next direction's;
        # the memory's products with y and s follow from it without another pass: [S Y]ᵀy is
        # [S Y]ᵀg less the line search's [S Y]ᵀg_old, Yᵀs is stp·Yᵀd
        ab = _rows_matmul(self.W, rows, gt[:, None, :], left=True, trans=True)[:, 0]
        keep = dr > EPSMCH * np.where(unit, -g0, -g0 * stp)  # else scipy skips the update
        if keep.any():
            k = rows[keep]
            ys = np.where(unit[keep, None], self.yd[k], self.yd[k] * stp[keep, None])
            sg = np.where(unit, gdn, gdn * stp)  # s'g: the line search's d'g, times the step
            if keep.all():  # no copies
                ab = self._store(rows, s, y, gt, dr, ys, ab - self.ab[rows], ab, sg)
            else:
                ab[keep] = self._store(k, s[keep], y[keep], gt[keep], dr[keep], ys, ab[keep] - self.ab[k], ab[keep],
                                       sg[keep])
        self._begin(rows, ab)

    def _store(self, rows: np.ndarray, s: np.ndarray, y: np.ndarray, g: np.ndarray, dr: np.ndarray,
               ys: np.ndarray, wy: np.ndarray, ab: np.ndarray, sg: np.ndarray) -> np.ndarray:
        """Add the pair ``(s, y)`` to each row's memory, dropping the oldest past :data:`MEMORY`
        (scipy's ``matupd``; ``theta = y'y / s'y``), from the old memory's products ``ys``
        (``Yᵀs``), ``wy`` (``[S Y]ᵀy``) and ``ab`` (``[S Y]ᵀg``), by slot, and ``sg`` (``s'g``).
        Returns ``ab`` with the new pair's entries."""
        m, u = MEMORY, np.arange(len(rows))
        full = self.col[rows] == m
        slot = np.where(full, self.head[rows], (self.head[rows] + self.col[rows]) % m)
        self.head[rows] = np.where(full, (self.head[rows] + 1) % m, self.head[rows])
        self.col[rows] = np.minimum(self.col[rows] + 1, m)
        self.W[rows, slot], self.W[rows, m + slot] = s, y
        rr = np.einsum("ps,ps->p", y, y)
        self.SY[rows, slot, :], self.SY[rows, :, slot] = ys, wy[:, :m]
        self.YY[rows, slot, :], self.YY[rows, :, slot] = wy[:, m:], wy[:, m:]
        self.SY[rows, slot, slot], self.YY[rows, slot, slot] = dr, rr
        self.theta[rows] = rr / dr
        ab[u, slot], ab[u, m + slot] = sg, np.einsum("ps,ps->p", y, g)
        return ab


def logreg_fits(est: Any, Xtr: np.ndarray, ytr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``est`` (a :class:`~sklearn.linear_model.LogisticRegression` that :func:`supports`)
    fitted on ``Xtr`` with every label vector of ``ytr``: scikit-learn's objective, its L-BFGS-B
    settings, the ``P`` runs stepped together (:class:`_Fits`).

    Args:
        est: the unfitted estimator (its ``C``, ``tol`` and ``max_iter`` are read).
        Xtr: ``(n, d)`` training features.
        ytr: ``(P, n)`` labels, the same classes in every row.

    Returns:
        ``(coef, intercept, n_iter)``: ``(P, K, d)``, ``(P, K)`` in the features' dtype (as
        ``coef_`` and ``intercept_``; ``K = 1`` for two classes) and ``(P,)`` as ``n_iter_``;
        ``None`` when the rows' classes differ or scipy lacks its line search's translation.
    """
    try:
        from scipy.optimize._dcsrch import DCSRCH  # noqa: F401  (used by _Fits._judge)
    except ImportError:  # pragma: no cover - scipy moved its internals
        return None
    classes = np.unique(ytr[0])
    if any(not np.array_equal(np.unique(row), classes) for row in ytr[1:]):
        return None
    params = est.get_params()
    n, dim = Xtr.shape
    K = 1 if len(classes) == 2 else len(classes)
    codes = np.searchsorted(classes, ytr)  # (P, n) class codes; binary: 1 = the positive class
    # scikit-learn fits float32 features in float32, anything else in float64
    X = Xtr if Xtr.dtype in (np.float32, np.float64) else Xtr.astype(np.float64)
    fg = _objective(X, codes, 1.0 / (params["C"] * n), K)
    fits = _Fits(fg, len(ytr), K * (dim + 1), pgtol=params["tol"], max_iter=params["max_iter"])
    x, n_iter, _ = fits.run()
    W = x.reshape(len(ytr), K, dim + 1).astype(Xtr.dtype)  # (P, K·(d+1)) -> (P, K, d+1)
    return W[:, :, :dim], W[:, :, dim], np.minimum(n_iter, params["max_iter"])


def logreg_many(est: Any, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> tuple[list, np.ndarray] | None:
    """Predictions of ``est`` (a :class:`~sklearn.linear_model.LogisticRegression`, without
    class weights) fitted on ``Xtr`` with every label vector of ``ytr`` (:func:`logreg_fits`);
    each fit's coefficients predict through the product ``LogisticRegression.predict`` computes.

    Args:
        est: the unfitted estimator.
        Xtr: ``(n, d)`` training features (already scaled as the pipeline scales them).
        ytr: ``(P, n)`` labels, the same classes in every row.
        Xte: ``(n_test, d)`` test features.

    Returns:
        ``(preds, margins)``: ``P`` prediction arrays, and ``(P,)`` each fit's smallest gap
        between a test item's two best classes (the caller refits where rounding could swap
        them); ``None`` where :func:`logreg_fits` gives none.
    """
    fitted = logreg_fits(est, Xtr, ytr)
    if fitted is None:
        return None
    coef, intercept, _ = fitted
    classes = np.unique(ytr[0])
    preds, margins = [], np.empty(len(ytr))
    for p in range(len(ytr)):
        # LinearClassifierMixin.predict: the same product on a C-ordered coef_, the same rounding
        scores = Xte @ np.ascontiguousarray(coef[p]).T + intercept[p]  # (n_test, K)
        if len(classes) == 2:
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
