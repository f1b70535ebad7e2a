"""Cross-validation splitters, a registry keyed by name.

The folds of a study are computed once (seeded) and shared by every configuration (feature
set × layer × pooling × model), so per-fold scores are paired and can be compared.

Schemes:

* ``stratified`` – stratified k-fold (classification; a regression target cannot be stratified,
  so for regression the scheme is ``kfold`` and is named so in every output).
* ``kfold`` – plain shuffled k-fold.
* ``group`` – speaker-independent k-fold: :class:`~sklearn.model_selection.StratifiedGroupKFold`
  (shuffled :class:`~sklearn.model_selection.GroupKFold` for regression); no group is ever in
  both the training and the test part of a fold.
* ``logo`` – leave-one-group-out.
* ``predefined`` – a split column with ``train`` / ``dev`` / ``test`` values. With ``dev`` and
  ``test`` the study's fold is train → dev (used to rank and compare configurations) and the
  best configuration is refitted on train + dev and scored once on the held-out test part;
  with only one of them the fold is train → that part.
* ``two-way`` – with a second, crossed group column (``--cross-group sentence``): folds where
  neither a speaker nor a sentence is on both sides (:mod:`embedx.probing.twoway`); chosen by
  ``auto`` (K = :data:`DEFAULT_FOLDS`, or fewer when there are fewer speakers or sentences),
  ``group`` (K = ``--folds``) or ``logo`` (K = the number of speakers); items that would cross are
  left out of that fold and counted (:attr:`Folds.left_out`).
* ``auto`` – ``group`` when a group column is given, else ``stratified`` (``kfold`` for
  regression), with :data:`DEFAULT_FOLDS` folds. When the number of folds was not given and the
  data are too small for that many, ``auto`` picks what works and says why (:attr:`Folds.reason`):
  with fewer groups (speakers) than folds, ``logo`` (one fold per speaker, the most training
  speakers per fold); ungrouped, with a class of fewer items than folds, as many stratified folds
  as that class has items. A scheme or a number of folds the user gave is never changed: it
  works or fails in one line that says what would work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embedx.errors import ConfigError, DataError, Param
from embedx.probing.tasks import CLASSIFICATION

__all__ = [
    "DEFAULT_FOLDS",
    "UNGROUPED",
    "Folds",
    "available_splitters",
    "check_inner_groups",
    "inner_cv",
    "make_folds",
    "register_splitter",
    "resolve_scheme",
]

#: schemes whose folds ignore groups (a speaker can be on both sides of a fold)
UNGROUPED = ("stratified", "kfold")
#: folds of k-fold schemes when none are given (``--folds``)
DEFAULT_FOLDS = 5


@dataclass
class Folds:
    """Folds shared by every configuration of a study.

    Attributes:
        scheme: the splitter name that produced them.
        splits: ``(train_idx, test_idx)`` int arrays, positions into the study's items.
        seed: the seed used to shuffle.
        holdout: ``(train_idx, test_idx)`` of a held-out test part (``predefined`` with dev and
            test), scored once with the best configuration; ``None`` otherwise.
        notes: remarks for the report (e.g. folds that are not speaker-independent).
        reason: why ``auto`` chose another scheme or number of folds than its default (e.g.
            ``"4 speakers < 5 folds: leave-one-speaker-out, 4 folds"``), for the console and the
            report; ``""`` when it did not.
        left_out: items each fold leaves out of both parts (two-way folds); ``()`` otherwise.
    """

    scheme: str
    splits: list[tuple[np.ndarray, np.ndarray]]
    seed: int
    holdout: tuple[np.ndarray, np.ndarray] | None = None
    notes: tuple[str, ...] = ()
    reason: str = ""
    left_out: tuple[int, ...] = ()

    @property
    def n_splits(self) -> int:
        """Number of folds."""
        return len(self.splits)

    def fold_of(self, num_items: int) -> np.ndarray:
        """``(num_items,)`` fold number of every item's test part (-1 when never tested)."""
        out = np.full(num_items, -1, dtype=np.int64)
        for k, (_, test) in enumerate(self.splits):
            out[test] = k
        return out

    def scored(self, num_items: int) -> int:
        """How many of ``num_items`` items some fold tests (two-way folds leave some untested)."""
        return int((self.fold_of(num_items) >= 0).sum())


Splitter = Callable[..., list[tuple[np.ndarray, np.ndarray]]]
_REGISTRY: dict[str, Splitter] = {}


def register_splitter(name: str, func: Splitter) -> None:
    """Register ``func(y, groups, split, n_splits, seed, task) -> splits`` under ``name``."""
    _REGISTRY[name] = func


def available_splitters() -> list[str]:
    """Scheme names ``--cv`` accepts (``auto`` included)."""
    return ["auto", *_REGISTRY]


def resolve_scheme(scheme: str, groups: np.ndarray | None) -> str:
    """Turn ``auto`` into ``group`` / ``stratified`` and validate the name.

    Raises:
        ConfigError: unknown scheme, or a group scheme without a group column.
    """
    if scheme == "auto":
        return "group" if groups is not None else "stratified"
    if scheme not in _REGISTRY:
        raise ConfigError(f"unknown CV scheme {scheme!r}; accepted: {', '.join(available_splitters())}")
    if scheme in ("group", "logo") and groups is None:
        raise ConfigError(f"CV scheme {scheme!r} needs a group column; give ", Param("group", "COLUMN"))
    return scheme


def _stratified(y, groups, split, n_splits, seed, task):
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == CLASSIFICATION:
        counts = np.bincount(y)
        if counts[counts > 0].min() < n_splits:
            raise DataError(
                f"class with {counts[counts > 0].min()} item(s) cannot be split into {n_splits} "
                "stratified folds; use fewer ", Param("folds"), f" (at most {counts[counts > 0].min()})"
            )
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        cv = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y))


def _kfold(y, groups, split, n_splits, seed, task):
    from sklearn.model_selection import KFold

    if len(y) < n_splits:
        raise DataError(f"{len(y)} items cannot be split into {n_splits} folds; use fewer ", Param("folds"))
    return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y))))


def _group(y, groups, split, n_splits, seed, task):
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    num_groups = len(np.unique(groups))
    if num_groups < 2:
        raise DataError("speaker-independent folds need at least 2 groups (speakers); found 1 "
                        "(--no-group for ungrouped folds)")
    if num_groups < n_splits:
        raise DataError(
            f"only {num_groups} groups cannot be split into {n_splits} group folds; "
            "use ", Param("cv", "logo"), f" (one fold per group, {num_groups} folds) "
            "or ", Param("folds", num_groups), " or fewer"
        )
    if task == CLASSIFICATION:
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y, groups))


def _logo(y, groups, split, n_splits, seed, task):
    from sklearn.model_selection import LeaveOneGroupOut

    if len(np.unique(groups)) < 2:
        raise DataError("leave-one-group-out needs at least 2 groups; found 1")
    return list(LeaveOneGroupOut().split(np.zeros(len(y)), y, groups))


def _partitions(split: np.ndarray | None) -> dict[str, np.ndarray]:
    if split is None:
        raise ConfigError("CV scheme 'predefined' needs a split column; give ", Param("split_col", "COLUMN"))
    values = np.asarray([str(v).strip().lower() for v in split])
    unknown = sorted(set(values.tolist()) - {"train", "dev", "test"})
    if unknown:
        raise DataError(
            f"split column has value(s) {', '.join(map(repr, unknown))}; accepted: train, dev, test"
        )
    parts = {name: np.flatnonzero(values == name) for name in ("train", "dev", "test")}
    if len(parts["train"]) == 0 or len(parts["dev"]) + len(parts["test"]) == 0:
        raise DataError("split column needs 'train' items and 'dev' or 'test' items")
    return parts


def _predefined(y, groups, split, n_splits, seed, task):
    parts = _partitions(split)
    evaluate = parts["dev"] if len(parts["dev"]) else parts["test"]
    return [(parts["train"], evaluate)]


for _name, _func in (
    ("stratified", _stratified),
    ("kfold", _kfold),
    ("group", _group),
    ("logo", _logo),
    ("predefined", _predefined),
):
    register_splitter(_name, _func)


def _auto_choice(
    y: np.ndarray, groups: np.ndarray | None, task: str, group_name: str | None
) -> tuple[str, int, str]:
    """``(scheme, n_splits, reason)`` of ``auto`` when no number of folds was given.

    :data:`DEFAULT_FOLDS` folds of ``group`` (with groups) or ``stratified`` (without), unless the
    data have fewer groups or a class has fewer items than that: then leave-one-group-out, or as
    many stratified folds as the smallest class has items; ``reason`` says so (``""`` otherwise).
    """
    from embedx.probing.columns import SPEAKER_COLUMNS

    k = DEFAULT_FOLDS
    if groups is not None:
        num_groups = len(np.unique(groups))
        if num_groups >= k or num_groups < 2:  # < 2: the group splitter says why nothing works
            return "group", k, ""
        if group_name is None or group_name in SPEAKER_COLUMNS:
            unit, scheme_name = "speakers", "leave-one-speaker-out"
        else:
            unit, scheme_name = f"{group_name!r} groups", "leave-one-group-out"
        # one group per test fold: every fold trains on all other groups, the most there can be
        reason = f"{num_groups} {unit} < {k} folds: {scheme_name}, {num_groups} folds"
        return "logo", num_groups, reason
    if task == CLASSIFICATION and len(y):
        counts = np.bincount(y)
        smallest = int(counts[counts > 0].min())
        if 2 <= smallest < k:
            return "stratified", smallest, (
                f"smallest class has {smallest} items < {k} folds: stratified, {smallest} folds")
    return "stratified", k, ""


def _missing_training_class(
    scheme: str, fold: int, name: str, holders: np.ndarray | None
) -> DataError:
    """The error of a fold whose training part lacks class ``name`` (``holders``: its groups)."""
    if holders is not None and scheme not in UNGROUPED and len(np.unique(holders)) == 1:
        # no speaker-independent split can help: testing that speaker leaves none to train on
        return DataError(
            f"class {name!r} occurs only in group (speaker) {str(holders[0])!r}, so no "
            "speaker-independent fold can train on it while testing that speaker; drop the "
            "class's items, or use --no-group (folds NOT speaker-independent)"
        )
    fix = ("another ", Param("cv")) if scheme in ("logo", "predefined") else (
        "fewer ", Param("folds"), " or another ", Param("cv"))
    return DataError(
        f"fold {fold} of CV scheme {scheme!r} has no training item of class {name!r}; use ", *fix
    )


def make_folds(
    y: np.ndarray,
    *,
    scheme: str = "auto",
    n_splits: int | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
    split: np.ndarray | None = None,
    task: str = CLASSIFICATION,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    group_name: str | None = None,
    crossed: np.ndarray | None = None,
    crossed_name: str | None = None,
) -> Folds:
    """Compute the folds of a study once.

    Args:
        y: ``(num_items,)`` integer-coded classes or float targets.
        scheme: a name from :func:`available_splitters`.
        n_splits: number of folds of k-fold schemes (at least 2); ``None``: not given, so
            :data:`DEFAULT_FOLDS`, and ``auto`` may choose another scheme or number that the
            data allow (see the module docstring; the choice is :attr:`Folds.reason`).
        seed: shuffling seed.
        groups: ``(num_items,)`` group (speaker) of every item, or ``None``.
        split: ``(num_items,)`` train/dev/test values for ``predefined``.
        task: ``classification`` or ``regression``.
        num_classes: number of classes (classification), to check every training part.
        class_names: names of the classes, for messages.
        group_name: the group column, for messages (``None``: speakers).
        crossed: ``(num_items,)`` a second group (e.g. sentence) crossed with ``groups``:
            two-way folds (see the module docstring); ``None``: none.
        crossed_name: the second group column, for messages.

    Returns:
        The folds.

    Raises:
        ConfigError: unknown scheme or missing column.
        DataError: too few items/groups for the folds, or a fold whose training part lacks a
            class (or whose test part lacks one in a k-fold scheme).
    """
    if groups is not None:
        groups = np.asarray(groups)
    if crossed is not None:
        return _two_way_folds(y, scheme, n_splits, seed, groups, np.asarray(crossed), task, num_classes,
                              class_names, (group_name or "speaker", crossed_name or "sentence"))
    reason = ""
    if scheme == "auto" and n_splits is None:
        scheme, n_splits, reason = _auto_choice(y, groups, task, group_name)
    n_splits = DEFAULT_FOLDS if n_splits is None else n_splits
    scheme = resolve_scheme(scheme, groups)
    if scheme == "stratified" and task != CLASSIFICATION:
        scheme = "kfold"  # named for what it is: regression targets are not stratified
    if scheme in ("stratified", "kfold", "group") and n_splits < 2:
        raise ConfigError(Param("folds", n_splits), " not accepted; it must be at least 2")
    notes: list[str] = []
    if scheme in UNGROUPED and groups is not None:
        notes.append(
            f"folds are {scheme} but NOT speaker-independent: a group can be in both the "
            "training and the test part of a fold (use --cv group)"
        )
    splits = _REGISTRY[scheme](y, groups, split, n_splits, seed, task)
    holdout = _predefined_holdout(split, groups, notes) if scheme == "predefined" else None
    splits = [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in splits]
    if task == CLASSIFICATION and num_classes is not None:
        _check_classes(y, splits + ([holdout] if holdout is not None else []), scheme, num_classes,
                       class_names, groups)
    return Folds(scheme=scheme, splits=splits, seed=seed, holdout=holdout, notes=tuple(notes),
                 reason=reason)


def _two_way_folds(y: np.ndarray, scheme: str, n_splits: int | None, seed: int, groups: np.ndarray | None,
                   crossed: np.ndarray, task: str, num_classes: int | None, class_names: list[str] | None,
                   names: tuple[str, str]) -> Folds:
    """The folds of :func:`make_folds` with a crossed second group (:mod:`embedx.probing.twoway`).

    Raises:
        ConfigError: no first group column, or a scheme that cannot be two-way.
        DataError: too few speakers/sentences for the folds, an empty fold, a class missing.
    """
    from embedx.probing import twoway

    if groups is None:
        raise ConfigError("two-way folds (", Param("cross_group", names[1]), ") need a first group "
                          "column too; give ", Param("group", "COLUMN"))
    if scheme not in ("auto", "group", "logo", twoway.SCHEME):
        raise ConfigError(Param("cv", scheme), " cannot be two-way; with ", Param("cross_group", names[1]),
                          " use auto, group or logo")
    fewest = min(len(np.unique(groups)), len(np.unique(crossed)))
    reason = ""
    if scheme == "logo":  # leave-one-speaker-out: every speaker a fold of its own
        n_splits = len(np.unique(groups))
        if len(np.unique(crossed)) < n_splits:
            raise DataError(
                f"two-way leave-one-{names[0]}-out needs as many {names[1]!r} values as {names[0]!r} "
                f"values ({n_splits}); found {len(np.unique(crossed))}; use ", Param("cv", "group"),
                " with ", Param("folds", len(np.unique(crossed))), " or fewer"
            )
    elif n_splits is None:
        n_splits = DEFAULT_FOLDS
        if scheme == "auto" and 2 <= fewest < DEFAULT_FOLDS:
            n_splits = fewest
            which = names[0] if len(np.unique(groups)) == fewest else names[1]
            reason = f"{fewest} {which!r} values < {DEFAULT_FOLDS} folds: two-way, {fewest} folds"
    if n_splits < 2:
        raise ConfigError(Param("folds", n_splits), " not accepted; it must be at least 2")
    splits, left_out = twoway.two_way_splits(groups, crossed, n_splits, seed, names)
    if task == CLASSIFICATION and num_classes is not None:
        _check_classes(y, splits, twoway.SCHEME, num_classes, class_names, groups)
    tested = sum(len(te) for _, te in splits)
    notes = (f"two-way folds: no {names[0]!r} and no {names[1]!r} value is on both sides of a fold; "
             f"each fold leaves out the items of a held-out {names[0]} with a training {names[1]} "
             f"and the reverse ({', '.join(map(str, left_out))} items), and {tested} of {len(y)} "
             "items are tested (each at most once)",)
    return Folds(scheme=twoway.SCHEME, splits=splits, seed=seed, notes=notes, reason=reason, left_out=left_out)


def _predefined_holdout(split: np.ndarray, groups: np.ndarray | None,
                        notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(train + dev, test)`` of a predefined split with a dev part; notes what it lacks."""
    parts = _partitions(split)
    holdout = None
    if len(parts["dev"]) and len(parts["test"]):
        holdout = (np.concatenate([parts["train"], parts["dev"]]), parts["test"])
    elif len(parts["test"]):
        notes.append(
            "the predefined split has no dev part, so configurations are ranked on the "
            "test part; the best configuration's score is optimistic"
        )
    if groups is not None:
        for a, b in ((parts["train"], parts["dev"]), (parts["train"], parts["test"])):
            shared = np.intersect1d(groups[a], groups[b])
            if len(shared):
                notes.append(
                    f"{len(shared)} group(s) occur in more than one split partition "
                    "(not speaker-independent)"
                )
                break
    return holdout


def _check_classes(y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], scheme: str,
                   num_classes: int, class_names: list[str] | None, groups: np.ndarray | None) -> None:
    """Every training part holds every class (and every test part, in a k-fold scheme).

    Raises:
        DataError: the first fold that lacks a class, naming it.
    """
    names = class_names or [str(k) for k in range(num_classes)]
    for k, (train, test) in enumerate(splits):
        missing = np.setdiff1d(np.arange(num_classes), y[train])
        if len(missing):
            raise _missing_training_class(scheme, k, names[missing[0]],
                                          None if groups is None else groups[y == missing[0]])
        missing = np.setdiff1d(np.arange(num_classes), y[test])
        if len(missing) and scheme in ("stratified", "group"):
            raise DataError(
                f"fold {k} of CV scheme {scheme!r} has no test item of class "
                f"{names[missing[0]]!r}; use fewer ", Param("folds")
            )


def check_inner_groups(folds: Folds, groups: np.ndarray, inner_folds: int) -> None:
    """Check that grouped nested tuning can split every outer training part into ``inner_folds``.

    A grouped inner split needs as many groups as inner folds in every training part, which few
    speakers (e.g. leave-one-speaker-out on 3) do not have; checked before any fit, not in a worker.

    Raises:
        ConfigError: a training part with fewer groups than ``inner_folds``, saying what works.
    """
    groups = np.asarray(groups)
    counts = [len(np.unique(groups[train])) for train, _ in folds.splits]
    fewest = min(counts)
    if fewest >= inner_folds:
        return
    fix = ("use ", Param("inner_folds", fewest)) if fewest >= 2 else ("drop ", Param("tune", switch=True))
    raise ConfigError(
        Param("inner_folds", inner_folds), f" needs {inner_folds} groups (speakers) in every training "
        f"part, but fold {counts.index(fewest)} of the {folds.scheme} CV trains on {fewest}; ", *fix
    )


def inner_cv(scheme: str, n_splits: int, seed: int, task: str, grouped: bool):
    """Splitter for nested tuning inside an outer training part.

    Grouped whenever the outer folds are grouped (``group``, ``logo`` or a predefined split
    with groups), so tuning is speaker-independent too.

    Args:
        scheme: the outer scheme.
        n_splits: inner folds.
        seed: shuffling seed.
        task: ``classification`` or ``regression``.
        grouped: whether groups are available.

    Returns:
        A scikit-learn splitter; pass ``groups`` to its ``split`` when ``grouped``.
    """
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    if grouped and scheme not in UNGROUPED:
        if task == CLASSIFICATION:
            return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if task == CLASSIFICATION:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return KFold(n_splits=n_splits, shuffle=True, random_state=seed)
