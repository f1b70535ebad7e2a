"""Model comparison: one row per feature set, each at its best layer, tested against the best set.

When a store holds several feature sets (HuBERT, WavLM, eGeMAPS, ...), the first question is
"which model?", and each model's answer is its best layer. Comparing the sets' best layers as
they stand is biased: a set with 25 layers gets more chances to look good than one with 1, and
the best set is itself picked on the same data.

**The test.** A set is *significantly worse than the best set* when **none of its
configurations is in the study's 95% confidence set for the best configuration** (the model
confidence set of :func:`embedx.probing.compare.best_set`, a paired procedure that permutes the
configurations' predictions within every speaker over the shared folds). If the sets are equally
good, the truly best configurations include some of every set, and the confidence set keeps them
all with probability ≥ 95%: this accounts for the choice of each set's layer *and* of the best
set, and it conditions only on the folds and the candidate configurations. The set's p-value is
the largest confidence-set p-value among its configurations.

Rejected alternatives, measured by ``benchmarks/subgroup_calibration.py`` under two equally good
sets (docs/statistics.md): a sign-flip test of the two best layers' own predictions (false
positives 0.18-0.21 with 12 layers against 1: the bigger set wins by selection), and the same
test on leave-one-speaker-out or leave-one-fold-out selections within each set (0.15-0.29:
the fold-level training noise of a layer is shared by the held-out speaker, so the selection
still favours it).

**The scores.** ``score`` (with its CI from ``summary.csv``) is the set's best configuration's own
pooled metric, optimistic; ``selection_aware`` is the leave-one-speaker-out selection within the
set (:func:`embedx.probing.compare.nested_best`) with its two-level jackknife CI, the study's
selection-aware estimate restricted to one set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.probing import metrics as M
from embedx.probing.analysis import Analysis
from embedx.probing.compare import ClusterScores, clusters_of, nested_best
from embedx.probing.findings import TIE_TOLERANCE
from embedx.text import number as _f

__all__ = ["SetComparison", "SetsAnalysis", "compare_sets", "nested_predictions", "set_verdicts", "sets_rows", "sets_section"]


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


def set_verdicts(p_set: np.ndarray, in_set: np.ndarray, members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per feature set: its confidence-set p-value and whether it is outside the set.

    A feature set is significantly worse than the best set when *none* of its configurations is
    in the 95% confidence set for the best configuration (the study's model confidence set over
    every configuration). Its p-value is the largest of its configurations' (the set is
    eliminated only when its last configuration is).

    Args:
        p_set: ``(configs,)`` confidence-set p-values of the study's configurations.
        in_set: ``(configs,)`` whether each is in the confidence set.
        members: per feature set, the indices of its configurations.

    Returns:
        ``(p, worse)``, each ``(num_sets,)``.
    """
    # the best configuration is never eliminated (its p-value is NaN): a set holding it has p 1
    never = np.where(np.isnan(p_set), 1.0, p_set)
    p = np.array([float(np.max(never[m])) for m in members])
    worse = np.array([not bool(np.any(in_set[m])) for m in members])
    return p, worse


@dataclass
class SetComparison:
    """One row per feature set.

    Attributes:
        table: ``feature_set``, ``best_config``, ``best_layer``, ``best_pooling``, ``best_model``,
            ``score`` (the best configuration's pooled metric), ``ci_low``, ``ci_high`` (its CI
            from the study), ``candidates``, ``selection_aware`` (pooled metric of the set's
            leave-one-speaker-out selection), ``sa_ci_low``, ``sa_ci_high``, ``diff_to_best_set``
            (≥ 0), ``p_set``, ``worse_than_best_set``, ``cka_to_best_set`` (linear CKA of the
            best configuration's features with the best set's); ranked by ``score``.
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
        result: a finished :class:`embedx.probing.study.StudyResult`.

    Returns:
        The :class:`SetComparison`, or ``None``.
    """
    ds, s, m, settings = result.dataset, result.summary, result.metric, result.settings
    single = s[~s["concat"].astype(bool)]
    sets = list(dict.fromkeys(single["feature_set"]))
    if len(sets) < 2:
        return None
    metric = M.get_metric(m, ds.task)
    tested = result.folds.fold_of(ds.num_items) >= 0
    y = ds.y[tested]
    groups = None if ds.groups is None else ds.groups[tested]
    clusters, kind = clusters_of(len(y), groups, int(settings["seed"]))
    is_tested = bool(np.isfinite(s["ci_low"].to_numpy(dtype=float)).any()) and int(settings["n_boot"]) > 0
    rows, members = [], []
    for name in sets:
        part = single[single["feature_set"] == name]  # ranked: the first row is the set's best
        members.append(part.index.to_numpy())
        top = part.iloc[0]
        row = {"feature_set": name, "best_config": top["config"], "best_layer": top["layer"],
               "best_pooling": top["pooling"], "best_model": top["model"],
               "score": float(top[f"{m}_pooled"]), "ci_low": float(top["ci_low"]),
               "ci_high": float(top["ci_high"]), "candidates": len(part)}
        row["selection_aware"], row["sa_ci_low"], row["sa_ci_high"] = float("nan"), float("nan"), float("nan")
        if is_tested and len(part) > 1:
            preds = [result.predictions[(r.config, r.model)][tested] for r in part.itertuples()]
            scores = ClusterScores(np.asarray(y), preds, metric, clusters, ds.num_classes or None)
            row["selection_aware"], row["sa_ci_low"], row["sa_ci_high"] = nested_best(
                scores, greater_is_better=metric.greater_is_better)
        elif len(part) == 1:  # nothing chosen: the set's one configuration is its own estimate
            row["selection_aware"], row["sa_ci_low"], row["sa_ci_high"] = row["score"], row["ci_low"], row["ci_high"]
        rows.append(row)
    table = pd.DataFrame(rows)
    sign = 1.0 if metric.greater_is_better else -1.0
    best = table.loc[int(np.argmax(sign * table["score"].to_numpy())), "score"]
    table["diff_to_best_set"] = sign * (best - table["score"])
    p, worse = set_verdicts(s["p_set"].to_numpy(dtype=float), ~s["worse_than_best"].to_numpy(dtype=bool),
                            members)
    table["p_set"] = p if is_tested else np.nan
    table["worse_than_best_set"] = worse if is_tested else False
    order = np.lexsort((np.arange(len(table)), -sign * table["score"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table["cka_to_best_set"] = _cka_to_best(ds.X, table["best_config"].tolist(), tested)
    table["best_layer"] = table["best_layer"].astype("Int64")
    notes = [] if is_tested else ["no confidence set (--bootstrap 0 or too few speakers): no set is marked worse"]
    return SetComparison(table=table, metric=m, tested=is_tested, cluster_kind=kind,
                         num_clusters=int(clusters.max()) + 1 if len(clusters) else 0, notes=notes)


def _cka_to_best(X: dict[str, np.ndarray], configs: list[str], rows: np.ndarray) -> list[float]:
    """Linear CKA (:func:`embedx.cka.linear_cka`) of each set's best features with the best set's.

    How similar the representations are that the sets' best layers offer the probe; NaN for a
    weighted-layer configuration (``(num_items, num_layers, dim)``, not one representation).
    """
    from embedx.cka import linear_cka

    ref = X[configs[0]][rows]
    out = []
    for name in configs:
        x = X[name][rows]
        out.append(float(linear_cka(ref, x)) if ref.ndim == 2 and x.ndim == 2 else float("nan"))
    return out


def _interval(low: float, high: float) -> str:
    """A CI cell: ``low–high``, or one ``–`` when it was not computed (not ``–––``)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "–"
    return f"{_f(low)}–{_f(high)}"


def sets_rows(comparison: SetComparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (shared by the report and the console).

    Args:
        comparison: from :func:`compare_sets`.

    Returns:
        ``(header, rows)`` of strings.
    """
    m = comparison.metric
    header = ["feature set", "best layer", m, "95% CI", "selection-aware", "95% CI ", "Δ to best set",
              "p (set)", "worse?"]
    # sets at the best set's score tie (as the ranking says of configurations): none is "best"
    tied = np.abs(comparison.table["diff_to_best_set"].to_numpy(dtype=float)) <= TIE_TOLERANCE
    tied[0] = True
    tie = int(tied.sum()) > 1
    rows = []
    for i, r in enumerate(comparison.table.itertuples()):
        if tie and tied[i]:
            worse = "tie"
        else:
            worse = "best" if i == 0 else (("yes" if r.worse_than_best_set else "no") if comparison.tested else "–")
        layer = "–" if pd.isna(r.best_layer) else str(r.best_layer)
        rows.append([str(r.feature_set), f"{layer} ({r.best_pooling}, {r.best_model})", _f(r.score),
                     _interval(r.ci_low, r.ci_high), _f(r.selection_aware),
                     _interval(r.sa_ci_low, r.sa_ci_high), "–" if tied[i] else _f(r.diff_to_best_set),
                     "–" if i == 0 else _f(r.p_set), worse])
    return header, rows


def sets_section(comparison: SetComparison) -> list[str]:
    """Markdown lines of the report's opening model-comparison table.

    Args:
        comparison: from :func:`compare_sets`.

    Returns:
        The lines: the table, how to read it, and the layer-similarity line.
    """
    header, rows = sets_rows(comparison)
    unit = "speaker" if comparison.cluster_kind == "group" else "item block"
    lines = ["## Model comparison", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", (
        f"One row per feature set at its best configuration; its {comparison.metric} and CI are that "
        "configuration's (optimistic: the best of the set's candidates). selection-aware: choosing the "
        f"set's best configuration on the other {unit}s, for each {unit} (its CI covers that choice). "
        "worse?: yes when none of the set's configurations is in the study's 95% confidence set for the "
        "best configuration (the paired within-speaker permutation procedure of the ranking), which "
        "accounts for choosing each set's layer and the best set on the same data; p (set): the largest "
        "confidence-set p-value among the set's configurations. See sets.csv and docs/statistics.md.")]
    best = comparison.table.iloc[0]
    others = comparison.table.iloc[1:]
    if np.isfinite(others["cka_to_best_set"].to_numpy(dtype=float)).any():
        lines += ["", f"Layer similarity: linear CKA of each set's best configuration with `{best.best_config}`: "
                  + ", ".join(f"`{r.best_config}` {_f(r.cka_to_best_set)}" for r in others.itertuples())
                  + " (1: the same representation up to rotation and scale; `embedx similarity` compares "
                  "every pair of layers)."]
    lines += [f"- {n}" for n in comparison.notes]
    return lines


class SetsAnalysis(Analysis):
    """The model comparison table: ``sets.csv``, and the section that opens the report."""

    name = "sets"

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> SetComparison | None:
        """:func:`compare_sets` of the study (``None`` with fewer than 2 feature sets)."""
        return compare_sets(study)

    def write(self, value: SetComparison, out: Path, files: dict[str, str]) -> None:
        """``sets.csv``."""
        value.table.to_csv(out / "sets.csv", index=False)
        files["sets"] = "sets.csv"

    def headline(self, value: SetComparison, study: Any) -> list[str]:
        """The question "which model?" opens the report."""
        return [*sets_section(value), ""]
