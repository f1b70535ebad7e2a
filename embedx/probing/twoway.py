"""Two-way (crossed) grouping: folds where neither a speaker nor a sentence crosses the split.

Corpora where every speaker reads the same sentences (EMOVO, Emozionalmente, EmoDB) cross two
groupings: a probe trained on speaker A's "sentence 3" and tested on speaker B's "sentence 3"
can score by recognising the text. Speaker- *and* text-independent folds hold out a block of
speakers and a block of sentences at once:

* every speaker gets one of K speaker folds and every sentence one of K sentence folds
  (seeded, balanced by number of items);
* fold k tests the items whose speaker is in speaker fold k **and** whose sentence is in
  sentence fold k, and trains on the items whose speaker is not in speaker fold k and whose
  sentence is not in sentence fold k;
* the other items (a held-out speaker reading a training sentence, or the reverse) would leak
  one of the two into the other side, so fold k leaves them out; their number is reported per
  fold (:attr:`embedx.probing.cv.Folds.left_out`).

Each item is tested in at most one fold (about 1/K of the items are tested, on about
(1 - 1/K)² of them trained), which is the price of independence in both directions.
"""

from __future__ import annotations

import numpy as np

from embedx.errors import DataError, Param

__all__ = ["SCHEME", "balanced_assignment", "two_way_splits"]

#: the scheme name of two-way folds (``Folds.scheme``)
SCHEME = "two-way"
#: seeded assignments tried before an incomplete design is declared too sparse for the folds
ATTEMPTS = 50


def balanced_assignment(values: np.ndarray, n_splits: int, rng: np.random.Generator) -> dict[str, int]:
    """Assign every distinct value to one of ``n_splits`` folds, balancing item counts.

    Values are visited in a seeded random order, larger ones first (a stable sort of the
    shuffled values by count), each going to the fold with the fewest items so far (folds
    numbered in a seeded random order), so the
    folds hold about equal numbers of items and every fold gets at least one value when there
    are at least ``n_splits`` values.

    Args:
        values: ``(num_items,)`` the group value of every item.
        n_splits: number of folds.
        rng: the seeded generator.

    Returns:
        value -> fold number.
    """
    names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    # fold numbers in random order: which speaker block meets which sentence block is seeded too
    label = rng.permutation(n_splits)
    load = np.zeros(n_splits, dtype=np.int64)
    out: dict[str, int] = {}
    for i in order:
        k = int(np.argmin(load))  # the first of the lightest folds
        out[str(names[i])] = int(label[k])
        load[k] += counts[i]
    return out


def _check_counts(groups: np.ndarray, crossed: np.ndarray, n_splits: int, names: tuple[str, str]) -> None:
    """Both groupings have at least ``n_splits`` (and 2) distinct values.

    Raises:
        DataError: too few speakers or sentences, saying how many folds would work.
    """
    counts = {names[0]: len(np.unique(groups)), names[1]: len(np.unique(crossed))}
    for name, count in counts.items():
        if count < 2:
            raise DataError(f"two-way folds need at least 2 values of {name!r}; found {count}")
    fewest = min(counts.values())
    if fewest < n_splits:
        which = min(counts, key=counts.get)
        raise DataError(
            f"only {fewest} values of {which!r} cannot be split into {n_splits} two-way folds; "
            "use ", Param("folds", fewest), " or fewer"
        )


def two_way_splits(
    groups: np.ndarray, crossed: np.ndarray, n_splits: int, seed: int,
    names: tuple[str, str] = ("speaker", "sentence"),
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, ...]]:
    """Folds where no value of either grouping is on both sides.

    Args:
        groups: ``(num_items,)`` first grouping (speaker) of every item.
        crossed: ``(num_items,)`` second grouping (sentence) of every item.
        n_splits: number of folds K (both groupings are cut into K blocks).
        seed: seed of the assignment.
        names: the two column names, for messages.

    Returns:
        ``(splits, left_out)``: ``(train_idx, test_idx)`` sorted int64 positions per fold, and
        the number of items each fold leaves out (in neither part).

    Raises:
        DataError: fewer values than folds in either grouping, or no assignment of
            :data:`ATTEMPTS` that gives every fold a test and a training item (a design too
            sparse: no item pairs the fold's held-out speakers and sentences).
    """
    groups, crossed = np.asarray(groups).astype(str), np.asarray(crossed).astype(str)
    _check_counts(groups, crossed, n_splits, names)
    rng = np.random.default_rng(seed)
    for _ in range(ATTEMPTS):  # an incomplete design can leave a block empty: draw again (seeded)
        by_group, by_crossed = balanced_assignment(groups, n_splits, rng), balanced_assignment(crossed, n_splits, rng)
        a = np.array([by_group[g] for g in groups])  # (num_items,) speaker fold
        b = np.array([by_crossed[c] for c in crossed])  # (num_items,) sentence fold
        splits = [(np.flatnonzero((a != k) & (b != k)), np.flatnonzero((a == k) & (b == k)))
                  for k in range(n_splits)]
        if all(len(train) and len(test) for train, test in splits):
            left_out = tuple(len(groups) - len(train) - len(test) for train, test in splits)
            return [(train.astype(np.int64), test.astype(np.int64)) for train, test in splits], left_out
    raise DataError(
        f"no assignment of {ATTEMPTS} tried gives every two-way fold a test and a training item: too few "
        f"items pair a held-out {names[0]!r} with a held-out {names[1]!r} value (a design where not every "
        f"{names[0]} has every {names[1]}); use fewer ", Param("folds")
    )
