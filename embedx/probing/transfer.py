"""Cross-corpus transfer: train on one domain, test on every other and on its own held-out speakers.

``embedx fit --domain corpus`` names an item column whose values are the domains (corpora,
recording conditions, languages, ...). For every configuration (feature set × layer × pooling ×
model) of the study, and every domain ``d``:

* **cross**: one model is fitted on all items of ``d`` and predicts the items of every other
  domain ``e``; the main metric of those predictions is entry ``(d, e)`` of the transfer matrix;
* **within** (the diagonal): grouped (speaker-independent) cross-validation inside ``d``, with
  the study's number of folds (fewer when ``d`` has fewer speakers); the entry is the pooled
  out-of-fold metric, the same estimand as the main study's.

Every fit is the study's own fit (:func:`embedx.probing.fitting.run_task`: scaling, speaker
normalisation and tuning inside the training part), so a transfer entry differs from the main
study only in which items are trained on and tested. The 95% CI of an entry is the study's
delete-one-speaker jackknife-t over the *test* speakers (:func:`embedx.probing.refit.holdout_ci`):
it covers the sampling of test speakers for the fitted model, not the sampling of the
training corpus.

**Label sets.** Corpora rarely share label names. ``--label-map map.yaml`` maps each domain's
raw labels to shared ones; the format (both parts optional)::

    # every domain: raw label -> shared label
    ang: angry
    neu: neutral
    # one domain only (wins over the global entries): domain -> {raw label: shared label}
    crema-d:
      ANG: angry
      NEU: neutral

A label that is already a shared label (a value of the map) is kept as it is. Any other label
is *unmatched*: its items leave the study (main study, transfer and subgroups alike, so all of
them are about the same label set), and every unmatched (label, domain, count) is printed on the
console, listed in the report and in ``unmatched_labels.csv``. Without a map, labels that do not
occur in every domain are listed in the report (a model trained without a class never predicts
it).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, EmbedxError, Param
from embedx.paths import file_part
from embedx.probing import metrics as M
from embedx.probing.analysis import Analysis
from embedx.probing.columns import item_columns
from embedx.probing.data import Dataset, encode_labels
from embedx.probing.label_map import LABEL_MAP_FORMAT, LabelMap, read_label_map
from embedx.text import plural

__all__ = [
    "LABEL_MAP_FORMAT",
    "Domains",
    "LabelMap",
    "TransferAnalysis",
    "TransferResult",
    "plot_transfer",
    "prepare_domains",
    "read_label_map",
    "run_transfer",
    "transfer_section",
]


@dataclass
class Domains:
    """The domains of a study's items.

    Attributes:
        column: the ``--domain`` column.
        values: ``(num_items,)`` domain of every item the study uses.
        names: the domains, sorted.
        label_map: the ``--label-map`` file, or ``None``.
        unmatched: rows ``label, domain, count`` of the items the label map left out.
        not_shared: rows ``label, domains`` of labels missing from some domain.
    """

    column: str
    values: np.ndarray
    names: list[str]
    label_map: str | None = None
    unmatched: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["label", "domain", "count"]))
    not_shared: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["label", "domains"]))


def _subset(dataset: Dataset, keep: np.ndarray, labels: list[str], reason: str) -> Dataset:
    """``dataset`` restricted to the rows in ``keep``, with the (mapped) labels re-encoded."""
    y, classes = encode_labels(pd.Series(labels, name=dataset.label, dtype=object), dataset.task)
    skipped = dict(dataset.skipped)
    if (~keep).any():
        skipped[reason] = int((~keep).sum())
    return dataclasses.replace(
        dataset,
        X={name: X[keep] for name, X in dataset.X.items()},  # (kept_items, ...) per configuration
        y=y,
        classes=classes,
        groups=None if dataset.groups is None else dataset.groups[keep],
        cross_groups=None if dataset.cross_groups is None else dataset.cross_groups[keep],
        split=None if dataset.split is None else dataset.split[keep],
        ids=dataset.ids[keep],
        paths=dataset.paths[keep],
        rows=dataset.rows[keep],
        skipped=skipped,
    )


def prepare_domains(
    dataset: Dataset,
    column: str,
    *,
    label_map: str | os.PathLike[str] | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
) -> tuple[Dataset, Domains]:
    """Read the domain of every item and align the label sets (before any model is fitted).

    Args:
        dataset: the study's data.
        column: the ``--domain`` item column.
        label_map: a ``--label-map`` YAML file, or ``None``.
        labels_csv: the study's ``--labels`` CSV, if any (its columns can name domains too).

    Returns:
        ``(dataset, domains)``: the dataset without the items of unmatched labels (unchanged
        without a label map) and the :class:`Domains`.

    Raises:
        DataError: no such column (naming the available ones), fewer than 2 domains, or a
            single class left after the label map.
        ConfigError: a bad label-map file, or a label map for a regression target.
    """
    values = item_columns(dataset, [column], labels_csv=labels_csv, option="domain")[column]
    names = sorted(set(values.tolist()))
    if len(names) < 2:
        raise DataError(Param("domain"), f" {column!r} has a single value ({names[0]!r}) among the "
                        f"{plural(dataset.num_items, 'item')} used; cross-corpus transfer needs at "
                        "least 2 domains")
    unmatched = pd.DataFrame(columns=["label", "domain", "count"])
    if label_map is not None:
        if dataset.task != M.CLASSIFICATION:
            raise ConfigError(Param("label_map"), f" aligns class labels, but {dataset.label!r} is a regression "
                              "target; drop ", Param("label_map"), " or use ", Param("task", "classification"))
        lmap = read_label_map(label_map)
        raw = np.asarray(dataset.classes, dtype=object)[dataset.y]
        mapped = [lmap.map(d, r) for d, r in zip(values.tolist(), raw.tolist(), strict=True)]
        keep = np.array([m is not None for m in mapped])
        if (~keep).any():
            lost = pd.DataFrame({"label": raw[~keep], "domain": values[~keep]})
            unmatched = (lost.groupby(["label", "domain"]).size().rename("count").reset_index()
                         .sort_values(["domain", "label"]).reset_index(drop=True))
        if not keep.any():
            raise DataError(Param("label_map"), f" {str(label_map)!r} matches no label of the items; labels "
                            f"found: {', '.join(map(str, dataset.classes))}")
        dataset = _subset(dataset, keep, [m for m in mapped if m is not None], "unmatched label (--label-map)")
        values = values[keep]
        names = sorted(set(values.tolist()))
        if len(names) < 2:
            raise DataError("after ", Param("label_map"), f" only domain {names[0]!r} has matched labels; "
                            "cross-corpus transfer needs at least 2 domains")
    not_shared = []
    if dataset.task == M.CLASSIFICATION:
        for code, label in enumerate(dataset.classes):
            where = sorted(set(values[dataset.y == code].tolist()))
            if len(where) < len(names):
                not_shared.append({"label": label, "domains": ", ".join(where)})
    return dataset, Domains(
        column=column, values=values, names=names,
        label_map=None if label_map is None else str(label_map), unmatched=unmatched,
        not_shared=pd.DataFrame(not_shared, columns=["label", "domains"]),
    )


@dataclass
class TransferResult:
    """The transfer matrix of every configuration.

    Attributes:
        table: long table, one row per (configuration, model, train domain, test domain): the
            configuration columns, ``train_domain``, ``test_domain``, ``within`` (held-out
            speakers of the same domain), ``metric``, ``score``, ``ci_low``, ``ci_high``,
            ``n_train``, ``n_test``, ``n_test_speakers``.
        domains: the domains.
        metric: the main metric; greater_is_better its direction.
        notes: remarks for the report (e.g. a domain too small for its own CV).
    """

    table: pd.DataFrame
    domains: Domains
    metric: str
    greater_is_better: bool
    notes: list[str] = field(default_factory=list)


def _domain_folds(dataset: Dataset, rows: np.ndarray, settings: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaker-grouped folds inside one domain, as rows of the whole dataset.

    Raises:
        EmbedxError: the domain is too small for any folds.
    """
    from embedx.probing.cv import DEFAULT_FOLDS, make_folds

    groups = None if dataset.groups is None else dataset.groups[rows]
    n_splits = int(settings["n_splits"] or DEFAULT_FOLDS)
    if groups is not None:
        # fewer folds for a domain with fewer speakers than the study's folds
        n_splits = min(n_splits, len(np.unique(groups)))
    folds = make_folds(dataset.y[rows], scheme="group" if groups is not None else "auto",
                       n_splits=max(n_splits, 2), seed=int(settings["seed"]), groups=groups,
                       task=dataset.task)
    return [(rows[tr], rows[te]) for tr, te in folds.splits]


def _pairs(result: Any) -> list[tuple[str, str]]:
    """The study's (configuration, model) pairs, in the order of its configurations and models."""
    order = {c.name: i for i, c in enumerate(result.dataset.configs)}
    models = list(dict.fromkeys(result.summary["model"]))
    return sorted({(r.config, r.model) for r in result.summary.itertuples()},
                  key=lambda p: (order[p[0]], models.index(p[1])))


def _plan(dataset: Dataset, domains: Domains, settings: dict[str, Any], notes: list[str]
          ) -> tuple[dict[str, np.ndarray], list[str], dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Each domain's rows, the domains trained on, and the speaker-grouped folds inside each.

    Returns:
        ``(rows_of, trainable, within)``; what cannot be done is added to ``notes``.
    """
    task = dataset.task
    rows_of = {d: np.flatnonzero(domains.values == d) for d in domains.names}
    if task == M.CLASSIFICATION:
        # a classifier needs two classes to learn from: such a domain is only tested on
        for d in [d for d, rows in rows_of.items() if len(np.unique(dataset.y[rows])) < 2]:
            only = dataset.classes[int(dataset.y[rows_of[d]][0])]
            notes.append(f"domain {d!r} has one class only ({only!r}): not trained on, only tested on")
    trainable = [d for d in domains.names
                 if task != M.CLASSIFICATION or len(np.unique(dataset.y[rows_of[d]])) >= 2]
    within: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for d in trainable:
        try:
            folds = _domain_folds(dataset, rows_of[d], settings)
        except EmbedxError as exc:
            notes.append(f"domain {d!r}: no held-out-speaker score ({exc})")
            continue
        if task == M.CLASSIFICATION and any(len(np.unique(dataset.y[tr])) < 2 for tr, _ in folds):
            notes.append(f"domain {d!r}: no held-out-speaker score (a training fold has one class)")
            continue
        within[d] = folds
    return rows_of, trainable, within


def _fit_all(result: Any, pairs: list[tuple[str, str]], tasks: list[tuple[Any, np.ndarray, np.ndarray]],
             progress: bool) -> dict[tuple[int, str, int], dict[str, Any]]:
    """Run every transfer fit (the study's own :func:`~embedx.probing.fitting.run_task`), keyed as ``tasks``."""
    from joblib import Parallel, delayed

    from embedx.probing.cv import UNGROUPED, inner_cv
    from embedx.probing.engines import engine
    from embedx.probing.fitting import run_task
    from embedx.progress import progress_bar

    dataset, settings, task = result.dataset, result.settings, result.dataset.task
    grids = result.grids or {}
    grouped = dataset.groups is not None

    def jobs():
        for key, train, test in tasks:
            config, model = pairs[key[0]]
            grid = grids.get(model)
            yield delayed(run_task)(
                dataset.X[config], dataset.y, dataset.groups, train, test, key=key, model=model,
                task=task, num_classes=dataset.num_classes, seed=int(settings["seed"]),
                class_weight=settings["class_weight"], threads=int(settings["threads"] or 1),
                speaker_norm=bool(settings["speaker_norm"]), grid=grid,
                inner=None if grid is None else inner_cv("group" if grouped else "stratified",
                                                         int(settings["inner_folds"]),
                                                         int(settings["seed"]), task, grouped),
                grouped_inner=grouped and settings["scheme"] not in UNGROUPED, metric=result.metric,
            )

    outputs: dict[tuple[int, str, int], dict[str, Any]] = {}
    with progress_bar(progress) as bar, engine(settings["backend"], settings["jobs"], settings["scheduler"]) as ret:
        handle = bar.add_task("transfer", total=len(tasks))
        for out in Parallel(return_as=ret)(jobs()):
            outputs[out["key"]] = out
            bar.advance(handle)
    return outputs


def _entry(result: Any, main: M.Metric, y_true: np.ndarray, pred: np.ndarray, groups: np.ndarray | None
           ) -> dict[str, float]:
    """One transfer entry: the main metric of the test items' predictions and its CI over speakers."""
    from embedx.probing.refit import holdout_ci

    settings = result.settings
    low, high = holdout_ci(y_true, pred, main, groups=groups, num_classes=result.dataset.num_classes or None,
                           seed=int(settings["seed"]), enabled=int(settings["n_boot"]) > 0)
    with warnings.catch_warnings():
        # UAR averages the classes of the test domain; predicting others is the point here
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        score = float(main.func(y_true, pred))
    return {"score": score, "ci_low": low, "ci_high": high}


def _table(result: Any, domains: Domains, pairs: list[tuple[str, str]], trainable: list[str],
           within: dict[str, list[tuple[np.ndarray, np.ndarray]]], tasks: list[tuple[Any, np.ndarray, np.ndarray]],
           outputs: dict[tuple[int, str, int], dict[str, Any]]) -> pd.DataFrame:
    """The long transfer table: one row per (configuration, model, train domain, test domain)."""
    dataset, metric = result.dataset, result.metric
    main = M.get_metric(metric, dataset.task)
    configs = {c.name: c for c in dataset.configs}
    tests = {key: test for key, _, test in tasks}
    train_sizes = {key: len(train) for key, train, _ in tasks}
    rows = []
    for pi, (config, model) in enumerate(pairs):
        c = configs[config]
        head = {"config": config, "feature_set": c.feature_set,
                "layer": c.layer if c.layer is not None else pd.NA, "pooling": c.pooling, "model": model}
        for d in trainable:
            out, test = outputs[(pi, d, -1)], tests[(pi, d, -1)]
            for e in domains.names:
                if e == d:
                    if d not in within:
                        continue
                    keys = [(pi, d, fi) for fi in range(len(within[d]))]
                    te = np.concatenate([tests[k] for k in keys])
                    pred = np.concatenate([outputs[k]["pred"] for k in keys])
                    n_train = int(round(np.mean([train_sizes[k] for k in keys])))
                else:
                    part = domains.values[test] == e
                    te, pred, n_train = test[part], out["pred"][part], train_sizes[(pi, d, -1)]
                groups = None if dataset.groups is None else dataset.groups[te]
                rows.append({
                    **head, "train_domain": d, "test_domain": e, "within": e == d, "metric": metric,
                    **_entry(result, main, dataset.y[te], pred, groups), "n_train": n_train, "n_test": len(te),
                    "n_test_speakers": len(np.unique(groups)) if groups is not None else pd.NA,
                })
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return table


def run_transfer(
    result: Any,
    domains: Domains,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TransferResult:
    """Train on each domain, test on every other and on the domain's held-out speakers.

    Args:
        result: the finished study (:class:`embedx.probing.study.Study`; its dataset, settings,
            models and tuning grids are reused).
        domains: from :func:`prepare_domains` (for the same dataset).
        progress: show a progress bar.
        log: where to send notes.

    Returns:
        The :class:`TransferResult`.
    """
    from embedx.probing.compare import MIN_CLUSTERS

    dataset, settings = result.dataset, result.settings
    note = log or (lambda _m: None)
    notes: list[str] = []
    pairs = _pairs(result)
    rows_of, trainable, within = _plan(dataset, domains, settings, notes)
    tasks = []
    for pi in range(len(pairs)):
        for d in trainable:
            tasks.append(((pi, d, -1), rows_of[d], np.flatnonzero(domains.values != d)))
            tasks += [((pi, d, fi), tr, te) for fi, (tr, te) in enumerate(within.get(d, []))]
    note(f"transfer: {plural(len(pairs), 'configuration')} × {plural(len(domains.names), 'domain')} "
         f"= {plural(len(tasks), 'fit')} (each domain against the others, and its own speakers)")
    outputs = _fit_all(result, pairs, tasks, progress)
    table = _table(result, domains, pairs, trainable, within, tasks, outputs)
    if int(settings["n_boot"]) > 0 and len(table) and table["ci_low"].isna().any():
        notes.append(f"{int(table['ci_low'].isna().sum())} of {len(table)} entries have no CI: fewer than "
                     f"{MIN_CLUSTERS} test speakers (the jackknife over speakers needs at least {MIN_CLUSTERS})")
    if within:
        notes.append("diagonal entries: speaker-grouped CV inside the domain (pooled out-of-fold "
                     "metric); n_train is the mean training size of its folds")
    main = M.get_metric(result.metric, dataset.task)
    return TransferResult(table=table, domains=domains, metric=result.metric,
                          greater_is_better=main.greater_is_better, notes=notes)


def plot_transfer(transfer: TransferResult, folder: str | os.PathLike[str]) -> list[str]:
    """One heatmap PNG per (feature set, pooling, model), one panel per layer (configuration).

    Rows are the training domain, columns the test domain; the diagonal is the held-out-speaker
    score inside the domain. One file per configuration would be 13+ files per model of a base
    model, so the layers of one set share a figure.

    Args:
        transfer: the result.
        folder: where to write ``transfer_<set>_<pooling>_<model>.png``.

    Returns:
        The file names written (relative to ``folder``).
    """
    from embedx.figures import pyplot

    plt = pyplot()

    table, names = transfer.table, transfer.domains.names
    k = len(names)
    files = []
    for (fset, pooling, model), part in table.groupby(["feature_set", "pooling", "model"], sort=False):
        panels = list(dict.fromkeys(part["config"]))
        cols = min(4, len(panels))
        nrows = -(-len(panels) // cols)
        size = 1.0 + 0.55 * k
        fig, axes = plt.subplots(nrows, cols, figsize=(size * cols + 1.2, size * nrows + 0.4), squeeze=False)
        bounds = M.get_metric(transfer.metric).bounds
        vmin, vmax = bounds if bounds is not None and np.isfinite(bounds).all() else (
            float(part["score"].min()), float(part["score"].max()))
        image = None
        for index, (ax, config) in enumerate(zip(axes.flat, panels, strict=False)):
            cell = part[part["config"] == config]
            matrix = np.full((k, k), np.nan)  # (train domain, test domain)
            for r in cell.itertuples():
                matrix[names.index(r.train_domain), names.index(r.test_domain)] = r.score
            image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap="viridis")
            for i in range(k):
                for j in range(k):
                    if np.isfinite(matrix[i, j]):
                        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if matrix[i, j] < (vmin + vmax) / 2 else "black")
            layer = cell["layer"].iloc[0]
            ax.set_title(f"layer {layer}" if not pd.isna(layer) else config, fontsize=8)
            ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
            # domain names only left of the first column: long names would run into the next panel
            ax.set_yticks(range(k), names if index % cols == 0 else [""] * k, fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.supxlabel("test domain", fontsize=8)
        fig.supylabel("train domain", fontsize=8)
        fig.suptitle(f"{fset} / {pooling} / {model}: {transfer.metric}", fontsize=9)
        if image is not None:
            fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        name = f"transfer_{file_part(fset)}_{file_part(pooling)}_{file_part(model)}.png"
        fig.savefig(Path(folder) / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def transfer_section(transfer: TransferResult, best: tuple[str, str]) -> list[str]:
    """Markdown lines of the report's cross-corpus section.

    Args:
        transfer: the result.
        best: ``(configuration, model)`` of the study's best row (its matrix is printed).

    Returns:
        The lines.
    """
    d = transfer.domains
    m = transfer.metric
    lines = ["## Cross-corpus transfer", ""]
    lines.append(
        f"Domains from the `{d.column}` column: " + ", ".join(
            f"{n} ({int((d.values == n).sum())} items)" for n in d.names)
        + f". Every configuration trained on each domain and tested on every other (rows: train, "
        f"columns: test); the diagonal is speaker-grouped CV inside the domain. {m} with a 95% "
        "jackknife-t CI over the test speakers (it covers the test speakers, not the choice of "
        "training corpus). All entries in transfer.csv; one heatmap per set, pooling and model."
    )
    cell = transfer.table[(transfer.table["config"] == best[0]) & (transfer.table["model"] == best[1])]
    if len(cell):
        lines += ["", f"Best configuration of the study, `{best[0]}` with {best[1]}:", ""]
        header = ["train \\ test", *d.names]
        rows = []
        for a in d.names:
            row = [a]
            for b in d.names:
                hit = cell[(cell["train_domain"] == a) & (cell["test_domain"] == b)]
                if not len(hit):
                    row.append("–")
                    continue
                r = hit.iloc[0]
                ci = (f" ({r['ci_low']:.3f}–{r['ci_high']:.3f})" if np.isfinite(r["ci_low"]) else "")
                row.append(f"{r['score']:.3f}{ci}")
            rows.append(row)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    if d.label_map is not None:
        lines += ["", f"Labels aligned with `--label-map {d.label_map}`."]
        if len(d.unmatched):
            lines += ["", "Unmatched labels (their items left the study; unmatched_labels.csv):", "",
                      "| label | domain | items |", "|---|---|---|"]
            lines += [f"| {r.label} | {r.domain} | {r.count} |" for r in d.unmatched.itertuples()]
        else:
            lines.append("Every label matched.")
    if len(d.not_shared):
        lines += ["", "Labels missing from some domain (a model trained without a class never "
                      "predicts it):", ""]
        lines += [f"- `{r.label}`: only in {r.domains}" for r in d.not_shared.itertuples()]
    if transfer.notes:
        lines += ["", *[f"- {n}" for n in transfer.notes]]
    return lines


class TransferAnalysis(Analysis):
    """Cross-corpus transfer (``--domain``, ``--label-map``) as one of the study's analyses."""

    name = "transfer"

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """With ``--domain``."""
        return options.get("domain") is not None

    def prepare(self, dataset: Dataset, options: Mapping[str, Any], note: Callable[[str], None]
                ) -> tuple[Dataset, Domains]:
        """:func:`prepare_domains`, saying on the console which items and labels it left out."""
        column = options["domain"]
        dataset, domains = prepare_domains(dataset, column, label_map=options.get("label_map"),
                                           labels_csv=options.get("labels"))
        if len(domains.unmatched):
            note(f"--label-map: {int(domains.unmatched['count'].sum())} items with unmatched labels "
                 "left the study: " + ", ".join(f"{r.label!r} in {r.domain} ({r.count})"
                                                for r in domains.unmatched.itertuples()))
        for r in domains.not_shared.itertuples():  # kept, but a model trained without it never predicts it
            note(f"--domain {column}: label {r.label!r} occurs only in {r.domains}")
        return dataset, domains

    def run(self, study: Any, state: Domains, *, progress: bool = False, log: Any = None) -> TransferResult:
        """:func:`run_transfer`."""
        return run_transfer(study, state, progress=progress, log=log)

    def write(self, value: TransferResult, out: Path, files: dict[str, str]) -> None:
        """``transfer.csv``, ``unmatched_labels.csv`` (with a label map) and the heatmaps."""
        value.table.to_csv(out / "transfer.csv", index=False)
        files["transfer"] = "transfer.csv"
        if value.domains.label_map is not None:
            value.domains.unmatched.to_csv(out / "unmatched_labels.csv", index=False)
            files["unmatched_labels"] = "unmatched_labels.csv"
        for i, name in enumerate(plot_transfer(value, out)):
            files[f"transfer_plot_{i}"] = name

    def section(self, value: TransferResult, study: Any, files: Mapping[str, str]) -> list[str]:
        """:func:`transfer_section` and the heatmaps."""
        lines = transfer_section(value, study.best)
        for k in (k for k in files if k.startswith("transfer_plot")):
            lines += ["", f"![Transfer matrices]({files[k]})"]
        return lines
