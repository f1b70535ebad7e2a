"""The registry of a study's analyses, keyed by name (the interface: :mod:`embedx.probing.analysis`).

The order of registration is the order in which a study runs them, the report writes their
files and their sections: the chance control first (its verdict opens the report), then the
probing controls, the model comparison, transfer and subgroups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from embedx.errors import ConfigError
from embedx.probing.analysis import Analysis, Note, Prepared
from embedx.probing.factorial import FactorialAnalysis
from embedx.probing.frames.summary import FramesAnalysis
from embedx.probing.mdl import MDLAnalysis
from embedx.probing.permutation import ChanceAnalysis
from embedx.probing.selectivity import SelectivityAnalysis
from embedx.probing.sets import SetsAnalysis
from embedx.probing.subgroups import SubgroupsAnalysis
from embedx.probing.transfer import TransferAnalysis
from embedx.probing.weighted import WeightedAnalysis

if TYPE_CHECKING:
    from embedx.probing.data import Dataset

__all__ = ["ANALYSES", "get", "prepare", "register"]

#: name -> analysis, in the order they run and are reported
ANALYSES: dict[str, Analysis] = {}


def register(analysis: Analysis) -> Analysis:
    """Add an analysis to the registry (after the built-in ones).

    Raises:
        ConfigError: the name is taken.
    """
    if analysis.name in ANALYSES:
        raise ConfigError(f"an analysis named {analysis.name!r} is already registered")
    ANALYSES[analysis.name] = analysis
    return analysis


def get(name: str) -> Analysis:
    """The registered analysis ``name``.

    Raises:
        ConfigError: no such analysis, naming the registered ones.
    """
    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r}; registered: {', '.join(ANALYSES)}")
    return ANALYSES[name]


def prepare(dataset: Dataset, options: Mapping[str, Any] | None = None,
            note: Note | None = None) -> tuple[Dataset, list[Prepared]]:
    """Prepare every analysis the options ask for, in registry order, before any fit.

    Args:
        dataset: the study's data.
        options: the ``embedx fit`` options by their Python names (``None``: none given).
        note: where to send console notes.

    Returns:
        ``(dataset, prepared)``: the data (narrowed by an analysis that needs it) and the
        analyses ready to run.
    """
    options = options or {}
    say = note or (lambda _msg: None)
    prepared = []
    for analysis in ANALYSES.values():
        if analysis.wanted(options):
            dataset, state = analysis.prepare(dataset, options, say)
            prepared.append(Prepared(analysis, state))
    return dataset, prepared


for _builtin in (FramesAnalysis(), ChanceAnalysis(), WeightedAnalysis(), SelectivityAnalysis(), SetsAnalysis(),
                 TransferAnalysis(), SubgroupsAnalysis(), FactorialAnalysis(), MDLAnalysis()):
    register(_builtin)
