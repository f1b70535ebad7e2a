"""Values as plain Python, for everything embedx writes as YAML or JSON (store attributes,
results tables, model bundles).

One definition, so that a configuration compares equal however it was built (a tuple from the
command line, a list from a preset, a numpy scalar from a grid) and serialises without custom
representers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["plain"]


def plain(value: Any) -> Any:
    """``value`` as plain YAML- and JSON-safe Python.

    Args:
        value: any value: mappings, sequences, sets, numpy arrays and scalars, paths, ...

    Returns:
        Mappings -> dicts with str keys; lists, tuples and arrays -> lists; sets -> lists sorted
        by their text; numpy scalars -> Python scalars; ``None``, str, bool, int and float as
        they are; anything else -> ``str(value)``. Containers are converted recursively.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)
