"""Tuning grids: which hyper-parameter values a nested search tries for each model.

The packaged ``embedx/configs/grids.yaml`` is the default; ``fit --tune --grid FILE`` replaces it.
"""

from __future__ import annotations

import os
from typing import Any

from embedx.errors import ConfigError, one_line

__all__ = ["load_grids"]


def _packaged(name: str):
    """A file of the packaged presets, ``embedx/configs/`` (installed and in a checkout)."""
    from importlib.resources import files

    return files("embedx.configs").joinpath(name)


def load_grids(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, list[Any]]]:
    """Tuning grids: model name -> {parameter: values}.

    Args:
        path: a YAML file; ``None`` reads ``grids.yaml`` of the packaged ``embedx.configs``.

    Returns:
        The grids.

    Raises:
        ConfigError: unreadable or malformed file.
    """
    import yaml

    try:
        if path is None:
            text = _packaged("grids.yaml").read_text(encoding="utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        data = yaml.safe_load(text) or {}
    except (OSError, ModuleNotFoundError) as exc:
        raise ConfigError(f"cannot read tuning grids {str(path or 'grids.yaml')!r}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"tuning grids {str(path)!r} are not a UTF-8 text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"tuning grids {str(path)!r} are not valid YAML: {one_line(exc, first_line=True)}") from None
    grids = data.get("grids", data) if isinstance(data, dict) else None
    if not isinstance(grids, dict) or not all(
        isinstance(g, dict) and all(isinstance(v, list) and v for v in g.values())
        for g in grids.values()
    ):
        raise ConfigError(
            f"tuning grids {str(path or 'grids.yaml')!r} must map model names to "
            "{parameter: [values, ...]}"
        )
    return grids
