"""Loading a transformers checkpoint: options, device, precision, location and config.

What every transformer backend does before it builds its model, in one place: validate the
common options (short-item policy, attention implementation), resolve ``--device`` and
``--precision``, locate the checkpoint through :func:`embedx.backends.hub.locate` (which pins a
hub revision to a commit), read its config, and load weights quietly with every load failure
turned into one :class:`~embedx.errors.ModelError` line.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
import transformers
from transformers import AutoConfig

from embedx.backends.base import SHORT_POLICIES, Backend
from embedx.backends.hub import locate
from embedx.errors import ConfigError, ModelError, one_line

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "PRECISIONS",
    "checkpoint_metadata",
    "load_config",
    "load_error",
    "open_checkpoint",
    "quiet_loading",
    "resolve_device",
    "resolve_precision",
]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "sdpa", "eager")

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> torch.device:
    """The ``torch.device`` of a ``--device`` value.

    Args:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device.

    Raises:
        ConfigError: an unknown spelling, or a CUDA device that is not available.
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for, but CUDA is not available; use cpu or auto"
        )
    index = int(device.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} does not exist; {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a forward runs in on ``device``.

    Args:
        precision: one of :data:`PRECISIONS`.
        device: the resolved device.

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``auto``: fp32 on CPU, bf16 or else fp16 on CUDA).

    Raises:
        ConfigError: an unknown precision, or one the device cannot run.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cpu":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision 'fp16' needs a CUDA device; on cpu use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"device {device} does not support bf16; use fp16 or fp32")
    return precision


def load_error(model: str, exc: Exception) -> ModelError:
    """The one-line :class:`ModelError` for a checkpoint whose files cannot be read."""
    return ModelError(f"{model!r}: its checkpoint files cannot be read: {one_line(exc, first_line=True)}")


def load_config(path: str, model: str) -> transformers.PretrainedConfig:
    """The config of the checkpoint in directory ``path`` (``model``: its name for messages).

    Raises:
        ModelError: the config cannot be read.
    """
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error(model, exc) from exc


def open_checkpoint(
    backend: Backend, model: str, revision: str | None, device: str, precision: str, short: str,
    attn: str,
) -> tuple[str, transformers.PretrainedConfig]:
    """Validate the common options, resolve device/precision, locate the checkpoint, load its config.

    Sets ``device``, ``precision``, ``model_id``, ``revision`` and ``commit_hash`` on ``backend``.

    Args:
        backend: the backend being built.
        model: hub id or local directory.
        revision: hub revision, or ``None``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: one of :data:`PRECISIONS`.
        short: one of :data:`SHORT_POLICIES`.
        attn: one of :data:`ATTN_IMPLEMENTATIONS`.

    Returns:
        The local directory holding the checkpoint's files (see
        :func:`embedx.backends.hub.locate`) and its config.

    Raises:
        ConfigError: a bad short policy, attention implementation, device or precision.
        ModelError: the checkpoint cannot be located or its config cannot be loaded.
    """
    if short not in SHORT_POLICIES:
        raise ConfigError(f"unknown short-item policy {short!r}; accepted: {', '.join(SHORT_POLICIES)}")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            f"unknown attention implementation {attn!r}; accepted: {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    backend.device = resolve_device(device)
    backend.precision = resolve_precision(precision, backend.device)
    backend.model_id = str(model)
    backend.revision = revision
    checkpoint = locate(backend.model_id, revision)
    backend.commit_hash = checkpoint.commit
    return checkpoint.path, load_config(checkpoint.path, backend.model_id)


def checkpoint_metadata(backend: Any, model_type: str, num_hidden_layers: int) -> dict[str, Any]:
    """The metadata every transformer backend stores: checkpoint, run settings, versions.

    Args:
        backend: a backend opened with :func:`open_checkpoint` (``model_id``, ``revision``,
            ``commit_hash``, ``device``, ``precision``), with its ``config``, ``attn``,
            ``short``, ``sample_rate``, ``min_samples`` and ``dim`` set.
        model_type: the checkpoint's model type.
        num_hidden_layers: its number of transformer blocks.

    Returns:
        str / int / float / bool values by key; a backend adds its own keys to them.
    """
    return {
        "model_id": backend.model_id,
        "revision": backend.revision or "",
        "commit_hash": backend.commit_hash,
        "model_type": model_type,
        "architectures": ",".join(getattr(backend.config, "architectures", None) or []),
        "attn_implementation": backend.attn,
        "precision": backend.precision,
        "device": backend.device.type,
        "short": backend.short,
        "sample_rate": backend.sample_rate,
        "min_samples": backend.min_samples,
        "num_hidden_layers": int(num_hidden_layers),
        "hidden_size": backend.dim,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


@contextlib.contextmanager
def quiet_loading(model: str) -> Iterator[None]:
    """Load weights without transformers' progress bar; turn load failures into ModelError.

    transformers 5 draws a "Loading weights" bar on stderr; embedx shows its own progress.

    Args:
        model: the hub id or directory being loaded (named in the error).

    Raises:
        ModelError: when loading raises OSError or ValueError.
    """
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    except (OSError, ValueError) as exc:
        raise load_error(model, exc) from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
