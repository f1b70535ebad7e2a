"""The ``embedx`` command line: parse, call one function, print.

Errors a user can cause are :class:`~embedx.errors.EmbedxError`; :data:`ERROR_PREFIXES` maps
each kind to the one line the CLI prints, with a non-zero exit and no traceback.
"""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from embedx.backends import available_backends
from embedx.errors import (
    AudioError,
    ConfigError,
    DataError,
    EmbedxError,
    InputError,
    ModelError,
    Param,
    StoreError,
)
from embedx.extraction.pooling import available_poolings
from embedx.text import plural
from embedx.text import size as text_size
from embedx.version import __version__

app = typer.Typer(
    name="embedx",
    help="Exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: "[default: ...]" and "embedx[dask]" must print as written
    rich_markup_mode=None,
)
console = Console(stderr=True)
out = Console()

#: one line per kind of error: what the CLI prints before the message
ERROR_PREFIXES: dict[type[EmbedxError], str] = {
    ConfigError: "invalid option",
    InputError: "bad input",
    AudioError: "bad audio",
    ModelError: "cannot load model",
    StoreError: "store",
    DataError: "bad data",
    EmbedxError: "error",
}

F = TypeVar("F", bound=Callable[..., Any])

#: options whose flag is not their Python name with dashes
_SHORT_FLAGS = {"output": "-o"}


def flag(param: Param) -> str:
    """How the command line spells an option an error message names: ``--overwrite``,
    ``--name NAME``, ``-o feats.h5`` (the library names it as the API argument)."""
    text = _SHORT_FLAGS.get(param.name, "--" + param.name.replace("_", "-"))
    return text if param.value is None else f"{text} {shlex.quote(str(param.value))}"



def _one_line_errors(fn: F) -> F:
    """Turn an EmbedxError into one printed line and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbedxError as exc:
            prefix = next(p for cls, p in ERROR_PREFIXES.items() if isinstance(exc, cls))
            message = exc.render(flag)  # the options it names, as this command's flags
            console.print(f"[bold red]embedx: {prefix}:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _command_line() -> str:
    return shlex.join(["embedx", *sys.argv[1:]])


def _version(value: bool) -> None:
    if value:
        out.print(f"embedx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them."""


@app.command()
@_one_line_errors
def extract(
    ctx: typer.Context,
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Audio folders (recursive), files, or .txt/.lst lists of paths. With --manifest: "
             "the folder its relative paths are relative to.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 store to create or extend.")] = Path("feats.h5"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id or local directory of a "
                                              "wav2vec2 / HuBERT / WavLM / data2vec-audio model (also "
                                              "*ForSequenceClassification and audEERING emotion checkpoints, "
                                              "whose head outputs are stored too) or a Whisper model (encoder).")] = None,
    opensmile: Annotated[str | None, typer.Option("--opensmile", help="openSMILE feature set instead of a model: "
                                                  "egemaps, gemaps, compare, emobase (or an opensmile FeatureSet "
                                                  "name such as IS09).", show_default=False)] = None,
    opensmile_level: Annotated[str | None, typer.Option(help="openSMILE level: functionals (one vector per item) "
                                                        "or lld (low-level descriptors, 100 frames/s) "
                                                        "[default: functionals].", show_default=False)] = None,
    backend: Annotated[str, typer.Option(help=f"Feature source: {', '.join(available_backends())}.")] = "hf",
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    name: Annotated[str | None, typer.Option(help="Feature-set name in the store [default: the model's name].")] = None,
    layers: Annotated[str, typer.Option(help="Layers: all, last, 0,6,12, -1, 4:9 (0 = transformer input).")] = "all",
    pooling: Annotated[str, typer.Option(help=f"Comma list of poolings: {', '.join(available_poolings())}.")] = "mean",
    frames: Annotated[bool, typer.Option("--frames", help="Also store frame-level states.")] = False,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    precision: Annotated[str, typer.Option(help="Compute precision: auto, fp32, fp16 (GPU), bf16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_seconds: Annotated[float | None, typer.Option(help="Padded audio seconds per batch [default: 60 on a "
                                                        "GPU, 8 on the CPU].", show_default=False)] = None,
    max_chunk_seconds: Annotated[float, typer.Option(help="Run longer items in chunks of at most this "
                                                     "length (0: never chunk).")] = 60.0,
    workers: Annotated[int | None, typer.Option(help="Decoding worker processes [default: all cores but one].",
                                                show_default=False)] = None,
    short: Annotated[str, typer.Option(help="Items shorter than the model's minimum (25 ms): pad or fail.")] = "pad",
    manifest: Annotated[str | None, typer.Option(help="CSV with a path column and any label/speaker/split columns "
                                                 "[default: labels.csv in the input folder, when it has one].",
                                                 show_default=False)] = None,
    path_column: Annotated[str | None, typer.Option(help="The manifest's path column [default: path/file/...].",
                                                    show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a feature set of the same name "
                                            "extracted with other settings.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry items that failed before.")] = False,
    shard: Annotated[str | None, typer.Option(help="Process only shard K/N (K = 0..N-1, e.g. $SLURM_ARRAY_TASK_ID/"
                                              "$SLURM_ARRAY_TASK_COUNT) of the items, balanced by duration, into "
                                              "its own file; combine the N files with embedx merge.",
                                              show_default=False)] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Random-network control: the model's "
                                              "architecture with seeded random weights (only its config is "
                                              "read), stored as NAME-random.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the --random-init weights [default: 0].",
                                             show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any item failed.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    preset: Annotated[Path | None, typer.Option("--config", help="YAML preset of extraction settings (see "
                                                "configs/); options typed on the command line override it.",
                                                show_default=False)] = None,
) -> None:
    """Extract hidden states (all layers in one pass, pooled and/or frame-level) into HDF5."""
    from embedx.extraction.config import config_from_options
    from embedx.extraction.extract import extract as run_extract

    # by name: typer ships its own copy of click, whose ParameterSource is another enum
    given = {p for p in ctx.params if getattr(ctx.get_parameter_source(p), "name", "") == "COMMANDLINE"}
    config = config_from_options(ctx.params, given=given, preset=preset)
    summary = run_extract(inputs or [], output, config, command=_command_line(),
                          log=None if quiet else lambda m: console.print(f"[dim]{m}[/]"))
    out.print(summary.line(), highlight=False, soft_wrap=True)
    if summary.failed:
        console.print(f"[yellow]{plural(summary.failed, 'item')} failed; `embedx info {output} --failed` "
                      "lists them[/]")
    if summary.stopped:
        raise typer.Exit(summary.exit_code)
    if strict and summary.failed_total:
        raise typer.Exit(1)


@app.command()
@_one_line_errors
def info(
    store: Annotated[Path, typer.Argument(help="An HDF5 store written by embedx extract.")],
    failed: Annotated[bool, typer.Option("--failed", help="List every failed item with its reason.")] = False,
    attrs: Annotated[bool, typer.Option("--attrs", help="Show every stored attribute of each feature set.")] = False,
) -> None:
    """Summarise a store: items, their columns, every feature set and its settings."""
    from embedx.store import StoreReader, writer_status

    status = writer_status(store)
    if status is not None and status.running is not False:  # being written: its progress
        out.print(status.line(), highlight=False, soft_wrap=True)
        return
    with StoreReader(store) as reader:
        if status is not None:  # a killed run's lock file: say so above the summary
            console.print(status.line(), highlight=False, soft_wrap=True)
        _print_summary(reader.summary(), all_attrs=attrs)
        if failed:
            table = reader.failed()
            if table.empty:
                out.print("no failed items")
            else:
                for row in table.itertuples(index=False):
                    # escaped: a decoder's note such as "[src/libmpg123/layer3.c:...]" is no markup
                    out.print(escape(f"{row.set}\t{row.id}\t{row.stage}\t{row.message}"), highlight=False,
                              soft_wrap=True)


@app.command()
@_one_line_errors
def synth(
    folder: Annotated[Path, typer.Argument(help="Folder to create the example in.")],
    items: Annotated[int, typer.Option(help="Number of audio items.")] = 48,
    speakers: Annotated[int, typer.Option(help="Number of synthetic speakers.")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Create the built-in example: a labelled synthetic corpus and a tiny random-weight model."""
    from embedx.testing.synth import make_example

    example = make_example(folder, num_items=items, num_speakers=speakers, seed=seed)
    out.print(f"wrote {plural(example.num_items, 'item')} to {example.audio_dir}, manifest {example.manifest}, "
              f"tiny model {example.model_dir}", highlight=False, soft_wrap=True)


#: attrs of a feature set worth a line in `embedx info` (the rest: `--attrs`)
_INFO_ATTRS = ("model_type", "commit_hash", "precision", "device", "do_normalize", "head",
               "feature_set", "level", "opensmile_version", "transformers_version")


def _run_line(attrs: dict[str, Any]) -> str:
    """The feature set's last extraction run (its ``run_*`` attrs) in one line."""
    peak = text_size(attrs.get("run_peak_memory_bytes") or 0)
    memory = "GPU peak" if str(attrs.get("run_device", "")).startswith("cuda") else "peak RSS"
    workers = attrs.get("run_workers")
    workers = "? decoding workers" if workers is None else plural(int(workers), "decoding worker")
    return (f"{float(attrs['run_audio_per_s']):,.1f} audio-s/s on {attrs.get('run_device_name', '?')} "
            f"({attrs.get('run_device', '?')}, {attrs.get('run_precision', '?')}), {memory} {peak}, "
            f"{workers}, {attrs.get('run_batch_seconds', '?')} s batches, "
            f"waited on data {float(attrs.get('run_data_wait_share', 0)):.0%}, {attrs.get('run_finished', '')}")


def _print_summary(summary: dict[str, Any], all_attrs: bool = False) -> None:
    """Print :meth:`StoreReader.summary` as a header, an item-column table and one table per set."""
    from rich.markup import escape
    from rich.table import Table

    size = summary.get("size_bytes") or 0
    out.print(f"[bold]{escape(str(summary.get('path')))}[/]  {text_size(size)}, schema "
              f"{summary.get('schema_version')}, embedx {summary.get('embedx_version')}, "
              f"created {summary.get('created')}", highlight=False, soft_wrap=True)
    for key in ("command", "shard", "merged_from"):
        if summary.get(key):
            out.print(f"{key}: {escape(str(summary[key]))}", highlight=False, soft_wrap=True)

    items = Table(title=f"{summary.get('num_items')} items", title_justify="left")
    for col in ("column", "dtype", "unique", "missing", "values"):
        items.add_column(col)
    for c in summary.get("columns") or []:
        counts = c.get("counts")
        values = ", ".join(f"{k} ({v})" for k, v in counts.items()) if counts else ""
        items.add_row(c["name"], c["dtype"], str(c.get("num_unique", "")), str(c.get("num_missing", "")),
                      escape(values))
    out.print(items)

    for set_name, fs in (summary.get("feature_sets") or {}).items():
        table = Table(title=f"feature set '{set_name}'", show_header=False, title_justify="left")
        layers = fs["layers"]
        span = f"{layers[0]}..{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else layers
        rows = {
            "source": f"{fs['backend']}: {fs.get('model') or ''}"
                      + (f" @ {fs['revision']}" if fs.get("revision") else ""),
            "layers": f"{span} ({len(layers)} layers) x {fs['dim']} dims",
            "pooled": ", ".join(fs["poolings"]) or "-",
            "frames": f"{fs['total_frames']} frames at {fs['frame_rate']} Hz" if fs["frames"] else "no",
            "dtype": fs["dtype"],
            "heads": "; ".join(f"{h}: {', '.join(v)}" for h, v in fs["heads"].items()) or "-",
            "done": f"{fs['done']} / {summary.get('num_items')}, {fs['failed']} failed",
        }
        attrs = fs.get("attrs") or {}
        shown = attrs if all_attrs else {k: attrs[k] for k in _INFO_ATTRS if attrs.get(k) not in (None, "")}
        rows.update({k: str(v) for k, v in shown.items()})
        if "run_audio_per_s" in attrs and not all_attrs:
            rows["last run"] = _run_line(attrs)
        for key, value in rows.items():
            table.add_row(key, escape(str(value)))
        out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


@app.command()
@_one_line_errors
def merge(
    shards: Annotated[list[Path], typer.Argument(help="The N shard files of one extract --shard K/N split "
                                                 "(any order), e.g. shard-*.h5.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged HDF5 store to create.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Combine extract --shard K/N files into one store, identical to an unsharded run."""
    from embedx.store import merge as run_merge

    summary = run_merge(shards, output, overwrite=overwrite, command=_command_line())
    for note in summary.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    out.print(summary.line(), markup=False, highlight=False, soft_wrap=True)


@app.command()
@_one_line_errors
def similarity(
    features: Annotated[Path, typer.Argument(help="An HDF5 store written by embedx extract.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for cka.csv, the heatmaps and "
                                         "similarity.md.")] = Path("sim"),
    sets: Annotated[list[str] | None, typer.Option("--set", help="Feature set to compare (repeatable) "
                                                   "[default: all; with --frames: all with frames].",
                                                   show_default=False)] = None,
    pooling: Annotated[str, typer.Option(help="Pooled features to compare.")] = "mean",
    frames: Annotated[bool, typer.Option("--frames", help="Compare frame-level states (a seeded sample) "
                                         "instead of pooled features.")] = False,
    max_frames: Annotated[int, typer.Option(help="Frames sampled per pair of sets with --frames.")] = 5000,
    debiased: Annotated[bool, typer.Option("--debiased", help="Debiased CKA (unbiased HSIC estimator).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the frame sample.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Linear CKA between every pair of layers, within each feature set and across sets."""
    from embedx.api import similarity as run_similarity

    result = run_similarity(features, output, sets=sets, pooling=pooling, frames=frames,
                            max_frames=max_frames, debiased=debiased, seed=seed, progress=not quiet,
                            command=_command_line())
    out.print(result.line(), markup=False, highlight=False, soft_wrap=True)


# --- stage 2 ---


def _fit_choices(kind: str) -> str:
    """Registry names for a help text (the registries import no scikit-learn)."""
    if kind == "models":
        from embedx.probing.models import available_models

        return ", ".join(available_models())
    if kind == "cv":
        from embedx.probing.cv import available_splitters

        return ", ".join(available_splitters())
    from embedx.probing.metrics import available_metrics

    return ", ".join(available_metrics())


@app.command()
@_one_line_errors
def fit(
    features: Annotated[Path, typer.Option("--features", "-f", help="HDF5 store written by embedx extract.")] = Path("feats.h5"),
    label: Annotated[str, typer.Option("--label", "-y", help="Label column (of the store's items or of --labels).")] = "label",
    labels: Annotated[Path | None, typer.Option("--labels", help="CSV joined on id (or path) that adds/replaces "
                                                "label, group and split columns.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Group (speaker) column: folds become "
                                              "speaker-independent [default: a speaker, speaker_id or spk "
                                              "column when the items have one].", show_default=False)] = None,
    no_group: Annotated[bool, typer.Option("--no-group", help="Ungrouped folds even when the items have a "
                                           "speaker column (items of one speaker may then be in train and test).")] = False,
    feature_set: Annotated[list[str] | None, typer.Option("--set", "-s", help="Feature set to probe, repeatable: "
                                                          "NAME, NAME@LAYERS, NAME@LAYERS/POOLING (default: every set).",
                                                          show_default=False)] = None,
    layers: Annotated[str, typer.Option(help="Layers: all (one probe per layer), last, 9, 0,6,12, -1, 4:9.")] = "all",
    pooling: Annotated[str | None, typer.Option(help="Pooling(s), comma list or all (default: mean, else the "
                                                "set's first).", show_default=False)] = None,
    concat: Annotated[bool, typer.Option("--concat", help="Fuse every selected layer/set/pooling into one "
                                         "feature vector.")] = False,
    models: Annotated[str | None, typer.Option("--models", "-m", help=f"Comma list or all: {_fit_choices('models')} "
                                               "(default: logreg / ridge).", show_default=False)] = None,
    cv: Annotated[str, typer.Option(help=f"CV scheme ({_fit_choices('cv')}) or a number of folds.")] = "auto",
    folds: Annotated[int | None, typer.Option("--folds", "-k", help="Folds of k-fold schemes [default: 5; with "
                                              "--cv auto and fewer speakers: one fold per speaker].",
                                              show_default=False)] = None,
    split_col: Annotated[str, typer.Option(help="Split column (train/dev/test) for --cv predefined.")] = "split",
    task: Annotated[str, typer.Option(help="auto, classification or regression.")] = "auto",
    metric: Annotated[str | None, typer.Option(help=f"Main metric: {_fit_choices('metrics')} (default: uar / ccc).",
                                               show_default=False)] = None,
    class_weight: Annotated[str, typer.Option(help="none or balanced (for imbalanced labels).")] = "none",
    speaker_norm: Annotated[bool, typer.Option("--speaker-norm", help="Standardise features per group "
                                               "(each speaker by its own statistics; needs --group).")] = False,
    tune: Annotated[bool, typer.Option("--tune", help="Nested grid search inside every training fold.")] = False,
    grid: Annotated[Path | None, typer.Option(help="YAML tuning grids (default: configs/grids.yaml).",
                                              show_default=False)] = None,
    inner_folds: Annotated[int, typer.Option(help="Inner folds of --tune.")] = 3,
    bootstrap: Annotated[int, typer.Option(help="Random permutations per paired test and confidence-set step "
                                           "(exact up to 12 speakers); 0: no CIs and no comparisons.")] = 1000,
    alpha: Annotated[float, typer.Option(help="Significance level of the comparisons (Holm-corrected).")] = 0.05,
    weighted_layers: Annotated[bool, typer.Option("--weighted-layers", help="Add per set and pooling a configuration "
                                                  "SET@weighted/POOLING: softmax weights over the selected layers "
                                                  "learned with a linear probe; weights in layer_weights.csv.")] = False,
    permutations: Annotated[int, typer.Option(help="Chance control: refit every configuration on N label "
                                              "permutations (within speakers) for p_permutation; 0: off.")] = 0,
    domain: Annotated[str | None, typer.Option(help="Item column of the domains (e.g. corpus): also train on "
                                               "each domain and test on every other -> transfer.csv.")] = None,
    label_map: Annotated[Path | None, typer.Option(help="YAML mapping each domain's labels to shared ones: "
                                                   "{raw: shared} and/or {domain: {raw: shared}}.")] = None,
    by: Annotated[list[str] | None, typer.Option("--by", help="Item column to break the scores down by "
                                                 "(repeatable), e.g. sex -> subgroups.csv.")] = None,
    frames: Annotated[bool, typer.Option("--frames", help="Probe every stored frame, labelled by the aligned "
                                         "segment covering its centre (needs --alignments; default model softmax).")] = False,
    segments: Annotated[bool, typer.Option("--segments", help="Probe one example per aligned segment: its frames "
                                           "pooled with --pooling (e.g. word embeddings).")] = False,
    alignments: Annotated[Path | None, typer.Option(help="Forced alignment (file or folder) labelling the frames.",
                                                    show_default=False)] = None,
    tier: Annotated[str | None, typer.Option(help="Alignment tier to read (TextGrid).", show_default=False)] = None,
    unlabelled_frames: Annotated[str, typer.Option(help="Frames no segment covers: drop, or a LABEL for them.")] = "drop",
    max_train_frames: Annotated[int, typer.Option(help="Most training frames per fold (--frames; a seeded "
                                                  "class-stratified sample).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of folds, models and bootstrap.")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel workers (-1: all cores).")] = 1,
    threads: Annotated[int | None, typer.Option(help="BLAS/OpenMP threads per fit (default: 1; use --jobs to parallelise).",
                                                show_default=False)] = None,
    backend: Annotated[str, typer.Option(help="Where the fits run: loky (local processes), dask (a Dask cluster at "
                                         "--scheduler ADDRESS, else a local one with --jobs workers; pip install "
                                         "'embedx[dask]') or ray (pip install 'embedx[ray]').")] = "loky",
    scheduler: Annotated[str | None, typer.Option(help="Cluster address for --backend dask (tcp://host:8786) or ray "
                                                  "(ray://host:10001) [default: a local cluster].",
                                                  show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder.")] = Path("results"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace another study's results in the "
                                            "results folder.")] = False,
    save_model: Annotated[bool, typer.Option("--save-model/--no-save-model",
                                             help="Refit the best configuration and save model.joblib.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Cross-validate classifiers on stored features: every layer × model, with statistics and a report."""
    from embedx.api import fit as run_fit

    if no_group and group is not None:
        raise ConfigError(f"--group {group} and --no-group contradict each other; give one")
    fitted = run_fit(
        features, output=output, overwrite=overwrite, label=label, labels=labels,
        group=None if no_group else (group or "auto"), sets=feature_set, layers=layers,
        pooling=pooling, concat=concat, models=models, cv=cv, folds=folds, split_col=split_col,
        task=task, metric=metric, class_weight=class_weight, speaker_norm=speaker_norm, tune=tune,
        grid=grid, inner_folds=inner_folds, bootstrap=bootstrap, alpha=alpha,
        weighted_layers=weighted_layers, permutations=permutations, domain=domain,
        label_map=label_map, by=by, frames=frames, segments=segments, alignments=alignments, tier=tier,
        unlabelled_frames=unlabelled_frames, max_train_frames=max_train_frames, seed=seed, jobs=jobs,
        threads=threads, backend=backend, scheduler=scheduler, save_model=save_model,
        progress=not quiet, command=_command_line(),
        log=lambda m: console.print(f"[dim]{escape(m)}[/]", highlight=False, soft_wrap=True),
    )
    _print_fit_summary(fitted.study)
    out.print(f"wrote {len(fitted.files)} files to {output}/ (report.md, summary.csv, results.csv, ...)",
              markup=False, highlight=False, soft_wrap=True)


def _print_fit_summary(result: Any, top: int = 8) -> None:
    """The first rows of a study's ranking, then the best score with its selection-aware twin."""
    import math

    from rich.table import Table

    from embedx.text import number as num

    m = result.metric
    s = result.summary
    chance = result.chance
    if chance is not None and not chance["beats_chance"]:  # the verdict comes first
        what = ("does not beat chance" if chance["beats_chance"] is False
                else f"cannot be tested against chance with so few permutations (p >= {chance['min_p']:.3g})")
        out.print(f"⚠ the best configuration {what}: family-wise permutation p = "
                  f"{chance['p_best']:.3g} over {chance['permutations']} label permutations "
                  f"(alpha {chance['alpha']:g}); see report.md", highlight=False, markup=False, soft_wrap=True)
    analyses = getattr(result, "analyses", None) or {}
    if "sets" in analyses:  # "which model?" first
        from embedx.probing.sets import sets_rows

        header, rows = sets_rows(analyses["sets"])
        sets_table = Table(title=f"feature sets at their best layer ({m})",
                           title_justify="left")
        for col in header:
            sets_table.add_column(col, overflow="fold")
        for row in rows:
            sets_table.add_row(*map(escape, row))
        out.print(sets_table)
    from embedx.probing.findings import findings, headline_lines, ranking_table

    found = findings(result)
    table, hidden, need = ranking_table(result, found, top=top, width=out.width)
    out.print(table, width=max(out.width, need))  # wider than the terminal only to keep names whole
    if hidden:
        out.print(f"{hidden} more rows in summary.csv", highlight=False, markup=False)
    sel = result.selection
    if sel is not None and len(s) > 1:
        line = f"best {m} {num(sel['optimistic'])} is the best of {sel['candidates']}, so optimistic"
        if math.isfinite(sel["estimate"]):
            line += (f"; selection-aware estimate {num(sel['estimate'])} "
                     f"(95% CI {num(sel['ci_low'])}–{num(sel['ci_high'])})")
        out.print(line, highlight=False, markup=False)
    for line in headline_lines(found):  # the tie or the confidence set, chance, why no CIs
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if "transfer" in analyses:
        t = analyses["transfer"].table
        best = t[(t["config"] == result.best[0]) & (t["model"] == result.best[1])]
        cross, own = best[~best["within"]], best[best["within"]]
        out.print(f"transfer ({len(analyses['transfer'].domains.names)} domains, best configuration): "
                  f"{m} {num(cross['score'].mean())} across domains (mean of {len(cross)}), "
                  f"{num(own['score'].mean())} on held-out speakers of the same domain; see transfer.csv",
                  highlight=False, markup=False, soft_wrap=True)
    if "subgroups" in analyses:
        from embedx.probing.compare import MIN_CLUSTERS

        g = analyses["subgroups"].gaps
        for r in g[(g["config"] == result.best[0]) & (g["model"] == result.best[1])].itertuples():
            ci = (f"95% CI {num(r.ci_low)}–{num(r.ci_high)}" if math.isfinite(r.ci_low)
                  else f"no CI: a subgroup has fewer than {MIN_CLUSTERS} speakers")
            out.print(f"{r.by}: {m} gap {r.high} − {r.low} = {num(r.gap)} ({ci})"
                      + (" ⚑ CI excludes 0" if r.excludes_zero else ""),
                      highlight=False, markup=False, soft_wrap=True)
    if chance is not None and chance["beats_chance"]:
        out.print(f"the best configuration beats chance: family-wise permutation p = {chance['p_best']:.3g} "
                  f"over {chance['permutations']} label permutations", highlight=False, markup=False)
    if bool((s["warning"].astype(str) != "").any()) if "warning" in s else False:
        out.print("⚠ warnings for some configurations: see the warning column of summary.csv",
                  highlight=False, markup=False)
    if result.holdout is not None:
        h = result.holdout
        ci = f" (95% CI {num(h.get('ci_low'))}–{num(h.get('ci_high'))})" if math.isfinite(h.get("ci_low", math.nan)) else ""
        out.print(f"held-out test: {m} {num(h[m])}{ci}; "
                  + ", ".join(f"{k} {num(v)}" for k, v in h.items() if k not in ("n_test", "ci_low", "ci_high", m)),
                  highlight=False, markup=False)


@app.command()
@_one_line_errors
def predict(
    model: Annotated[Path, typer.Argument(help="model.joblib written by embedx fit.")],
    inputs: Annotated[list[str], typer.Argument(help="An HDF5 store with the model's feature set(s), or audio "
                                                "folders/files/lists (extracted with the stored config).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write (default: print a table).",
                                                show_default=False)] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Group column for a speaker-normalised "
                                              "model (default: the training one).", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="CSV joined on id/path supplying the group column.")] = None,
    manifest: Annotated[str | None, typer.Option(help="Audio only: CSV with a path column (and a group column).")] = None,
    device: Annotated[str | None, typer.Option(help="Audio only: device for the extraction (auto, cpu, cuda:N).",
                                               show_default=False)] = None,
    keep_features: Annotated[Path | None, typer.Option(help="Audio only: folder to keep the extracted store in.",
                                                       show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Apply a saved model to a feature store or to new audio."""
    from embedx.probing.predict import load_model, predict_audio, predict_store

    bundle = load_model(model)
    first = Path(inputs[0])
    if len(inputs) == 1 and first.is_file() and first.suffix.lower() in (".h5", ".hdf5"):
        table, skipped = predict_store(bundle, first, group=group, labels_csv=labels)
    else:
        overrides: dict[str, Any] = {"progress": not quiet}
        if device is not None:
            overrides["device"] = device
        if manifest is not None:
            overrides["manifest"] = manifest
        table, skipped = predict_audio(
            bundle, inputs, workdir=keep_features, overrides=overrides, group=group,
            labels_csv=labels, log=None if quiet else lambda m: console.print(f"[dim]{escape(m)}[/]"),
        )
    if skipped:
        console.print(f"[yellow]{plural(skipped, 'item')} without features (not done/failed) "
                      f"{'was' if skipped == 1 else 'were'} not predicted[/]")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(output, index=False)
        out.print(f"wrote {len(table)} predictions to {output}", markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    shown = Table()
    for col in table.columns:
        shown.add_column(str(col))
    for row in table.head(50).itertuples(index=False):
        shown.add_row(*[f"{v:.3f}" if isinstance(v, float) else escape(str(v)) for v in row])
    out.print(shown)
    if len(table) > 50:
        out.print(f"... {len(table) - 50} more rows; use -o predictions.csv for all", highlight=False)
