"""Subgroup breakdowns: the main metric per subgroup of an item column, and the largest gap.

``embedx fit --by sex`` (any item column, repeatable) splits the study's out-of-fold
predictions by the column's values. Nothing is refitted: every subgroup's score is the main
metric of the same predictions the study's estimand is computed from, restricted to the
subgroup's items, so the subgroup scores of a configuration are directly comparable.

**The gap.** For every configuration and column, the subgroups with the highest and the lowest
score are taken from the data, and the gap is ``score(high) - score(low)``. Its 95% CI comes from
a bootstrap that resamples **speakers within each subgroup** (items of one speaker are not
independent; resampling items would make the interval far too narrow), recomputing both scores
from the resampled speakers' items. With ~5 speakers per subgroup a percentile interval of
such a bootstrap is too narrow (its variance is biased down by ``(S-1)/S`` per subgroup and its
quantiles are normal), so the interval is a bootstrap-t: the bootstrap variance of each
subgroup's score, corrected by ``S/(S-1)``, gives the standard error of the gap, and the
quantile is Student's t with Welch–Satterthwaite degrees of freedom. Its coverage is measured by
``benchmarks/subgroup_calibration.py`` (docs/statistics.md). The CI conditions on which two
subgroups are the extremes (with two subgroups there is no choice). A gap whose CI excludes 0 is
flagged; with many configurations, a few flags are expected by chance (each CI is 95% on its
own), so the report leads with the best configuration's gaps.

When the column varies within a speaker (e.g. ``--by label``), a speaker's items fall into
several subgroups and are resampled separately in each; the two scores are then not independent
and the interval is approximate.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, Param
from embedx.probing import metrics as M
from embedx.probing.analysis import Analysis
from embedx.probing.columns import item_columns
from embedx.probing.compare import MIN_CLUSTERS
from embedx.probing.data import Dataset

__all__ = [
    "SubgroupResult",
    "SubgroupsAnalysis",
    "gap_ci",
    "plot_subgroups",
    "prepare_subgroups",
    "subgroup_breakdown",
    "subgroup_section",
]

#: interval methods of :func:`gap_ci`
GAP_METHODS = ("t", "percentile")


def prepare_subgroups(dataset: Dataset, columns: list[str], *,
                      labels_csv: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Read the ``--by`` columns of the study's items (before any model is fitted).

    Args:
        dataset: the study's data.
        columns: the ``--by`` columns.
        labels_csv: the study's ``--labels`` CSV, if any.

    Returns:
        Column -> ``(num_items,)`` str values.

    Raises:
        DataError: an unknown column (naming the available ones) or one with a single value.
    """
    values = item_columns(dataset, list(dict.fromkeys(columns)), labels_csv=labels_csv, option="by")
    for name, v in values.items():
        if len(set(v.tolist())) < 2:
            raise DataError(Param("by"), f" {name!r} has a single value ({v[0]!r}) among the {len(v)} items "
                            "used; a breakdown needs at least 2 subgroups")
    return values


def _replicates(y: np.ndarray, pred: np.ndarray, clusters: np.ndarray, metric: M.Metric,
                num_classes: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot,)`` metric of speaker-bootstrap resamples of one subgroup."""
    _, codes = np.unique(clusters, return_inverse=True)
    s = int(codes.max()) + 1
    draws = rng.integers(0, s, size=(n_boot, s))  # (n_boot, s) speakers drawn
    counts = np.zeros((n_boot, s))
    np.add.at(counts, (np.repeat(np.arange(n_boot), s), draws.ravel()), 1.0)  # (n_boot, s) multiplicities
    if metric.task == M.CLASSIFICATION:
        k = num_classes
        cell = codes * (k * k) + y.astype(np.int64) * k + pred.astype(np.int64)
        per_cluster = np.bincount(cell, minlength=s * k * k).reshape(s, k * k)  # (s, k*k)
        return metric.weighted((counts @ per_cluster).reshape(n_boot, k, k))  # (n_boot, k, k) confusions
    return metric.weighted(counts[:, codes], y.astype(np.float64), pred.astype(np.float64))


def gap_ci(
    y: np.ndarray,
    pred: np.ndarray,
    clusters: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    metric: M.Metric,
    *,
    num_classes: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "t",
    min_clusters: int = MIN_CLUSTERS,
) -> tuple[float, float, float]:
    """The gap ``score(high) - score(low)`` and its speaker-bootstrap CI.

    Args:
        y: ``(num_items,)`` labels / targets.
        pred: ``(num_items,)`` out-of-fold predictions.
        clusters: ``(num_items,)`` speaker (or item) of every item, the unit of resampling.
        high: ``(num_items,)`` bool, the items of one subgroup.
        low: ``(num_items,)`` bool, the items of the other.
        metric: the main metric.
        num_classes: number of classes (classification).
        n_boot: bootstrap resamples per subgroup.
        seed: seed of the resamples.
        level: coverage.
        method: ``"t"`` (bootstrap standard error with the ``S/(S-1)`` correction and a Welch t
            quantile; the default) or ``"percentile"`` (plain percentile interval, for the
            calibration benchmark).
        min_clusters: fewest speakers per subgroup for a CI (the calibration's smallest size
            is 5 per subgroup; with 2 a bootstrap says nothing).

    Returns:
        ``(gap, ci_low, ci_high)``; NaN bounds with ``n_boot == 0`` or a subgroup of fewer
        than ``min_clusters`` speakers.

    Raises:
        ConfigError: an unknown ``method``.
    """
    from scipy import stats

    if method not in GAP_METHODS:
        raise ConfigError(f"unknown gap CI method {method!r}; accepted: {', '.join(GAP_METHODS)}")
    gap = float(metric.func(y[high], pred[high]) - metric.func(y[low], pred[low]))
    sizes = [len(np.unique(clusters[part])) for part in (high, low)]
    if n_boot <= 0 or min(sizes) < min_clusters:
        return gap, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    reps = [_replicates(y[part], pred[part], clusters[part], metric, num_classes, n_boot, rng)
            for part in (high, low)]
    if method == "percentile":
        diff = reps[0] - reps[1]
        diff = diff[np.isfinite(diff)]
        tail = (1 - level) / 2 * 100
        return gap, float(np.percentile(diff, tail)), float(np.percentile(diff, 100 - tail))
    # bootstrap variance of each subgroup's score, unbiased for S speakers: × S / (S - 1)
    var = [np.nanvar(r, ddof=1) * s / (s - 1) for r, s in zip(reps, sizes, strict=True)]
    se = float(np.sqrt(sum(var)))
    if not np.isfinite(se) or se == 0:
        return gap, gap, gap
    df = sum(var) ** 2 / sum(v**2 / (s - 1) for v, s in zip(var, sizes, strict=True))
    half = float(stats.t.ppf(0.5 + level / 2, df=df)) * se
    return gap, gap - half, gap + half


@dataclass
class SubgroupResult:
    """Every configuration's scores per subgroup, the gaps and the best configuration's speakers.

    Attributes:
        table: one row per (configuration, model, column, subgroup): ``score`` (the main metric
            of the subgroup's out-of-fold predictions), its jackknife-t ``ci_low``/``ci_high``
            over the subgroup's speakers, ``n_items``, ``n_speakers``.
        gaps: one row per (configuration, model, column): ``high``, ``low`` (the subgroups),
            ``gap``, ``ci_low``, ``ci_high``, ``excludes_zero``.
        speakers: one row per speaker of the best configuration: its ``--by`` values (``mixed``
            when they vary within the speaker), ``n_items``, ``score``.
        best: ``(configuration, model)`` of the study's best row.
        columns: the ``--by`` columns.
        metric: the main metric.
        n_boot: bootstrap resamples per subgroup.
        notes: remarks for the report.
    """

    table: pd.DataFrame
    gaps: pd.DataFrame
    speakers: pd.DataFrame
    best: tuple[str, str]
    columns: list[str]
    metric: str
    n_boot: int
    notes: list[str] = field(default_factory=list)


def _subgroup_rows(r: Any, pred: np.ndarray, values: dict[str, np.ndarray], tested: np.ndarray, y: np.ndarray,
                   clusters: np.ndarray, metric: M.Metric, ds: Dataset, n_boot: int, seed: int, level: float,
                   rows: list[dict[str, Any]], gap_rows: list[dict[str, Any]]) -> None:
    """Append one configuration's subgroup rows and gap rows (``r``: its summary row)."""
    from embedx.probing.refit import holdout_ci

    m, k = metric.name, ds.num_classes
    head = {"config": r.config, "feature_set": r.feature_set, "layer": r.layer, "pooling": r.pooling,
            "model": r.model}
    for col, v in values.items():
        v = v[tested]
        scores = {}
        for sub in sorted(set(v.tolist())):
            part = v == sub
            score = float(metric.func(y[part], pred[part]))
            scores[sub] = score
            low, high = holdout_ci(y[part], pred[part], metric, groups=clusters[part] if ds.groups is not None
                                   else None, num_classes=k or None, seed=seed, enabled=n_boot > 0)
            rows.append({**head, "by": col, "subgroup": sub, "metric": m, "score": score,
                         "ci_low": low, "ci_high": high, "n_items": int(part.sum()),
                         "n_speakers": len(np.unique(clusters[part])) if ds.groups is not None else pd.NA})
        finite = {s: x for s, x in scores.items() if np.isfinite(x)}
        if len(finite) < 2:
            continue
        ranked = sorted(finite, key=finite.get)  # stable: with ties two distinct subgroups still
        lo, hi = ranked[0], ranked[-1]
        if not metric.greater_is_better:  # the gap is "how much better the better subgroup is"
            hi, lo = lo, hi
        sign = 1.0 if metric.greater_is_better else -1.0
        gap, ci_low, ci_high = gap_ci(y, pred, clusters, v == hi, v == lo, metric, num_classes=k,
                                      n_boot=n_boot, seed=seed, level=level)
        if sign < 0:  # error metrics: report the gap as a positive "better by"
            gap, ci_low, ci_high = -gap, -ci_high, -ci_low
        gap_rows.append({**head, "by": col, "high": hi, "low": lo, "metric": m, "gap": gap,
                         "ci_low": ci_low, "ci_high": ci_high,
                         "excludes_zero": bool(np.isfinite(ci_low) and (ci_low > 0 or ci_high < 0))})


def subgroup_breakdown(result: Any, values: dict[str, np.ndarray], *, level: float = 0.95,
                       progress: bool = False) -> SubgroupResult:
    """Per-subgroup scores and gaps of every configuration, from its out-of-fold predictions.

    Args:
        result: a finished :class:`embedx.probing.study.StudyResult`.
        values: from :func:`prepare_subgroups` (for the same dataset).
        level: coverage of the CIs.
        progress: show a progress bar (one step per configuration).

    Returns:
        The :class:`SubgroupResult`.
    """
    from embedx.progress import progress_bar

    ds, settings, m = result.dataset, result.settings, result.metric
    metric = M.get_metric(m, ds.task)
    n_boot, seed = int(settings["n_boot"]), int(settings["seed"])
    tested = result.folds.fold_of(ds.num_items) >= 0
    y = ds.y[tested]
    # the unit of resampling: the speaker; without groups every item is its own unit
    clusters = ds.groups[tested] if ds.groups is not None else np.arange(int(tested.sum())).astype(str)
    rows: list[dict[str, Any]] = []
    gap_rows: list[dict[str, Any]] = []
    with progress_bar(progress) as bar, warnings.catch_warnings():
        # a subgroup's (or speaker's) UAR averages the classes it has; predicting others is expected
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        handle = bar.add_task("subgroups", total=len(result.summary))
        for r in result.summary.itertuples():
            _subgroup_rows(r, result.predictions[(r.config, r.model)][tested], values, tested, y, clusters,
                           metric, ds, n_boot, seed, level, rows, gap_rows)
            bar.advance(handle)
    table = pd.DataFrame(rows)
    gaps = pd.DataFrame(gap_rows, columns=["config", "feature_set", "layer", "pooling", "model", "by", "high",
                                           "low", "metric", "gap", "ci_low", "ci_high", "excludes_zero"])
    best = result.best
    pred = result.predictions[best][tested]
    speaker_rows = []
    for spk in sorted(set(clusters.tolist())):
        part = clusters == spk
        row: dict[str, Any] = {"speaker": spk}
        for col, v in values.items():
            own = sorted(set(v[tested][part].tolist()))
            row[col] = own[0] if len(own) == 1 else "mixed"
        with warnings.catch_warnings():  # a speaker's UAR averages the classes it has
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
            score = float(metric.func(y[part], pred[part]))
        row.update({"n_items": int(part.sum()), "metric": m, "score": score})
        speaker_rows.append(row)
    notes = []
    if ds.groups is None:
        notes.append("no group column: items are resampled as independent units (they rarely are)")
    return SubgroupResult(table=table, gaps=gaps, speakers=pd.DataFrame(speaker_rows), best=best,
                          columns=list(values), metric=m, n_boot=n_boot, notes=notes)


def plot_subgroups(sub: SubgroupResult, path: str | os.PathLike[str]) -> bool:
    """Bars of the best configuration's score per subgroup (with CIs), dots per speaker.

    One panel per ``--by`` column. Speakers are drawn in their subgroup when the column is
    constant within the speaker.

    Args:
        sub: the breakdown.
        path: the PNG to write.

    Returns:
        Whether a figure was written.
    """
    from embedx.figures import pyplot

    plt = pyplot()

    best = sub.table[(sub.table["config"] == sub.best[0]) & (sub.table["model"] == sub.best[1])]
    if not len(best):
        return False
    fig, axes = plt.subplots(1, len(sub.columns), figsize=(3.4 * len(sub.columns) + 0.6, 3.6), squeeze=False)
    for ax, col in zip(axes.flat, sub.columns, strict=True):
        part = best[best["by"] == col]
        x = np.arange(len(part))
        err = np.vstack([part["score"] - part["ci_low"], part["ci_high"] - part["score"]]).astype(float)
        ax.bar(x, part["score"], color="#9ecae1",
               yerr=np.where(np.isfinite(err), err, 0.0), capsize=4, label="subgroup (95% CI)")
        for i, name in enumerate(part["subgroup"]):
            spk = sub.speakers[sub.speakers[col] == name]["score"].to_numpy(dtype=float)
            ax.scatter(np.full(len(spk), i) + np.linspace(-0.15, 0.15, len(spk)), spk, s=12, color="#08519c",
                       zorder=3, label="speaker" if i == 0 else None)
        gap = sub.gaps[(sub.gaps["config"] == sub.best[0]) & (sub.gaps["model"] == sub.best[1])
                       & (sub.gaps["by"] == col)]
        title = col
        if len(gap):
            g = gap.iloc[0]
            title += f": gap {g['gap']:.3f}" + (f" ({g['ci_low']:.3f}–{g['ci_high']:.3f})"
                                                if np.isfinite(g["ci_low"]) else "")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, part["subgroup"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(sub.metric)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{sub.best[0]} · {sub.best[1]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return True


def subgroup_section(sub: SubgroupResult) -> list[str]:
    """Markdown lines of the report's subgroup section.

    Args:
        sub: the breakdown.

    Returns:
        The lines: the best configuration's subgroups and gaps, then the flags of all.
    """
    m = sub.metric
    lines = ["## Subgroups", ""]
    lines.append(
        f"The {m} of the out-of-fold predictions per subgroup of " + ", ".join(f"`{c}`" for c in sub.columns)
        + f". Gap: best minus worst subgroup, with a 95% CI from {sub.n_boot} bootstrap resamples of the "
        "speakers within each subgroup (bootstrap-t; see docs/statistics.md). ⚑: the CI excludes 0. "
        "All configurations in subgroups.csv and subgroup_gaps.csv; the best configuration's speakers in "
        "speakers.csv."
    )
    table = sub.table[(sub.table["config"] == sub.best[0]) & (sub.table["model"] == sub.best[1])]
    gaps = sub.gaps[(sub.gaps["config"] == sub.best[0]) & (sub.gaps["model"] == sub.best[1])]
    lines += ["", f"Best configuration, `{sub.best[0]}` with {sub.best[1]}:", "",
              f"| column | subgroup | {m} | 95% CI | items | speakers |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ci = f"{r.ci_low:.3f}–{r.ci_high:.3f}" if np.isfinite(r.ci_low) else "–"
        lines.append(f"| {r.by} | {r.subgroup} | {r.score:.3f} | {ci} | {r.n_items} | "
                     f"{'–' if pd.isna(r.n_speakers) else r.n_speakers} |")
    lines.append("")
    for g in gaps.itertuples():
        ci = f" (95% CI {g.ci_low:.3f}–{g.ci_high:.3f})" if np.isfinite(g.ci_low) else " (no CI)"
        flag = "⚑ " if g.excludes_zero else ""
        lines.append(f"- {flag}`{g.by}`: {g.high} − {g.low} = {g.gap:.3f}{ci}"
                     + (": the CI excludes 0" if g.excludes_zero else ""))
    for col in sub.columns:
        part = sub.gaps[sub.gaps["by"] == col]
        flagged = int(part["excludes_zero"].sum())
        lines.append(f"- `{col}`: {flagged} of {len(part)} configurations have a gap whose CI excludes 0 "
                     "(each CI is 95% on its own; not adjusted for the number of configurations)")
    if gaps["ci_low"].isna().any() and sub.n_boot > 0:
        lines.append(f"- no CI where a subgroup has fewer than {MIN_CLUSTERS} speakers (the interval is "
                     "calibrated from 5 speakers per subgroup up)")
    if sub.notes:
        lines += [f"- {n}" for n in sub.notes]
    return lines


class SubgroupsAnalysis(Analysis):
    """Subgroup breakdowns (``--by``) as one of the study's analyses."""

    name = "subgroups"

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """With ``--by``."""
        return bool(options.get("by"))

    def prepare(self, dataset: Dataset, options: Mapping[str, Any], note: Callable[[str], None]
                ) -> tuple[Dataset, dict[str, np.ndarray]]:
        """:func:`prepare_subgroups` (the dataset is unchanged)."""
        return dataset, prepare_subgroups(dataset, list(options["by"]), labels_csv=options.get("labels"))

    def run(self, study: Any, state: dict[str, np.ndarray], *, progress: bool = False,
            log: Any = None) -> SubgroupResult:
        """:func:`subgroup_breakdown`."""
        return subgroup_breakdown(study, state, progress=progress)

    def write(self, value: SubgroupResult, out: Path, files: dict[str, str]) -> None:
        """``subgroups.csv``, ``subgroup_gaps.csv``, ``speakers.csv`` and ``subgroups.png``."""
        value.table.to_csv(out / "subgroups.csv", index=False)
        value.gaps.to_csv(out / "subgroup_gaps.csv", index=False)
        value.speakers.to_csv(out / "speakers.csv", index=False)
        files.update(subgroups="subgroups.csv", subgroup_gaps="subgroup_gaps.csv", speakers="speakers.csv")
        if plot_subgroups(value, out / "subgroups.png"):
            files["subgroups_plot"] = "subgroups.png"

    def section(self, value: SubgroupResult, study: Any, files: Mapping[str, str]) -> list[str]:
        """:func:`subgroup_section` and its figure."""
        lines = subgroup_section(value)
        if "subgroups_plot" in files:
            lines += ["", f"![Subgroups]({files['subgroups_plot']})"]
        return lines
