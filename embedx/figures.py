"""The study's figures: the layer curve (main metric vs. layer, with CIs and a chance line),
the best configuration's confusion matrix (classification) or scatter plot (regression).

matplotlib is imported, with the Agg backend, only when a figure is drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["pyplot", "layer_curve_figure", "plot_confusion", "plot_layer_curve", "plot_scatter", "top_classes"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


#: legend entries of the confidence-set markers of the layer curve
SET_LABEL = "filled: in the 95% confidence set for the best"
WORSE_LABEL = "hollow: significantly worse than the best"


def plot_layer_curve(
    summary: pd.DataFrame,
    metric: str,
    path: str | os.PathLike[str],
    *,
    panels: list[tuple[str, str]] | None = None,
    models: list[str] | None = None,
    chance: tuple[float, str] | None = None,
    single_split: bool = False,
) -> bool:
    """Pooled main metric vs. layer with its 95% CI, one line per model, one panel per set.

    The plotted value is the study's estimand (the pooled out-of-fold metric) with its CI as
    error bars, so the curve shows what the ranking and the tests use. With statistics, a filled
    marker is a configuration in the 95% confidence set for the best, a hollow one is outside it
    (significantly worse). The models' points are dodged (shifted a little along the layer axis)
    so that their error bars do not hide each other. The legend sits outside the axes, so it
    never covers data.

    Args:
        summary: the study summary (columns feature_set, pooling, layer, model, concat,
            ``<metric>_pooled`` (else ``<metric>_mean``), ``ci_low``, ``ci_high``).
        metric: main metric name.
        path: PNG to write.
        panels: ``(feature set, pooling)`` in the order requested (default: order of appearance).
        models: model names in the order requested (fixes the colours across panels).
        chance: ``(level, legend text)`` drawn as a dashed line (see
            :func:`embedx.probing.metrics.chance_level`).
        single_split: one predefined train/dev split: the axis says so.

    Returns:
        Whether a figure was written (``False`` when no configuration has a single layer).
    """
    fig = layer_curve_figure(summary, metric, panels=panels, models=models, chance=chance,
                             single_split=single_split)
    if fig is None:
        return False
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return True


@dataclass(frozen=True)
class _CurveStyle:
    """How the layer curve draws its models: colours, side-by-side offsets, markers, twins."""

    colours: dict[str, str]
    dodge: dict[str, float]
    tested: bool
    twins: dict[str, str]


def _curve_panel(ax: Any, single: pd.DataFrame, mixed: pd.DataFrame, fset: str, pooling: str,
                 names: list[str], value: str, style: _CurveStyle, chance: tuple[float, str] | None) -> None:
    """One panel of the layer curve: every model's layers of ``fset`` / ``pooling``."""
    part = single[(single["feature_set"] == fset) & (single["pooling"] == pooling)]
    for model in names:
        rows = part[part["model"] == model].sort_values("layer")
        if rows.empty:
            continue
        x = rows["layer"].to_numpy(dtype=float) + style.dodge[model]
        y = rows[value].to_numpy(dtype=float)
        low = rows["ci_low"].to_numpy(dtype=float) if "ci_low" in rows else np.full(len(y), np.nan)
        high = rows["ci_high"].to_numpy(dtype=float) if "ci_high" in rows else np.full(len(y), np.nan)
        yerr = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
        ax.errorbar(x, y, yerr=yerr, marker="" if style.tested else "o", capsize=3,
                    color=style.colours[model], label=str(model))
        if style.tested:  # filled: in the confidence set for the best; hollow: significantly worse
            worse = rows["worse_than_best"].to_numpy(dtype=bool)
            ax.plot(x[~worse], y[~worse], ls="none", marker="o", color=style.colours[model])
            ax.plot(x[worse], y[worse], ls="none", marker="o", color=style.colours[model], mfc="white")
        twin = single[(single["feature_set"] == style.twins.get(fset)) & (single["pooling"] == pooling)
                      & (single["model"] == model)].sort_values("layer")
        if len(twin):
            ax.plot(twin["layer"].to_numpy(dtype=float) + style.dodge[model], twin[value].to_numpy(dtype=float),
                    marker="x", ls="--", color=style.colours[model], label=f"{model} (random init)")
    for _, row in mixed[(mixed["feature_set"] == fset) & (mixed["pooling"] == pooling)].iterrows():
        ax.axhline(float(row[value]), color="black", ls=":", lw=1.5, label=f"weighted layers ({row['model']})")
    if chance is not None:
        ax.axhline(chance[0], color="grey", ls="--", lw=1, label=chance[1])
    ax.set_title(f"{fset} ({pooling})" + (f" vs {style.twins[fset]}" if fset in style.twins else ""))
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)
    layers = sorted(part["layer"].dropna().astype(int).unique())
    if len(layers) <= 30:
        ax.set_xticks(layers)


def _curve_legend(axes: Any, chance: tuple[float, str] | None, tested: bool) -> tuple[list[Any], list[str]]:
    """The legend entries of every panel, once each: the models, then the reference lines."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if chance is not None and chance[1] in labels:  # the models first, the reference line last
        at = labels.index(chance[1])
        handles.append(handles.pop(at))
        labels.append(labels.pop(at))
    if tested:
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], ls="none", marker="o", color="dimgrey"),
                    Line2D([], [], ls="none", marker="o", color="dimgrey", mfc="white")]
        labels += [SET_LABEL, WORSE_LABEL]
    return handles, labels


def layer_curve_figure(
    summary: pd.DataFrame,
    metric: str,
    *,
    panels: list[tuple[str, str]] | None = None,
    models: list[str] | None = None,
    chance: tuple[float, str] | None = None,
    single_split: bool = False,
):
    """The figure of :func:`plot_layer_curve` (same arguments), or ``None``; the caller closes it."""
    from embedx.probing.selectivity import random_twins

    plain = summary[~summary["concat"].astype(bool)]
    single = plain[plain["layer"].notna()]
    # a random-initialised twin (random-network control) is drawn dashed in its trained set's panel
    twins = random_twins(single["feature_set"])
    twin_of = {v: k for k, v in twins.items()}
    # weighted-layer configurations (no layer of their own) are drawn as a level in their panel
    mixed = plain[plain["layer"].isna()]
    if single.empty:
        return None
    plt = pyplot()
    pairs = list(dict.fromkeys(zip(single["feature_set"], single["pooling"], strict=True)))
    present = [p for p in pairs if not (p[0] in twin_of and (twin_of[p[0]], p[1]) in pairs)]
    order = [p for p in (panels or []) if p in present] + [p for p in present if p not in (panels or [])]
    names = [m for m in (models or []) if m in set(single["model"])]
    names += [m for m in dict.fromkeys(single["model"]) if m not in names]
    colours = {m: f"C{i % 10}" for i, m in enumerate(names)}
    value = f"{metric}_pooled" if f"{metric}_pooled" in single else f"{metric}_mean"
    fig, axes = plt.subplots(
        1, len(order), figsize=(max(6.0, 4.6 * len(order)) + 2.2, 4.2), squeeze=False, sharey=True,
        layout="constrained",
    )
    # the models' points side by side around each layer, so their error bars stay apart
    dodge = {m: (i - (len(names) - 1) / 2) * min(0.08, 0.3 / max(len(names), 1)) for i, m in enumerate(names)}
    tested = "worse_than_best" in single and "ci_low" in single and bool(
        np.isfinite(single["ci_low"].to_numpy(dtype=float)).any())
    for ax, (fset, pooling) in zip(axes[0], order, strict=True):
        _curve_panel(ax, single, mixed, fset, pooling, names, value, _CurveStyle(colours, dodge, tested, twins),
                     chance)
    has_ci = "ci_low" in single and bool(np.isfinite(single["ci_low"].to_numpy(dtype=float)).any())
    where = "on the dev/test part (one split)" if single_split else "pooled out-of-fold"
    axes[0][0].set_ylabel(f"{metric} ({where}" + (", 95% CI)" if has_ci else ")"))
    handles, labels = _curve_legend(axes[0], chance, tested)
    fig.legend(handles, labels, title="model", fontsize="small", loc="outside right upper")
    return fig


#: most classes drawn in the confusion figure (the most frequent true classes)
TOP_CLASSES = 20


def top_classes(counts: np.ndarray, classes: list[str], top: int = TOP_CLASSES
                 ) -> tuple[np.ndarray, list[str]]:
    """The confusion counts among the ``top`` most frequent true classes (all when fewer)."""
    counts = np.asarray(counts)
    if len(classes) <= top:
        return counts, list(classes)
    keep = np.sort(np.argsort(-counts.sum(axis=1), kind="stable")[:top])
    return counts[np.ix_(keep, keep)], [classes[k] for k in keep]


def plot_confusion(
    counts: np.ndarray, classes: list[str], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Confusion matrix: row-normalised colours, counts and row percentages in the cells.

    Args:
        counts: ``(num_classes, num_classes)`` counts, rows true, columns predicted.
        classes: class names.
        path: PNG to write.
        title: figure title.
    """
    plt = pyplot()
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    size = max(4.0, 0.7 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=8, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Predicted vs. true targets (regression) with the identity line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.scatter(y_true, y_pred, s=8, alpha=0.5)
    lo = float(np.nanmin([np.nanmin(y_true), np.nanmin(y_pred)]))
    hi = float(np.nanmax([np.nanmax(y_true), np.nanmax(y_pred)]))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted (out of fold)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
