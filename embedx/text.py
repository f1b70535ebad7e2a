"""Small helpers for the text embedx prints (one place, so every message counts alike)."""

from __future__ import annotations


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
    import math

    if value is None:
        return "–"
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # pd.NA raises TypeError; a label stays itself
        return "–" if type(value).__name__ == "NAType" else str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def p_value(value: object) -> str:
    """A p-value as printed in the report: three decimals, ``<0.001``, ``–`` when missing.

    Args:
        value: a number, ``None``, ``pd.NA`` or NaN.

    Returns:
        The text.
    """
    import math

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


__all__ = ["markdown_table", "number", "p_value", "plural"]
