"""What a study found, in words shared by the report and the console.

The headline of a study is more than "the best configuration": when several configurations
score the same (a **tie**: the same pooled score, e.g. every layer holding the same features),
none of them is best; when the 95% confidence set for the best holds several configurations,
the data do not single one out; and a score means little without the **chance level** of its
metric (:func:`embedx.probing.metrics.chance_level`) and whether the best's CI lies above it. When no
CIs were computed, the reason is named (``--bootstrap 0``, or too few speakers).

:func:`findings` computes these facts once from a :class:`~embedx.probing.study.StudyResult`;
:func:`headline_lines` words them (Markdown or plain text) and :func:`ranking_table` is the
console's ranking, laid out so that configuration and model names never wrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedx.probing.metrics import ChanceLevel, chance_level
from embedx.text import number as _f

__all__ = ["Findings", "findings", "fitted_table", "headline_lines", "ranking_table", "row_verdict", "TIE_TOLERANCE"]

#: two pooled scores closer than this (relative to the score's size) tie
TIE_TOLERANCE = 1e-9

#: the most configurations a sentence names before "and N more"
NAMED = 6


@dataclass
class Findings:
    """The headline facts of a study.

    Attributes:
        metric: the main metric.
        greater_is_better: its direction.
        score: the best pooled score.
        ci: the best's 95% CI, or ``None`` without statistics.
        tied: ``(config, model)`` of every configuration whose pooled score equals the best's,
            best first (length 1: no tie).
        tied_folds: the tied configurations also have identical per-fold scores.
        tied_predictions: the tied configurations make identical out-of-fold predictions.
        confidence_set: ``(config, model)`` in the 95% confidence set for the best, in rank
            order (empty without statistics).
        num_configs: configurations in the study.
        several_models: more than one model was fitted (names then carry the model).
        no_ci_reason: why there are no CIs (``None`` when there are).
        chance: the metric's chance level on the evaluated labels, or ``None``.
        versus_chance: ``"better"`` (the best's CI lies wholly on the good side of chance),
            ``"worse"``, ``"includes"``, or ``None`` (no CI or no chance level).
        p_permutation: the best's own label-permutation p-value (``--permutations``), and
        p_permutation_fwer: its family-wise one; ``None`` without permutations.
    """

    metric: str
    greater_is_better: bool
    score: float
    ci: tuple[float, float] | None
    tied: list[tuple[str, str]]
    tied_folds: bool
    tied_predictions: bool
    confidence_set: list[tuple[str, str]] = field(default_factory=list)
    num_configs: int = 1
    several_models: bool = False
    no_ci_reason: str | None = None
    chance: ChanceLevel | None = None
    versus_chance: str | None = None
    p_permutation: float | None = None
    p_permutation_fwer: float | None = None

    @property
    def is_tie(self) -> bool:
        """Whether several configurations share the best score."""
        return len(self.tied) > 1


def _no_ci_reason(settings: dict[str, Any]) -> str:
    from embedx.probing.compare import MIN_CLUSTERS

    if int(settings.get("n_boot", 0)) == 0:
        return "--bootstrap 0 was given"
    unit = "speaker" if settings.get("clusters") == "group" else "item block"
    n = settings.get("num_clusters")
    if n is not None and int(n) < MIN_CLUSTERS:
        return (f"only {n} {unit}{'s' if int(n) != 1 else ''} in the evaluated items; CIs and tests "
                f"need at least {MIN_CLUSTERS}")
    return "no CI could be computed"


def findings(result: Any) -> Findings:
    """The headline facts of a finished study.

    Args:
        result: a :class:`~embedx.probing.study.StudyResult`.

    Returns:
        The :class:`Findings`.
    """
    s, m, ds = result.summary, result.metric, result.dataset
    pooled = s[f"{m}_pooled"].to_numpy(dtype=float)
    best = float(pooled[0])
    keys = list(zip(s["config"], s["model"], strict=True))
    # the summary is ranked (ties in the order requested), so the tied ones lead it
    same = np.abs(pooled - best) <= TIE_TOLERANCE * max(1.0, abs(best))
    same[0] = True  # the best ties with itself, also when its score is NaN
    tied = [k for k, t in zip(keys, same, strict=True) if t]
    folds = [np.asarray(v, dtype=float) for v in s["fold_scores"][same]]
    preds = [np.asarray(result.predictions[k]) for k in tied if k in result.predictions]
    low, high = float(s["ci_low"].iloc[0]), float(s["ci_high"].iloc[0])
    tested = int(result.settings.get("n_boot", 0)) > 0 and bool(np.isfinite(s["ci_low"].to_numpy(dtype=float)).any())
    found = Findings(
        metric=m, greater_is_better=bool(result.greater_is_better), score=best,
        ci=(low, high) if tested and np.isfinite(low) else None, tied=tied,
        tied_folds=all(np.array_equal(folds[0], f) for f in folds[1:]),
        tied_predictions=len(preds) == len(tied) and all(np.array_equal(preds[0], p) for p in preds[1:]),
        confidence_set=[k for k, w in zip(keys, s["worse_than_best"].astype(bool), strict=True) if not w]
        if tested else [],
        num_configs=len(s), several_models=s["model"].nunique() > 1,
        no_ci_reason=None if tested else _no_ci_reason(result.settings),
    )
    evaluated = result.folds.fold_of(ds.num_items) >= 0
    found.chance = chance_level(m, ds.y[evaluated], ds.num_classes or None)
    if found.chance is not None and found.ci is not None:
        sign = 1.0 if found.greater_is_better else -1.0
        lo, hi = sorted(sign * (np.asarray(found.ci) - found.chance.value))
        found.versus_chance = "better" if lo > 0 else ("worse" if hi < 0 else "includes")
    if "p_permutation" in s:
        found.p_permutation = float(s["p_permutation"].iloc[0])
        found.p_permutation_fwer = float(s["p_permutation_fwer"].iloc[0])
    return found


def row_verdict(found: Findings, key: tuple[str, str], rank: int, worse: bool) -> str:
    """The ranking's ``worse?`` cell: ``tie`` for a tied best, ``best``, ``yes``/``no``, or ``–``.

    Args:
        found: the study's :class:`Findings`.
        key: ``(config, model)`` of the row.
        rank: its rank.
        worse: its ``worse_than_best`` flag.

    Returns:
        The cell text.
    """
    if found.is_tie and key in found.tied:
        return "tie"
    if rank == 1:
        return "best"
    return ("yes" if worse else "no") if found.ci is not None else "–"


def _names(found: Findings, keys: list[tuple[str, str]], markdown: bool) -> str:
    quote = "`" if markdown else ""
    text = [f"{quote}{c}{quote}" + (f" ({mdl})" if found.several_models else "") for c, mdl in keys[:NAMED]]
    more = len(keys) - NAMED
    return ", ".join(text) + (f" and {more} more" if more > 0 else "")


def _tie_line(found: Findings, markdown: bool) -> str:
    bold = "**" if markdown else ""
    ci = f" (95% CI {_f(found.ci[0])}–{_f(found.ci[1])})" if found.ci else ""
    line = (f"{bold}{len(found.tied)} configurations tie at {found.metric} {_f(found.score)}{bold}{ci}: "
            f"{_names(found, found.tied, markdown)}; none of them is best. ")
    if found.tied_predictions:
        line += ("Their out-of-fold predictions are identical, so their features carry the same "
                 "information for this probe (check whether the store holds the same features twice).")
    elif found.tied_folds:
        line += "Their per-fold scores are identical too, though their predictions differ."
    else:
        line += "They tie on the pooled score only; their per-fold scores differ."
    return line + (" The first in the order requested is the one refitted and saved."
                   if markdown else "")


def _set_line(found: Findings, markdown: bool) -> str | None:
    k, n = len(found.confidence_set), found.num_configs
    if found.ci is None or n < 2:
        return None
    if k == 1:
        return f"The 95% confidence set for the best holds only it: the other {n - 1} are significantly worse."
    what = "every configuration" if k == n else f"{k} of {n} configurations"
    return (f"The 95% confidence set for the best holds {what}: {_names(found, found.confidence_set, markdown)}; "
            f"the data do not single out one best ({n - k} significantly worse).")


def _chance_line(found: Findings) -> str | None:
    c = found.chance
    if c is None:
        return None
    line = f"Chance level of {found.metric}: {_f(c.value)} ({c.rule})"
    above = "above" if found.greater_is_better else "below"
    who = "the tied score" if found.is_tie else "the best"
    if found.versus_chance is not None:
        up = found.greater_is_better
        where = {"better": "lies above chance" if up else "lies below chance (lower is better)",
                 "worse": "lies below chance" if up else "lies above chance (lower is better)",
                 "includes": "includes chance"}[found.versus_chance]
        line += f"; {who}'s 95% CI {_f(found.ci[0])}–{_f(found.ci[1])} {where}"
    else:
        side = above if (found.score - c.value) * (1 if found.greater_is_better else -1) > 0 else "not " + above
        line += f"; {who} ({_f(found.score)}) is {side} it"
        # without a CI the permutation test is the only test of "above chance"; say which ran
        line += "" if found.p_permutation is not None else ", untested without a CI"
    if found.p_permutation is not None:
        line += f"; tested by label permutations: p_permutation = {found.p_permutation:.3g}"
    return line + "."


def headline_lines(found: Findings, *, markdown: bool = False, best_line: bool = True) -> list[str]:
    """The headline sentences: the tie or the confidence set, the chance level, why no CIs.

    Args:
        found: from :func:`findings`.
        markdown: quote names with backticks and bold the tie (the report); plain text otherwise.
        best_line: include the tie sentence (the report words the best itself when there is none).

    Returns:
        The sentences, each one line.
    """
    lines = [_tie_line(found, markdown)] if found.is_tie and best_line else []
    if len(found.confidence_set) > len(found.tied) or not found.is_tie:  # a set beyond the tie
        line = _set_line(found, markdown)
        lines += [line] if line else []
    chance = _chance_line(found)
    lines += [chance] if chance else []
    if found.no_ci_reason is not None:
        lines.append(f"No CIs or comparisons: {found.no_ci_reason}.")
    return lines


# -------------------------------------------------------------------------- console table


def ranking_table(result: Any, found: Findings, *, top: int = 8, width: int = 80):
    """The console's ranking as a rich table whose names never wrap.

    Columns are dropped, least important first (the model column when every shown row has the
    same model, which then goes into the title; ``Δ to best``; ``rank``; ``worse?``, which the
    headline lines word; the CI), until the
    table fits ``width`` with no cell wrapped; names are never broken or shortened.

    Args:
        result: a :class:`~embedx.probing.study.StudyResult`.
        found: its :class:`Findings`.
        top: rows shown.
        width: the console width.

    Returns:
        ``(table, hidden, need)``: the :class:`rich.table.Table`, how many rows were left out and
        the width it needs (more than ``width`` only when the names alone do not fit: print it
        that wide rather than break a name).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    s, m, folds = result.summary, result.metric, result.folds
    shown = s.head(top)
    one = folds.n_splits == 1
    where = "dev/test part" if one else "pooled out of fold"
    title = f"{m}, {where} ({folds.scheme} CV, {folds.n_splits} fold{'s' if not one else ''})"
    cells = {
        "rank": [str(r) for r in shown["rank"]],
        "features": [escape(str(c)) for c in shown["config"]],
        "model": [escape(str(r["model"])) + (" [yellow]⚠[/]" if r.get("warning") else "") for _, r in shown.iterrows()],
        m: [_f(v) for v in shown[f"{m}_pooled"]],
        "95% CI": [f"{_f(r['ci_low'])}–{_f(r['ci_high'])}" if found.ci else "–" for _, r in shown.iterrows()],
        "Δ to best": ["–" if (c, mdl) in found.tied or rank == 1 else _f(d) for c, mdl, rank, d
                      in zip(shown["config"], shown["model"], shown["rank"], shown["diff_to_best"], strict=True)],
        "worse?": [row_verdict(found, (c, mdl), int(rank), bool(w)) for c, mdl, rank, w
                   in zip(shown["config"], shown["model"], shown["rank"], shown["worse_than_best"], strict=True)],
    }
    drop = ["Δ to best", "rank", "worse?", "95% CI"]  # the headline lines name the set and ties
    if shown["model"].nunique() == 1 and not shown["warning"].astype(str).ne("").any():
        drop.insert(0, "model")
    measure = Console(width=100_000)  # unclamped: the natural width of the table
    columns = list(cells)
    while True:
        table = Table(title=title + ("" if "model" in columns else f", model {shown['model'].iloc[0]}"),
                      title_justify="left")
        for col in columns:
            names = col in ("features", "model")
            table.add_column(col, no_wrap=names, overflow="ignore" if names else "fold")
        for i in range(len(shown)):
            table.add_row(*(cells[col][i] for col in columns))
        need = Measurement.get(measure, measure.options, table).maximum  # nothing wraps
        if need <= width or not drop:
            break
        columns.remove(drop.pop(0))
    return table, len(s) - len(shown), need


def fitted_table(title: str, header: list[str], rows: list[list[str]], *, names: int, drop: list[str],
                 width: int) -> tuple[Any, int]:
    """A console table whose first ``names`` columns are never wrapped or cut.

    Columns of ``drop`` are left out, in that order, until the table fits ``width`` with no cell
    wrapped (the report and the CSV keep them).

    Args:
        title: the table's title.
        header: column titles; ``rows``: the cells (markup-escaped by the caller).
        names: how many leading columns hold names.
        drop: column titles that may go, least important first.
        width: the console width.

    Returns:
        ``(table, need)``: the :class:`rich.table.Table` and the width it needs (more than
        ``width`` only when the names alone do not fit: print it that wide rather than break one).
    """
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    measure = Console(width=100_000)  # unclamped: the natural width of the table
    keep = list(range(len(header)))
    left = [c for c in drop if c in header]
    while True:
        table = Table(title=title, title_justify="left")
        for k in keep:
            table.add_column(header[k], no_wrap=k < names, overflow="ignore" if k < names else "fold")
        for row in rows:
            table.add_row(*(row[k] for k in keep))
        need = Measurement.get(measure, measure.options, table).maximum
        if need <= width or not left:
            return table, need
        gone = header.index(left.pop(0))
        keep.remove(gone)

