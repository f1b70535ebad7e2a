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
from embedx.options import COMMANDS, Command
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
_SHORT_FLAGS = {"output": "-o", "sets": "--set"}


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


# every option's flags, help and default come from its declaration (embedx/options.py), which
# the Python API shares; tests/test_options.py checks the two against it
X, FIT, PREDICT, SIM = COMMANDS["extract"], COMMANDS["fit"], COMMANDS["predict"], COMMANDS["similarity"]
INFO, MERGE, SYNTH = COMMANDS["info"], COMMANDS["merge"], COMMANDS["synth"]


def _option(command: Command, name: str) -> Any:
    """The ``typer.Option`` (or ``typer.Argument``) of a declared option."""
    o = command[name]
    if o.argument:
        return typer.Argument(help=o.help_text(), show_default=o.show_default)
    return typer.Option(*o.cli_flags, help=o.help_text(), show_default=o.show_default)


def _default(command: Command, name: str) -> Any:
    """The typer parameter's default of a declared option (``--quiet``: not ``progress``)."""
    return command[name].cli_default


def _renamed_option(command: Command, old: str) -> Any:
    """The hidden ``--OLD`` spelling of a renamed option, kept for one release."""
    new = next(o for o in command if old in o.renamed_from)
    return typer.Option("--" + old.replace("_", "-"), hidden=True, show_default=False,
                        help=f"Old spelling of {new.cli_flags[0]}.")


def _take_renamed(command: Command, old: str, old_value: Any, new_value: Any) -> Any:
    """The value of a renamed option given by its old spelling (one line on stderr) or its new one.

    Raises:
        ConfigError: both spellings given, with different values.
    """
    if old_value is None:
        return new_value
    new = next(o for o in command if old in o.renamed_from)
    old_flag, new_flag = "--" + old.replace("_", "-"), new.cli_flags[0]
    if new_value != new.default and new_value != old_value:
        raise ConfigError(f"{old_flag} {old_value} and {new_flag} {new_value} contradict each other; "
                          f"give {new_flag}")
    console.print(f"[yellow]embedx: {old_flag} is now {new_flag}; the old spelling goes in the next "
                  "release[/]", highlight=False, soft_wrap=True)
    return old_value


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
    inputs: Annotated[list[str] | None, _option(X, "inputs")] = None,
    output: Annotated[Path, _option(X, "output")] = _default(X, "output"),
    model: Annotated[str | None, _option(X, "model")] = _default(X, "model"),
    opensmile: Annotated[str | None, _option(X, "opensmile")] = _default(X, "opensmile"),
    opensmile_level: Annotated[str | None, _option(X, "opensmile_level")] = _default(X, "opensmile_level"),
    backend: Annotated[str, _option(X, "backend")] = _default(X, "backend"),
    revision: Annotated[str | None, _option(X, "revision")] = _default(X, "revision"),
    name: Annotated[str | None, _option(X, "name")] = _default(X, "name"),
    layers: Annotated[str, _option(X, "layers")] = _default(X, "layers"),
    pooling: Annotated[str, _option(X, "pooling")] = _default(X, "pooling"),
    frames: Annotated[bool, _option(X, "frames")] = _default(X, "frames"),
    dtype: Annotated[str, _option(X, "dtype")] = _default(X, "dtype"),
    precision: Annotated[str, _option(X, "precision")] = _default(X, "precision"),
    device: Annotated[str, _option(X, "device")] = _default(X, "device"),
    batch_seconds: Annotated[float | None, _option(X, "batch_seconds")] = _default(X, "batch_seconds"),
    max_chunk_seconds: Annotated[float, _option(X, "max_chunk_seconds")] = _default(X, "max_chunk_seconds"),
    workers: Annotated[int | None, _option(X, "workers")] = _default(X, "workers"),
    short: Annotated[str, _option(X, "short")] = _default(X, "short"),
    manifest: Annotated[str | None, _option(X, "manifest")] = _default(X, "manifest"),
    path_column: Annotated[str | None, _option(X, "path_column")] = _default(X, "path_column"),
    overwrite: Annotated[bool, _option(X, "overwrite")] = _default(X, "overwrite"),
    retry_failed: Annotated[bool, _option(X, "retry_failed")] = _default(X, "retry_failed"),
    shard: Annotated[str | None, _option(X, "shard")] = _default(X, "shard"),
    devices: Annotated[str | None, _option(X, "devices")] = _default(X, "devices"),
    engine: Annotated[str, _option(X, "engine")] = _default(X, "engine"),
    shards: Annotated[int | None, _option(X, "shards")] = _default(X, "shards"),
    scheduler: Annotated[str | None, _option(X, "scheduler")] = _default(X, "scheduler"),
    random_init: Annotated[bool, _option(X, "random_init")] = _default(X, "random_init"),
    seed: Annotated[int | None, _option(X, "seed")] = _default(X, "seed"),
    strict: Annotated[bool, _option(X, "strict")] = _default(X, "strict"),
    quiet: Annotated[bool, _option(X, "progress")] = _default(X, "progress"),
    preset: Annotated[Path | None, _option(X, "config")] = _default(X, "config"),
) -> None:
    """Extract hidden states (all layers in one pass, pooled and/or frame-level) into HDF5."""
    from embedx.extraction.config import config_from_options
    from embedx.extraction.scale import extract as run_extract

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
    store: Annotated[Path, _option(INFO, "store")],
    failed: Annotated[bool, _option(INFO, "failed")] = _default(INFO, "failed"),
    attrs: Annotated[bool, _option(INFO, "attrs")] = _default(INFO, "attrs"),
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
    folder: Annotated[Path, _option(SYNTH, "folder")],
    items: Annotated[int, _option(SYNTH, "items")] = _default(SYNTH, "items"),
    speakers: Annotated[int, _option(SYNTH, "speakers")] = _default(SYNTH, "speakers"),
    seed: Annotated[int, _option(SYNTH, "seed")] = _default(SYNTH, "seed"),
) -> None:
    """Create the built-in example: a labelled synthetic corpus, its vowel alignments (one TextGrid
    per file) and a tiny model whose deeper layers keep less."""
    from embedx.testing.synth import make_example

    example = make_example(folder, num_items=items, num_speakers=speakers, seed=seed)
    out.print(f"wrote {plural(example.num_items, 'item')} to {example.audio_dir}, manifest {example.manifest}, "
              f"tiny model {example.model_dir}, vowel TextGrids {example.alignments}", highlight=False,
              soft_wrap=True)


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
    _refuse_repeated_options(sys.argv[1:])
    app()


def _refuse_repeated_options(argv: list[str]) -> None:
    """One line and exit 2 when a single-valued option is given twice (click keeps the last)."""
    name = next((a for a in argv if not a.startswith("-")), None)
    if name not in COMMANDS:
        return
    found = COMMANDS[name].repeated(argv[argv.index(name) + 1:])
    if found:
        flag, values = found
        hint = "; for speaker- and sentence-independent folds: --group speaker --cross-group sentence" \
            if (name, flag) == ("fit", "--group") else ""
        console.print(f"[bold red]embedx: usage:[/] {flag} given {len(values)} times "
                      f"({', '.join(map(repr, values))}); it takes one value{hint}", highlight=False, soft_wrap=True)
        raise SystemExit(2)


@app.command()
@_one_line_errors
def merge(
    shards: Annotated[list[Path], _option(MERGE, "shards")],
    output: Annotated[Path, _option(MERGE, "output")],
    overwrite: Annotated[bool, _option(MERGE, "overwrite")] = _default(MERGE, "overwrite"),
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
    features: Annotated[Path, _option(SIM, "features")] = _default(SIM, "features"),
    output: Annotated[Path, _option(SIM, "output")] = _default(SIM, "output"),
    sets: Annotated[list[str] | None, _option(SIM, "sets")] = _default(SIM, "sets"),
    pooling: Annotated[str, _option(SIM, "pooling")] = _default(SIM, "pooling"),
    frames: Annotated[bool, _option(SIM, "frames")] = _default(SIM, "frames"),
    max_frames: Annotated[int, _option(SIM, "max_frames")] = _default(SIM, "max_frames"),
    debiased: Annotated[bool, _option(SIM, "debiased")] = _default(SIM, "debiased"),
    seed: Annotated[int, _option(SIM, "seed")] = _default(SIM, "seed"),
    quiet: Annotated[bool, _option(SIM, "progress")] = _default(SIM, "progress"),
) -> None:
    """Linear CKA between every pair of layers, within each feature set and across sets."""
    from embedx.api import similarity as run_similarity

    result = run_similarity(features, output, sets=sets, pooling=pooling, frames=frames,
                            max_frames=max_frames, debiased=debiased, seed=seed, progress=not quiet,
                            command=_command_line())
    out.print(result.line(), markup=False, highlight=False, soft_wrap=True)


# --- stage 2 ---


@app.command()
@_one_line_errors
def fit(
    features: Annotated[Path, _option(FIT, "features")] = _default(FIT, "features"),
    label: Annotated[str, _option(FIT, "label")] = _default(FIT, "label"),
    labels: Annotated[Path | None, _option(FIT, "labels")] = _default(FIT, "labels"),
    group: Annotated[str, _option(FIT, "group")] = _default(FIT, "group"),
    no_group: Annotated[bool, _option(FIT, "no_group")] = _default(FIT, "no_group"),
    cross_group: Annotated[str | None, _option(FIT, "cross_group")] = _default(FIT, "cross_group"),
    feature_set: Annotated[list[str] | None, _option(FIT, "sets")] = _default(FIT, "sets"),
    layers: Annotated[str, _option(FIT, "layers")] = _default(FIT, "layers"),
    pooling: Annotated[str | None, _option(FIT, "pooling")] = _default(FIT, "pooling"),
    concat: Annotated[bool, _option(FIT, "concat")] = _default(FIT, "concat"),
    models: Annotated[str | None, _option(FIT, "models")] = _default(FIT, "models"),
    cv: Annotated[str, _option(FIT, "cv")] = _default(FIT, "cv"),
    folds: Annotated[int, _option(FIT, "folds")] = _default(FIT, "folds"),
    split_col: Annotated[str, _option(FIT, "split_col")] = _default(FIT, "split_col"),
    task: Annotated[str, _option(FIT, "task")] = _default(FIT, "task"),
    metric: Annotated[str | None, _option(FIT, "metric")] = _default(FIT, "metric"),
    class_weight: Annotated[str, _option(FIT, "class_weight")] = _default(FIT, "class_weight"),
    speaker_norm: Annotated[bool, _option(FIT, "speaker_norm")] = _default(FIT, "speaker_norm"),
    tune: Annotated[bool, _option(FIT, "tune")] = _default(FIT, "tune"),
    grid: Annotated[Path | None, _option(FIT, "grid")] = _default(FIT, "grid"),
    inner_folds: Annotated[int, _option(FIT, "inner_folds")] = _default(FIT, "inner_folds"),
    bootstrap: Annotated[int, _option(FIT, "bootstrap")] = _default(FIT, "bootstrap"),
    alpha: Annotated[float, _option(FIT, "alpha")] = _default(FIT, "alpha"),
    weighted_layers: Annotated[bool, _option(FIT, "weighted_layers")] = _default(FIT, "weighted_layers"),
    permutations: Annotated[int, _option(FIT, "permutations")] = _default(FIT, "permutations"),
    mdl: Annotated[bool, _option(FIT, "mdl")] = _default(FIT, "mdl"),
    domain: Annotated[str | None, _option(FIT, "domain")] = _default(FIT, "domain"),
    label_map: Annotated[Path | None, _option(FIT, "label_map")] = _default(FIT, "label_map"),
    factors: Annotated[Path | None, _option(FIT, "factors")] = _default(FIT, "factors"),
    by: Annotated[list[str] | None, _option(FIT, "by")] = _default(FIT, "by"),
    frames: Annotated[bool, _option(FIT, "frames")] = _default(FIT, "frames"),
    segments: Annotated[bool, _option(FIT, "segments")] = _default(FIT, "segments"),
    alignments: Annotated[Path | None, _option(FIT, "alignments")] = _default(FIT, "alignments"),
    tier: Annotated[str | None, _option(FIT, "tier")] = _default(FIT, "tier"),
    unlabelled_frames: Annotated[str, _option(FIT, "unlabelled_frames")] = _default(FIT, "unlabelled_frames"),
    max_train_frames: Annotated[int | None, _option(FIT, "max_train_frames")] = _default(FIT, "max_train_frames"),
    seed: Annotated[int, _option(FIT, "seed")] = _default(FIT, "seed"),
    jobs: Annotated[int, _option(FIT, "jobs")] = _default(FIT, "jobs"),
    threads: Annotated[int | None, _option(FIT, "threads")] = _default(FIT, "threads"),
    engine: Annotated[str, _option(FIT, "engine")] = _default(FIT, "engine"),
    backend: Annotated[str | None, _renamed_option(FIT, "backend")] = None,
    scheduler: Annotated[str | None, _option(FIT, "scheduler")] = _default(FIT, "scheduler"),
    output: Annotated[Path, _option(FIT, "output")] = _default(FIT, "output"),
    overwrite: Annotated[bool, _option(FIT, "overwrite")] = _default(FIT, "overwrite"),
    save_model: Annotated[bool, _option(FIT, "save_model")] = _default(FIT, "save_model"),
    quiet: Annotated[bool, _option(FIT, "progress")] = _default(FIT, "progress"),
) -> None:
    """Cross-validate classifiers on stored features: every layer × model, with statistics and a report."""
    from embedx.api import fit as run_fit

    if no_group and group != FIT.default("group"):
        raise ConfigError(f"--group {group} and --no-group contradict each other; give one")
    engine = _take_renamed(FIT, "backend", backend, engine)
    fitted = run_fit(
        features, output=output, overwrite=overwrite, label=label, labels=labels,
        group=None if no_group else group, cross_group=cross_group, sets=feature_set, layers=layers,
        pooling=pooling, concat=concat, models=models, cv=cv, folds=folds, split_col=split_col,
        task=task, metric=metric, class_weight=class_weight, speaker_norm=speaker_norm, tune=tune,
        grid=grid, inner_folds=inner_folds, bootstrap=bootstrap, alpha=alpha,
        weighted_layers=weighted_layers, permutations=permutations, mdl=mdl, domain=domain,
        label_map=label_map, factors=factors, by=by, frames=frames, segments=segments, alignments=alignments, tier=tier,
        unlabelled_frames=unlabelled_frames, max_train_frames=max_train_frames, seed=seed, jobs=jobs,
        threads=threads, engine=engine, scheduler=scheduler, save_model=save_model,
        progress=not quiet, command=_command_line(),
        log=lambda m: console.print(f"[dim]{escape(m)}[/]", highlight=False, soft_wrap=True),
    )
    _print_fit_summary(fitted.study)
    out.print(f"wrote {len(fitted.files)} files to {output}/ (report.md, summary.csv, results.csv, ...)",
              markup=False, highlight=False, soft_wrap=True)


def _print_fit_summary(result: Any, top: int = 8) -> None:
    """The first rows of a study's ranking, then the best score with its selection-aware twin."""
    import math

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
        from embedx.probing.findings import fitted_table
        from embedx.probing.sets import sets_rows

        header, rows = sets_rows(analyses["sets"])
        sets_table, need = fitted_table(
            f"feature sets at their best layer ({m})", header, [list(map(escape, r)) for r in rows],
            names=2, drop=["95% CI ", "selection-aware", "p (set)", "Δ to best set", "95% CI"],
            width=out.width)
        out.print(sets_table, width=max(out.width, need))
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


#: where ``embedx predict`` writes without -o when stdout is a terminal
PREDICTIONS_FILE = "predictions.csv"


@app.command()
@_one_line_errors
def predict(
    model: Annotated[Path, _option(PREDICT, "model")],
    inputs: Annotated[list[str], _option(PREDICT, "inputs")],
    output: Annotated[Path | None, _option(PREDICT, "output")] = _default(PREDICT, "output"),
    group: Annotated[str | None, _option(PREDICT, "group")] = _default(PREDICT, "group"),
    labels: Annotated[Path | None, _option(PREDICT, "labels")] = _default(PREDICT, "labels"),
    manifest: Annotated[str | None, _option(PREDICT, "manifest")] = _default(PREDICT, "manifest"),
    device: Annotated[str | None, _option(PREDICT, "device")] = _default(PREDICT, "device"),
    keep_features: Annotated[Path | None, _option(PREDICT, "keep_features")] = _default(PREDICT, "keep_features"),
    trust_pickle: Annotated[bool, _option(PREDICT, "trust_pickle")] = _default(PREDICT, "trust_pickle"),
    quiet: Annotated[bool, _option(PREDICT, "progress")] = _default(PREDICT, "progress"),
) -> None:
    """Apply a saved model to a feature store or to new audio.

    The predictions (id, path, prediction, prob_<class>) go to -o FILE; without -o to
    predictions.csv in the current folder, or, when stdout is not a terminal
    (embedx predict ... | head), as CSV on stdout with nothing else there (notes go to stderr).
    """
    from embedx.probing.modelfile import load_model
    from embedx.probing.predict import predict_audio, predict_store, summary_line

    bundle = load_model(model, trust_pickle=trust_pickle)
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
    if output is None and not sys.stdout.isatty():  # a pipe or a file: the CSV itself is the output
        _csv_to_stdout(table)
        return
    target = output if output is not None else Path(PREDICTIONS_FILE)
    replaced = output is None and target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    note = "" if output is not None else f" (no -o given{'; replaced the previous one' if replaced else ''})"
    out.print(f"wrote {plural(len(table), 'prediction')} to {target}{note}", markup=False, highlight=False,
              soft_wrap=True)
    out.print(summary_line(table, bundle), markup=False, highlight=False, soft_wrap=True)


def _csv_to_stdout(table: Any) -> None:
    """The predictions as CSV on stdout; a reader that stops early (``| head``) is not an error."""
    import os

    try:
        table.to_csv(sys.stdout, index=False)
        sys.stdout.flush()
    except BrokenPipeError:  # Python flushes stdout again at exit: point it at devnull first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
