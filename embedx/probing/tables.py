"""A study's tables from its grid's outputs: the per-fold results and the ranked summary.

The summary's estimand is the pooled out-of-fold main metric (:mod:`embedx.probing.study`); its
CIs and comparisons come from :func:`embedx.probing.compare.compare_configurations`, the per-fold
reference tests from :mod:`embedx.probing.stats`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from embedx.probing import metrics as M
from embedx.probing.cv import Folds
from embedx.probing.data import Dataset
from embedx.probing.stats import corrected_ttest, wilcoxon

__all__ = ["CONSTANT_WARNING", "collect_results", "summarise"]

#: start of the warning of a configuration whose out-of-fold predictions are all the same
CONSTANT_WARNING = "constant out-of-fold predictions"


def _config_columns(config: Any, model: str) -> dict[str, Any]:
    """The columns that name a (feature configuration, model) pair in results and summary."""
    return {
        "config": config.name,
        "feature_set": config.feature_set,
        "layer": config.layer if config.layer is not None else pd.NA,
        "pooling": config.pooling,
        "concat": config.concat,
        "model": model,
    }


def _summary_warning(oof: np.ndarray, part: pd.DataFrame, classes: list[str] | None) -> str:
    """The warning of one (configuration, model): constant predictions first, else a fit's."""
    oof = np.asarray(oof)
    if len(oof) > 1 and (np.all(oof == oof[0]) if classes else np.ptp(oof) <= 1e-12 * max(1.0, abs(oof[0]))):
        value = repr(classes[int(oof[0])]) if classes else f"{float(oof[0]):.4g}"
        return (f"{CONSTANT_WARNING} (always {value}): the model learned nothing, e.g. too few "
                "items per leaf or too strong regularisation")
    warned = part["warning"][part["warning"] != ""]
    return str(warned.iloc[0]) if len(warned) else ""


def collect_results(dataset: Dataset, folds: Folds, models: list[str], outputs: list[dict[str, Any]]
                    ) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray], dict[tuple[str, str], np.ndarray],
                               dict[tuple[str, str], np.ndarray]]:
    """The per-fold results table and, per (configuration, model), predictions, confusions, weights.

    Args:
        dataset: the study's data.
        folds: the shared folds.
        models: the model names the output keys index.
        outputs: the task outputs of the real labels, keyed ``(config, model, fold)``.

    Returns:
        ``(results, predictions, confusions, layer_weights)`` as in :class:`embedx.probing.study.Study`.
    """
    task, configs = dataset.task, dataset.configs
    rows = []
    preds: dict[tuple[str, str], np.ndarray] = {}
    confusions: dict[tuple[str, str], np.ndarray] = {}
    layer_weights: dict[tuple[str, str], list[np.ndarray]] = {}
    for out in outputs:
        ci, mi, fi = out["key"]
        config, model = configs[ci], models[mi]
        train, test = folds.splits[fi]
        key = (config.name, model)
        if key not in preds:
            preds[key] = (
                np.full(dataset.num_items, -1, dtype=np.int64)
                if task == M.CLASSIFICATION
                else np.full(dataset.num_items, np.nan)
            )
            if task == M.CLASSIFICATION:
                confusions[key] = np.zeros((dataset.num_classes,) * 2, dtype=np.int64)
        preds[key][test] = out["pred"]
        if out.get("layer_weights") is not None:
            layer_weights.setdefault(key, []).append(out["layer_weights"])
        row: dict[str, Any] = {
            **_config_columns(config, model),
            "fold": fi,
            "n_train": len(train),
            "n_test": len(test),
        }
        row.update(out["scores"])
        if task == M.CLASSIFICATION:
            confusions[key] += out["confusion"]
            for cls, rec in zip(dataset.classes, out["recall"], strict=True):
                row[f"recall_{cls}"] = rec
        row["fit_seconds"] = out["fit_seconds"]
        row["params"] = json.dumps(out["params"], sort_keys=True) if out["params"] is not None else ""
        row["warning"] = out["warning"]
        if "n_train_used" in out:  # a capped training part (frame-level probes)
            row["n_train_used"] = out["n_train_used"]
        rows.append(row)
    results = pd.DataFrame(rows)
    results["layer"] = results["layer"].astype("Int64")
    return results, preds, confusions, {k: np.vstack(v) for k, v in layer_weights.items()}


def summarise(dataset: Dataset, folds: Folds, keys: list[tuple[Any, str]], metric: str, results: pd.DataFrame,
               preds: dict[tuple[str, str], np.ndarray], stats: Any, tested: np.ndarray) -> pd.DataFrame:
    """One row per (configuration, model), ranked by the estimand (the pooled out-of-fold metric).

    Args:
        dataset: the study's data.
        folds: the shared folds.
        keys: ``(configuration, model name)`` in the order of ``stats``.
        metric: the main metric.
        results: from :func:`collect_results`.
        preds: from :func:`collect_results`.
        stats: :func:`embedx.probing.compare.compare_configurations` of the keys' predictions.
        tested: ``(num_items,)`` whether each item is in a test part.

    Returns:
        The ranked summary with its comparisons to the best row.
    """
    main = M.get_metric(metric, dataset.task)
    names = [m.name for m in M.metrics_for(dataset.task)]
    summary_rows = []
    for index, (config, model) in enumerate(keys):
        key = (config.name, model)
        part = results[(results["config"] == config.name) & (results["model"] == model)]
        srow: dict[str, Any] = {
            **_config_columns(config, model),
            "n_folds": len(part),
        }
        for name in names:
            srow[f"{name}_mean"] = float(part[name].mean())
            srow[f"{name}_std"] = float(part[name].std(ddof=1)) if len(part) > 1 else float("nan")
        srow[f"{metric}_pooled"] = float(stats.pooled[index])
        srow["ci_low"], srow["ci_high"] = float(stats.ci_low[index]), float(stats.ci_high[index])
        srow["fit_seconds"] = float(part["fit_seconds"].sum())
        srow["fold_scores"] = [float(v) for v in part[metric]]
        srow["warning"] = _summary_warning(preds[key][tested], part, dataset.classes)
        srow["_index"] = index
        summary_rows.append(srow)
    summary = pd.DataFrame(summary_rows)
    summary["layer"] = summary["layer"].astype("Int64")
    sign = 1.0 if main.greater_is_better else -1.0
    # ranked by the estimand; ties keep the order of the configurations as requested
    order = np.lexsort((np.arange(len(summary)), -sign * summary[f"{metric}_pooled"].to_numpy()))
    summary = summary.iloc[order].reset_index(drop=True)
    summary.insert(0, "rank", np.arange(1, len(summary) + 1))
    return _compare(summary, stats, folds, sign)


def _compare(summary: pd.DataFrame, stats: Any, folds: Folds, sign: float) -> pd.DataFrame:
    """Add the comparisons with the best, all on the pooled metric, signed so that Δ > 0: best is better."""
    best_index = int(summary.loc[0, "_index"])
    ratio = float(np.mean([len(te) / len(tr) for tr, te in folds.splits]))
    best_scores = np.asarray(summary.loc[0, "fold_scores"])
    diffs, p_pair, t_p, w_p = [], [], [], []
    for _, srow in summary.iterrows():
        index = int(srow["_index"])
        diffs.append(sign * float(stats.pooled[best_index] - stats.pooled[index]))
        if index == best_index:
            p_pair.append(np.nan), t_p.append(np.nan), w_p.append(np.nan)
            continue
        p_pair.append(stats.paired_p(best_index, index))
        scores = np.asarray(srow["fold_scores"])
        t_p.append(corrected_ttest(sign * best_scores, sign * scores, ratio, alternative="greater")[1])
        w_p.append(wilcoxon(sign * best_scores, sign * scores, alternative="greater"))
    indices = summary["_index"].to_numpy(dtype=np.int64)
    summary["diff_to_best"] = diffs
    summary["p_set"] = stats.p_set[indices]
    summary["worse_than_best"] = ~stats.in_set[indices] if stats.tested else np.zeros(len(summary), bool)
    summary["p_paired"] = p_pair
    summary["p_ttest_corrected"] = t_p
    summary["p_wilcoxon"] = w_p
    return summary.drop(columns="_index")
