"""Random-network control: how much of a layer's score the *trained* weights add (selectivity).

A probe can decode a label from a randomly initialised network too: the architecture, the
convolutional front end and the pooling already carry acoustic information. ``embedx extract
--model M --random-init`` stores the same architecture with seeded random weights as the set
``M-random``; when a study holds both sets, every (layer, pooling, model) of ``M`` is paired
with the same configuration of ``M-random`` and the report shows

* **selectivity** = trained − random on the study's estimand (the pooled out-of-fold metric),
  signed so that > 0 means the trained network is better (for error metrics: random − trained);
* **p_selectivity**: the study's paired test (:func:`embedx.probing.compare.signflip_test`,
  swapping the two configurations' predictions speaker by speaker; exact up to 12 speakers) of
  "trained is better than random", one-sided. It is per layer and not adjusted for testing every
  layer; with ``--bootstrap 0`` or too few speakers there is none.

Both sets were probed on the same folds by the same models, so the pairs are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from embedx.probing import metrics as M
from embedx.probing.analysis import Analysis
from embedx.probing.compare import (
    MIN_CLUSTERS,
    ClusterScores,
    clusters_of,
    null_inflation,
    signflip_test,
)
from embedx.store import RANDOM_SUFFIX
from embedx.text import markdown_table, p_value
from embedx.text import number as _f

__all__ = ["SelectivityAnalysis", "random_twins", "selectivity_table"]


def random_twins(feature_sets: Any) -> dict[str, str]:
    """Trained set -> its random twin, for every set whose ``NAME-random`` is present too."""
    names = set(feature_sets)
    return {n: n + RANDOM_SUFFIX for n in sorted(names) if n + RANDOM_SUFFIX in names}


def selectivity_table(result: Any) -> pd.DataFrame | None:
    """Selectivity per layer of every trained set that has a random twin in the study.

    Args:
        result: a :class:`~embedx.probing.study.StudyResult`.

    Returns:
        Columns ``set, random_set, pooling, model, layer, trained, random, selectivity,
        p_selectivity``, one row per layer present in both sets; ``None`` without a twin.
    """
    s = result.summary
    single = s[~s["concat"].astype(bool) & s["layer"].notna()]
    twins = random_twins(single["feature_set"])
    if not twins:
        return None
    ds, metric = result.dataset, result.metric
    main = M.get_metric(metric, ds.task)
    sign = 1.0 if main.greater_is_better else -1.0
    tested = result.folds.fold_of(ds.num_items) >= 0
    groups = None if ds.groups is None else ds.groups[tested]
    codes, _ = clusters_of(int(tested.sum()), groups, result.settings["seed"])
    n_perm = int(result.settings["n_boot"])
    rows = []
    for trained_set, random_set in twins.items():
        mine = single[single["feature_set"] == trained_set]
        theirs = single[single["feature_set"] == random_set].set_index(["layer", "pooling", "model"])
        for _, row in mine.sort_values(["pooling", "model", "layer"]).iterrows():
            key = (row["layer"], row["pooling"], row["model"])
            if key not in theirs.index:
                continue
            twin = theirs.loc[key]
            preds = [result.predictions[(row["config"], row["model"])][tested],
                     result.predictions[(twin["config"], row["model"])][tested]]
            p = float("nan")
            scores = ClusterScores(ds.y[tested], preds, main, codes, ds.num_classes or None)
            if n_perm > 0 and scores.num_clusters_ >= MIN_CLUSTERS:
                p = signflip_test(scores, 0, 1, greater_is_better=main.greater_is_better, n_perm=n_perm,
                                  seed=result.settings["seed"], inflation=null_inflation(row["model"], ds.task))
            trained, rand = float(row[f"{metric}_pooled"]), float(twin[f"{metric}_pooled"])
            rows.append({"set": trained_set, "random_set": random_set, "pooling": row["pooling"],
                         "model": row["model"], "layer": int(row["layer"]), "trained": trained,
                         "random": rand, "selectivity": sign * (trained - rand), "p_selectivity": p})
    return pd.DataFrame(rows) if rows else None


class SelectivityAnalysis(Analysis):
    """The random-network control: ``selectivity.csv`` and its section, when a set has a twin."""

    name = "selectivity"

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> pd.DataFrame | None:
        """:func:`selectivity_table` of the study (``None`` without a random twin)."""
        return selectivity_table(study)

    def write(self, value: pd.DataFrame, out: Path, files: dict[str, str]) -> None:
        """``selectivity.csv``."""
        value.to_csv(out / "selectivity.csv", index=False)
        files["selectivity"] = "selectivity.csv"

    def section(self, value: pd.DataFrame, study: Any, files: Mapping[str, str]) -> list[str]:
        """Trained minus random per layer, with the paired test."""
        m = study.metric
        lines = ["## Random-network control (selectivity)", ""]
        lines.append(f"Each layer of a trained model against the same layer of its random-initialised twin "
                     f"(`embedx extract --random-init`), same folds and models. Selectivity = trained − random "
                     f"{m} (> 0: the trained weights add information); p: one-sided paired sign-flip test "
                     "over speakers (the study's paired test), per layer, not adjusted for testing every layer. "
                     "All rows are in `selectivity.csv`.")
        lines.append("")
        header = ["set", "pooling", "model", "layer", f"{m} trained", f"{m} random", "selectivity", "p"]
        rows = [[f"`{r['set']}`", r["pooling"], r["model"], str(r["layer"]), _f(r["trained"]), _f(r["random"]),
                 _f(r["selectivity"]), p_value(r["p_selectivity"])] for _, r in value.head(60).iterrows()]
        lines.append(markdown_table(header, rows))
        best = value.loc[value["selectivity"].idxmax()]
        lines += ["", f"Largest selectivity: layer {best['layer']} of `{best['set']}` ({best['model']}, "
                  f"{best['pooling']}): {_f(best['selectivity'])}."]
        return lines
