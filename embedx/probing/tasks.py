"""The kinds of prediction task a study runs: the names every stage-2 module compares against.

Defined once here so that the data (task detection), the splitters, the models and the metrics
agree on the spelling; the module imports nothing, so any module may use it.
"""

from __future__ import annotations

__all__ = ["CLASSIFICATION", "REGRESSION", "TASKS"]

CLASSIFICATION = "classification"
REGRESSION = "regression"
#: what ``--task`` accepts: ``auto`` (decided from the labels, see
#: :func:`embedx.probing.data.detect_task`) or one of the two tasks
TASKS = ("auto", CLASSIFICATION, REGRESSION)
