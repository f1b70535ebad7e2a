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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedx.probing import metrics as M
from embedx.probing.analysis import Analysis
from embedx.probing.compare import TIE
from embedx.text import number as _f
from embedx.text import p_value

__all__ = ["ChanceAnalysis", "ChanceControl", "chance_control", "permutation_p", "permuted_labels",
           "permutation_scheme"]


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


@dataclass(frozen=True)
class ChanceControl:
    """What the label permutations say about a study's configurations.

    Attributes:
        columns: the summary columns ``p_permutation`` and ``p_permutation_fwer``, each
            ``(configurations,)`` in the summary's (ranked) order.
        info: ``permutations``, ``scheme``, ``p_best``, ``p_best_unadjusted``, ``beats_chance``
            (``None``: too few permutations to decide), ``null_best_mean``, ``null_best_q95``,
            ``alpha``, ``min_p`` (``StudyResult.chance``).
        verdict: the note that opens the report when the best configuration does not beat
            chance or the control is undecided, else ``None``.
    """

    columns: dict[str, np.ndarray]
    info: dict[str, Any]
    verdict: str | None


def _null_scores(summary: pd.DataFrame, dataset: Any, folds: Any, main: M.Metric, labels: Sequence[np.ndarray],
                 outputs: list[dict[str, Any]], models: list[str]) -> np.ndarray:
    """``(N, configurations)`` pooled main metric of every configuration on every permutation."""
    tested = folds.fold_of(dataset.num_items) >= 0
    configs = dataset.configs
    names = list(zip(summary["config"], summary["model"], strict=True))
    column = {key: j for j, key in enumerate(names)}
    n = len(labels)
    classification = dataset.task == M.CLASSIFICATION
    preds = np.full((n, len(names), dataset.num_items), -1 if classification else np.nan,
                    dtype=np.int64 if classification else np.float64)
    for out in outputs:
        p, ci, mi, fi = out["key"]
        preds[p - 1, column[(configs[ci].name, models[mi])], folds.splits[fi][1]] = out["pred"]
    return np.array([[main.func(labels[p][tested], preds[p, j][tested]) for j in range(len(names))]
                     for p in range(n)])


def chance_control(summary: pd.DataFrame, dataset: Any, folds: Any, metric: str, alpha: float,
                   labels: Sequence[np.ndarray], outputs: list[dict[str, Any]], models: list[str]) -> ChanceControl:
    """Score the permuted refits: every configuration's permutation p-values and the verdict.

    Args:
        summary: the study's ranked summary (one row per configuration and model).
        dataset: the study's :class:`~embedx.probing.data.Dataset`.
        folds: the study's :class:`~embedx.probing.cv.Folds`.
        metric: the main metric.
        alpha: the significance level of the verdict.
        labels: the permuted labels, ``labels[p - 1]`` for permutation ``p``.
        outputs: the task outputs of the permuted refits, keyed ``(p, config, model, fold)``.
        models: the model names the output keys index.

    Returns:
        The :class:`ChanceControl`.
    """
    main = M.get_metric(metric, dataset.task)
    null = _null_scores(summary, dataset, folds, main, labels, outputs, models)  # (N, configurations)
    n = len(labels)
    observed = summary[f"{metric}_pooled"].to_numpy(dtype=np.float64)
    sign = 1.0 if main.greater_is_better else -1.0
    best_null = sign * np.nanmax(sign * null, axis=1)  # each permutation's best configuration
    columns = {"p_permutation": permutation_p(observed, null, main.greater_is_better),
               "p_permutation_fwer": permutation_p(observed, best_null[:, None], main.greater_is_better)}
    best_p = float(columns["p_permutation_fwer"][0])
    # with too few permutations no p-value can reach alpha: that is no verdict, not "chance"
    decidable = 1.0 / (n + 1) <= alpha
    scheme = permutation_scheme(dataset.y, dataset.groups)
    info = {
        "permutations": n,
        "scheme": scheme,
        "p_best": best_p,
        "p_best_unadjusted": float(columns["p_permutation"][0]),
        "beats_chance": (best_p <= alpha) if decidable else None,
        "null_best_mean": float(np.nanmean(best_null)),
        "null_best_q95": float(np.nanquantile(best_null, 0.95 if main.greater_is_better else 0.05)),
        "alpha": alpha,
        "min_p": 1.0 / (n + 1),
    }
    best = summary.iloc[0]
    verdict = None
    if not decidable:
        verdict = (
            f"The chance control is undecided: with {n} label permutations no p-value can go below "
            f"{1 / (n + 1):.3g} > alpha {alpha:g}; use at least {int(np.ceil(1 / alpha)) - 1} "
            f"(the best configuration's family-wise permutation p is {best_p:.3g})"
        )
    elif not info["beats_chance"]:
        verdict = (
            f"The best configuration does not beat chance: {best['config']} with {best['model']} "
            f"scored {metric} {float(best[f'{metric}_pooled']):.3f}, and on permuted labels "
            f"(permuted {scheme}, same folds) the best of the {len(summary)} configuration(s) scored "
            f"{info['null_best_mean']:.3f} on average; family-wise permutation p = {best_p:.3g} "
            f"(> alpha {alpha:g}). Do not read the ranking as evidence that the features carry "
            "the label."
        )
    return ChanceControl(columns=columns, info=info, verdict=verdict)


class ChanceAnalysis(Analysis):
    """The chance control in the report: its verdict first, its section after the ranking.

    The permuted refits themselves run in the study's own grid (they share its folds, workers
    and progress bar; see :func:`embedx.probing.study.run_study`), so :meth:`run` only hands on
    ``study.chance``.
    """

    name = "permutations"

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> dict[str, Any] | None:
        """The study's chance control (``None`` without ``--permutations``)."""
        return study.chance

    def headline(self, value: dict[str, Any], study: Any) -> list[str]:
        """The warning before anything that reads like a finding, when chance is not beaten."""
        verdict = chance_verdict(study)
        if verdict is None:
            return []
        title = ("The best configuration does not beat chance" if value["beats_chance"] is False
                 else "The chance control is undecided")
        return [f"## ⚠ {title}", "", verdict, ""]

    def section(self, value: dict[str, Any], study: Any, files: Any) -> list[str]:
        """How the labels were permuted, and what the best configuration's p means."""
        return chance_section(study, value)


def chance_verdict(study: Any) -> str | None:
    """The chance control's warning note (not beating chance, or undecided), else ``None``."""
    chance = getattr(study, "chance", None)
    if chance is None or chance["beats_chance"]:
        return None
    starts = ("The best configuration does not beat chance", "The chance control is undecided")
    return next((n for n in study.notes if n.startswith(starts)), None)


def chance_section(study: Any, chance: dict[str, Any]) -> list[str]:
    """Markdown lines of the report's chance-control section."""
    s, m = study.summary, study.metric
    best = s.iloc[0]
    verdict = {True: "beats chance", False: "does **not** beat chance",
               None: "cannot be tested at this alpha with so few permutations"}[chance["beats_chance"]]
    lines = ["## Chance control (label permutations)", ""]
    lines.append(
        f"Every configuration was refitted on {chance['permutations']} permutations of the labels "
        f"(permuted {chance['scheme']}, so the folds hold the same items; the same permutations for "
        f"every configuration) and scored like the real study. The best configuration {verdict}: "
        f"its {m} {_f(best[f'{m}_pooled'])} against a mean best-of-{len(s)} {_f(chance['null_best_mean'])} "
        f"on permuted labels (95th percentile {_f(chance['null_best_q95'])}); family-wise permutation "
        f"p = {p_value(chance['p_best'])} (alpha {chance['alpha']:g}; the smallest possible p is "
        f"{chance['min_p']:.3g})."
    )
    lines += ["", "p (perm.) in the ranking (`p_permutation` in summary.csv) is each configuration's own "
              "permutation p-value, `(1 + #{permuted score ≥ real score}) / (1 + N)`; "
              "`p_permutation_fwer` compares the real score with the best configuration of every "
              "permutation, which accounts for the best having been picked among all of them."]
    return lines
