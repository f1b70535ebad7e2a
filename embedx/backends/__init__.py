"""Backend registry: feature sources keyed by name.

Entries are ``"module:attribute"`` strings so that listing the registry (``embedx --help``)
imports neither torch nor transformers; the module is imported when a backend is created.

To add a backend, write one module here with a :class:`~embedx.backends.base.Backend` subclass
and add one line to ``_REGISTRY`` (or call :func:`register_backend` from your own code). The
family backends share :mod:`~embedx.backends.loading` (options, device, config),
:mod:`~embedx.backends.capture` (layer hooks, autocast) and :mod:`~embedx.backends.padding`
(exact padded batches); no backend imports another backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from embedx.backends.base import Backend
from embedx.errors import ConfigError, Param

__all__ = [
    "available_backends",
    "create_backend",
    "load_hf_backend",
    "register_backend",
]

_REGISTRY: dict[str, str | Callable[..., Backend]] = {
    # HFBackend, or WhisperBackend when the checkpoint's model_type is whisper
    "hf": "embedx.backends:load_hf_backend",
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


def load_hf_backend(model: str, **kwargs: Any) -> Backend:
    """The ``hf`` registry entry: the backend of a transformers checkpoint's family.

    The checkpoint's config decides: ``model_type == "whisper"`` goes to
    :class:`embedx.backends.whisper.WhisperBackend`, everything else to
    :class:`embedx.backends.hf.HFBackend` (which refuses unsupported types).

    Args:
        model: hub id or local directory.
        **kwargs: the backend's options (device, precision, short, ...).

    Returns:
        The backend.

    Raises:
        ConfigError: ``random_init`` asked for a Whisper model.
        ModelError: when the checkpoint cannot be located or its config cannot be loaded.
    """
    # imported here: the registry must stay importable without torch and transformers
    from embedx.backends.hub import locate
    from embedx.backends.loading import load_config

    checkpoint = locate(str(model), kwargs.get("revision"))
    config = load_config(checkpoint.path, str(model))
    if getattr(config, "model_type", None) == "whisper":
        if kwargs.pop("random_init", False):
            raise ConfigError(Param("random_init", switch=True), f" is not available for Whisper models yet ({model!r})")
        kwargs.pop("seed", None)
        from embedx.backends.whisper import WhisperBackend

        return WhisperBackend(model, **kwargs)
    from embedx.backends.hf import HFBackend

    return HFBackend(model, **kwargs)
