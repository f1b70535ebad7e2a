"""Deterministic shards of an item list: ``embedx extract --shard K/N``.

A corpus too large for one GPU (or one cluster job) is split into ``N`` shards, one process
each; ``embedx merge`` combines their files into one that equals an unsharded run. This module
decides which items a shard holds. It touches no file: the store records the result
(:meth:`embedx.store.StoreWriter.set_shard`) and :func:`embedx.store.merge` checks it.

Shards are balanced by total duration with the longest-processing-time greedy rule: items are
taken longest first (a stable sort, so equal durations keep their item order) and each goes to
the shard with the least total duration so far, ties to the lower shard id. Unknown (NaN)
durations count as 0. The result depends only on the item table (its order and durations),
which every shard process builds identically from the same inputs, so the N processes agree on
the split without talking to each other. A shard keeps its items in global order.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, Param

__all__ = ["AUTO", "Shard", "assign", "items_digest", "parse_shard", "select", "slurm_shard", "take"]

_SPEC = re.compile(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*")
_FORM = "K/N with 0 <= K < N, e.g. 0/4 .. 3/4 (K is 0-based), or auto in a SLURM array job"
#: the shard spec that takes K and N from the SLURM array job the process runs in
AUTO = "auto"
#: the SLURM array variables :func:`slurm_shard` reads
SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")


def slurm_shard(env: dict[str, str] | None = None) -> tuple[int, int]:
    """This SLURM array task's shard: ``K = (task id - min id) / step``, ``N`` = the task count.

    ``sbatch -a 1-4`` numbers its tasks 1..4 and ``-a 0-6:2`` 0, 2, 4, 6: both are
    4 shards, K = 0..3.

    Args:
        env: the environment (default: ``os.environ``).

    Returns:
        ``(k, n)``.

    Raises:
        ConfigError: not in an array job (a variable missing or not a number), or ids that do
            not map onto 0..N-1 (an array given as a list such as ``-a 1,5,9``).
    """
    env = os.environ if env is None else env
    missing = [v for v in SLURM_VARS[:3] if not str(env.get(v, "")).strip().isdigit()]
    if missing:
        raise ConfigError(Param("shard", AUTO), f" needs a SLURM array job, but ${missing[0]} is "
                          f"{'not set' if missing[0] not in env else repr(env[missing[0]])}; submit with "
                          "sbatch -a 0-3 (4 shards), or give ", Param("shard", "K/N"))
    task, count, low = (int(env[v]) for v in SLURM_VARS[:3])
    step = str(env.get(SLURM_VARS[3], "")).strip()
    step_size = int(step) if step.isdigit() and int(step) > 0 else 1
    k, off = divmod(task - low, step_size)
    if off or not 0 <= k < count:
        raise ConfigError(Param("shard", AUTO), f": SLURM array task {task} (min {low}, step {step_size}, "
                          f"count {count}) is not one of {count} evenly spaced ids; use a range such as "
                          f"sbatch -a 0-{count - 1}, or give ", Param("shard", "K/N"))
    return k, count


def parse_shard(spec: str) -> tuple[int, int]:
    """Parse a shard spec ``"K/N"`` (0-based K).

    Args:
        spec: e.g. ``"0/4"``, or ``"auto"``: this SLURM array task's shard (:func:`slurm_shard`).

    Returns:
        ``(k, n)``.

    Raises:
        ConfigError: not of the form K/N, N < 1, K < 0 or K >= N; ``auto`` outside an array job.
    """
    if isinstance(spec, str) and spec.strip().lower() == AUTO:
        return slurm_shard()
    m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if m is None:
        raise ConfigError(f"--shard {spec!r} is not a shard spec; expected {_FORM}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ConfigError(f"--shard {spec!r}: N must be at least 1, got {n}; expected {_FORM}")
    if not 0 <= k < n:
        raise ConfigError(f"--shard {spec!r}: K must be in 0..{n - 1}, got {k}; expected {_FORM}")
    return k, n


def _durations(durations: Iterable[float]) -> np.ndarray:
    d = np.asarray(durations, dtype=np.float64).ravel()  # (num_items,)
    return np.where(np.isfinite(d) & (d > 0), d, 0.0)


def assign(durations: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard id of every item, balancing total duration (longest-processing-time greedy).

    Args:
        durations: ``(num_items,)`` seconds per item; NaN (unknown) and negative count as 0.
        num_shards: N, at least 1.

    Returns:
        ``(num_items,)`` int64 shard ids in ``0..num_shards - 1``.

    Raises:
        ConfigError: num_shards < 1.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
        raise ConfigError(f"number of shards must be an integer >= 1, got {num_shards!r}")
    d = _durations(durations)
    out = np.zeros(len(d), dtype=np.int64)
    if num_shards == 1 or len(d) == 0:
        return out
    order = np.argsort(-d, kind="stable")  # longest first; equal durations keep item order
    heap = [(0.0, s) for s in range(int(num_shards))]  # (total so far, shard id): ties -> lower id
    for i, dur in zip(order.tolist(), d[order].tolist(), strict=True):
        total, s = heapq.heappop(heap)
        out[i] = s
        heapq.heappush(heap, (total + dur, s))
    return out


def select(durations: np.ndarray, k: int, n: int) -> np.ndarray:
    """Global indices of shard ``k`` of ``n``, sorted.

    Args:
        durations: ``(num_items,)`` seconds per item (see :func:`assign`).
        k: shard id, 0-based.
        n: number of shards.

    Returns:
        ``(shard_items,)`` int64 item indices in increasing order.

    Raises:
        ConfigError: n < 1 or k not in 0..n-1.
    """
    if not (isinstance(k, (int, np.integer)) and 0 <= k < n):
        raise ConfigError(f"shard {k!r} of {n!r}: K must be in 0..{n - 1}; expected {_FORM}")
    return np.flatnonzero(assign(durations, n) == k).astype(np.int64)


def items_digest(ids: Iterable[str]) -> str:
    """SHA-256 (hex) of the item ids joined by newlines: one item list, one digest.

    Args:
        ids: the full, unsharded item ids in order.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256()
    for i, item in enumerate(ids):
        h.update((("\n" if i else "") + str(item)).encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    """Which part of an item list a shard file holds.

    Attributes:
        index: K, 0-based.
        count: N.
        indices: ``(shard_items,)`` int64 global positions of the shard's items, increasing.
        total_items: items of the full list.
        items_digest: :func:`items_digest` of the full list's ids.
    """

    index: int
    count: int
    indices: np.ndarray
    total_items: int
    items_digest: str

    @property
    def label(self) -> str:
        """``"K/N"``."""
        return f"{self.index}/{self.count}"


def take(items: pd.DataFrame, errors: dict[int, str], spec: str
         ) -> tuple[pd.DataFrame, dict[int, str], Shard]:
    """Restrict a probed item table (and its probe errors) to one shard.

    Args:
        items: the full item table with ``id`` and ``duration`` columns, in global order.
        errors: global item index -> probe error message.
        spec: the shard spec ``"K/N"``.

    Returns:
        The shard's items (index reset, global order kept), its probe errors keyed by position
        in that table, and the :class:`Shard` to record in the store.

    Raises:
        ConfigError: a bad spec, or a shard without items (more shards than items).
    """
    k, n = parse_shard(spec)
    keep = select(items["duration"].to_numpy(dtype=np.float64, na_value=np.nan), k, n)
    if len(keep) == 0:
        raise ConfigError(
            f"--shard {spec!r}: shard {k}/{n} has no items (the inputs hold {len(items)} "
            f"items); use at most {len(items)} shards"
        )
    position = {int(g): i for i, g in enumerate(keep.tolist())}
    shard = Shard(index=k, count=n, indices=keep, total_items=len(items),
                  items_digest=items_digest(items["id"].tolist()))
    return (items.iloc[keep].reset_index(drop=True),
            {position[i]: msg for i, msg in errors.items() if i in position}, shard)
