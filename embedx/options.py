"""Every command's options, declared once: name, type, default, choices, help and CLI flags.

The ``embedx`` command (:mod:`embedx.cli`) takes each option's flags, help text and default
from here, and the Python API (:mod:`embedx.api`) takes the same names and defaults;
``tests/test_options.py`` checks both against this module for every command, so a name or a
default that drifts in one of them fails a test.

One name per option, everywhere above the settings dataclasses: the API keyword is the
declared ``name``; the CLI flag is the name with dashes for underscores (``max_chunk_seconds``:
``--max-chunk-seconds``) unless ``flags`` says otherwise. Where
the CLI spells an option differently, the declaration says so in one place:

* ``progress`` (API, default ``True``) is the CLI's ``--quiet``/``-q`` (``negated``): a Python
  argument reads best positive (``progress=False``, as in ``run_study`` and ``ExtractConfig``),
  a command-line switch must be off by default, and ``-q`` is every tool's spelling.
* ``config`` (API) is ``extract --config`` (the typer parameter is ``preset``), ``sets`` (API)
  is ``fit --set`` (typer parameter ``feature_set``): ``cli_param`` names them.
* options that only mean something on a command line are ``where="cli"`` with the reason
  (``fit --no-group`` is ``group=None``; ``extract --strict`` is an exit code); ``log`` and
  ``command`` are ``where="api"``.

Choices come from the registries (``"module:attribute"``, imported when asked for, so this
module stays light: it imports nothing of embedx's own but the layer grammar's default).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedx.extraction.layers import ALL_LAYERS

__all__ = ["COMMANDS", "DEFAULT_RESULTS", "DEFAULT_STORE", "REQUIRED", "Command", "Option", "api_signature",
           "command", "take_renamed"]


class _Required:
    """Marker of an option without a default (a required CLI argument or option)."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of a required option
REQUIRED: Any = _Required()
#: the store `embedx extract` writes and `embedx fit` / `similarity` read when none is given
DEFAULT_STORE = "feats.h5"
#: the results folder `embedx fit` writes when none is given
DEFAULT_RESULTS = "results"


@dataclass(frozen=True)
class Option:
    """One option of one command.

    Attributes:
        name: the Python name: the API keyword, and the typer parameter unless ``cli_param``.
        type: the CLI's value type (``str``, ``int``, ``float``, ``bool``, ``Path``; ``list``:
            repeatable / variadic, of strings or paths).
        default: the default of both the CLI and the API (:data:`REQUIRED`: none).
        help: the help text; ``{choices}`` is replaced by the choices, comma-separated.
        flags: the CLI spellings (``()``: the name with dashes for underscores); a bool
            option's ``"--save-model/--no-save-model"`` declares both switches.
        choices: accepted values: a tuple, or ``"module:attribute"`` of a registry function
            or constant, imported when asked for.
        argument: positional on the command line.
        cli_param: the typer parameter's name where it is not ``name``.
        negated: the CLI switch sets ``not value`` (``--quiet`` for ``progress``).
        where: ``"both"``, ``"cli"`` (CLI-only) or ``"api"`` (API-only).
        why: why the option exists on one side only.
        show_default: show ``[default: ...]`` in ``--help`` (off where the help text says it).
        renamed_from: old spellings (Python names) still accepted for one release, with a
            deprecation note.
        help_values: ``"module:attribute"`` of a mapping whose values fill the help text's
            other ``{placeholders}`` (a default that lives with the code that applies it).
    """

    name: str
    type: type
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] | str | None = None
    argument: bool = False
    cli_param: str | None = None
    negated: bool = False
    where: str = "both"
    why: str = ""
    show_default: bool = True
    renamed_from: tuple[str, ...] = ()
    help_values: str | None = None

    @property
    def param(self) -> str:
        """The typer parameter's name."""
        return self.cli_param or self.name

    @property
    def cli_flags(self) -> tuple[str, ...]:
        """The CLI spellings (``()`` for an argument)."""
        if self.argument:
            return ()
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def cli_default(self) -> Any:
        """The default the typer parameter has (``--quiet`` is off when ``progress`` is on)."""
        return (not self.default) if self.negated else self.default

    def accepted(self) -> list[str]:
        """The choices, resolved from their registry (``[]``: any value)."""
        if self.choices is None:
            return []
        if isinstance(self.choices, tuple):
            return list(self.choices)
        found = _resolve(self.choices)
        return list(found() if callable(found) else found)

    def help_text(self) -> str:
        """The help text with its choices (and ``help_values``) filled in."""
        values = dict(_resolve(self.help_values)) if self.help_values else {}
        if "{choices}" in self.help:
            values["choices"] = ", ".join(self.accepted())
        return self.help.format_map(values) if values else self.help


@dataclass(frozen=True)
class Command:
    """The options of one command, in ``--help`` order.

    Attributes:
        name: the CLI command.
        options: its options.
        api: the name of its Python API function in :mod:`embedx.api` (``embedx.<api>``), or ``None``.
        why: why there is no API function (``api`` is ``None``).
    """

    name: str
    options: tuple[Option, ...]
    api: str | None = None
    why: str = ""
    _by_name: dict[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {o.name: o for o in self.options})

    def __getitem__(self, name: str) -> Option:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)

    def default(self, name: str) -> Any:
        """The declared default of option ``name``."""
        return self[name].default

    def on(self, side: str) -> list[Option]:
        """The options the ``"cli"`` or the ``"api"`` takes."""
        return [o for o in self.options if o.where in ("both", side)]

    def repeated(self, argv: Sequence[str]) -> tuple[str, list[str]] | None:
        """The first single-valued option ``argv`` gives more than once, with its values.

        A repeated option would otherwise keep its last value without a word (click's rule),
        e.g. ``--group speaker --group sentence``.

        Args:
            argv: the command's arguments (after the command name).

        Returns:
            ``(flag, values)``, or ``None`` when no single-valued option is repeated.
        """
        spelling = {f.split("/")[0]: o for o in self.on("cli") if o.type is not list and o.type is not bool
                    for f in o.cli_flags}
        seen: dict[str, list[str]] = {}
        for i, arg in enumerate(argv):
            if arg == "--":
                break
            flag, eq, value = arg.partition("=")
            if flag in spelling:
                value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
                seen.setdefault(spelling[flag].name, []).append(value)
                if len(seen[spelling[flag].name]) > 1:
                    return flag, seen[spelling[flag].name]
        return None

def _resolve(ref: str) -> Any:
    """The object ``"module:attribute"`` names, imported now."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _opt(name: str, type_: type, default: Any, help: str, *flags: str, **more: Any) -> Option:  # noqa: A002
    return Option(name, type_, default, help, tuple(flags), **more)


#: ``progress``: the API's name, the CLI's ``--quiet``
_PROGRESS = _opt("progress", bool, True, "No progress bar.", "--quiet", "-q", cli_param="quiet",
                 negated=True)
_COMMAND = _opt("command", str, None, "The command line to record (the CLI passes its own).",
                where="api", why="the CLI records the command line it was given")
_LOG = _opt("log", object, None, "Where to send notes (e.g. print).", where="api",
            why="the CLI prints its notes on stderr")

EXTRACT = Command("extract", (
    _opt("inputs", list, (), "Audio folders (recursive), files, or .txt/.lst lists of paths. With "
         "--manifest: the folder its relative paths are relative to.", argument=True,
         show_default=False),
    _opt("output", Path, DEFAULT_STORE, "HDF5 store to create or extend.", "--output", "-o"),
    _opt("model", str, None, "Hub id or local directory of a wav2vec2 / HuBERT / WavLM / "
         "data2vec-audio model (also *ForSequenceClassification and audEERING emotion checkpoints, "
         "whose head outputs are stored too) or a Whisper model (encoder).", "--model", "-m"),
    _opt("opensmile", str, None, "openSMILE feature set instead of a model: egemaps, gemaps, "
         "compare, emobase (or an opensmile FeatureSet name such as IS09).", show_default=False),
    _opt("opensmile_level", str, None, "openSMILE level: functionals (one vector per item) or lld "
         "(low-level descriptors, 100 frames/s) [default: functionals].",
         choices=("functionals", "lld"), show_default=False),
    _opt("backend", str, "hf", "Feature source: {choices}.", choices="embedx.backends:available_backends"),
    _opt("revision", str, None, "Hub revision (branch, tag or commit)."),
    _opt("name", str, None, "Feature-set name in the store [default: the model's name]."),
    _opt("layers", str, ALL_LAYERS, "Layers: all, last, 0,6,12, -1, 4:9 (0 = transformer input)."),
    _opt("pooling", str, "mean", "Comma list of poolings, or all: {choices}.",
         choices="embedx.extraction.pooling:available_poolings"),
    _opt("frames", bool, False, "Also store frame-level states.", "--frames"),
    _opt("dtype", str, "float32", "Storage dtype: {choices}.", choices=("float32", "float16")),
    _opt("precision", str, "auto", "Compute precision: auto, fp32, fp16 (GPU), bf16.",
         choices=("auto", "fp32", "bf16", "fp16")),
    _opt("device", str, "auto", "auto, cpu, cuda or cuda:N."),
    _opt("batch_seconds", float, None, "Padded audio seconds per batch [default: on a GPU from its free memory, at least {cuda:g}; "
         "{cpu:g} on the CPU].", help_values="embedx.extraction.config:BATCH_SECONDS", show_default=False),
    _opt("max_chunk_seconds", float, 60.0, "Run longer items in chunks of at most this length "
         "(0: never chunk)."),
    _opt("workers", int, None, "Decoding worker processes [default: all cores but one].",
         show_default=False),
    _opt("short", str, "pad", "Items shorter than the model's minimum (25 ms): {choices}.",
         choices="embedx.backends.base:SHORT_POLICIES"),
    _opt("manifest", str, None, "CSV with a path column and any label/speaker/split columns "
         "[default: labels.csv in the input folder, when it has one].", show_default=False),
    _opt("path_column", str, None, "The manifest's path column [default: path/file/...].",
         show_default=False),
    _opt("overwrite", bool, False, "Replace a feature set of the same name extracted with other "
         "settings.", "--overwrite"),
    _opt("retry_failed", bool, False, "Retry items that failed before.", "--retry-failed"),
    _opt("shard", str, None, "Process only shard K/N (K = 0..N-1) of the items, balanced by duration, "
         "into its own file, or auto: this SLURM array task's shard; combine the N files with embedx "
         "merge.", show_default=False),
    _opt("devices", str, None, "Several devices of this host, one process each over shards of the "
         "items, merged into --output: a comma list (cuda:0,cuda:1) or all (every GPU).",
         show_default=False),
    _opt("engine", str, "local", "Where the shards run ({choices}): local on this host, ray one task "
         "per shard on a Ray cluster (pip install 'embedx[ray]').",
         choices="embedx.extraction.scale:ENGINES"),
    _opt("shards", int, None, "Shards of --engine ray, one Ray task each [default: one per GPU of the "
         "cluster].", show_default=False),
    _opt("scheduler", str, None, "Ray cluster address for --engine ray (ray://host:10001 or auto) "
         "[default: $RAY_ADDRESS, else a local Ray].", show_default=False),
    _opt("random_init", bool, False, "Random-network control: the model's architecture with "
         "seeded random weights (only its config is read), stored as NAME-random (--name X: "
         "X-random).", "--random-init"),
    _opt("seed", int, None, "Seed of the --random-init weights [default: 1, so that a model seeded 0, as the "
         "demo's, is not rebuilt].", show_default=False),
    _opt("strict", bool, False, "Exit non-zero if any item failed.", "--strict", where="cli",
         why="an exit code; in Python, the returned summary's failed_total"),
    _PROGRESS,
    _opt("config", Path, None, "YAML preset of extraction settings (see configs/); options typed "
         "on the command line override it.", "--config", cli_param="preset", show_default=False),
    _LOG,
    _COMMAND,
), api="extract")

FIT = Command("fit", (
    _opt("features", Path, DEFAULT_STORE, "HDF5 store written by embedx extract.", "--features", "-f"),
    _opt("label", str, "label", "Label column (of the store's items or of --labels).", "--label", "-y"),
    _opt("labels", Path, None, "CSV joined on id (or path) that adds/replaces label, group and "
         "split columns.", "--labels"),
    _opt("group", str, "auto", "Group (speaker) column: folds become speaker-independent; auto: a "
         "speaker, speaker_id or spk column when the items have one.", "--group", "-g"),
    _opt("no_group", bool, False, "Ungrouped folds even when the items have a speaker column (items "
         "of one speaker may then be in train and test).", "--no-group", where="cli",
         why="the API's group=None"),
    _opt("cross_group", str, None, "A second group column crossed with --group (e.g. sentence, when "
         "every speaker reads the same sentences): two-way folds where neither a speaker nor a "
         "sentence is on both sides; the items that would cross are left out of that fold (counted "
         "in the report).", "--cross-group", show_default=False),
    _opt("sets", list, None, "Feature set to probe, repeatable: NAME, NAME@LAYERS, "
         "NAME@LAYERS/POOLING (default: every set).", "--set", "-s", cli_param="feature_set",
         show_default=False),
    _opt("layers", str, ALL_LAYERS, "Layers: all (one probe per layer), last, 9, 0,6,12, -1, 4:9."),
    _opt("pooling", str, None, "Pooling(s), comma list or all (default: mean, else the set's "
         "first).", show_default=False),
    _opt("concat", bool, False, "Fuse every selected layer/set/pooling into one feature vector.",
         "--concat"),
    _opt("models", str, None, "Comma list or all: {choices} (default: logreg / ridge).",
         "--models", "-m", choices="embedx.probing.models:available_models", show_default=False),
    _opt("cv", str, "auto", "CV scheme ({choices}) or a number of folds.",
         choices="embedx.probing.cv:available_splitters"),
    _opt("folds", int, None, "Folds of k-fold schemes [default: 5, or one per speaker with --cv auto on fewer than 5 speakers].",
         "--folds", "-k", show_default=False),
    _opt("split_col", str, "split", "Split column (train/dev/test) for --cv predefined."),
    _opt("task", str, "auto", "{choices}.", choices="embedx.probing.tasks:TASKS"),
    _opt("metric", str, None, "Main metric: {choices} (default: uar / ccc).",
         choices="embedx.probing.metrics:available_metrics", show_default=False),
    _opt("class_weight", str, "none", "{choices} (for imbalanced labels).",
         choices=("none", "balanced")),
    _opt("speaker_norm", bool, False, "Standardise features per group (each speaker by its own "
         "statistics; needs --group).", "--speaker-norm"),
    _opt("tune", bool, False, "Nested grid search inside every training fold.", "--tune"),
    _opt("grid", Path, None, "YAML tuning grids (default: configs/grids.yaml).", show_default=False),
    _opt("inner_folds", int, 3, "Inner folds of --tune."),
    _opt("bootstrap", int, 1000, "Random permutations per paired test and confidence-set step "
         "(exact up to 12 speakers); 0: no CIs and no comparisons."),
    _opt("alpha", float, 0.05, "Significance level of the comparisons (Holm-corrected)."),
    _opt("weighted_layers", bool, False, "Add per set and pooling a configuration "
         "SET@weighted/POOLING: softmax weights over the selected layers learned with a linear "
         "probe; weights in layer_weights.csv.", "--weighted-layers"),
    _opt("permutations", int, 0, "Chance control: refit every configuration on N label "
         "permutations (within speakers) for p_permutation; 0: off."),
    _opt("mdl", bool, False, "MDL probing: the online codelength of the labels per configuration (blocks "
         "of whole speakers, each coded by the probe trained on the blocks before) -> mdl.csv.", "--mdl"),
    _opt("domain", str, None, "Item column of the domains (e.g. corpus): also train on each domain "
         "and test on every other -> transfer.csv."),
    _opt("label_map", Path, None, "YAML mapping each domain's labels to shared ones: "
         "{raw: shared} and/or {domain: {raw: shared}}."),
    _opt("factors", Path, None, "CSV tagging feature sets with factor levels (a set column, one column "
         "per factor, e.g. arch, lang): main effects and interactions on per-speaker scores, with "
         "--domain as a between-speaker factor -> factorial.csv.", "--factors", show_default=False),
    _opt("by", list, None, "Item column to break the scores down by (repeatable), e.g. sex -> "
         "subgroups.csv.", "--by"),
    _opt("frames", bool, False, "Probe every stored frame, labelled by the aligned segment covering its "
         "centre (needs --alignments; see README 'Frame-level probing').", "--frames"),
    _opt("segments", bool, False, "Probe one example per aligned segment: its frames pooled with "
         "--pooling (needs --alignments).", "--segments"),
    _opt("alignments", Path, None, "Time-aligned labels for --frames/--segments: a TextGrid, CTM, RTTM "
         "or CSV (id or path, start, end, label) file, or a folder of one file per item.",
         "--alignments", show_default=False),
    _opt("tier", str, None, "The TextGrid tier to read [default: the only interval tier].",
         show_default=False),
    _opt("unlabelled_frames", str, "drop", "Frames no segment covers: drop (counted), or a label "
         "to keep them under (e.g. sil)."),
    _opt("max_train_frames", int, 100_000, "Most training frames per fold with --frames (a seeded "
         "class-stratified sample; every held-out frame is evaluated)."),
    _opt("seed", int, 0, "Seed of folds, models and bootstrap."),
    _opt("jobs", int, 1, "Parallel workers (-1: all cores).", "--jobs", "-j"),
    _opt("threads", int, None, "BLAS/OpenMP threads per fit (default: 1; use --jobs to "
         "parallelise).", show_default=False),
    _opt("engine", str, "loky", "Where the fits run ({choices}): loky in local processes, dask on "
         "a Dask cluster at --scheduler ADDRESS, else a local one with --jobs workers (pip install "
         "'embedx[dask]'), ray on a Ray cluster (pip install 'embedx[ray]').",
         choices="embedx.probing.engines:ENGINES", renamed_from=("backend",)),
    _opt("scheduler", str, None, "Cluster address for --engine dask (tcp://host:8786) or ray "
         "(ray://host:10001) [default: a local cluster].", show_default=False),
    _opt("output", Path, DEFAULT_RESULTS, "Results folder.", "--output", "-o"),
    _opt("overwrite", bool, False, "Replace another study's results in the results folder.",
         "--overwrite"),
    _opt("save_model", bool, True, "Refit the best configuration and save model.skops.",
         "--save-model/--no-save-model"),
    _PROGRESS,
    _LOG,
    _COMMAND,
), api="fit")

PREDICT = Command("predict", (
    _opt("model", Path, REQUIRED, "model.skops written by embedx fit (a pickled model.joblib of "
         "embedx 0.2 needs --trust-pickle).", argument=True),
    _opt("inputs", list, REQUIRED, "An HDF5 store with the model's feature set(s), or audio "
         "folders/files/lists (extracted with the stored config).", argument=True),
    _opt("output", Path, None, "CSV to write [default: predictions.csv in the current folder; CSV on "
         "stdout when stdout is a pipe].", "--output", "-o", show_default=False),
    _opt("group", str, None, "Group column for a speaker-normalised model (default: the training "
         "one).", "--group", "-g", show_default=False),
    _opt("labels", Path, None, "CSV joined on id/path supplying the group column.", "--labels"),
    _opt("manifest", str, None, "Audio only: CSV with a path column (and a group column)."),
    _opt("device", str, None, "Audio only: device for the extraction (auto, cpu, cuda:N).",
         show_default=False),
    _opt("keep_features", Path, None, "Audio only: folder to keep the extracted store in.",
         show_default=False),
    _opt("trust_pickle", bool, False, "Load a pickled model.joblib (embedx 0.2). Unpickling runs any "
         "code the file holds: only for a file from a source you trust.", "--trust-pickle"),
    _PROGRESS,
), why="no API function yet: embedx.probing.predict.load_model, predict_store and predict_audio")

SIMILARITY = Command("similarity", (
    _opt("features", Path, DEFAULT_STORE, "An HDF5 store written by embedx extract.", argument=True),
    _opt("output", Path, "sim", "Folder for cka.csv, the heatmaps and similarity.md.", "--output", "-o"),
    _opt("sets", list, None, "Feature set to compare (repeatable) [default: all; with --frames: all "
         "with frames].", "--set", show_default=False),
    _opt("pooling", str, "mean", "Pooled features to compare: {choices}.",
         choices="embedx.extraction.pooling:available_poolings"),
    _opt("frames", bool, False, "Compare frame-level states (a seeded sample) instead of pooled "
         "features.", "--frames"),
    _opt("max_frames", int, 5000, "Frames sampled per pair of sets with --frames."),
    _opt("debiased", bool, False, "Debiased CKA (unbiased HSIC estimator).", "--debiased"),
    _opt("seed", int, 0, "Seed of the frame sample."),
    _PROGRESS,
    _COMMAND,
), api="similarity")

INFO = Command("info", (
    _opt("store", Path, REQUIRED, "An HDF5 store written by embedx extract.", argument=True),
    _opt("failed", bool, False, "List every failed item with its reason.", "--failed"),
    _opt("attrs", bool, False, "Show every stored attribute of each feature set.", "--attrs"),
), why="embedx.open(path) reads a store: .summary(), .failed()")

MERGE = Command("merge", (
    _opt("shards", list, REQUIRED, "The N shard files of one extract --shard K/N split (any "
         "order), e.g. shard-*.h5.", argument=True, show_default=False),
    _opt("output", Path, REQUIRED, "Merged HDF5 store to create.", "--output", "-o"),
    _opt("overwrite", bool, False, "Replace an existing output file.", "--overwrite"),
), why="embedx.store.merge(shards, output) is the function the command calls")

SYNTH = Command("synth", (
    _opt("folder", Path, REQUIRED, "Folder to create the example in.", argument=True),
    _opt("items", int, 128, "Number of audio items."),
    _opt("speakers", int, 16, "Number of synthetic speakers."),
    _opt("seed", int, 0, "Random seed."),
), why="embedx.testing.synth.make_example(folder, num_items, num_speakers, seed)")

#: command name -> its declaration
COMMANDS: dict[str, Command] = {c.name: c for c in (EXTRACT, FIT, PREDICT, SIMILARITY, INFO, MERGE, SYNTH)}


def command(name: str) -> Command:
    """The declaration of command ``name``."""
    return COMMANDS[name]


def take_renamed(command_name: str, kwargs: Mapping[str, Any], function: str | None = None) -> dict[str, Any]:
    """Map old keyword spellings of an API function to their new names, with a warning.

    Args:
        command_name: the command whose declaration lists the renamings.
        kwargs: the function's extra keyword arguments (``**renamed``).
        function: its name for the error message (default: the command's).

    Returns:
        New name -> value.

    Raises:
        TypeError: a keyword that is neither declared nor an old spelling, as Python says it.
    """
    old_to_new = {old: o.name for o in COMMANDS[command_name] for old in o.renamed_from}
    taken: dict[str, Any] = {}
    for old, value in kwargs.items():
        if old not in old_to_new:
            raise TypeError(f"{function or command_name}() got an unexpected keyword argument {old!r}")
        new = old_to_new[old]
        warnings.warn(f"{function or command_name}({old}=...) is now {new}=...; the old name goes in "
                      "the next release", DeprecationWarning, stacklevel=3)
        taken[new] = value
    return taken


#: how an API signature spells each declared type
_ANNOTATIONS = {str: "str", int: "int", float: "float", bool: "bool", Path: "str | os.PathLike[str]",
                list: "Sequence[str]", object: "Callable[[str], None]"}


def api_signature(cmd: Command, positional: Sequence[str] = ()) -> inspect.Signature:
    """The Python signature of a command's API options, built from the declaration.

    For an API function that takes its options as ``**options`` (so that it can tell a given
    option from a default one): assigned to its ``__signature__``, ``help()``, notebooks and
    ``inspect.signature`` show every option with its default.

    Args:
        cmd: the command.
        positional: the options that may be given by position (the first ones).

    Returns:
        The signature: ``positional`` first, every other API option keyword-only.
    """
    params = []
    for o in cmd.on("api"):
        kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if o.name in positional
                else inspect.Parameter.KEYWORD_ONLY)
        annotation = _ANNOTATIONS[o.type] + (" | None" if o.default is None else "")
        params.append(inspect.Parameter(o.name, kind, default=o.default, annotation=annotation))
    return inspect.Signature(params)
