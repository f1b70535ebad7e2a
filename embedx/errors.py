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


class DataError(EmbedxError):
    """Stage-2 data are unusable (unknown column, a single class, NaN features, ...)."""
