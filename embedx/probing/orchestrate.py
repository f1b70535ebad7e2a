"""A whole ``embedx fit``: options checked, data loaded, analyses prepared, study run, report written.

:func:`embedx.api.fit` (and so the ``embedx fit`` command) hands its arguments to :func:`run`
unchanged. The order is the promise of the command: every option, the store, the labels and
every analysis's own input are checked before the first model is fitted, and a results folder
this call created is removed again when that check fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedx.errors import ConfigError, Param

if TYPE_CHECKING:  # heavy modules stay out of `import embedx.api`
    import pandas as pd

    from embedx.probing.data import Dataset
    from embedx.probing.study import StudyResult, StudySettings

__all__ = ["FitResult", "run"]


@dataclass(frozen=True)
class FitResult:
    """What :func:`embedx.api.fit` returns.

    Attributes:
        summary: one row per (configuration, model), ranked by the main metric.
        best: ``(configuration, model)`` of the best row.
        metric: the main metric.
        output: the results folder, or ``None`` when nothing was written.
        files: output kind -> path of every file written (``report``, ``summary``, ``model``, ...).
        group: the group column the folds kept apart (``None``: ungrouped folds).
        study: the full :class:`embedx.probing.study.StudyResult` (per-fold results, predictions,
            folds, the refitted model, the analyses).
    """

    summary: pd.DataFrame
    best: tuple[str, str]
    metric: str
    output: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    group: str | None = None
    study: StudyResult | None = None


@contextlib.contextmanager
def _drop_created_folder_on_error(folder: Path | None, created: bool) -> Iterator[None]:
    """Remove ``folder`` when the block fails, if this call created it and it is still empty."""
    try:
        yield
    except BaseException:
        if created and folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a folder made for a study that never ran
        raise


def _checked(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with ``--cv N`` resolved, checked before the store is read.

    Raises:
        ConfigError: a negative ``permutations``, an unknown ``class_weight``, or a
            ``label_map`` without ``domain``.
    """
    o = dict(options)
    cv = str(o["cv"]).strip()
    if cv.isdigit():  # `--cv 10` is shorthand for ten folds of the automatic scheme
        o["folds"], cv = int(cv), "auto"
    o["cv"] = cv
    if o["permutations"] < 0:
        raise ConfigError(Param("permutations", o["permutations"]), " not accepted; it must be >= 0")
    if o["class_weight"] not in ("none", "balanced"):
        raise ConfigError(Param("class_weight"), f" {o['class_weight']!r} not accepted; accepted: none, balanced")
    if o["label_map"] is not None and o["domain"] is None:
        raise ConfigError(Param("label_map"), f" {str(o['label_map'])!r} aligns labels across domains; name the "
                          "domain column with ", Param("domain", "COLUMN"))
    if o["cross_group"] is not None:
        _check_cross_group(o)
    if o["frames"] or o["segments"]:
        _check_frame_options(o)
    return o


def _check_cross_group(o: Mapping[str, Any]) -> None:
    """Two-way folds need a first group column and a scheme that can be two-way."""
    if o["group"] is None:
        raise ConfigError(Param("cross_group", o["cross_group"]), " crosses a second group with the "
                          "first; give ", Param("group", "COLUMN"), " rather than no group")
    if o["cv"] not in ("auto", "group", "logo"):
        raise ConfigError(Param("cv", o["cv"]), " cannot be two-way; with ",
                          Param("cross_group", o["cross_group"]), " use auto, group or logo")


#: options a frame- or segment-level study does not take (yet)
_NOT_WITH_FRAMES = ("cross_group", "weighted_layers", "permutations", "mdl", "domain", "factors", "by", "tune",
                    "speaker_norm", "concat")


def _check_frame_options(o: Mapping[str, Any]) -> None:
    """One-line errors for options that ``--frames`` / ``--segments`` do not take (yet)."""
    if o["frames"] and o["segments"]:
        raise ConfigError(Param("frames", switch=True), " and ", Param("segments", switch=True),
                          " are two studies; give one")
    study = Param("frames" if o["frames"] else "segments", switch=True)
    if o["alignments"] is None:
        raise ConfigError(study, " needs ", Param("alignments", "PATH"),
                          " (the forced alignment that labels the frames)")
    for name in _NOT_WITH_FRAMES:
        if o[name]:
            raise ConfigError(Param(name), " is not available with ", study, " (yet)")
    if o["cv"] == "predefined":
        raise ConfigError(Param("cv", "predefined"), " is not available with ", study,
                          " (yet); use auto, group or logo")
    if o["task"] not in ("auto", "classification"):
        raise ConfigError(study, " probes segment labels (classification); got ", Param("task", o["task"]))


def _fit_frames(o: Mapping[str, Any], settings: StudySettings, out: Path | None) -> FitResult:
    """``fit(frames=True)`` / ``fit(segments=True)``: the frame- or segment-level study and its
    report (no model file: a frame probe is not saved yet)."""
    from embedx.extraction.pooling import available_poolings, split_poolings
    from embedx.probing.frames.run import FrameOptions, frame_study
    from embedx.probing.report import write_report

    opts = FrameOptions(alignments=o["alignments"], segments=o["segments"], tier=o["tier"],
                        unlabelled=o["unlabelled_frames"], max_train_frames=o["max_train_frames"],
                        poolings=split_poolings(o["pooling"] or "mean", every=available_poolings()))
    note = o["log"] or (lambda _msg: None)
    result = frame_study(o["features"], opts, settings, sets=list(o["sets"]) if o["sets"] else None,
                         layers=o["layers"], group=o["group"], labels_csv=o["labels"],
                         progress=o["progress"], log=note)
    files = write_report(result, out, command=o["command"], save_model=False) if out is not None else {}
    return FitResult(summary=result.summary, best=result.best, metric=result.metric, output=out,
                     files=files, group=result.dataset.group, study=result)


def _settings(o: Mapping[str, Any]) -> StudySettings:
    """The study's settings from the options."""
    from embedx.probing.grids import load_grids
    from embedx.probing.study import StudySettings

    return StudySettings(
        models=o["models"], scheme=o["cv"], n_splits=o["folds"], seed=o["seed"], metric=o["metric"],
        class_weight=None if o["class_weight"] == "none" else o["class_weight"],
        speaker_norm=o["speaker_norm"], tune=o["tune"],
        grids=load_grids(o["grid"]) if o["tune"] and o["grid"] is not None else None,
        inner_folds=o["inner_folds"], n_boot=o["bootstrap"], alpha=o["alpha"], jobs=o["jobs"],
        threads=o["threads"], backend=o["engine"], scheduler=o["scheduler"], refit=o["save_model"],
        permutations=o["permutations"],
    )


def _load(o: Mapping[str, Any]) -> Dataset:
    from embedx.probing.data import load_dataset

    return load_dataset(
        o["features"], label=o["label"], sets=o["sets"], layers=o["layers"], pooling=o["pooling"],
        concat=o["concat"], group=o["group"], labels_csv=o["labels"],
        split_col=o["split_col"] if o["cv"] == "predefined" else None, task=o["task"],
        weighted_layers=o["weighted_layers"], cross_group=o["cross_group"],
    )


def _fold_notes(dataset: Dataset, note: Any) -> list[str]:
    """Say on the console how the folds are grouped and which items were dropped.

    Returns:
        The report's leading notes (how the folds were grouped, when found automatically).
    """
    if dataset.group_auto:
        note(f"folds are speaker-independent: grouped by the items' {dataset.group!r} column "
             "(--no-group to turn off)")
    if dataset.skipped:  # dropped data is never quiet
        note("skipped items: " + ", ".join(f"{v} {k}" for k, v in dataset.skipped.items()))
    if not dataset.group_auto:
        return []
    return [f"Folds are grouped by the items' `{dataset.group}` column, found automatically "
            "(speaker-independent folds; `--no-group` turns this off)."]


def run(options: Mapping[str, Any]) -> FitResult:
    """Run ``embedx fit`` from its options.

    Args:
        options: :func:`embedx.api.fit`'s arguments by name (all of them).

    Returns:
        The :class:`FitResult`.

    Raises:
        EmbedxError: bad options, store, labels, analysis input or output folder, in one line,
            before any model is fitted.
    """
    from embedx.probing.report import prepare_output

    o = _checked(options)
    output = o["output"]
    created = output is not None and not Path(output).exists()
    out = prepare_output(output, overwrite=o["overwrite"]) if output is not None else None
    with _drop_created_folder_on_error(out, created):
        from embedx.probing import analyses
        from embedx.probing.report import write_report
        from embedx.probing.study import coverage_note, run_study

        log, progress = o["log"], o["progress"]
        note = log or (lambda _msg: None)
        settings = _settings(o)
        if o["frames"] or o["segments"]:  # the frame-level or segment-level study: one call
            return _fit_frames(o, settings, out)
        dataset = _load(o)
        # the analyses check their options first (a refusal is one line), but their notes come
        # after how the folds are grouped, which they build on (MDL's blocks of whole speakers)
        said: list[str] = []
        dataset, prepared = analyses.prepare(dataset, o, said.append)
        leading = _fold_notes(dataset, note)
        for line in said:
            note(line)
        result = run_study(dataset, settings, analyses=prepared, notes=leading, progress=progress,
                           log=log if progress else None)
        if not progress:  # with progress, the study said these before fitting
            if result.folds.reason:
                note(result.folds.reason)
            if result.folds.left_out:  # dropped data is never quiet
                note(coverage_note(result.folds, result.dataset))
        files: dict[str, Path] = {}
        if out is not None:
            files = write_report(result, out, command=o["command"], save_model=o["save_model"])
        return FitResult(summary=result.summary, best=result.best, metric=result.metric, output=out,
                         files=files, group=dataset.group, study=result)
