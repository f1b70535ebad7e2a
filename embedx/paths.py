"""Output folders, checked before any expensive work (one place for every command's ``-o``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from embedx.errors import ConfigError


def writable_folder(output: str | os.PathLike[str], what: str = "the outputs") -> Path:
    """Create ``output`` if needed and check that files can be written into it.

    The check writes and removes a temporary file, so it also catches read-only file systems,
    which permission bits do not show to root.

    Args:
        output: the folder (``-o``).
        what: what will be written, for the message (``"results"``).

    Returns:
        The folder.

    Raises:
        ConfigError: ``output`` is a file, lies under a file, or cannot be created or written.
    """
    import tempfile

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {str(output)!r} is a file; {what} need a folder")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"-o {str(output)!r} lies under {str(blocker)!r}, which is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".embedx-", suffix=".probe"):
            pass
    except OSError as exc:
        raise ConfigError(f"-o {str(output)!r} cannot be written: {exc.strerror or exc}") from None
    return out


def file_part(text: str) -> str:
    """``text`` made safe as part of a file name (a feature-set, pooling or model name).

    Args:
        text: any name.

    Returns:
        ``text`` with every run of characters other than ``A-Z a-z 0-9 . _ -`` replaced by
        ``-``, without leading or trailing ``-``; ``"x"`` when nothing is left.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


__all__ = ["file_part", "writable_folder"]
