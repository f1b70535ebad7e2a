"""Errors raised by embedx.

Every error a user can cause is an :class:`EmbedxError` subclass whose message names the bad
value and what is accepted. The CLI prints such an error as one line and exits non-zero; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmbedxError(Exception):
    """Base class of every error embedx raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 2


class ConfigError(EmbedxError):
    """An option or configuration value is invalid (layer spec, pooling name, precision, ...)."""


class InputError(EmbedxError):
    """The inputs cannot be turned into items (missing folder, bad manifest, no audio found)."""


class AudioError(EmbedxError):
    """One audio file cannot be decoded or is unusable; the item is recorded as failed."""


class ModelError(EmbedxError):
    """A model cannot be loaded or is of an unsupported architecture."""


class StoreError(EmbedxError):
    """The HDF5 store is missing, locked, of another schema, or disagrees with the request."""


class NothingExtractedError(EmbedxError):
    """Every item of a feature set failed: the store holds no features for it.

    Raised by ``embedx.extract`` once the run is over (the failures are recorded in the store),
    so a script or a job scheduler sees the failure as the CLI's exit code 1 does.

    Attributes:
        summary: the run's :class:`~embedx.run_stats.ExtractSummary`.
    """

    exit_code = 1

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class DataError(EmbedxError):
    """Stage-2 data are unusable (unknown column, a single class, NaN features, ...)."""


def one_line(exc: BaseException, *, first_line: bool = False) -> str:
    """An exception's message as one line, for an error message that quotes it.

    Libraries raise multi-line messages (tracebacks of a remote call, YAML parser context, hub
    retry notes); an embedx message quotes them inside one line, so the CLI prints one line.

    Args:
        exc: the exception (or warning) to quote.
        first_line: keep only the first line of the message (the rest is context the user does
            not need); otherwise all of it, its lines joined.

    Returns:
        The message with every run of whitespace collapsed to one space, or the exception's type
        name when the message is empty.
    """
    text = str(exc).strip()
    if first_line and text:
        text = text.splitlines()[0]
    return " ".join(text.split()) or type(exc).__name__
