"""Mask-aware pooling of frame-level states over each item's valid frames.

Every pooling takes ``hidden`` of shape ``(num_layers, batch, num_frames, dim)`` and the number
of valid frames of every item, and returns ``(num_layers, batch, dim)``. Padding frames (at
index ``>= lengths[i]``) never influence the result, whatever they contain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from embedx.errors import ConfigError

if TYPE_CHECKING:
    import torch

PoolFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

_POOLINGS: dict[str, PoolFn] = {}


def register_pooling(name: str) -> Callable[[PoolFn], PoolFn]:
    """Decorator registering a pooling function under ``name``.

    Args:
        name: registry key (what ``--pooling`` accepts).

    Returns:
        The decorator; it returns the function unchanged.
    """

    def decorate(fn: PoolFn) -> PoolFn:
        _POOLINGS[name] = fn
        return fn

    return decorate


def available_poolings() -> list[str]:
    """Names of the registered poolings, in registration order."""
    return list(_POOLINGS)


def get_pooling(name: str) -> PoolFn:
    """Return the pooling registered as ``name``.

    Raises:
        ConfigError: when ``name`` is unknown.
    """
    if name not in _POOLINGS:
        raise ConfigError(f"unknown pooling {name!r}; accepted: {', '.join(_POOLINGS)}")
    return _POOLINGS[name]


def split_poolings(spec: str | Sequence[str], every: Sequence[str] | None = None) -> tuple[str, ...]:
    """The pooling grammar of both stages: ``"mean,std"`` (or a sequence) -> names, order kept.

    Blanks and repeats are dropped; ``all`` stands for ``every`` when given. The names are not
    checked: stage 1 checks them against the registry (:func:`parse_poolings`), stage 2
    against the poolings a feature set has stored.

    Args:
        spec: a comma list or a sequence of names.
        every: what ``all`` expands to (``None``: ``all`` is kept as a name).

    Returns:
        The names.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if every is not None and names == ["all"]:
        names = list(every)
    return tuple(dict.fromkeys(n for n in names if n))


def parse_poolings(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``"mean,std"`` (or a sequence) into a tuple of known pooling names, order kept.

    Args:
        spec: a comma list or a sequence of names; ``all``: every registered pooling.

    Returns:
        The names, each registered.

    Raises:
        ConfigError: when the list is empty or names an unknown pooling.
    """
    names = split_poolings(spec, every=list(_POOLINGS))
    if not names:
        raise ConfigError(f"no pooling given; accepted: {', '.join(_POOLINGS)}")
    for n in names:
        get_pooling(n)
    return names


def _mask(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, num_frames)`` bool mask of valid frames, broadcastable as ``(1, batch, frames, 1)``."""
    import torch

    num_frames = hidden.shape[2]
    frame_idx = torch.arange(num_frames, device=hidden.device)
    mask = frame_idx[None, :] < lengths.to(hidden.device)[:, None]  # (batch, frames)
    return mask[None, :, :, None]  # (batch, frames) -> (1, batch, frames, 1)


def _counts(lengths: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    # (batch,) -> (1, batch, 1); clamp keeps a zero-length item from dividing by zero (it stays 0)
    return lengths.to(hidden.device, hidden.dtype).clamp(min=1)[None, :, None]


@register_pooling("mean")
def mean_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: ``(num_layers, batch, frames, dim) -> (num_layers, batch, dim)``."""
    mask = _mask(hidden, lengths)
    # where, not a product: NaN or inf in a padded frame times 0 is still NaN
    return hidden.where(mask, 0.0).sum(dim=2) / _counts(lengths, hidden)


@register_pooling("std")
def std_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Population standard deviation (ddof=0) over valid frames; 0 for a one-frame item."""
    mask = _mask(hidden, lengths)
    mean = mean_pool(hidden, lengths)  # (num_layers, batch, dim)
    # two-pass variance: numerically safer than E[x^2] - E[x]^2 for large-magnitude states
    centred = (hidden - mean[:, :, None, :]).where(mask, 0.0)
    return (centred.square().sum(dim=2) / _counts(lengths, hidden)).sqrt()


@register_pooling("max")
def max_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Maximum over valid frames."""
    mask = _mask(hidden, lengths)
    return hidden.masked_fill(~mask, float("-inf")).amax(dim=2)


@register_pooling("min")
def min_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Minimum over valid frames."""
    mask = _mask(hidden, lengths)
    return hidden.masked_fill(~mask, float("inf")).amin(dim=2)


@register_pooling("first")
def first_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The first frame of every item."""
    return hidden[:, :, 0, :]


@register_pooling("last")
def last_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The last valid frame of every item."""
    import torch

    last = (lengths.to(hidden.device) - 1).clamp(min=0)  # (batch,)
    batch_idx = torch.arange(hidden.shape[1], device=hidden.device)
    return hidden[:, batch_idx, last, :]  # (num_layers, batch, frames, dim) -> (num_layers, batch, dim)


# --- combining chunks --------------------------------------------------------------------------
# A long item is run in chunks (``--max-chunk-seconds``); its pooled value is combined from the
# chunks' pooled values, weighted by their frame counts. For mean, std, max, min, first and last
# the combination equals pooling the stitched frames at once (up to float rounding).

CombineFn = Callable[[dict[str, "np.ndarray"], "np.ndarray"], "np.ndarray"]
_COMBINE: dict[str, tuple[tuple[str, ...], CombineFn]] = {}


def register_combine(name: str, needs: tuple[str, ...] = ()) -> Callable[[CombineFn], CombineFn]:
    """Decorator registering how chunk results of pooling ``name`` combine.

    Args:
        name: the pooling.
        needs: other poolings whose chunk values the combination also needs (std needs mean).

    Returns:
        The decorator; the function takes ``parts`` (pooling -> ``(num_chunks, num_layers, dim)``)
        and ``counts`` (``(num_chunks,)`` frames per chunk) and returns ``(num_layers, dim)``.
    """

    def decorate(fn: CombineFn) -> CombineFn:
        _COMBINE[name] = (needs, fn)
        return fn

    return decorate


def chunk_poolings(poolings: tuple[str, ...]) -> tuple[str, ...]:
    """The poolings to compute per chunk so that ``poolings`` can be combined.

    Raises:
        ConfigError: a pooling has no registered combination.
    """
    out = list(poolings)
    for p in poolings:
        if p not in _COMBINE:
            raise ConfigError(f"pooling {p!r} cannot be combined over chunks of a long item; "
                              f"poolings that can: {', '.join(_COMBINE)} (or raise --max-chunk-seconds)")
        out.extend(n for n in _COMBINE[p][0] if n not in out)
    return tuple(out)


def combine_chunks(parts: dict[str, np.ndarray], counts: np.ndarray,
                   poolings: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Combine per-chunk pooled values into the item's pooled values.

    Args:
        parts: pooling -> ``(num_chunks, num_layers, dim)`` per-chunk values, for every pooling
            in :func:`chunk_poolings` of ``poolings``.
        counts: ``(num_chunks,)`` valid frames of every chunk.
        poolings: the poolings wanted.

    Returns:
        pooling -> ``(num_layers, dim)`` float32.
    """
    counts = np.asarray(counts, dtype=np.float64)
    return {p: _COMBINE[p][1](parts, counts).astype(np.float32) for p in poolings}


def _weights(counts: np.ndarray) -> np.ndarray:
    return (counts / counts.sum())[:, None, None]  # (num_chunks,) -> (num_chunks, 1, 1)


@register_combine("mean")
def _combine_mean(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    return (parts["mean"].astype(np.float64) * _weights(counts)).sum(axis=0)


@register_combine("std", needs=("mean",))
def _combine_std(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    # pooled variance: within-chunk variance plus the spread of the chunk means (exact, ddof=0)
    means = parts["mean"].astype(np.float64)
    mean = (means * _weights(counts)).sum(axis=0)
    var = (_weights(counts) * (parts["std"].astype(np.float64) ** 2 + (means - mean) ** 2)).sum(axis=0)
    return np.sqrt(var)


@register_combine("max")
def _combine_max(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    return parts["max"].max(axis=0)


@register_combine("min")
def _combine_min(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    return parts["min"].min(axis=0)


@register_combine("first")
def _combine_first(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    return parts["first"][0]


@register_combine("last")
def _combine_last(parts: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    return parts["last"][-1]
