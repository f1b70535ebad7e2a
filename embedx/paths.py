"""Output folders, checked before any expensive work (one place for every command's ``-o``)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from embedx.errors import ConfigError

#: kernel pseudo file systems (Linux): they show kernel state and cannot hold a file of ours,
#: and creating one fails with a misleading errno ("No such file or directory" in /proc)
PSEUDO_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc", "efivarfs", "selinuxfs",
    "autofs", "nsfs", "rpc_pipefs",
})


def file_system_type(folder: str | os.PathLike[str]) -> str | None:
    """The type of the file system ``folder`` lies on (``ext4``, ``proc``, ...).

    Args:
        folder: an existing folder.

    Returns:
        The type from ``/proc/self/mountinfo`` of the deepest mount holding the folder, or None
        where that cannot be read (not Linux).
    """
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        where = os.path.realpath(folder)
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        # "id parent major:minor root MOUNT_POINT options [optional...] - TYPE source options"
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        # mountinfo escapes space, tab, newline and backslash as \ooo octal
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, rest.split()[0]
    return kind


def why_not_writable(folder: str | os.PathLike[str], exc: OSError) -> str:
    """Why a new file cannot be created in ``folder``, in words a user can act on.

    Args:
        folder: the folder the file was to be created in.
        exc: what creating a file there raised.

    Returns:
        One line naming the folder and what is wrong with it.
    """
    kind = file_system_type(folder)
    if kind in PSEUDO_FILE_SYSTEMS:
        return (f"{folder} is on the kernel's {kind} file system, which cannot hold ordinary files; "
                "choose a folder on a disk")
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"the folder {folder} is not writable by this user ({reason})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no room for a new file in {folder} ({reason})"
    return f"the folder {folder} does not accept a new file ({reason})"


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
        raise ConfigError(f"-o {str(output)!r} cannot be written: {why_not_writable(out, exc)}") from None
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


__all__ = ["PSEUDO_FILE_SYSTEMS", "file_part", "file_system_type", "why_not_writable", "writable_folder"]
