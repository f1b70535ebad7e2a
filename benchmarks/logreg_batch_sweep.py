"""Check: the batched L-BFGS-B of ``embedx.probing.batchfit`` against scikit-learn, fit by fit.

Random problems (two to six classes, 40-400 items, 5-300 features, d > n included, C from 0.01
to 100, tol 1e-4 or 1e-6, max_iter 100 or 2000, float32 and float64 features, well- and
ill-conditioned columns, separable data that runs to max_iter); each is fitted on its labels and
two permutations of them at once by :func:`~embedx.probing.batchfit.logreg_fits` and, one label
vector at a time, by ``LogisticRegression``, twice: on the data and on its rows shuffled (the
same problem; only the order of scikit-learn's sums changes). A fit is *stable* where the two
agree (same ``n_iter_``, coefficients within 1e-6 of the largest): there a path does not hinge
on rounding, and the batched fit must follow it. Reports per feature dtype: fits, stable fits,
fits stopping at scikit-learn's iteration (``n_iter_``) among the stable ones and among all, the
largest coefficient deviation (relative to the largest coefficient) among the stable ones, the
same between scikit-learn and itself shuffled among the others, and the test items predicted
differently.

    python benchmarks/logreg_batch_sweep.py --problems 200 --seed 0
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def _problem(rng: np.random.Generator) -> dict:
    """One random problem: features, labels, a test set and the estimator's settings."""
    n, d, K = int(rng.integers(40, 401)), int(rng.integers(5, 301)), int(rng.integers(2, 7))
    X = rng.normal(size=(n + 60, d))
    if rng.random() < 0.3:  # ill-conditioned: column scales over up to four decades
        X *= np.logspace(0, rng.uniform(1, 4), d)[rng.permutation(d)]
    separable = rng.random() < 0.15
    beta = rng.normal(size=(d, K)) * (50.0 if separable else rng.choice([0.2, 1.0, 3.0]))
    y = (X @ beta / np.sqrt(d) / X.std() + (0 if separable else rng.gumbel(size=(n + 60, K)))).argmax(axis=1)
    return dict(X=X[:n], y=y[:n], Xte=X[n:], K=K, separable=separable,
                C=100.0 if separable else float(rng.choice([0.01, 0.1, 1.0, 10.0, 100.0])),
                tol=float(rng.choice([1e-4, 1e-6])), max_iter=int(rng.choice([100, 2000])),
                dtype=np.float32 if rng.random() < 0.5 else np.float64)


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from embedx.probing.batchfit import logreg_fits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore")  # separable problems stop at max_iter and warn
    rows = {np.float32: [], np.float64: []}
    done = 0
    while done < args.problems:
        pb = _problem(rng)
        if len(np.unique(pb["y"])) < 2:
            continue
        done += 1
        X, Xte = pb["X"].astype(pb["dtype"]), pb["Xte"].astype(pb["dtype"])
        ytr = np.stack([pb["y"], rng.permutation(pb["y"]), rng.permutation(pb["y"])])
        est = LogisticRegression(C=pb["C"], tol=pb["tol"], max_iter=pb["max_iter"])
        coef, intercept, n_iter = logreg_fits(est, X, ytr)
        shuffle = rng.permutation(len(X))
        for p in range(len(ytr)):
            sk = LogisticRegression(**est.get_params()).fit(X, ytr[p])
            again = LogisticRegression(**est.get_params()).fit(X[shuffle], ytr[p][shuffle])
            scale = max(np.abs(sk.coef_).max(), np.abs(sk.intercept_).max())
            dev = max(np.abs(coef[p] - sk.coef_).max(), np.abs(intercept[p] - sk.intercept_).max()) / scale
            self_dev = max(np.abs(again.coef_ - sk.coef_).max(), np.abs(again.intercept_ - sk.intercept_).max()) / scale
            scores = Xte @ np.ascontiguousarray(coef[p]).T + intercept[p]
            pred = sk.classes_[scores.argmax(axis=1) if scores.shape[1] > 1 else (scores[:, 0] > 0).astype(int)]
            stable = again.n_iter_[0] == sk.n_iter_[0] and self_dev <= 1e-6
            rows[pb["dtype"]].append((stable, n_iter[p] == sk.n_iter_[0], dev, self_dev,
                                      int((pred != sk.predict(Xte)).sum())))
    print("| features | fits | stable | same n_iter_ (stable) | same n_iter_ (all) | max rel. deviation "
          "(stable) | scikit-learn vs itself shuffled (unstable) | test items predicted differently |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dtype, res in rows.items():
        stable = [r for r in res if r[0]]
        worst = max((r[2] for r in stable), default=float("nan"))
        self_worst = max((r[3] for r in res if not r[0]), default=float("nan"))
        print(f"| {np.dtype(dtype).name} | {len(res)} | {len(stable)} | {sum(r[1] for r in stable)} "
              f"| {sum(r[1] for r in res)} | {worst:.1e} | {self_worst:.1e} | {sum(r[4] for r in res)} |")


if __name__ == "__main__":
    main()
