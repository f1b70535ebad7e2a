"""The layer-specification grammar, one for both stages.

``embedx extract --layers`` picks among a model's layers ``0..L``; ``embedx fit --layers`` and
``--set NAME@LAYERS`` pick among the layers a feature set has stored. Both read the same grammar:
comma-separated terms, each one of

- ``all``: every available layer;
- ``last``: the highest available layer;
- ``K``: layer number ``K`` (``K >= 0``), which must be available;
- ``-K``: the ``K``-th available layer counted from the end, so ``-1`` is ``last``;
- ``A:B``: the available layers numbered ``A..B-1`` (half-open, as a Python slice; ``A`` or
  ``B`` may be left out; a negative bound counts back from one past the highest available
  layer number, so ``:-1`` is every layer but the highest).

"Available" is the model's layers when extracting and the stored layers when fitting. The two
stages used to disagree on ``-K``: extraction counted it over the model's layers, fitting over
the stored ones. The rule above is the one that agrees with the documented ``-1 == last`` in
both stages; when extracting, every layer is available and both readings are the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from embedx.errors import ConfigError, StoreError

__all__ = ["ACCEPTED", "ALL_LAYERS", "LayerTerm", "parse_layers", "parse_terms", "select_layers"]

#: the default of ``--layers`` in both stages: every layer
ALL_LAYERS = "all"
#: the forms quoted in every error message
ACCEPTED = "accepted: all, last, 0,6,12, -1, 4:9"

_RANGE = re.compile(r"^(-?\d*):(-?\d*)$")
#: a number line longer than any model: checks a range's form before the model is known
_ANY_MODEL = 1 << 30


@dataclass(frozen=True)
class LayerTerm:
    """One comma-separated term of a layer spec.

    Attributes:
        kind: ``"all"``, ``"last"``, ``"index"`` or ``"range"``.
        text: the term as written.
        index: the number of an ``"index"`` term (negative: counted from the end).
        start: a range's first bound (``None``: from the start).
        stop: a range's end bound, excluded (``None``: to the end).
    """

    kind: str
    text: str
    index: int = 0
    start: int | None = None
    stop: int | None = None

    def numbers(self, count: int) -> range:
        """The layer numbers ``0..count-1`` a range term covers (Python slice semantics)."""
        return range(count)[self.start:self.stop]


def parse_terms(spec: str | Sequence[int], accepted: str = ACCEPTED) -> list[LayerTerm]:
    """Split a layer spec into terms, checking only its form.

    Args:
        spec: the specification (``"0,4:7,-1"``), or a sequence of ints.
        accepted: what the error messages say is accepted (the caller may add the layer range).

    Returns:
        The terms in the order written.

    Raises:
        ConfigError: an empty spec, a term that is none of the forms, or a range that can select
            no layer whatever the model (``5:3``); the message quotes it.
    """
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        parts = [str(int(p)) for p in spec]
    if not parts:
        raise ConfigError(f"empty layer spec {spec!r}; {accepted}")
    terms = []
    for part in parts:
        low = part.lower()
        if low in ("all", "last"):
            terms.append(LayerTerm(low, part))
            continue
        m = _RANGE.match(part)
        if m:
            start = int(m.group(1)) if m.group(1) not in ("", "-") else None
            stop = int(m.group(2)) if m.group(2) not in ("", "-") else None
            term = LayerTerm("range", part, start=start, stop=stop)
            if not term.numbers(_ANY_MODEL):
                raise ConfigError(f"layer range {part!r} selects no layer; {accepted}")
            terms.append(term)
            continue
        try:
            terms.append(LayerTerm("index", part, index=int(part)))
        except ValueError:
            raise ConfigError(f"bad layer {part!r} in {spec!r}; {accepted}") from None
    return terms


def select_layers(spec: str | Sequence[int], available: Sequence[int], set_name: str | None = None) -> list[int]:
    """The layers a spec picks among the available ones.

    Args:
        spec: the specification (see the module docstring), or a sequence of ints.
        available: the layer numbers to pick from: ``range(num_layers)`` for a model, a feature
            set's stored layers when fitting.
        set_name: ``None`` when ``available`` are a model's layers (errors are
            :class:`ConfigError`); the feature set's name when they are its stored layers (a
            layer that is not stored is a :class:`StoreError` listing the stored ones).

    Returns:
        Sorted, distinct layer numbers, all in ``available``.

    Raises:
        ConfigError: a malformed spec (see :func:`parse_terms`); for a model, a layer out of range.
        StoreError: for a feature set, a layer it has not stored.
    """
    layers = sorted({int(k) for k in available})
    if not layers:
        raise ConfigError("no layer to select from")
    top = layers[-1] + 1  # the number line 0..highest the ranges are cut from
    accepted = f"{ACCEPTED} (layers 0..{top - 1})"
    if set_name is None:

        def unavailable(term: LayerTerm, k: int) -> Exception:
            return ConfigError(f"layer {k} out of range in {spec!r}; {accepted}")
    else:
        stored = ", ".join(map(str, layers))

        def unavailable(term: LayerTerm, k: int) -> Exception:
            if term.kind == "range":
                return StoreError(f"layer range {term.text!r} selects no stored layer of feature set "
                                  f"{set_name!r}; stored layers: {stored}")
            if k < 0:
                return StoreError(f"layer {k} out of range for feature set {set_name!r}; stored layers: {stored}")
            return StoreError(f"feature set {set_name!r} has no layer {k}; stored layers: {stored}")

    present = set(layers)
    picked: set[int] = set()
    for term in parse_terms(spec, accepted):
        if term.kind == "all":
            picked.update(layers)
        elif term.kind == "last":
            picked.add(layers[-1])
        elif term.kind == "range":
            numbers = term.numbers(top)
            if not numbers:
                raise ConfigError(f"layer range {term.text!r} selects no layer; {accepted}")
            inside = [k for k in numbers if k in present]
            if not inside:  # only when fitting: a model has every layer of its number line
                raise unavailable(term, 0)
            picked.update(inside)
        elif term.index < 0:
            if -term.index > len(layers):
                raise unavailable(term, term.index)
            picked.add(layers[term.index])
        else:
            if term.index not in present:
                raise unavailable(term, term.index)
            picked.add(term.index)
    return sorted(picked)


def parse_layers(spec: str | Sequence[int], num_layers: int | None) -> list[int]:
    """The layers of a model a spec picks (stage 1's ``--layers``).

    Args:
        spec: the specification (see the module docstring), or a sequence of ints.
        num_layers: number of layers the model exposes (``L + 1`` for an ``L``-block model);
            ``None`` checks only the form (before a model is loaded), returning ``[]``.

    Returns:
        Sorted list of distinct layer numbers in ``0..num_layers-1`` (``[]`` for ``None``).

    Raises:
        ConfigError: when the spec is malformed, empty or out of range; the message quotes it.
    """
    if num_layers is None:
        parse_terms(spec)
        return []
    return select_layers(spec, range(num_layers))
