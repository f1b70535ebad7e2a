"""Chance control: a label-permutation test of every configuration (``embedx fit --permutations N``).

Is a configuration's score more than a probe can reach on labels unrelated to the features? The
study is rerun ``N`` times with permuted labels, on the same folds, and every configuration's
estimand (the pooled out-of-fold main metric) is computed against the permuted labels; the
p-value is ``(1 + #{null >= observed}) / (1 + N)`` (Phipson & Smyth 2010: never 0, exact level
under exchangeability), as in scikit-learn's ``permutation_test_score``.

How the labels are permuted keeps the fold structure:

* with a group (speaker) column, **within every group**: each speaker keeps its own multiset of
  labels, so grouped (and stratified grouped) folds hold the same items and the same class counts
  as in the real study; only the link between an item's features and its label is broken.
* when the label is constant within every group (a speaker-level label such as gender, which a
  within-group shuffle would leave unchanged), the groups' labels are permuted **among groups**
  instead; the folds still hold the same speakers.
* without groups, over all items.

Every configuration is refitted on the same ``N`` permutations, so the null scores are paired
across configurations. That gives, besides the per-configuration ``p_permutation``, a
family-wise p-value ``p_permutation_fwer`` from the maximum over configurations of each
permutation's scores (Westfall & Young's max-statistic). The best configuration was picked among
all of them, so its own ``p_permutation`` is optimistic; whether the *study* beats chance is
decided by the best configuration's ``p_permutation_fwer`` (the chance of any configuration
scoring that well on permuted labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedx.probing import metrics as M
from embedx.probing.compare import TIE

__all__ = ["add_chance_control", "permutation_p", "permuted_labels", "permutation_scheme"]


def permutation_scheme(y: np.ndarray, groups: np.ndarray | None) -> str:
    """How :func:`permuted_labels` permutes: ``within groups``, ``among groups`` or ``all items``."""
    if groups is None:
        return "all items"
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    constant = all(len(np.unique(y[codes == g])) == 1 for g in range(codes.max() + 1))
    return "among groups" if constant else "within groups"


def permuted_labels(y: np.ndarray, groups: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """``n`` seeded permutations of ``y`` that keep the fold structure (see the module docstring).

    Args:
        y: ``(num_items,)`` labels or targets.
        groups: ``(num_items,)`` groups, or ``None``.
        n: permutations.
        seed: seed of the permutations (the same seed gives the same permutations).

    Returns:
        ``(n, num_items)`` permuted labels, same dtype as ``y``.
    """
    y = np.asarray(y)
    rng = np.random.default_rng([seed, 14])  # a stream of its own, apart from folds and models
    out = np.empty((n, len(y)), dtype=y.dtype)
    scheme = permutation_scheme(y, groups)
    if scheme == "all items":
        for p in range(n):
            out[p] = y[rng.permutation(len(y))]
        return out
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    if scheme == "among groups":
        group_label = np.array([y[rows[0]] for rows in members])
        for p in range(n):
            shuffled = group_label[rng.permutation(len(members))]
            for g, rows in enumerate(members):
                out[p, rows] = shuffled[g]
        return out
    for p in range(n):
        out[p] = y
        for rows in members:
            out[p, rows] = y[rows[rng.permutation(len(rows))]]
    return out


def permutation_p(observed: float | np.ndarray, null: np.ndarray, greater_is_better: bool = True) -> np.ndarray:
    """One-sided permutation p-value ``(1 + #{null at least as good as observed}) / (1 + N)``.

    Args:
        observed: the real score(s), shape ``()`` or ``(k,)``.
        null: ``(N,)`` or ``(N, k)`` scores on permuted labels.
        greater_is_better: direction of the metric (for an error metric "as good" is "as low").

    Returns:
        The p-value(s), shape of ``observed``. NaN null scores (a permutation whose metric is
        undefined) count as not as good.
    """
    sign = 1.0 if greater_is_better else -1.0
    null = np.asarray(null, dtype=np.float64)
    obs = np.asarray(observed, dtype=np.float64)
    hits = np.sum(np.nan_to_num(sign * null, nan=-np.inf) >= sign * obs - TIE, axis=0)
    return (1.0 + hits) / (1.0 + null.shape[0])


def add_chance_control(result: Any, labels: Sequence[np.ndarray], outputs: list[dict[str, Any]],
                       models: list[str]) -> None:
    """Score the permuted refits and add ``p_permutation`` / ``p_permutation_fwer`` to the summary.

    Args:
        result: the :class:`~embedx.probing.study.StudyResult` of the real labels (changed in place:
            summary columns, ``chance``, and the verdict first in ``notes`` when the best
            configuration does not beat chance).
        labels: the permuted labels, ``labels[p - 1]`` for permutation ``p``.
        outputs: the task outputs of the permuted refits, keyed ``(p, config, model, fold)``.
        models: the model names the output keys index.
    """
    ds, folds = result.dataset, result.folds
    main = M.get_metric(result.metric, ds.task)
    tested = folds.fold_of(ds.num_items) >= 0
    configs = ds.configs
    names = [(c, m) for c, m in zip(result.summary["config"], result.summary["model"], strict=True)]
    column = {key: j for j, key in enumerate(names)}
    n = len(labels)
    classification = ds.task == M.CLASSIFICATION
    preds = np.full((n, len(names), ds.num_items), -1 if classification else np.nan,
                    dtype=np.int64 if classification else np.float64)
    for out in outputs:
        p, ci, mi, fi = out["key"]
        preds[p - 1, column[(configs[ci].name, models[mi])], folds.splits[fi][1]] = out["pred"]
    null = np.array([[main.func(labels[p][tested], preds[p, j][tested]) for j in range(len(names))]
                     for p in range(n)])  # (N, configurations)
    observed = result.summary[f"{result.metric}_pooled"].to_numpy(dtype=np.float64)
    sign = 1.0 if main.greater_is_better else -1.0
    best_null = sign * np.nanmax(sign * null, axis=1)  # each permutation's best configuration
    result.summary["p_permutation"] = permutation_p(observed, null, main.greater_is_better)
    result.summary["p_permutation_fwer"] = permutation_p(observed, best_null[:, None], main.greater_is_better)
    alpha = float(result.settings["alpha"])
    best_p = float(result.summary["p_permutation_fwer"].iloc[0])
    # with too few permutations no p-value can reach alpha: that is no verdict, not "chance"
    decidable = 1.0 / (n + 1) <= alpha
    scheme = permutation_scheme(ds.y, ds.groups)
    result.chance = {
        "permutations": n,
        "scheme": scheme,
        "p_best": best_p,
        "p_best_unadjusted": float(result.summary["p_permutation"].iloc[0]),
        "beats_chance": (best_p <= alpha) if decidable else None,
        "null_best_mean": float(np.nanmean(best_null)),
        "null_best_q95": float(np.nanquantile(best_null, 0.95 if main.greater_is_better else 0.05)),
        "alpha": alpha,
        "min_p": 1.0 / (n + 1),
    }
    result.settings["permutations"] = n
    best = result.summary.iloc[0]
    if not decidable:
        result.notes.insert(0, (
            f"The chance control is undecided: with {n} label permutations no p-value can go below "
            f"{1 / (n + 1):.3g} > alpha {alpha:g}; use at least {int(np.ceil(1 / alpha)) - 1} "
            f"(the best configuration's family-wise permutation p is {best_p:.3g})"
        ))
    elif not result.chance["beats_chance"]:
        floor = ""
        result.notes.insert(0, (
            f"The best configuration does not beat chance: {best['config']} with {best['model']} "
            f"scored {result.metric} {float(best[f'{result.metric}_pooled']):.3f}, and on permuted labels "
            f"(permuted {scheme}, same folds) the best of the {len(names)} configuration(s) scored "
            f"{result.chance['null_best_mean']:.3f} on average; family-wise permutation p = {best_p:.3g} "
            f"(> alpha {alpha:g}){floor}. Do not read the ranking as evidence that the features carry "
            "the label."
        ))
