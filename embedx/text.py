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


__all__ = ["plural"]
