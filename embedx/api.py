"""The Python API: the CLI's commands as functions, with the CLI's option names.

``embedx.extract(...)``, ``embedx.fit(...)`` and ``embedx.open(...)`` are for notebooks and
scripts; the ``embedx`` command calls the same functions, so both take the same paths through
the code and check the same things::

    import embedx

    embedx.extract(["wavs/"], "feats.h5", model="facebook/hubert-base-ls960",
                   manifest="labels.csv")
    result = embedx.fit("feats.h5", output="results")
    result.summary.head()                  # one row per configuration, ranked
    with embedx.open("feats.h5") as store:
        x = store.pooled("hubert-base-ls960", "mean", layer=9)   # (num_items, dim)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedx.errors import ConfigError

if TYPE_CHECKING:  # heavy modules stay out of `import embedx`
    import pandas as pd

    from embedx.cka import SimilarityResult
    from embedx.extraction.run_stats import ExtractSummary
    from embedx.probing.study import StudyResult
    from embedx.store import StoreReader

#: the store name `embedx extract` writes and `embedx fit` reads when none is given
DEFAULT_STORE = "feats.h5"
#: the results folder `embedx fit` writes when none is given
DEFAULT_RESULTS = "results"


def extract(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
    output: str | os.PathLike[str] = DEFAULT_STORE,
    *,
    config: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    **options: Any,
) -> ExtractSummary:
    """Extract hidden states (or openSMILE features) of audio into an HDF5 store.

    Args:
        inputs: audio folders (recursive), files or ``.txt``/``.lst`` lists; with
            ``manifest``, at most the folder its relative paths are relative to.
        output: the store to create, extend or resume (``-o``).
        config: a YAML preset (``--config``); ``options`` override it.
        progress: show a progress bar.
        log: where to send notes (e.g. ``print``).
        command: the command line to record in the store (the CLI passes its own).
        **options: ``embedx extract`` options by their Python names: ``model``, ``opensmile``,
            ``opensmile_level``, ``backend``, ``revision``, ``name``, ``layers``, ``pooling``
            (a comma string or a list), ``frames``, ``dtype``, ``precision``, ``device``,
            ``batch_seconds``, ``max_chunk_seconds``, ``workers``, ``short``, ``manifest``,
            ``path_column``, ``overwrite``, ``retry_failed``, ``shard``, ``random_init`` (the
            model's architecture with seeded random weights, stored as ``<name>-random``) and
            ``seed`` (of those weights, default 0).

    Returns:
        The run's :class:`embedx.extraction.extract.ExtractSummary` (``.line()`` is what the CLI prints).

    Raises:
        NothingExtractedError: every item of the feature set failed, none is done (the CLI
            exits 1); its ``summary`` is the run's summary, its message the first reasons.
        EmbedxError: a bad option, input, model or store, in one line. Problems of single
            items are recorded in the store (``embedx.open(output).failed()``), not raised.
    """
    from embedx.extraction.config import CLI_FIELDS, config_from_options
    from embedx.extraction.extract import extract as run_extract

    accepted = set(CLI_FIELDS) | {"opensmile", "opensmile_level", "random_init", "seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"unknown extract option(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(sorted(accepted))}")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    settings = config_from_options({**options, "quiet": not progress}, given=set(options),
                                   preset=config)
    return run_extract([str(p) for p in inputs], output, settings, command=command, log=log)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        summary: one row per (configuration, model), ranked by the main metric.
        best: ``(configuration, model)`` of the best row.
        metric: the main metric.
        output: the results folder, or ``None`` when nothing was written.
        files: output kind -> path of every file written (``report``, ``summary``, ``model``, ...).
        group: the group column the folds kept apart (``None``: ungrouped folds).
        study: the full :class:`embedx.probing.study.StudyResult` (per-fold results, predictions,
            folds, the refitted model).
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


def fit(
    features: str | os.PathLike[str] = DEFAULT_STORE,
    *,
    output: str | os.PathLike[str] | None = DEFAULT_RESULTS,
    overwrite: bool = False,
    label: str = "label",
    labels: str | os.PathLike[str] | None = None,
    group: str | None = "auto",
    sets: Sequence[str] | None = None,
    layers: str = "all",
    pooling: str | None = None,
    concat: bool = False,
    models: str | None = None,
    cv: str = "auto",
    folds: int | None = None,
    split_col: str = "split",
    task: str = "auto",
    metric: str | None = None,
    class_weight: str = "none",
    speaker_norm: bool = False,
    tune: bool = False,
    grid: str | os.PathLike[str] | None = None,
    inner_folds: int = 3,
    bootstrap: int = 1000,
    alpha: float = 0.05,
    weighted_layers: bool = False,
    permutations: int = 0,
    domain: str | None = None,
    label_map: str | os.PathLike[str] | None = None,
    by: Sequence[str] | None = None,
    frames: bool = False,
    segments: bool = False,
    alignments: str | os.PathLike[str] | None = None,
    tier: str | None = None,
    unlabelled_frames: str = "drop",
    max_train_frames: int | None = 100_000,
    seed: int = 0,
    jobs: int = 1,
    threads: int | None = None,
    backend: str = "loky",
    scheduler: str | None = None,
    save_model: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
) -> FitResult:
    """Cross-validate probes on stored features: every layer x model, with statistics.

    The arguments are ``embedx fit``'s options (``sets`` is ``--set``, repeatable there).

    Args:
        features: the HDF5 store (``--features``).
        output: results folder (``-o``); ``None`` writes nothing.
        overwrite: replace another study's results in ``output``.
        label: label column. labels: CSV joined on id/path adding label/group/split columns.
        group: group (speaker) column; ``"auto"``: a ``speaker``/``speaker_id``/``spk`` column
            when the items have one; ``None``: no groups (``--no-group``).
        sets, layers, pooling, concat: which stored features to probe.
        models, cv, split_col, task, metric, class_weight, speaker_norm, tune, grid,
            inner_folds, bootstrap, alpha, seed, jobs, threads, backend, scheduler,
            save_model: as in ``embedx fit --help``.
        folds: folds of k-fold schemes; ``None``: 5, or, with ``cv="auto"`` on data too small
            for 5, what they allow (one fold per speaker with fewer than 5 speakers), said in
            a note and the report. Folds or a scheme given explicitly are used as given, and
            fail in one line when the data cannot have them.
        weighted_layers: add per feature set and pooling a configuration
            ``<set>@weighted/<pooling>`` that learns softmax weights over the selected layers
            with a linear probe (``--weighted-layers``; see :mod:`embedx.probing.weighted`).
        permutations: label permutations of the chance control per configuration
            (``--permutations``; 0: none; see :mod:`embedx.probing.permutation`).
        domain: item column of the domains (``--domain``): every configuration is also
            trained on each domain and tested on every other (``transfer.csv``; see
            :mod:`embedx.probing.transfer`).
        label_map: YAML aligning the domains' label sets (``--label-map``; needs ``domain``).
        by: item columns to break the scores down by (``--by``, repeatable; see
            :mod:`embedx.probing.subgroups`).
        frames: probe every stored frame, labelled by the aligned segment covering its centre
            (``--frames``; needs ``alignments``; see :mod:`embedx.probing.frames`).
        segments: probe one pooled example per aligned segment (``--segments``).
        alignments: the alignment file or folder (``--alignments``). tier: its tier.
        unlabelled_frames: ``"drop"`` or the label of frames no segment covers.
        max_train_frames: most training frames per fold (``--frames``; ``None``: all).
        progress: show a progress bar. log: where to send notes.
        command: the command line quoted in the report.

    Returns:
        A :class:`FitResult`.

    Raises:
        EmbedxError: bad options, store, labels or output folder, in one line, before any
            model is fitted.
    """
    from embedx.probing.report import prepare_output

    cv = str(cv).strip()
    if cv.isdigit():  # `--cv 10` is shorthand for ten folds of the automatic scheme
        folds, cv = int(cv), "auto"
    if permutations < 0:  # checked before the store is read
        raise ConfigError(f"--permutations must be >= 0; got {permutations}")
    if class_weight not in ("none", "balanced"):
        raise ConfigError(f"--class-weight {class_weight!r} not accepted; accepted: none, balanced")
    if label_map is not None and domain is None:
        raise ConfigError(f"--label-map {str(label_map)!r} aligns labels across domains; name the "
                          "domain column with --domain COLUMN")
    if frames or segments:  # checked before the store is read
        _check_frame_options(frames=frames, segments=segments, alignments=alignments,
                             weighted_layers=weighted_layers, permutations=permutations,
                             domain=domain, by=by, tune=tune, speaker_norm=speaker_norm, concat=concat,
                             cv=cv, task=task)
    created = output is not None and not Path(output).exists()
    out = prepare_output(output, overwrite=overwrite) if output is not None else None
    with _drop_created_folder_on_error(out, created):
        from embedx.probing.data import load_dataset
        from embedx.probing.grids import load_grids
        from embedx.probing.report import write_report
        from embedx.probing.study import StudySettings, run_study

        note = log or (lambda _msg: None)
        settings = StudySettings(
            models=models, scheme=cv, n_splits=folds, seed=seed, metric=metric,
            class_weight=None if class_weight == "none" else class_weight, speaker_norm=speaker_norm,
            tune=tune, grids=load_grids(grid) if tune and grid is not None else None,
            inner_folds=inner_folds, n_boot=bootstrap, alpha=alpha, jobs=jobs, threads=threads,
            backend=backend, scheduler=scheduler, refit=save_model, permutations=permutations,
        )
        if frames or segments:  # the frame-level or segment-level study: one call
            return _fit_frames(features, settings, out, segments=segments, alignments=alignments,
                               tier=tier, unlabelled_frames=unlabelled_frames,
                               max_train_frames=max_train_frames, pooling=pooling, sets=sets,
                               layers=layers, group=group, labels=labels, progress=progress,
                               log=note, command=command)
        dataset = load_dataset(
            features, label=label, sets=sets, layers=layers, pooling=pooling, concat=concat,
            group=group, labels_csv=labels, split_col=split_col if cv == "predefined" else None,
            task=task, weighted_layers=weighted_layers,
        )
        domains = subgroups = None
        if domain is not None:  # checked before any model is fitted
            from embedx.probing.transfer import prepare_domains

            dataset, domains = prepare_domains(dataset, domain, label_map=label_map, labels_csv=labels)
            if len(domains.unmatched):
                note(f"--label-map: {int(domains.unmatched['count'].sum())} items with unmatched labels "
                     "left the study: " + ", ".join(f"{r.label!r} in {r.domain} ({r.count})"
                                                    for r in domains.unmatched.itertuples()))
            for r in domains.not_shared.itertuples():  # kept, but a model trained without it never predicts it
                note(f"--domain {domain}: label {r.label!r} occurs only in {r.domains}")
        if by:
            from embedx.probing.subgroups import prepare_subgroups

            subgroups = prepare_subgroups(dataset, list(by), labels_csv=labels)
        if dataset.group_auto:
            note(f"folds are speaker-independent: grouped by the items' {dataset.group!r} column "
                 "(--no-group to turn off)")
        if dataset.skipped:  # dropped data is never quiet
            note("skipped items: " + ", ".join(f"{v} {k}" for k, v in dataset.skipped.items()))
        result = run_study(dataset, settings, progress=progress, log=log if progress else None)
        if result.folds.reason and not progress:  # with progress, the study said it before fitting
            note(result.folds.reason)
        if dataset.group_auto:
            result.notes.insert(0, f"Folds are grouped by the items' `{dataset.group}` column, found "
                                   "automatically (speaker-independent folds; `--no-group` turns "
                                   "this off).")
        from embedx.probing.sets import compare_sets

        sets_table = compare_sets(result)
        if sets_table is not None:
            result.analyses["sets"] = sets_table
        if domains is not None:
            from embedx.probing.transfer import run_transfer

            result.analyses["transfer"] = run_transfer(result, domains, progress=progress,
                                                       log=log if progress else None)
        if subgroups is not None:
            from embedx.probing.subgroups import subgroup_breakdown

            result.analyses["subgroups"] = subgroup_breakdown(result, subgroups, progress=progress)
        files: dict[str, Path] = {}
        if out is not None:
            files = write_report(result, out, command=command, save_model=save_model)
        return FitResult(summary=result.summary, best=result.best, metric=result.metric, output=out,
                         files=files, group=dataset.group, study=result)


def _fit_frames(features: Any, settings: Any, out: Path | None, *, segments: bool, alignments: Any,
                tier: str | None, unlabelled_frames: str, max_train_frames: int | None,
                pooling: str | None, sets: Sequence[str] | None, layers: str, group: str | None,
                labels: Any, progress: bool, log: Callable[[str], None], command: str | None) -> FitResult:
    """``fit(frames=True)`` / ``fit(segments=True)``: run :func:`embedx.probing.frames.run.frame_study`
    and write its report (no model.joblib)."""
    from embedx.probing.frames.run import FrameOptions, frame_study
    from embedx.probing.report import write_report

    opts = FrameOptions(alignments=alignments, segments=segments, tier=tier, unlabelled=unlabelled_frames,
                        max_train_frames=max_train_frames,
                        poolings=tuple(p.strip() for p in (pooling or "mean").split(",") if p.strip()))
    result = frame_study(features, opts, settings, sets=list(sets) if sets else None, layers=layers,
                         group=group, labels_csv=labels, progress=progress, log=log)
    files = write_report(result, out, command=command, save_model=False) if out is not None else {}
    return FitResult(summary=result.summary, best=result.best, metric=result.metric, output=out,
                     files=files, group=result.dataset.group, study=result)


def _check_frame_options(*, frames: bool, segments: bool, alignments: Any, cv: str, task: str,
                         **others: Any) -> None:
    """One-line errors for options that ``--frames`` / ``--segments`` do not take (yet)."""
    if frames and segments:
        raise ConfigError("--frames and --segments are two studies; give one")
    flag = "--frames" if frames else "--segments"
    if alignments is None:
        raise ConfigError(f"{flag} needs --alignments PATH (the forced alignment that labels the frames)")
    for name, value in others.items():
        if value:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} is not available with {flag} (yet)")
    if cv == "predefined":
        raise ConfigError(f"--cv predefined is not available with {flag} (yet); use auto, group or logo")
    if task not in ("auto", "classification"):
        raise ConfigError(f"{flag} probes segment labels (classification); got --task {task}")


def similarity(
    features: str | os.PathLike[str] = DEFAULT_STORE,
    output: str | os.PathLike[str] = "sim",
    *,
    sets: Sequence[str] | None = None,
    pooling: str = "mean",
    frames: bool = False,
    max_frames: int = 5000,
    debiased: bool = False,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> SimilarityResult:
    """Linear CKA between every pair of layers within and across a store's feature sets.

    The arguments are ``embedx similarity``'s options (``sets`` is ``--set``, repeatable
    there); see :func:`embedx.cka.similarity`.

    Args:
        features: the HDF5 store.
        output: folder for ``cka.csv``, one heatmap PNG per pair of sets and ``similarity.md``
            (``-o``).
        sets: feature sets to compare; all by default (with ``frames``: all with frames).
        pooling: the pooled features to compare.
        frames: compare a seeded sample of frames instead of pooled features.
        max_frames: frames sampled per pair of sets with ``frames``.
        debiased: the unbiased HSIC estimator.
        seed: seed of the frame sample.
        progress: show a progress bar.
        command: the command line quoted in ``similarity.md``.

    Returns:
        A :class:`embedx.cka.SimilarityResult` (``.table`` is ``cka.csv``).

    Raises:
        EmbedxError: unknown set or pooling, a set without frames, unequal frame counts,
            too few items, or an unwritable output folder, in one line, before any CKA is
            computed (unequal frame counts: before that pair's).
    """
    from embedx.cka import similarity as run_similarity

    return run_similarity(features, output, sets=sets, pooling=pooling, frames=frames,
                          max_frames=max_frames, debiased=debiased, seed=seed, progress=progress,
                          command=command)


def open(path: str | os.PathLike[str] = DEFAULT_STORE) -> StoreReader:  # noqa: A001 - the API name
    """Open a store for reading (a context manager; see :class:`embedx.store.StoreReader`).

    Args:
        path: the HDF5 store.

    Returns:
        The reader: ``.items``, ``.feature_sets()``, ``.pooled(set, pooling, layer)``,
        ``.frames(set, i)``, ``.failed()``, ``.summary()``.

    Raises:
        StoreError: not an embedx store, truncated, or of a newer schema.
    """
    from embedx.store import StoreReader

    return StoreReader(path)


__all__ = ["DEFAULT_RESULTS", "DEFAULT_STORE", "FitResult", "extract", "fit", "open", "similarity"]
