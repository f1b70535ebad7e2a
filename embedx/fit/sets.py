"""Model comparison: one row per feature set, each at its best layer, tested against the best set.

When a store holds several feature sets (HuBERT, WavLM, eGeMAPS, ...), the first question is
"which model?", and each model's answer is its best layer. Comparing the sets' best layers as
they stand is biased: a set with 25 layers gets more chances to look good than one with 1. So
every set is scored **selection-aware**, with the leave-one-speaker-out selection of
:func:`embedx.fit.compare.nested_best` applied *within the set*: every speaker is predicted by the
set's configuration (layer × pooling × model) that is best on the *other* speakers. That gives
one out-of-fold prediction vector per set in which no speaker's predictions were chosen using that
speaker; the sets are then compared on those vectors with the study's machinery
(:func:`embedx.fit.compare.compare_configurations`): the pooled metric, the jackknife-t CI, the
model confidence set for the best set (``worse_than_best_set``: outside it, which accounts for the
best set having been picked on the same data) and the one-sided sign-flip test of the best set
against each other one (``p_paired``), both over the shared speakers and folds.

What the test conditions on: the folds and the candidate configurations of each set; what it
covers: the choice of each set's layer (inside the leave-one-speaker-out selection) and the
choice of the best set (the confidence set). The best layer's own score (``score``, with its CI
from ``summary.csv``) is shown beside it and is optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from embedx.fit import metrics as M
from embedx.fit.compare import ClusterScores, clusters_of, compare_configurations

__all__ = ["SetComparison", "compare_sets", "nested_predictions", "sets_rows", "sets_section"]


def nested_predictions(y: np.ndarray, predictions: list[np.ndarray], metric: M.Metric, clusters: np.ndarray,
                       num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One prediction vector from several candidates by leave-one-cluster-out selection.

    Args:
        y: ``(num_items,)`` labels of the evaluated items.
        predictions: per candidate, ``(num_items,)`` out-of-fold predictions.
        metric: the main metric.
        clusters: ``(num_items,)`` cluster codes ``0..S-1``.
        num_classes: number of classes (classification).

    Returns:
        ``(prediction, choice)``: ``(num_items,)`` every item predicted by the candidate that is
        best on the other clusters, and ``(S,)`` that candidate per cluster (ties: the first).
    """
    scores = ClusterScores(np.asarray(y), predictions, metric, clusters, num_classes)
    sign = 1.0 if metric.greater_is_better else -1.0
    if scores.num_clusters_ < 2 or len(predictions) == 1:
        best = int(np.argmax(sign * scores.pooled()))
        return np.asarray(predictions[best]).copy(), np.full(scores.num_clusters_, best)
    choice = np.argmax(sign * scores.leave_one_out(), axis=0)  # (S,) best without cluster s
    stacked = np.stack([np.asarray(p) for p in predictions])  # (candidates, num_items)
    return stacked[choice[clusters], np.arange(len(y))], choice


@dataclass
class SetComparison:
    """One row per feature set.

    Attributes:
        table: ``feature_set``, ``best_config``, ``best_layer``, ``best_pooling``, ``best_model``,
            ``score`` (the best configuration's pooled metric), ``ci_low``, ``ci_high`` (its CI
            from the study), ``candidates``, ``selection_aware`` (pooled metric of the set's
            leave-one-speaker-out selection), ``sa_ci_low``, ``sa_ci_high``, ``diff_to_best_set``
            (≥ 0), ``p_paired``, ``p_set``, ``worse_than_best_set``; ranked by ``selection_aware``.
        metric: the main metric.
        tested: whether CIs and tests were computed.
        cluster_kind: ``group`` (speakers) or ``block``.
        num_clusters: clusters in the evaluated items.
        notes: remarks.
    """

    table: pd.DataFrame
    metric: str
    tested: bool
    cluster_kind: str
    num_clusters: int
    notes: list[str] = field(default_factory=list)


def compare_sets(result: Any) -> SetComparison | None:
    """The set-level comparison of a study, or ``None`` with fewer than 2 feature sets.

    Fusions (``--concat``) are not a set of their own and are left out.

    Args:
        result: a finished :class:`embedx.fit.study.StudyResult`.

    Returns:
        The :class:`SetComparison`, or ``None``.
    """
    ds, s, m, settings = result.dataset, result.summary, result.metric, result.settings
    single = s[~s["concat"].astype(bool)]
    sets = list(dict.fromkeys(single["feature_set"]))
    if len(sets) < 2:
        return None
    metric = M.get_metric(m, ds.task)
    sign = 1.0 if metric.greater_is_better else -1.0
    tested = result.folds.fold_of(ds.num_items) >= 0
    y = ds.y[tested]
    groups = None if ds.groups is None else ds.groups[tested]
    clusters, _ = clusters_of(len(y), groups, int(settings["seed"]))
    num_classes = ds.num_classes or None
    set_preds, rows = [], []
    for name in sets:
        part = single[single["feature_set"] == name]  # ranked: the first row is the set's best
        preds = [result.predictions[(r.config, r.model)][tested] for r in part.itertuples()]
        nested, _ = nested_predictions(y, preds, metric, clusters, num_classes)
        set_preds.append(nested)
        top = part.iloc[0]
        rows.append({"feature_set": name, "best_config": top["config"], "best_layer": top["layer"],
                     "best_pooling": top["pooling"], "best_model": top["model"],
                     "score": float(top[f"{m}_pooled"]), "ci_low": float(top["ci_low"]),
                     "ci_high": float(top["ci_high"]), "candidates": len(part)})
    stats, notes = compare_configurations(y, set_preds, metric, groups=groups, num_classes=num_classes,
                                          alpha=float(settings["alpha"]), n_perm=int(settings["n_boot"]),
                                          seed=int(settings["seed"]))
    table = pd.DataFrame(rows)
    table["selection_aware"] = stats.pooled
    table["sa_ci_low"], table["sa_ci_high"] = stats.ci_low, stats.ci_high
    best = int(np.argmax(sign * stats.pooled))
    table["diff_to_best_set"] = sign * (stats.pooled[best] - stats.pooled)
    table["p_paired"] = [np.nan if j == best else stats.paired_p(best, j) for j in range(len(sets))]
    table["p_set"] = stats.p_set
    table["worse_than_best_set"] = ~stats.in_set if stats.tested else False
    order = np.lexsort((np.arange(len(table)), -sign * table["selection_aware"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table["best_layer"] = table["best_layer"].astype("Int64")
    return SetComparison(table=table, metric=m, tested=stats.tested, cluster_kind=stats.cluster_kind,
                         num_clusters=stats.num_clusters, notes=notes)


def _f(value: Any) -> str:
    return f"{float(value):.3f}" if value is not None and not pd.isna(value) and np.isfinite(float(value)) else "–"


def sets_rows(comparison: SetComparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (shared by the report and the console)."""
    m = comparison.metric
    header = ["feature set", "best layer", f"{m} (best layer)", "95% CI", "selection-aware", "95% CI ",
              "Δ to best set", "p (paired)", "worse?"]
    rows = []
    for i, r in enumerate(comparison.table.itertuples()):
        worse = "best" if i == 0 else (("yes" if r.worse_than_best_set else "no") if comparison.tested else "–")
        layer = "–" if pd.isna(r.best_layer) else str(r.best_layer)
        rows.append([str(r.feature_set), f"{layer} ({r.best_pooling}, {r.best_model})", _f(r.score),
                     f"{_f(r.ci_low)}–{_f(r.ci_high)}", _f(r.selection_aware),
                     f"{_f(r.sa_ci_low)}–{_f(r.sa_ci_high)}", "–" if i == 0 else _f(r.diff_to_best_set),
                     "–" if i == 0 else _f(r.p_paired), worse])
    return header, rows


def sets_section(comparison: SetComparison) -> list[str]:
    """Markdown lines of the report's opening model-comparison table."""
    header, rows = sets_rows(comparison)
    unit = "speaker" if comparison.cluster_kind == "group" else "item block"
    lines = ["## Model comparison", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", (
        f"One row per feature set at its best configuration (its own {comparison.metric} is optimistic: "
        f"the best of the set's candidates). Sets are ranked and tested on the selection-aware score: each "
        f"{unit} predicted by the set's configuration that is best on the other {unit}s, so the test "
        "accounts for choosing each set's layer. worse?: outside the 95% confidence set for the best set "
        f"(accounts for the best set being picked on the same data); p (paired): one-sided sign-flip test "
        f"of the best set against this one over {comparison.num_clusters} {unit}s, not adjusted for the "
        "choice of the best set. See sets.csv and docs/statistics.md.")]
    lines += [f"- {n}" for n in comparison.notes]
    return lines
