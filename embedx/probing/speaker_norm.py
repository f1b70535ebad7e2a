"""Speaker normalisation (``--speaker-norm``): every group's features standardised with its own statistics.

Used inside each training fold by the study and on new items by a saved model
(:mod:`embedx.probing.predict`), so it lives here, apart from both.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["group_standardize"]


def group_standardize(X: np.ndarray, groups: np.ndarray, eps: float = 1e-8,
                      fallback: np.ndarray | None = None) -> np.ndarray:
    """Standardise every group's rows with that group's own mean and std (ddof=0).

    Uses features only. A feature that is constant within a group becomes 0 for that group. A
    group of one item has no spread of its own (its own statistics would turn it into zeros): it
    is standardised with the mean and std of ``fallback`` instead, with a warning.

    Args:
        X: ``(num_items, dim)`` features.
        groups: ``(num_items,)`` group of every row.
        eps: stds at or below this count as zero.
        fallback: ``(n, dim)`` rows whose statistics standardise one-item groups (in a fold: the
            training part's features); default: all rows of ``X``.

    Returns:
        ``(num_items, dim)`` float32 standardised features.
    """
    out = np.empty(X.shape, dtype=np.float32)
    _, codes, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    ref = np.asarray(X if fallback is None else fallback, dtype=np.float64)  # (n, dim)
    ref_mean, ref_std = ref.mean(axis=0), ref.std(axis=0)
    for g in range(len(counts)):
        rows = codes == g
        part = X[rows].astype(np.float64)  # (group_items, dim)
        mean, std = (part.mean(axis=0), part.std(axis=0)) if counts[g] > 1 else (ref_mean, ref_std)
        out[rows] = (part - mean) / np.where(std > eps, std, 1.0)
    single = int((counts == 1).sum())
    if single:
        warnings.warn(f"speaker normalisation: {single} group(s) with a single item standardised with "
                      f"the statistics of {'the training items' if fallback is not None else 'all items'}",
                      stacklevel=2)
    return out
