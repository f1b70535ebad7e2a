"""Write a study's outputs: tables, JSON, figures, a Markdown report and the refitted model.

Files written into the results folder:

* ``results.csv`` – tidy, one row per (configuration, model, fold): every metric, per-class
  recall, fit time, tuned parameters, warnings;
* ``summary.csv`` / ``summary.json`` – one row per (configuration, model), ranked by the
  estimand ``<metric>_pooled`` (the pooled out-of-fold metric) with its 95% CI (``ci_low``,
  ``ci_high``), ``diff_to_best`` (how much better the best is, >= 0), ``worse_than_best``
  (outside the 95% confidence set for the best configuration; see :mod:`embedx.probing.compare` and
  docs/statistics.md), ``p_set``, ``p_paired``, the per-fold reference tests, mean ± std over
  folds and a ``warning`` (e.g. constant out-of-fold predictions); the JSON adds the settings,
  data description, notes, per-fold scores and the selection-aware best score;
* ``layer_curve.png`` – the pooled main metric vs. layer with its 95% CI, a chance line, one line
  per model, one panel per (feature set, pooling) in the order requested, legend outside;
* ``confusion_best.png`` (classification) or ``scatter_best.png`` (regression) of the best
  configuration's out-of-fold predictions;
* ``predictions_best.csv`` – the best configuration's out-of-fold prediction of every item;
* with several feature sets, ``sets.csv`` – the model comparison table (:mod:`embedx.probing.sets`),
  which also opens ``report.md``;
* with ``--domain``, ``transfer.csv``, ``transfer_<set>_<pooling>_<model>.png`` and, with
  ``--label-map``, ``unmatched_labels.csv`` (:mod:`embedx.probing.transfer`);
* with ``--by``, ``subgroups.csv``, ``subgroup_gaps.csv``, ``speakers.csv`` and ``subgroups.png``
  (:mod:`embedx.probing.subgroups`);
* ``report.md`` – all of the above in words;
* ``model.skops`` – the best configuration refitted (see :mod:`embedx.probing.predict`).

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

from embedx.figures import (
    plot_confusion,
    plot_layer_curve,
    plot_scatter,
    top_classes,
)
from embedx.probing.findings import findings, headline_lines, row_verdict
from embedx.probing.modelfile import LEGACY_FILE, MODEL_FILE
from embedx.probing.stats import wilcoxon_floor
from embedx.text import markdown_table, p_value, plural
from embedx.text import number as _f

__all__ = [
    "summary_records",
    "write_report",
]


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


# ------------------------------------------------------------------------------ markdown


def _ran(result: Any) -> list[tuple[Any, Any]]:
    """``(analysis, its result)`` of every analysis the study ran, in registry order."""
    from embedx.probing.analyses import ANALYSES

    done = getattr(result, "analyses", None) or {}
    return [(a, done[name]) for name, a in ANALYSES.items() if name in done]


def _tested(result: Any) -> bool:
    """Whether the study computed CIs and tests (bootstrap on, enough clusters)."""
    return result.settings["n_boot"] > 0 and bool(np.isfinite(result.summary["ci_low"].to_numpy(dtype=float)).any())


def _unit(result: Any) -> str:
    return "speaker" if result.settings.get("clusters") == "group" else "item block"


def _data_section(result: Any) -> list[str]:
    ds, settings = result.dataset, result.settings
    lines = ["## Data", ""]
    lines.append(f"- store: `{ds.store}`")
    lines.append(f"- items used: {ds.num_items}" + (
        " (" + ", ".join(f"{v} {k}" for k, v in ds.skipped.items()) + " skipped)" if ds.skipped else ""))
    scored = result.folds.scored(ds.num_items)
    if scored < ds.num_items:  # two-way or predefined folds: every score rests on fewer items
        train = [len(tr) for tr, _ in result.folds.splits]
        lines.append(f"- items scored (in a test part): {scored} of {ds.num_items}; training parts of "
                     f"{min(train)}–{max(train)} items")
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
    return lines


def _protocol_section(result: Any) -> list[str]:
    settings, folds, m = result.settings, result.folds, result.metric
    lines = ["## Protocol", ""]
    lines.append(
        f"- cross-validation: `{folds.scheme}`, {plural(folds.n_splits, 'fold')}, seed {folds.seed}; the "
        "same folds for every configuration and model"
        + (f" (chosen by `--cv auto`: {folds.reason})" if folds.reason else "")
    )
    if folds.left_out:
        ds = result.dataset
        lines.append(
            f"- two-way folds: neither a `{ds.group}` nor a `{ds.cross_group}` value is on both sides "
            "of a fold; items left out of each fold (a held-out one with a training other): "
            + ", ".join(map(str, folds.left_out))
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
    unit = _unit(result)
    one_split = folds.n_splits == 1
    where = "dev part" if one_split and folds.holdout is not None else (
        "evaluation part" if one_split else "pooled out-of-fold predictions")
    lines.append(
        f"- estimand: the **{m} of the {where}** (every item predicted by the model that did not "
        "train on it, the metric computed once over all of them). It ranks the configurations and "
        "is what the CIs, Δ to best and the tests are about"
        + ("" if one_split else "; mean ± std over folds is a description only")
    )
    if _tested(result):
        lines.append(
            f"- statistics over {settings.get('num_clusters')} {unit}s as the unit "
            + ("(items of one speaker are not independent)" if unit == "speaker"
               else "(seeded random blocks of items; no group column)")
            + f": 95% CIs from the delete-one-{unit} jackknife with a t quantile; configurations "
            f"compared with a 95% confidence set for the best configuration (model confidence set "
            f"with {settings['n_boot']} within-{unit} permutations per step, alpha "
            f"{settings['alpha']}); see docs/statistics.md"
        )
    else:
        reason = ("--bootstrap 0" if settings["n_boot"] == 0
                  else f"too few {unit}s (see Notes)")
        lines.append(f"- statistics: none ({reason}): no CIs, no tests, no configuration marked worse")
    return lines


def _best_section(result: Any) -> list[str]:
    s, m, ds = result.summary, result.metric, result.dataset
    best = s.iloc[0]
    tested, unit = _tested(result), _unit(result)
    found = findings(result)
    lines = ["## Best configuration" + (f": a {len(found.tied)}-way tie" if found.is_tie else ""), ""]
    if found.is_tie:  # no configuration is named best alone
        lines.append(headline_lines(found, markdown=True)[0])
    else:
        value = (f"{m} {_f(best[f'{m}_pooled'])}"
                 + (f" (95% CI {_f(best['ci_low'])}–{_f(best['ci_high'])})" if tested else ""))
        spread = "" if result.folds.n_splits == 1 else (
            f"; per fold {_f(best[f'{m}_mean'])} ± {_f(best[f'{m}_std'])} (mean ± std)")
        lines.append(f"**{best['config']}** with **{best['model']}**: {value}{spread}.")
    sel = result.selection
    if sel is not None and len(s) > 1:
        lines.append("")
        text = (f"This score is the best of {sel['candidates']} and therefore optimistic")
        if np.isfinite(sel["estimate"]):
            text += (f"; the selection-aware estimate of choosing the best configuration this way "
                     f"is {_f(sel['estimate'])} (95% CI {_f(sel['ci_low'])}–{_f(sel['ci_high'])}; "
                     f"each {unit} scored by the configuration that is best on the other {unit}s)")
        lines.append(text + ".")
    if result.holdout is not None:
        h = result.holdout
        ci = (f" (95% CI {_f(h['ci_low'])}–{_f(h['ci_high'])})"
              if np.isfinite(h.get("ci_low", np.nan)) else "")
        lines.append("")
        lines.append(
            f"Held-out test ({h['n_test']} items, refitted on train + dev): {m} {_f(h[m])}{ci}; "
            + ", ".join(f"{k} {_f(v)}" for k, v in h.items()
                        if k not in ("n_test", "ci_low", "ci_high", m))
        )
    # the confidence set (or the tie), the chance level and why there are no CIs
    extra = headline_lines(found, markdown=True, best_line=False)
    if len(s) > 1 and not tested:
        extra.append("No configuration was compared with the best (no statistics; see Protocol).")
    for line in extra:
        lines += ["", line]
    if ds.classes:
        rec = result.results[(result.results["config"] == best["config"])
                             & (result.results["model"] == best["model"])]
        cols = [f"recall_{c}" for c in ds.classes]
        of = f" of `{best['config']}` ({best['model']})" if found.is_tie else ""
        lines += ["", f"Per-class recall{of} (mean over folds): " + ", ".join(
            f"{c} {_f(rec[col].mean())}" for c, col in zip(ds.classes, cols, strict=True))]
    return lines


def _ranking_section(result: Any) -> list[str]:
    s, m, folds = result.summary, result.metric, result.folds
    tested, one_split = _tested(result), folds.n_splits == 1
    found = findings(result)
    lines = ["## Ranking", ""]
    names = [c for c in s.columns if c.endswith("_mean") and c != f"{m}_mean"]
    header = ["rank", "features", "model", m, "95% CI",
              *([] if one_split else [f"{m} per fold (mean ± std)"]),
              *[n.removesuffix("_mean") for n in names], "Δ to best", "p (set)", "worse?",
              *(["p (perm.)"] if "p_permutation" in s else [])]
    rows = []
    for _, r in s.head(25).iterrows():
        flag = row_verdict(found, (r["config"], r["model"]), int(r["rank"]), bool(r["worse_than_best"]))
        rows.append([
            str(r["rank"]), f"`{r['config']}`", r["model"] + (" ⚠" if r.get("warning") else ""),
            _f(r[f"{m}_pooled"]),
            f"{_f(r['ci_low'])}–{_f(r['ci_high'])}" if tested else "–",
            *([] if one_split else [f"{_f(r[f'{m}_mean'])} ± {_f(r[f'{m}_std'])}"]),
            *[_f(r[n]) for n in names],
            _f(r["diff_to_best"]) if flag not in ("best", "tie") else "–",
            p_value(r["p_set"]),
            flag,
            *([p_value(r["p_permutation"])] if "p_permutation" in s else []),
        ])
    lines.append(markdown_table(header, rows))
    if len(s) > 25:
        lines.append(f"\n({len(s) - 25} more rows in summary.csv)")
    direction = "higher" if result.greater_is_better else "lower"
    floor = wilcoxon_floor(folds.n_splits, "greater")
    lines += [
        "",
        f"{m}: the estimand ({direction} is better). Δ to best: how much better the best is on "
        f"the estimand (≥ 0, also for error metrics). worse?: tie when the configuration shares "
        "the best score (then none is best), yes when the configuration is "
        "outside the 95% confidence set for the best configuration, which accounts for the best "
        "having been picked on the same data; a configuration that is better than another is "
        "never marked worse. p (set): its confidence-set p-value. Other metric columns are means "
        "over folds. ⚠: see the warning column of summary.csv. summary.csv also has p_paired "
        f"(one-sided sign-flip test of the best against this configuration over {_unit(result)}s, exact "
        "with up to 12, not adjusted for the selection of the best) and, on per-fold scores "
        "for reference only, the Nadeau–Bengio corrected t-test and the Wilcoxon signed-rank "
        f"test (one-sided; with {folds.n_splits} folds its p-value cannot go below {floor:.3g})."
    ]
    return lines


def _closing_sections(result: Any, files: dict[str, str], ran: list[tuple[Any, Any]],
                      shown: set[str]) -> list[str]:
    """Warnings, figures, notes (less those ``shown`` already) and files."""
    s = result.summary
    lines: list[str] = []
    warned = s[s["warning"].astype(str) != ""] if "warning" in s else s.iloc[:0]
    if len(warned):
        lines += ["", "## Warnings", ""]
        lines += [f"- `{r['config']}` with {r['model']}: {r['warning']}" for _, r in warned.head(20).iterrows()]
        if len(warned) > 20:
            lines.append(f"- ... {len(warned) - 20} more in summary.csv")
    lines += ["", "## Figures", ""]
    figures = [("layer_curve", "Layer curve"), *[f for a, _ in ran for f in a.figures],
               ("confusion", "Confusion matrix of the best configuration"),
               ("scatter", "Predictions of the best configuration")]
    for key, label in figures:
        if key in files:
            lines.append(f"![{label}]({files[key]})")
            lines.append("")
    notes = [n for n in result.notes if n not in shown]  # e.g. the chance verdict, already on top
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    lines += ["## Files", ""]
    lines += [f"- `{v}`" for k, v in files.items() if k not in ("report",)]
    lines.append("")
    return lines


def _markdown(result: Any, files: dict[str, str], command: str | None) -> str:
    """``report.md``: what must be read first, the data, protocol, best, ranking, analyses, the rest."""
    ran = _ran(result)
    lines = ["# embedx fit report", ""]
    if command:
        lines += ["```", command, "```", ""]
    opening = [line for a, v in ran for line in a.headline(v, result)]  # before anything that reads like a finding
    lines += [*opening, *_data_section(result), "", *_protocol_section(result), "", *_best_section(result),
              "", *_ranking_section(result)]
    for analysis, value in ran:
        section = analysis.section(value, result, files)
        if section:
            lines += ["", *section]
    lines += _closing_sections(result, files, ran, set(opening))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- write


def _write_study(result: Any, out: Path, files: dict[str, str]) -> None:
    """``results.csv``, ``summary.csv`` and the layer curve."""
    ds = result.dataset
    result.results.to_csv(out / "results.csv", index=False)
    files["results"] = "results.csv"
    summary = result.summary.copy()
    summary["fold_scores"] = [json.dumps(v) for v in summary["fold_scores"]]
    summary.to_csv(out / "summary.csv", index=False)
    files["summary"] = "summary.csv"
    requested = list(dict.fromkeys((c.feature_set, c.pooling) for c in ds.configs if not c.concat))
    found = findings(result)
    if plot_layer_curve(result.summary, result.metric, out / "layer_curve.png", panels=requested,
                        models=list(result.settings["models"]), chance=found.chance,
                        single_split=result.folds.n_splits == 1):
        files["layer_curve"] = "layer_curve.png"


def _write_best(result: Any, out: Path, files: dict[str, str]) -> None:
    """The best configuration's confusion matrix or scatter, and ``predictions_best.csv``."""
    ds = result.dataset
    key = result.best
    title = f"{key[0]} · {key[1]}"
    oof = result.predictions[key]
    tested = result.folds.fold_of(ds.num_items) >= 0
    if ds.classes:
        counts, shown = top_classes(result.confusions[key], ds.classes)
        if len(shown) < len(ds.classes):  # the figure shows the most frequent; the CSV has all
            title += f" ({len(shown)} most frequent of {len(ds.classes)} classes)"
            pd.DataFrame(result.confusions[key], index=pd.Index(ds.classes, name="true"),
                         columns=ds.classes).to_csv(out / "confusion_best.csv")
            files["confusion_table"] = "confusion_best.csv"
        plot_confusion(counts, shown, out / "confusion_best.png", title)
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


def _payload(result: Any, files: dict[str, str]) -> dict[str, Any]:
    """The content of ``summary.json``."""
    ds, key = result.dataset, result.best
    analyses = getattr(result, "analyses", None) or {}
    found = findings(result)
    return {
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
            "reason": result.folds.reason,
            "test_sizes": [len(te) for _, te in result.folds.splits],
            "left_out": list(result.folds.left_out),
        },
        "metric": result.metric,
        "best": {"config": key[0], "model": key[1],
                 **{k: _json_value(v) for k, v in result.summary.iloc[0].items()}},
        "holdout": _json_value(result.holdout),
        "selection": _json_value(result.selection),
        "chance": _json_value(getattr(result, "chance", None)),
        # the headline: chance level of the metric, the tie and the confidence set for the best
        "chance_level": None if found.chance is None else found.chance.value,
        "best_vs_chance": found.versus_chance,
        "tied": [list(k) for k in found.tied] if found.is_tie else [],
        "confidence_set": [list(k) for k in found.confidence_set],
        "no_ci_reason": found.no_ci_reason,
        "confusion_best": _json_value(result.confusions.get(key)),
        "notes": result.notes,
        "seconds": result.seconds,
        "files": files,
        "configurations": summary_records(result.summary),
        # the model comparison table (several feature sets); transfer and subgroups are in their CSVs
        "sets": summary_records(analyses["sets"].table) if "sets" in analyses else None,
    }


def write_report(
    result: Any,
    output: str | os.PathLike[str],
    *,
    command: str | None = None,
    save_model: bool = True,
) -> dict[str, Path]:
    """Write every output of a study into ``output``.

    The study's own tables and figures first, then each analysis's (in the order of
    :mod:`embedx.probing.analyses`), the best configuration's predictions, the model,
    ``summary.json`` and ``report.md``.

    Args:
        result: a :class:`embedx.probing.study.StudyResult`.
        output: the results folder (created).
        command: the command line, quoted in the report.
        save_model: write ``model.skops`` when the study refitted a model.

    Returns:
        Output kind -> path written.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    _write_study(result, out, files)
    for analysis, value in _ran(result):
        analysis.write(value, out, files)
    _write_best(result, out, files)
    if save_model and result.final is not None:
        from embedx.probing.modelfile import save_model as save

        save(result.final, out / MODEL_FILE)
        files["model"] = MODEL_FILE
    files["summary_json"] = "summary.json"
    files["report"] = "report.md"
    (out / "summary.json").write_text(json.dumps(_payload(result, files), indent=2), encoding="utf-8")
    (out / "report.md").write_text(_markdown(result, files, command), encoding="utf-8")
    return {k: out / v for k, v in files.items()}


#: files a study writes into its results folder, whatever its options (summary.json lists
#: the rest); their presence marks the folder as another study's results (LEGACY_FILE: the
#: model of an embedx 0.2 study)
STUDY_FILES = ("report.md", "summary.json", "summary.csv", "results.csv", MODEL_FILE, LEGACY_FILE,
               "predictions_best.csv", "layer_curve.png", "confusion_best.png", "scatter_best.png",
               "layer_weights.csv", "layer_weights.png", "selectivity.csv", "sets.csv", "transfer.csv",
               "unmatched_labels.csv", "subgroups.csv", "subgroup_gaps.csv", "speakers.csv",
               "subgroups.png", "frames.json", "confusion_best.csv")


def prepare_output(output: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check (and create) a results folder before a study runs, so that no fit is wasted.

    A folder holding another study's results is refused unless ``overwrite``: a stale
    ``model.skops`` beside a new report would be a silent wrong answer. With ``overwrite``,
    the old study's files are removed (only those; anything else in the folder stays).

    Args:
        output: the results folder.
        overwrite: replace another study's results.

    Returns:
        The folder, created and writable.

    Raises:
        ConfigError: ``output`` is a file or lies under one, cannot be created or written, or
            holds another study's results and ``overwrite`` is false.
    """
    from embedx.errors import OVERWRITE, ConfigError, Param
    from embedx.paths import writable_folder

    out = writable_folder(output, "results")
    previous = [name for name in STUDY_FILES if (out / name).exists()]
    if not previous:
        return out
    if not overwrite:
        raise ConfigError(Param("output"), f" {str(output)!r} holds another study's results "
                          f"({', '.join(previous[:3])}{', ...' if len(previous) > 3 else ''}); "
                          "use ", OVERWRITE, " to replace them, or another ", Param("output"), " folder")
    listed: list[str] = []
    try:
        listed = list(json.loads((out / "summary.json").read_text(encoding="utf-8"))["files"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # an older or damaged summary: the fixed list is enough
    for name in {*STUDY_FILES, *map(str, listed)}:
        target = out / name
        if target.parent == out and target.is_file():  # never follow a listed path elsewhere
            target.unlink()
    return out
