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

from embedx import __version__
from embedx.backends import available_backends
from embedx.errors import (
    AudioError,
    ConfigError,
    DataError,
    EmbedxError,
    InputError,
    ModelError,
    StoreError,
)
from embedx.pooling import available_poolings

app = typer.Typer(
    name="embedx",
    help="Exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _one_line_errors(fn: F) -> F:
    """Turn an EmbedxError into one printed line and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbedxError as exc:
            prefix = next(p for cls, p in ERROR_PREFIXES.items() if isinstance(exc, cls))
            console.print(f"[bold red]embedx: {prefix}:[/] {exc}", highlight=False, soft_wrap=True)
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
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Audio folders (recursive), files, or .txt/.lst lists of paths. With --manifest: "
             "the folder its relative paths are relative to.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HDF5 store to create or extend.")] = Path("features.h5"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id or local directory of a "
                                              "wav2vec2 / HuBERT / WavLM / data2vec-audio model.")] = None,
    backend: Annotated[str, typer.Option(help=f"Feature source: {', '.join(available_backends())}.")] = "hf",
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    name: Annotated[str | None, typer.Option(help="Feature-set name in the store [default: the model's name].")] = None,
    layers: Annotated[str, typer.Option(help="Layers: all, last, 0,6,12, -1, 4:9 (0 = transformer input).")] = "all",
    pooling: Annotated[str, typer.Option(help=f"Comma list of poolings: {', '.join(available_poolings())}.")] = "mean",
    frames: Annotated[bool, typer.Option("--frames", help="Also store frame-level states.")] = False,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float16.")] = "float32",
    precision: Annotated[str, typer.Option(help="Compute precision: auto, fp32, fp16 (GPU), bf16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_seconds: Annotated[float, typer.Option(help="Padded audio seconds per batch.")] = 60.0,
    workers: Annotated[int | None, typer.Option(help="Decoding worker processes [default: up to 4].",
                                                show_default=False)] = None,
    short: Annotated[str, typer.Option(help="Items shorter than the model's minimum (25 ms): pad or fail.")] = "pad",
    manifest: Annotated[str | None, typer.Option(help="CSV with a path column and any label/speaker/split columns.")] = None,
    path_column: Annotated[str | None, typer.Option(help="The manifest's path column [default: path/file/...].",
                                                    show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a feature set of the same name "
                                            "extracted with other settings.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry items that failed before.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any item failed.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Extract hidden states (all layers in one pass, pooled and/or frame-level) into HDF5."""
    from embedx.extract import ExtractConfig
    from embedx.extract import extract as run_extract

    config = ExtractConfig(
        backend=backend, model=model, revision=revision, name=name, layers=layers,
        poolings=pooling.split(","), frames=frames, dtype=dtype, precision=precision,
        short=short, device=device, batch_seconds=batch_seconds, workers=workers,
        manifest=manifest, path_column=path_column, overwrite=overwrite,
        retry_failed=retry_failed, progress=not quiet,
    )
    if backend == "hf" and model is None:
        raise ConfigError("--model is required for the hf backend (a hub id or a local directory)")
    summary = run_extract(inputs or [], output, config, command=_command_line(),
                          log=None if quiet else lambda m: console.print(f"[dim]{m}[/]"))
    out.print(summary.line(), highlight=False, soft_wrap=True)
    if summary.failed:
        console.print(f"[yellow]{summary.failed} items failed; `embedx info {output} --failed` lists them[/]")
    if strict and summary.failed_total:
        raise typer.Exit(1)


@app.command()
@_one_line_errors
def info(
    store: Annotated[Path, typer.Argument(help="An HDF5 store written by embedx extract.")],
    failed: Annotated[bool, typer.Option("--failed", help="List every failed item with its reason.")] = False,
) -> None:
    """Summarise a store: items, their columns, every feature set and its settings."""
    from embedx.store import StoreReader

    with StoreReader(store) as reader:
        _print_summary(reader.summary())
        if failed:
            table = reader.failed()
            if table.empty:
                out.print("no failed items")
            else:
                for row in table.itertuples(index=False):
                    out.print(f"{row.set}\t{row.id}\t{row.stage}\t{row.message}", highlight=False,
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
    from embedx.synth import make_example

    example = make_example(folder, num_items=items, num_speakers=speakers, seed=seed)
    out.print(f"wrote {example.num_items} items to {example.audio_dir}, manifest {example.manifest}, "
              f"tiny model {example.model_dir}", highlight=False, soft_wrap=True)


def _print_summary(summary: dict[str, Any]) -> None:
    """Print :meth:`StoreReader.summary` as a few readable blocks."""
    from rich.table import Table

    sets = summary.get("feature_sets", {})
    head = {k: v for k, v in summary.items() if k not in ("feature_sets", "columns")}
    for key, value in head.items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False, soft_wrap=True)
    columns = summary.get("columns")
    if columns:
        out.print(f"[bold]item columns[/]: {columns}", highlight=False, soft_wrap=True)
    for set_name, fs in (sets.items() if isinstance(sets, dict) else enumerate(sets)):
        table = Table(title=f"feature set {set_name}", show_header=False, title_justify="left")
        for key, value in fs.items():
            table.add_row(str(key), str(value))
        out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


# --- stage 2 ---
