"""Backend registry: feature sources keyed by name.

Entries are ``"module:attribute"`` strings so that listing the registry (``embedx --help``)
imports neither torch nor transformers; the module is imported when a backend is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from embedx.backends.base import Backend, BackendOutput, parse_layers
from embedx.errors import ConfigError

__all__ = [
    "Backend",
    "BackendOutput",
    "available_backends",
    "create_backend",
    "parse_layers",
    "register_backend",
]

_REGISTRY: dict[str, str | Callable[..., Backend]] = {
    # HFBackend, or WhisperBackend when the checkpoint's model_type is whisper
    "hf": "embedx.backends.hf:load_hf_backend",
    "opensmile": "embedx.backends.opensmile:OpenSmileBackend",
    "whisper": "embedx.backends.whisper:WhisperBackend",
}


def register_backend(name: str, factory: str | Callable[..., Backend]) -> None:
    """Register a backend factory under ``name``.

    Args:
        name: registry key (what ``--backend`` accepts).
        factory: a callable returning a :class:`Backend`, or a lazy ``"module:attribute"`` path.
    """
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    """Names of the registered backends, sorted."""
    return sorted(_REGISTRY)


def create_backend(name: str, /, **kwargs: Any) -> Backend:
    """Create the backend registered as ``name``.

    Args:
        name: registry key.
        **kwargs: passed to the factory (model id, device, precision, ...).

    Returns:
        The backend, ready for :meth:`Backend.forward`.

    Raises:
        ConfigError: when ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; accepted: {', '.join(available_backends())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(**kwargs)
