"""``--label-map``: each domain's raw labels mapped to shared ones (format: :mod:`embedx.probing.transfer`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from embedx.errors import ConfigError, Param, one_line

__all__ = ["LABEL_MAP_FORMAT", "LabelMap", "read_label_map"]

#: what ``--label-map`` accepts, quoted in its error messages
LABEL_MAP_FORMAT = "{raw_label: shared_label} and/or {domain: {raw_label: shared_label}}"


@dataclass
class LabelMap:
    """Raw labels -> shared labels, globally and per domain.

    Attributes:
        shared: raw label -> shared label, for every domain.
        per_domain: domain -> {raw label -> shared label}; wins over ``shared``.
        path: the YAML file it was read from.
    """

    shared: dict[str, str]
    per_domain: dict[str, dict[str, str]]
    path: str = ""

    @property
    def targets(self) -> set[str]:
        """Every shared label the map produces."""
        return set(self.shared.values()) | {v for m in self.per_domain.values() for v in m.values()}

    def map(self, domain: str, raw: str) -> str | None:
        """The shared label of ``raw`` in ``domain``, or ``None`` when it is unmatched."""
        own = self.per_domain.get(domain, {})
        if raw in own:
            return own[raw]
        if raw in self.shared:
            return self.shared[raw]
        return raw if raw in self.targets else None


def _text(value: Any) -> str:
    """A YAML scalar as the label text the study uses (``1`` and ``1.0`` both read ``"1"``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read a ``--label-map`` YAML file (format: see the module docstring).

    Args:
        path: the YAML file.

    Returns:
        The :class:`LabelMap`.

    Raises:
        ConfigError: unreadable file, invalid YAML, or a structure other than
            :data:`LABEL_MAP_FORMAT`, quoting the file.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError("cannot read ", Param("label_map"), f" {str(path)!r}: {one_line(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(Param("label_map"), f" {str(path)!r} is not a UTF-8 text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(Param("label_map"), f" {str(path)!r} is not valid YAML: "
                          f"{one_line(exc, first_line=True)}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(Param("label_map"), f" {str(path)!r} must be a non-empty mapping; accepted: "
                          f"{LABEL_MAP_FORMAT}")
    shared: dict[str, str] = {}
    per_domain: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            bad = [v for v in value.values() if isinstance(v, dict | list) or v is None]
            if bad or not value:
                raise ConfigError(Param("label_map"), f" {str(path)!r}: domain {_text(key)!r} must map raw "
                                  f"labels to shared labels; accepted: {LABEL_MAP_FORMAT}")
            per_domain[_text(key)] = {_text(k): _text(v) for k, v in value.items()}
        elif value is None or isinstance(value, list):
            raise ConfigError(Param("label_map"), f" {str(path)!r}: entry {_text(key)!r} has no shared label "
                              f"({value!r}); accepted: {LABEL_MAP_FORMAT}")
        else:
            shared[_text(key)] = _text(value)
    return LabelMap(shared=shared, per_domain=per_domain, path=str(path))
