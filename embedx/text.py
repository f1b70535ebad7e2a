"""Small helpers for the text embedx prints (one place, so every message counts alike)."""

from __future__ import annotations

import math


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word`` in the right number: ``1 item``, ``2 items``, ``0 items``.

    Args:
        count: how many.
        word: the singular.
        many: the plural when it is not ``word + "s"`` (``batch`` -> ``batches``).

    Returns:
        ``"<count> <word or plural>"``.
    """
    return f"{count} {word if count == 1 else (many or word + 's')}"


def number(value: object, digits: int = 3) -> str:
    """A score as printed in tables and messages: ``digits`` decimals, ``–`` when missing or not finite.

    Args:
        value: a number, ``None``, ``pd.NA`` or NaN; a non-numeric value is printed as it is.
        digits: decimals.

    Returns:
        The text.
    """
    if value is None:
        return "–"
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # pd.NA raises TypeError; a label stays itself
        return "–" if type(value).__name__ == "NAType" else str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ``...`` marking a cut.

    Args:
        text: one line (a quoted reason, a decoder's notes).
        limit: most characters kept, the ``...`` included.

    Returns:
        The text, or its start and ``...``.
    """
    return text if len(text) <= limit else text[:max(limit - 3, 0)].rstrip() + "..."


#: units of :func:`size` above bytes, each 1000 times the one before
_SIZE_UNITS = ("KB", "MB", "GB", "TB", "PB")


def size(num_bytes: float | None) -> str:
    """A size in bytes as people read it: ``512 B``, ``49.2 KB``, ``1.23 MB``, ``15.0 GB``.

    Decimal units (1 KB = 1000 B, as disk makers and file managers count), three significant
    digits from 1 KB on, so a 49 KB store no longer reads ``0.0 MiB``. A value that would round
    up to 1000 of a unit moves to the next one (``999,999 B`` is ``1.00 MB``).

    Args:
        num_bytes: the size; ``None``, negative or not finite is printed as ``–``.

    Returns:
        The text.
    """
    if num_bytes is None or not math.isfinite(value := float(num_bytes)) or value < 0:
        return "–"
    if value < 999.5:
        return f"{value:.0f} B"
    for unit in _SIZE_UNITS:
        value /= 1000
        if value < 999.5 or unit == _SIZE_UNITS[-1]:
            break
    digits = 2 if value < 9.995 else 1 if value < 99.95 else 0
    return f"{value:.{digits}f} {unit}"


def p_value(value: object) -> str:
    """A p-value as printed in the report: three decimals, ``<0.001``, ``–`` when missing.

    Args:
        value: a number, ``None``, ``pd.NA`` or NaN.

    Returns:
        The text.
    """
    if value is None or type(value).__name__ == "NAType" or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return "–"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"  # type: ignore[arg-type]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of strings.

    Args:
        header: the column titles.
        rows: the cells, row by row.

    Returns:
        The table's lines joined by newlines.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["markdown_table", "number", "p_value", "plural", "shorten", "size"]
