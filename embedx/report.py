"""Write a study's outputs: tables, JSON, figures, a Markdown report and the refitted model.

Files written into the results folder:

* ``results.csv`` – tidy, one row per (configuration, model, fold): every metric, per-class
  recall, fit time, tuned parameters, warnings;
* ``summary.csv`` / ``summary.json`` – one row per (configuration, model): mean ± std over
  folds, the pooled out-of-fold metric with its bootstrap CI, and the paired comparison with the
  best configuration (the JSON adds the settings, data description, notes and per-fold scores);
* ``layer_curve.png`` – main metric vs. layer with ±1 std error bars, one line per model, one
  panel per (feature set, pooling);
* ``confusion_best.png`` (classification) or ``scatter_best.png`` (regression) of the best
  configuration's out-of-fold predictions;
* ``predictions_best.csv`` – the best configuration's out-of-fold prediction of every item;
* ``report.md`` – all of the above in words;
* ``model.joblib`` – the best configuration refitted (see :mod:`embedx.fit.predict`).

matplotlib is imported (with the Agg backend) only when figures are drawn.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "plot_confusion",
    "plot_layer_curve",
    "plot_scatter",
    "summary_records",
    "write_report",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def summary_records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """The summary table as JSON-ready dicts (NaN -> null)."""
    return [
        {k: _json_value(v) for k, v in row.items()} for row in summary.to_dict(orient="records")
    ]


# ------------------------------------------------------------------------------- figures


def plot_layer_curve(summary: pd.DataFrame, metric: str, path: str | os.PathLike[str]) -> bool:
    """Main metric vs. layer, one line per model, one panel per (feature set, pooling).

    Args:
        summary: the study summary (columns feature_set, pooling, layer, model,
            ``<metric>_mean``, ``<metric>_std``, concat).
        metric: main metric name.
        path: PNG to write.

    Returns:
        Whether a figure was written (``False`` when no configuration has a single layer).
    """
    single = summary[~summary["concat"].astype(bool)]
    if single.empty:
        return False
    plt = _pyplot()
    panels = list(dict.fromkeys(zip(single["feature_set"], single["pooling"], strict=True)))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(6.0, 5.5 * len(panels)), 4.2), squeeze=False, sharey=True
    )
    for ax, (fset, pooling) in zip(axes[0], panels, strict=True):
        part = single[(single["feature_set"] == fset) & (single["pooling"] == pooling)]
        for model, rows in part.groupby("model", sort=False):
            rows = rows.sort_values("layer")
            std = rows[f"{metric}_std"].to_numpy(dtype=float)
            ax.errorbar(
                rows["layer"].to_numpy(dtype=float),
                rows[f"{metric}_mean"].to_numpy(dtype=float),
                yerr=np.nan_to_num(std),
                marker="o",
                capsize=3,
                label=str(model),
            )
        ax.set_title(f"{fset} ({pooling})")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        layers = sorted(part["layer"].dropna().astype(int).unique())
        if len(layers) <= 30:
            ax.set_xticks(layers)
    axes[0][0].set_ylabel(f"{metric} (mean ± std over folds)")
    axes[0][-1].legend(title="model", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


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
    plt = _pyplot()
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
    plt = _pyplot()
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


# ------------------------------------------------------------------------------ markdown


def _f(value: Any, digits: int = 3) -> str:
    if value is None or value is pd.NA:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _p(value: Any) -> str:
    if value is None or value is pd.NA or not math.isfinite(float(value)):
        return "–"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _bootstrap_groups(result: Any) -> bool:
    """Whether the study's bootstrap resampled groups: it falls back to items when the test parts
    hold fewer than :data:`~embedx.fit.study.MIN_CLUSTERS` groups (see ``run_study``)."""
    from embedx.fit.study import MIN_CLUSTERS

    ds = result.dataset
    if ds.groups is None:
        return False
    tested = result.folds.fold_of(ds.num_items) >= 0
    return len(np.unique(ds.groups[tested])) >= MIN_CLUSTERS


def _markdown(result: Any, files: dict[str, str], command: str | None) -> str:
    ds = result.dataset
    s = result.summary
    m = result.metric
    settings = result.settings
    best = s.iloc[0]
    lines = ["# embedx fit report", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += ["## Data", ""]
    lines.append(f"- store: `{ds.store}`")
    lines.append(f"- items used: {ds.num_items}" + (
        " (" + ", ".join(f"{v} {k}" for k, v in ds.skipped.items()) + " skipped)" if ds.skipped else ""))
    lines.append(f"- task: {ds.task}, label column `{ds.label}`")
    if ds.classes:
        lines.append("- classes: " + ", ".join(f"{c} ({n})" for c, n in ds.counts().items()))
    else:
        lines.append(f"- target: mean {np.mean(ds.y):.3f}, std {np.std(ds.y):.3f}")
    if ds.groups is not None:
        lines.append(f"- groups: `{ds.group}`, {len(np.unique(ds.groups))} distinct")
    lines.append(
        f"- feature configurations: {len(ds.configs)}; models: {', '.join(settings['models'])}"
    )
    lines += ["", "## Protocol", ""]
    folds = result.folds
    lines.append(
        f"- cross-validation: `{folds.scheme}`, {folds.n_splits} fold(s), seed {folds.seed}; the "
        "same folds for every configuration and model"
    )
    lines.append(
        f"- main metric: **{m}**; scaling fitted inside each training fold"
        + ("; features standardised per group (speaker normalisation: each group by its own "
           "statistics, within its part of the fold, using no labels)" if settings["speaker_norm"] else "")
    )
    if settings["tune"]:
        lines.append(
            f"- tuning: nested grid search with {settings['inner_folds']} inner folds inside every "
            "training part (nothing selected on a test fold); chosen parameters per fold are in "
            "results.csv"
        )
    if settings.get("class_weight"):
        lines.append(f"- class weights: {settings['class_weight']}")
    lines.append(
        f"- statistics: {settings['n_boot']} bootstrap resamples of the pooled out-of-fold "
        "predictions" + (" (resampling whole groups)" if _bootstrap_groups(result) else "")
        + f"; paired comparisons with the best configuration, Holm-corrected, alpha {settings['alpha']}"
    )
    lines += ["", "## Best configuration", ""]
    lines.append(
        f"**{best['config']}** with **{best['model']}**: {m} {_f(best[f'{m}_mean'])} ± "
        f"{_f(best[f'{m}_std'])} over folds (pooled {_f(best[f'{m}_pooled'])}, 95% CI "
        f"{_f(best['ci_low'])}–{_f(best['ci_high'])})."
    )
    if result.holdout is not None:
        lines.append("")
        lines.append(
            f"Held-out test ({result.holdout['n_test']} items, refitted on train + dev): "
            + ", ".join(f"{k} {_f(v)}" for k, v in result.holdout.items() if k != "n_test")
        )
    tied = s[(s["rank"] > 1) & ~s["worse_than_best"].astype(bool)]
    lines.append("")
    if len(s) > 1:
        lines.append(
            f"{len(tied)} of {len(s) - 1} other configurations are not significantly worse than the "
            f"best (paired bootstrap, Holm-corrected p ≥ {settings['alpha']})."
        )
    if ds.classes:
        rec = result.results[(result.results["config"] == best["config"])
                             & (result.results["model"] == best["model"])]
        cols = [f"recall_{c}" for c in ds.classes]
        lines += ["", "Per-class recall (mean over folds): " + ", ".join(
            f"{c} {_f(rec[col].mean())}" for c, col in zip(ds.classes, cols, strict=True))]
    lines += ["", "## Ranking", ""]
    names = [c for c in s.columns if c.endswith("_mean") and c != f"{m}_mean"]
    header = ["rank", "features", "model", f"{m} mean ± std", "95% CI",
              *[n.removesuffix("_mean") for n in names], "Δ to best", "p (Holm)", "worse?"]
    rows = []
    for _, r in s.head(25).iterrows():
        rows.append([
            str(r["rank"]), f"`{r['config']}`", r["model"],
            f"{_f(r[f'{m}_mean'])} ± {_f(r[f'{m}_std'])}",
            f"{_f(r['ci_low'])}–{_f(r['ci_high'])}",
            *[_f(r[n]) for n in names],
            _f(r["diff_to_best"]) if r["rank"] > 1 else "–",
            _p(r["p_holm"]),
            ("yes" if r["worse_than_best"] else "no") if r["rank"] > 1 else "best",
        ])
    lines.append(_table(header, rows))
    if len(s) > 25:
        lines.append(f"\n({len(s) - 25} more rows in summary.csv)")
    lines += [
        "",
        "Δ to best: mean over folds of (best − this). p (Holm): paired bootstrap of the metric "
        "difference on the same resamples, Holm-corrected over all comparisons with the best. "
        "summary.csv also has the Nadeau–Bengio corrected resampled t-test and the Wilcoxon "
        "signed-rank test over the shared folds.",
    ]
    lines += ["", "## Figures", ""]
    for key, label in (("layer_curve", "Layer curve"), ("confusion", "Confusion matrix of the best configuration"),
                       ("scatter", "Predictions of the best configuration")):
        if key in files:
            lines.append(f"![{label}]({files[key]})")
            lines.append("")
    if result.notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in result.notes]
        lines.append("")
    lines += ["## Files", ""]
    lines += [f"- `{v}`" for k, v in files.items() if k not in ("report",)]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- write


def write_report(
    result: Any,
    output: str | os.PathLike[str],
    *,
    command: str | None = None,
    save_model: bool = True,
) -> dict[str, Path]:
    """Write every output of a study into ``output``.

    Args:
        result: a :class:`embedx.fit.study.StudyResult`.
        output: the results folder (created).
        command: the command line, quoted in the report.
        save_model: write ``model.joblib`` when the study refitted a model.

    Returns:
        Output kind -> path written.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    ds = result.dataset
    files: dict[str, str] = {}

    result.results.to_csv(out / "results.csv", index=False)
    files["results"] = "results.csv"
    summary = result.summary.copy()
    summary["fold_scores"] = [json.dumps(v) for v in summary["fold_scores"]]
    summary.to_csv(out / "summary.csv", index=False)
    files["summary"] = "summary.csv"

    if plot_layer_curve(result.summary, result.metric, out / "layer_curve.png"):
        files["layer_curve"] = "layer_curve.png"
    key = result.best
    title = f"{key[0]} · {key[1]}"
    oof = result.predictions[key]
    tested = result.folds.fold_of(ds.num_items) >= 0
    if ds.classes:
        plot_confusion(result.confusions[key], ds.classes, out / "confusion_best.png", title)
        files["confusion"] = "confusion_best.png"
        true = [ds.classes[k] for k in ds.y[tested]]
        pred = [ds.classes[k] for k in oof[tested]]
    else:
        plot_scatter(ds.y[tested], oof[tested], out / "scatter_best.png", title)
        files["scatter"] = "scatter_best.png"
        true, pred = ds.y[tested], oof[tested]
    pd.DataFrame({
        "id": ds.ids[tested], "path": ds.paths[tested],
        "fold": result.folds.fold_of(ds.num_items)[tested], "true": true, "prediction": pred,
    }).to_csv(out / "predictions_best.csv", index=False)
    files["predictions"] = "predictions_best.csv"

    if save_model and result.final is not None:
        from embedx.fit.predict import save_model as save

        save(result.final, out / "model.joblib")
        files["model"] = "model.joblib"
    files["summary_json"] = "summary.json"
    files["report"] = "report.md"

    payload = {
        "settings": _json_value(result.settings),
        "data": {
            "store": ds.store,
            "num_items": ds.num_items,
            "skipped": ds.skipped,
            "task": ds.task,
            "label": ds.label,
            "classes": ds.classes,
            "class_counts": ds.counts(),
            "group": ds.group,
            "num_groups": None if ds.groups is None else int(len(np.unique(ds.groups))),
            "feature_sets": {
                name: {"backend": spec.backend, "dim": spec.dim, "attrs": _json_value(dict(spec.attrs))}
                for name, spec in ds.specs.items()
            },
        },
        "folds": {
            "scheme": result.folds.scheme,
            "n_splits": result.folds.n_splits,
            "seed": result.folds.seed,
            "test_sizes": [len(te) for _, te in result.folds.splits],
        },
        "metric": result.metric,
        "best": {"config": key[0], "model": key[1],
                 **{k: _json_value(v) for k, v in result.summary.iloc[0].items()}},
        "holdout": _json_value(result.holdout),
        "confusion_best": _json_value(result.confusions.get(key)),
        "notes": result.notes,
        "seconds": result.seconds,
        "files": files,
        "configurations": summary_records(result.summary),
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    (out / "report.md").write_text(_markdown(result, files, command), encoding="utf-8")
    return {k: out / v for k, v in files.items()}
