"""The chance control's refits: one task per configuration, model and fold, every permutation.

``--permutations N`` refits every (configuration, model, fold) on ``N`` permuted label vectors
(:mod:`embedx.probing.permutation`). One fit per joblib task spent most of its time around the
fit: shipping the features to a worker, cutting and scaling the fold, building the estimator,
scoring. :func:`run_permuted` runs all ``N`` refits of a fold in one task and does once what does
not depend on the labels: the training and test parts, speaker normalisation, the pipeline's
scaler (fitted on the training part only, as the pipeline fits it: the same numbers).

Logistic regression's fits run scipy's L-BFGS-B batched over the permutations, each fit on the
path scikit-learn's own fit takes (:func:`embedx.probing.batchfit.logreg_many`); ridge takes its closed form
(:func:`embedx.probing.batchfit.ridge_many`: one solve per fold for every permutation). A
permutation where either route and the estimator could disagree on a test item (its two best
classes closer than :data:`MARGIN`, where rounding might swap them) is refitted by the
estimator. Every other model is fitted per permutation as the study fits it (a fresh clone of
the pipeline's model step on the scaled part). So the predictions, hence every permutation
p-value, are those of one fit per permutation. A tuned model (``--tune``: the nested search
picks parameters on the labels) is rebuilt and searched on every permutation, as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from embedx.probing import metrics as M
from embedx.probing.batchfit import logreg_many, ridge_many, supports
from embedx.probing.fitting import fit_estimator, limit_threads, make_estimator
from embedx.probing.speaker_norm import group_standardize

__all__ = ["CHUNK", "MARGIN", "run_permuted"]

#: logistic regressions fitted together at most: each iteration reads every fit's L-BFGS memory
#: (2·10 vectors of (d+1)·K floats) twice, so fewer fits keep it in cache (50 fits at 256 dims
#: and 4 classes: 8 MB; 15 % faster than 100 at once), while the products gain little beyond ~50
CHUNK = 50

#: decision-value gap below which a batched route defers to the estimator (float32 rounding is
#: ~1e-6 of a decision value; ridge's closed form differed by 5e-5 at most at 320 × 256; the
#: batched logistic regressions follow scikit-learn's path, but a float32 fit whose path hinges
#: on rounding can stop an iteration apart)
MARGIN = 1e-3


def _parts(X: np.ndarray, groups: np.ndarray | None, train: np.ndarray, test: np.ndarray,
           speaker_norm: bool) -> tuple[np.ndarray, np.ndarray]:
    """The fold's training and test features, speaker-normalised as :func:`run_task` does."""
    Xtr, Xte = X[train], X[test]  # (n_train, dim), (n_test, dim)
    if speaker_norm:
        Xtr = group_standardize(Xtr, groups[train])
        Xte = group_standardize(Xte, groups[test], fallback=X[train])
    return Xtr, Xte


def _ridge_preds(model: Any, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, task: str
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Every permutation's ridge predictions by the closed form, and which need the estimator.

    Returns:
        ``(preds, refit)``: ``(P, n_test)`` predictions and a ``(P,)`` mask of the permutations
        whose predictions could differ from the estimator's; ``None`` when a permutation's
        training part lacks a class (the estimator would then know fewer classes).
    """
    if task != M.CLASSIFICATION:  # predictions differ by the estimator's float32 rounding, ~1e-6
        out = ridge_many(model, Xtr, ytr[..., None].astype(np.float64), Xte)[..., 0]
        return out, np.zeros(len(ytr), dtype=bool)
    classes = np.unique(ytr[0])
    if any(not np.array_equal(np.unique(row), classes) for row in ytr[1:]):
        return None
    codes = np.searchsorted(classes, ytr)  # (P, n_train) class codes
    if len(classes) == 2:  # LabelBinarizer(neg_label=-1): one ±1 column for classes[1]
        targets = (2.0 * codes - 1.0)[..., None]
    else:  # (P, n) -> (P, n, K) ±1 indicators
        targets = 2.0 * (codes[..., None] == np.arange(len(classes))) - 1.0
    decision = ridge_many(model, Xtr, targets, Xte)  # (P, n_test, K)
    if len(classes) == 2:
        return classes[(decision[..., 0] > 0).astype(int)], np.abs(decision[..., 0]).min(axis=1) < MARGIN
    top2 = np.sort(decision, axis=2)[..., -2:]
    return classes[decision.argmax(axis=2)], (top2[..., 1] - top2[..., 0]).min(axis=1) < MARGIN


def _pipeline_preds(pipe: Any, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, task: str) -> list[np.ndarray]:
    """Every permutation's predictions of an untuned pipeline, its label-free part fitted once."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    steps = pipe.steps
    if len(steps) > 1:  # the scaler: fitted on the training part, like Pipeline.fit does
        head = Pipeline(steps[:-1]).fit(Xtr)
        Xtr, Xte = head.transform(Xtr), head.transform(Xte)
    model = steps[-1][1]
    preds: list[np.ndarray | None] = [None] * len(ytr)
    refit = np.ones(len(ytr), dtype=bool)
    family = supports(model)
    if family == "ridge":
        closed = _ridge_preds(model, Xtr, ytr, Xte, task)
        if closed is not None:
            preds, refit = list(closed[0]), closed[1]
    elif family == "logreg":
        for start in range(0, len(ytr), CHUNK):
            stepped = logreg_many(model, Xtr, ytr[start:start + CHUNK], Xte)
            if stepped is not None:
                preds[start:start + CHUNK] = stepped[0]
                refit[start:start + CHUNK] = stepped[1] < MARGIN
    for p in np.flatnonzero(refit):
        preds[p] = np.asarray(clone(model).fit(Xtr, ytr[p]).predict(Xte))
    return preds


def run_permuted(
    X: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    *,
    key: tuple[int, int, int],
    model: str,
    task: str,
    seed: int,
    class_weight: str | None,
    threads: int,
    speaker_norm: bool,
    grid: Mapping[str, list[Any]] | None,
    inner: Any,
    grouped_inner: bool,
    metric: str,
) -> list[dict[str, Any]]:
    """Refit one (configuration, model, fold) on every permuted label vector (runs in a worker).

    Args:
        X: ``(num_items, dim)`` features of the configuration.
        labels: ``(P, num_items)`` permuted labels, ``labels[p - 1]`` for permutation ``p``.
        groups: ``(num_items,)`` groups, or ``None``.
        train: the fold's training rows.
        test: the fold's test rows.
        key: ``(config, model, fold)`` indices.
        model: the model's registry name.
        task: ``classification`` or ``regression``.
        seed: the study's seed.
        class_weight: ``None`` or ``"balanced"``.
        threads: BLAS threads.
        speaker_norm: standardise each part per speaker.
        grid: the model's tuning grid, or ``None``.
        inner: the nested search's splitter (with ``grid``).
        grouped_inner: whether the nested search keeps groups apart.
        metric: the main metric (what the nested search maximises).

    Returns:
        One output per permutation: ``key`` ``(p, config, model, fold)`` and ``pred`` (the test
        part's predictions), the two fields the chance control reads.
    """
    with limit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refits' warnings are the study's, reported once there
        Xtr, Xte = _parts(X, groups, train, test, speaker_norm)
        ytr = labels[:, train]  # (P, n_train)
        build = dict(seed=seed, class_weight=class_weight, threads=threads, grid=grid, inner=inner, metric=metric)
        if grid is None:
            preds = _pipeline_preds(make_estimator(model, task, **build), Xtr, ytr, Xte, task)
        else:
            gtr = None if groups is None else groups[train]
            preds = [fit_estimator(make_estimator(model, task, **build), Xtr, y, gtr, grouped_inner).predict(Xte)
                     for y in ytr]
    return [{"key": (p + 1, *key), "pred": np.asarray(pred)} for p, pred in enumerate(preds)]
