"""The interface every analysis of a study shares: prepare → run → tables and figures → report.

An analysis adds something to a study's cross-validation: the chance control
(:mod:`embedx.probing.permutation`), the learned layer weights (:mod:`embedx.probing.weighted`), the
random-network control (:mod:`embedx.probing.selectivity`), the model comparison table
(:mod:`embedx.probing.sets`), cross-corpus transfer (:mod:`embedx.probing.transfer`) and subgroup
breakdowns (:mod:`embedx.probing.subgroups`). Each is one :class:`Analysis` registered by name in
:mod:`embedx.probing.analyses`; the study runs them (:func:`embedx.probing.study.run_study`) and the
report writes them (:func:`embedx.probing.report.write_report`), both in the registry's order, so a new
analysis (e.g. a frame-level probe) plugs in by registering one more class.

The stages, in the order a study calls them:

1. :meth:`Analysis.wanted` – whether the options ask for it (most run whenever the data allow);
2. :meth:`Analysis.prepare` – before any model is fitted: read and check what it needs (it may
   narrow the dataset, e.g. items whose label a label map leaves out);
3. :meth:`Analysis.run` – after the cross-validation, on the finished
   :class:`embedx.probing.study.Study`; ``None`` when it has nothing to say for this study;
4. :meth:`Analysis.write` – its tables and figures in the results folder;
5. :meth:`Analysis.headline` / :meth:`Analysis.section` – its lines of ``report.md``: before
   the data description (what must be read first), or after the ranking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # types only: the analyses import this module
    from embedx.probing.data import Dataset
    from embedx.probing.study import Study

__all__ = ["Analysis", "Prepared"]

#: where an analysis sends console notes
Note = Callable[[str], None]


class Analysis(ABC):
    """One analysis of a study (see the module docstring for the order of the stages).

    Attributes:
        name: the registry key, also the key of its result in ``StudyResult.analyses``.
        figures: ``(file key, caption)`` of its figures listed under the report's Figures.
    """

    name: ClassVar[str]
    figures: ClassVar[tuple[tuple[str, str], ...]] = ()

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """Whether the study's options ask for this analysis (default: always).

        Args:
            options: the ``embedx fit`` options by their Python names (empty when a study
                is run without them, e.g. :func:`embedx.probing.study.run_study` on its own).
        """
        return True

    def prepare(self, dataset: Dataset, options: Mapping[str, Any], note: Note) -> tuple[Dataset, Any]:
        """Check and read what the analysis needs, before any model is fitted.

        Args:
            dataset: the study's data.
            options: as in :meth:`wanted`.
            note: where to send console notes.

        Returns:
            ``(dataset, state)``: the data the study runs on (narrowed if need be) and what
            :meth:`run` gets back.

        Raises:
            EmbedxError: a bad option or data for this analysis, in one line.
        """
        return dataset, None

    @abstractmethod
    def run(self, study: Study, state: Any, *, progress: bool = False, log: Note | None = None) -> Any | None:
        """The analysis of a finished study; ``None`` when there is nothing to report."""

    def write(self, value: Any, out: Path, files: dict[str, str]) -> None:
        """Write its tables and figures into ``out``, adding ``kind -> file name`` to ``files``.

        The default writes nothing (an analysis whose numbers are columns of ``summary.csv``).
        """
        return None

    def headline(self, value: Any, study: Study) -> list[str]:
        """Report lines that open ``report.md``, before the data description (default: none)."""
        return []

    def section(self, value: Any, study: Study, files: Mapping[str, str]) -> list[str]:
        """Report lines after the ranking (default: none); ``files`` as written by :meth:`write`."""
        return []


@dataclass(frozen=True)
class Prepared:
    """An analysis with the state its :meth:`Analysis.prepare` returned, ready to run."""

    analysis: Analysis
    state: Any = None
