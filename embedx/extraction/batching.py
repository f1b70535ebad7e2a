"""Length-sorted batches under a budget of padded seconds.

A fixed batch size wastes compute on padding when lengths vary and runs out of memory on long
items; a budget of *padded* audio seconds per batch (``batch_size * longest``) keeps memory
flat and padding small. Items are sorted longest first, so a batch that does not fit in memory
fails at the start of a run rather than after hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedx.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """The batches of one run.

    Attributes:
        batches: item indices of every batch, longest batch first.
        padded_fraction: share of the padded samples that are padding (0 = none).
    """

    batches: list[list[int]]
    padded_fraction: float


def make_batches(
    indices: np.ndarray,
    lengths: np.ndarray,
    max_samples: int,
    max_items: int | None = None,
) -> BatchPlan:
    """Group items into length-sorted batches of at most ``max_samples`` padded samples.

    An item longer than the budget gets a batch of its own.

    Args:
        indices: ``(num_items,)`` item indices to batch.
        lengths: ``(num_items,)`` their lengths in samples at the model's rate.
        max_samples: budget of ``batch_size * longest_length`` per batch.
        max_items: optional cap on the items per batch.

    Returns:
        The :class:`BatchPlan`.

    Raises:
        ConfigError: a non-positive budget or cap.
    """
    if max_samples <= 0:
        raise ConfigError(f"batch budget must be positive, got {max_samples} samples")
    if max_items is not None and max_items <= 0:
        raise ConfigError(f"max items per batch must be positive, got {max_items}")
    indices = np.asarray(indices, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    # stable sort, longest first; ties keep item order so plans are reproducible
    order = np.argsort(-lengths, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    padded = 0
    for pos in order:
        n = int(lengths[pos])
        size = len(current) + 1
        over_budget = max(longest, n) * size > max_samples
        over_count = max_items is not None and size > max_items
        if current and (over_budget or over_count):
            batches.append(current)
            padded += longest * len(current)
            current, longest = [], 0
        current.append(int(indices[pos]))
        longest = max(longest, n)
    if current:
        batches.append(current)
        padded += longest * len(current)
    total = int(lengths.sum())
    return BatchPlan(batches=batches, padded_fraction=1.0 - total / padded if padded else 0.0)


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk of a long item.

    Attributes:
        start: first sample.
        stop: one past the last sample.
        first_frame: index of the chunk's first frame among the item's frames.
        num_frames: frames the chunk yields.
    """

    start: int
    stop: int
    first_frame: int
    num_frames: int


def chunk_spans(num_samples: int, max_samples: int, hop: int, receptive: int) -> list[ChunkSpan]:
    """Split a long item into chunks whose frames tile the item's frames exactly.

    Frame ``t`` of a convolutional front end covers samples ``t*hop .. t*hop + receptive``. A
    chunk starting at sample ``f*hop`` and ``(m-1)*hop + receptive`` samples long yields exactly
    frames ``f .. f+m-1``, so consecutive chunks overlap by ``receptive - hop`` samples and no
    frame is lost or doubled. The last chunk runs to the end of the item.

    Args:
        num_samples: item length (``>= receptive``).
        max_samples: longest chunk allowed (``>= receptive``).
        hop: samples between frames.
        receptive: samples one frame sees.

    Returns:
        The chunks, in order; a single chunk when the item fits.

    Raises:
        ConfigError: ``max_samples`` shorter than one frame's ``receptive`` field.
    """
    if max_samples < receptive:
        raise ConfigError(f"chunks of {max_samples} samples are shorter than one frame "
                          f"({receptive} samples); raise --max-chunk-seconds")
    total = (num_samples - receptive) // hop + 1
    per_chunk = (max_samples - receptive) // hop + 1
    spans = []
    for first in range(0, total, per_chunk):
        count = min(per_chunk, total - first)
        start = first * hop
        last = first + count == total
        stop = num_samples if last else start + (count - 1) * hop + receptive
        spans.append(ChunkSpan(start=start, stop=stop, first_frame=first, num_frames=count))
    return spans
