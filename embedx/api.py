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

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from embedx.errors import ConfigError
from embedx.extraction.layers import ALL_LAYERS
from embedx.options import COMMANDS, DEFAULT_RESULTS, DEFAULT_STORE, api_signature, take_renamed
from embedx.probing.orchestrate import FitResult  # defined beside the code that builds it

if TYPE_CHECKING:  # heavy modules stay out of `import embedx`
    from embedx.cka import SimilarityResult
    from embedx.extraction.run_stats import ExtractSummary
    from embedx.store import StoreReader


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

    The keyword arguments are ``embedx extract``'s options (declared in :mod:`embedx.options`;
    ``inspect.signature(embedx.api.extract)`` lists them with their defaults). An option not
    given keeps the preset's value (``config``), else its default.

    Args:
        inputs: audio folders (recursive), files or ``.txt``/``.lst`` lists; with
            ``manifest``, at most the folder its relative paths are relative to.
        output: the store to create, extend or resume (``-o``).
        config: a YAML preset (``--config``); ``options`` override it.
        progress: show a progress bar.
        log: where to send notes (e.g. ``print``).
        command: the command line to record in the store (the CLI passes its own).
        **options: ``embedx extract`` options by their names: ``model``, ``opensmile``,
            ``opensmile_level``, ``backend``, ``revision``, ``name``, ``layers``, ``pooling``
            (a comma string or a list), ``frames``, ``dtype``, ``precision``, ``device``,
            ``batch_seconds``, ``max_chunk_seconds``, ``workers``, ``short``, ``manifest``,
            ``path_column``, ``overwrite``, ``retry_failed``, ``shard`` (``"K/N"`` or ``"auto"`` in
            a SLURM array job), ``devices`` (``"cuda:0,cuda:1"`` or ``"all"``: one process per
            device, merged), ``engine`` (``"ray"``: one Ray task per shard), ``shards`` and
            ``scheduler`` (of the Ray run), ``random_init`` (the model's architecture with seeded
            random weights, stored as ``<name>-random``) and ``seed`` (of those weights, default 1).

    Returns:
        The run's :class:`embedx.extraction.extract.ExtractSummary` (``.line()`` is what the CLI prints).

    Raises:
        NothingExtractedError: every item of the feature set failed, none is done (the CLI
            exits 1); its ``summary`` is the run's summary, its message the first reasons.
        EmbedxError: a bad option, input, model or store, in one line. Problems of single
            items are recorded in the store (``embedx.open(output).failed()``), not raised.
    """
    from embedx.extraction.config import config_from_options
    from embedx.extraction.scale import extract as run_extract

    accepted = set(_OWN_EXTRACT_OPTIONS)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"unknown extract option(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(sorted(accepted))}")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    settings = config_from_options({**options, "quiet": not progress}, given=set(options),
                                   preset=config)
    return run_extract([str(p) for p in inputs], output, settings, command=command, log=log)


#: the options `extract` takes through ``**options``: the declared ones it has no parameter for
_OWN_EXTRACT_OPTIONS = tuple(o.name for o in COMMANDS["extract"].on("api")
                             if o.name not in ("inputs", "output", "config", "progress", "log", "command"))
extract.__signature__ = api_signature(COMMANDS["extract"], positional=("inputs", "output"))  # type: ignore[attr-defined]


def fit(
    features: str | os.PathLike[str] = DEFAULT_STORE,
    *,
    output: str | os.PathLike[str] | None = DEFAULT_RESULTS,
    overwrite: bool = False,
    label: str = "label",
    labels: str | os.PathLike[str] | None = None,
    group: str | None = "auto",
    cross_group: str | None = None,
    sets: Sequence[str] | None = None,
    layers: str = ALL_LAYERS,
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
    mdl: bool = False,
    domain: str | None = None,
    label_map: str | os.PathLike[str] | None = None,
    factors: str | os.PathLike[str] | None = None,
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
    engine: str = "loky",
    scheduler: str | None = None,
    save_model: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    **renamed: Any,
) -> FitResult:
    """Cross-validate probes on stored features: every layer x model, with statistics.

    Args:
        features: the HDF5 store (``--features``). output: results folder (``-o``); ``None``
            writes nothing. overwrite: replace another study's results in ``output``.
        group: group (speaker) column; ``"auto"``: a ``speaker``/``speaker_id``/``spk`` column
            when the items have one; ``None``: no groups (``--no-group``).
        folds: ``None``: 5, or with ``cv="auto"`` fewer on too few speakers (one per speaker)
            or ``cross_group`` values, said in a note and the report; explicit ones fail in one line.
        others: the option of the same name in ``embedx fit --help`` (``sets`` is ``--set``),
            declared once in :data:`embedx.options.FIT` (analyses: ``weighted_layers``,
            ``permutations``, ``mdl``, ``domain``, ``by``; frame level: ``frames``, ``segments``).
        progress: show a progress bar. log: where notes go. command: quoted in the report.
        **renamed: old names accepted with a ``DeprecationWarning``: ``backend`` (``engine``).

    Returns:
        A :class:`FitResult` (see :func:`embedx.probing.orchestrate.run`, which does the work).

    Raises:
        EmbedxError: bad options, store, labels or output folder, in one line, before any fit.
    """
    options = dict(locals())  # every argument by name: the first statement, so nothing else is local
    options["engine"] = _fit_engine(options.pop("renamed"), engine)
    from embedx.probing.orchestrate import run

    return run(options)


def _fit_engine(renamed: dict[str, Any], engine: str) -> str:
    """``engine`` after the old spelling ``backend=`` (deprecated) is taken into account."""
    if not renamed:
        return engine
    moved = take_renamed("fit", renamed, function="embedx.fit")
    if "engine" in moved and engine not in (COMMANDS["fit"].default("engine"), moved["engine"]):
        raise TypeError(f"embedx.fit(): backend={moved['engine']!r} and engine={engine!r}; give engine")
    return moved.get("engine", engine)


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
