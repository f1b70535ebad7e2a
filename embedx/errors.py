"""Errors raised by embedx.

Every error a user can cause is an :class:`EmbedxError` subclass whose message names the bad
value and what is accepted. The CLI prints such an error as one line and exits non-zero; any
other exception is a bug and keeps its traceback.

A message that names an option (what the user could do: ``overwrite``, ``name``, ...) names it
as a :class:`Param` among its parts, never as a command-line flag: the library does not know
whether it was called from Python or from the command line. ``str(exc)`` spells it as the
Python API argument (``overwrite=True``); the CLI renders the same error with its flags
(``--overwrite``) through :meth:`EmbedxError.render`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """An option named in an error message, by its Python name (API argument and CLI option).

    Attributes:
        name: the option's Python name (``"overwrite"``, ``"retry_failed"``); the CLI option is
            the same name with dashes.
        value: a value to give it (``"NAME"``, ``"pad"``, ``7``), or ``None``.
        switch: a boolean option to turn on (``overwrite=True``); otherwise the option is named
            alone, or with :attr:`value`.
    """

    name: str
    value: str | int | float | None = None
    switch: bool = False

    def api(self) -> str:
        """The Python API's spelling: ``overwrite=True``, ``name='NAME'`` or ``seed``."""
        if self.switch:
            return f"{self.name}=True"
        return self.name if self.value is None else f"{self.name}={self.value!r}"


class EmbedxError(Exception):
    """Base class of every error embedx raises on purpose.

    The message is its positional arguments joined: strings, and :class:`Param` parts naming
    the options the user could give (``StoreError(f"{out} exists; use ", OVERWRITE, " to
    replace it")``). A message without :class:`Param` parts is a plain exception message.
    """

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 2

    @property
    def params(self) -> tuple[Param, ...]:
        """The options this message names (what the user could do), as structured data."""
        return tuple(a for a in self.args if isinstance(a, Param))

    def render(self, spell: Callable[[Param], str] = Param.api) -> str:
        """The message with every :class:`Param` spelled by ``spell``.

        Args:
            spell: how an option is written; the Python API's spelling by default, the CLI
                passes one that writes its flags (``--overwrite``).

        Returns:
            The message.
        """
        if not self.params:
            return super().__str__()
        return "".join(spell(a) if isinstance(a, Param) else str(a) for a in self.args)

    def __str__(self) -> str:
        return self.render()


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


class StoreConflictError(StoreError):
    """The store already holds what the request would replace (a file, a feature set of other
    settings); replacing it is the user's choice, named by :attr:`~EmbedxError.params`
    (``overwrite``, and ``name`` where another name avoids the conflict)."""


#: the switch that replaces what a store already holds
OVERWRITE = Param("overwrite", switch=True)


class DiskSpaceError(StoreError):
    """The file system of the store has less free space than the run would write (refused
    before the run starts; the message names both figures and what would fit)."""


class StoreWriteError(StoreError):
    """Writing the store failed mid-run (a full disk, an I/O error, a vanished mount).

    The run stops: the items marked done are safe, the store is closed, and re-running the same
    command resumes it. Exit code 74 (``EX_IOERR``), so a job script can tell it from bad options.

    Attributes:
        errno: the operating system's error number, when known.
    """

    exit_code = 74

    def __init__(self, *parts: object, errno: int | None = None) -> None:
        super().__init__(*parts)
        self.errno = errno

class NothingExtractedError(EmbedxError):
    """Every item of a feature set failed: the store holds no features for it.

    Raised by ``embedx.extract`` once the run is over (the failures are recorded in the store),
    so a script or a job scheduler sees the failure as the CLI's exit code 1 does.

    Attributes:
        summary: the run's :class:`~embedx.extraction.run_stats.ExtractSummary`.
    """

    exit_code = 1

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class ShardError(EmbedxError):
    """A shard of a multi-device or cluster extraction ended without finishing (its process
    died, or its Ray task failed every retry); the shards written so far stay, a re-run resumes."""

    exit_code = 1


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
