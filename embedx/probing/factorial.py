"""Factorial comparison of feature sets (and domains) on per-speaker scores (``fit --factors``).

Studies of model architecture × pre-fine-tuning language × test corpus ask which factors, and
which interactions, change the score. ``--factors factors.csv`` tags feature sets with factor
levels (a ``set`` column and one column per factor)::

    set,arch,lang
    hubert_en,hubert,en
    hubert_it,hubert,it
    wavlm_en,wavlm,en
    wavlm_it,wavlm,it

and with ``--domain corpus`` the test speakers' domain is one more factor, between speakers.

**The scores.** Every speaker gets one score per set: the main metric on that speaker's items,
predicted by the set's configuration chosen on the *other* speakers (the leave-one-speaker-out
selection of :func:`embedx.probing.sets.nested_predictions`, so a set with more layers gains
nothing from choosing among them); sets in one cell of the design are averaged. That gives a
``(speakers, cells)`` table, a repeated-measures design with speakers as the random factor.

**The tests** (the split-plot ANOVA, each effect against its own error term, with permutation
p-values that need no sphericity or normality):

* a within-speaker effect (a set factor or an interaction of set factors) is a vector of
  orthonormal contrasts ``c_s`` (``d`` = product of (levels - 1)) of each speaker's cell scores;
  ``F = S·|c̄|²/d ÷ Σ|c_s - c̄|²/(d(S-1))``, the univariate repeated-measures F. Under the null
  the contrasts of a speaker are symmetric about 0 (the speaker's sets are exchangeable within
  the effect), so flipping their signs speaker by speaker is a permutation test: exact over
  all ``2^S`` flips up to :data:`EXACT_MAX` speakers, else ``--bootstrap`` random flips (1000
  with ``--bootstrap 0``: ``--factors`` asks for the tests) with ``p = (1 + hits) / (1 + n)``. Other effects cancel in the contrasts of a complete design, so
  the test holds whatever they are.
* an effect with the domain (its main effect, or domain × set factors) compares the contrasts
  (for the main effect: the speaker's mean score) between domains: the one-way F of
  ``c_s`` on the domain, its p-value from permuting the domains among speakers.

``p_F`` is the parametric F p-value (sphericity assumed), for reference; ``p_perm`` decides,
Holm-corrected over the effects (``p_holm``). Calibrated by ``benchmarks/factorial_calibration.py``
(docs/statistics-factorial.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, Param
from embedx.probing.analysis import Analysis, Note
from embedx.text import number as _f
from embedx.text import p_value as _p

__all__ = ["EXACT_MAX", "FactorialAnalysis", "FactorialResult", "between_test", "contrasts", "factorial_tests",
           "read_factors", "speaker_scores", "within_test"]

#: up to this many speakers the sign-flip test enumerates every flip (2^S) and is exact
EXACT_MAX = 12
#: separator of an interaction's factors in effect names
TIMES = " × "


# ------------------------------------------------------------------------------ the statistics


def contrasts(levels: Sequence[int], effect: Sequence[int]) -> np.ndarray:
    """Orthonormal contrasts of one effect of a complete factorial design.

    Cells are ordered as :func:`itertools.product` orders the levels (the last factor fastest).

    Args:
        levels: number of levels of every factor.
        effect: the factors of the effect (indices; ``()``: the grand mean).

    Returns:
        ``(cells, d)``: columns orthonormal, each orthogonal to every other effect's.
    """
    parts = []
    for i, num in enumerate(levels):
        if i in effect:
            # an orthonormal basis of the vectors orthogonal to the constant: the centred identity's
            q, _ = np.linalg.qr(np.eye(num) - 1.0 / num)
            parts.append(q[:, : num - 1])  # (levels, levels - 1)
        else:
            parts.append(np.full((num, 1), 1.0 / np.sqrt(num)))  # (levels, 1): the mean over it
    out = parts[0]
    for part in parts[1:]:
        out = np.kron(out, part)  # (cells so far × levels, d so far × d of this factor)
    return out


def _sign_flips(num: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """``(rows, S)`` ±1 signs: every flip when ``S <= EXACT_MAX`` (exact), else random ones."""
    if num <= EXACT_MAX:
        codes = np.arange(2**num)[:, None]
        return 1.0 - 2.0 * ((codes >> np.arange(num)) & 1), True
    return np.where(rng.random((n_perm, num)) < 0.5, -1.0, 1.0), False


def _f_ratio(effect: float, error: float) -> float:
    """``effect / error`` mean squares; 0 when neither varies (no effect), inf for an exact one."""
    if error > 0:
        return effect / error
    return float("inf") if effect > 0 else 0.0


def within_test(c: np.ndarray, n_perm: int, rng: np.random.Generator) -> dict[str, float]:
    """Repeated-measures F of one within-speaker effect and its sign-flip p-value.

    Args:
        c: ``(S, d)`` every speaker's contrasts of the effect.
        n_perm: random sign flips beyond :data:`EXACT_MAX` speakers.
        rng: the seeded generator.

    Returns:
        ``F``, ``df_effect``, ``df_error``, ``p_F``, ``p_perm``, ``partial_eta2`` and
        ``n_perm`` (the flips used; ``2^S`` when exact).
    """
    from scipy import stats

    s, d = c.shape
    mean = c.mean(axis=0)
    ss_effect = s * float(mean @ mean)
    ss_error = float(((c - mean) ** 2).sum())
    df1, df2 = d, d * (s - 1)
    f = _f_ratio(ss_effect / df1, ss_error / df2)
    signs, exact = _sign_flips(s, n_perm, rng)
    # Σ|c_s|² is the same under every flip, so |Σ ε_s c_s|² orders the flips as F does
    observed = float(c.sum(axis=0) @ c.sum(axis=0))
    flipped = ((signs @ c) ** 2).sum(axis=1)  # (rows,)
    hits = int((flipped >= observed * (1 - 1e-12)).sum())
    p = hits / len(signs) if exact else (1 + hits) / (1 + len(signs))
    return {"F": f, "df_effect": df1, "df_error": df2, "p_F": float(stats.f.sf(f, df1, df2)),
            "p_perm": float(p), "partial_eta2": ss_effect / (ss_effect + ss_error) if ss_effect + ss_error else 0.0,
            "n_perm": len(signs)}


def _between_ss(c: np.ndarray, codes: np.ndarray, num_groups: int) -> np.ndarray:
    """``(rows,)`` between-group sums of squares of ``c`` for every row of group ``codes``."""
    codes = np.atleast_2d(codes)
    onehot = np.zeros(codes.shape + (num_groups,))
    np.put_along_axis(onehot, codes[..., None], 1.0, axis=-1)  # (rows, S, G)
    sums = np.einsum("rsg,sd->rgd", onehot, c)  # (rows, G, d)
    counts = onehot.sum(axis=1)  # (rows, G)
    return (sums**2 / counts[..., None]).sum(axis=(1, 2)) - (c.sum(axis=0) ** 2).sum() / len(c)


def between_test(c: np.ndarray, groups: np.ndarray, n_perm: int, rng: np.random.Generator) -> dict[str, float]:
    """One-way F of ``c`` between groups of speakers, its p-value by permuting the groups.

    Args:
        c: ``(S, d)`` every speaker's contrasts (``d = 1`` and the speaker's mean score for a
            between-speaker main effect).
        groups: ``(S,)`` every speaker's group (domain).
        n_perm: random permutations of the groups among the speakers.
        rng: the seeded generator.

    Returns:
        As :func:`within_test`.
    """
    from scipy import stats

    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    s, d = c.shape
    g = len(names)
    ss_total = float(((c - c.mean(axis=0)) ** 2).sum())
    ss_between = float(_between_ss(c, codes, g)[0])
    ss_error = ss_total - ss_between
    df1, df2 = d * (g - 1), d * (s - g)
    f = _f_ratio(ss_between / df1, ss_error / df2)
    perms = codes[np.argsort(rng.random((n_perm, s)), axis=1)]  # (n_perm, S): random orders of the groups
    hits = int((_between_ss(c, perms, g) >= ss_between * (1 - 1e-12)).sum())
    return {"F": f, "df_effect": df1, "df_error": df2, "p_F": float(stats.f.sf(f, df1, df2)),
            "p_perm": (1 + hits) / (1 + n_perm), "partial_eta2": ss_between / ss_total if ss_total else 0.0,
            "n_perm": n_perm}


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (monotone, capped at 1)."""
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def factorial_tests(scores: np.ndarray, factors: Mapping[str, Sequence[str]], *, domains: np.ndarray | None = None,
                    domain_name: str = "domain", n_perm: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every main effect and interaction of a complete factorial design on per-speaker scores.

    Args:
        scores: ``(S, cells)`` every speaker's score in every cell, cells in the order of
            :func:`itertools.product` over the factors' levels.
        factors: factor name -> its levels, in cell order.
        domains: ``(S,)`` every speaker's domain (a between-speaker factor), or ``None``.
        domain_name: the domain factor's name.
        n_perm: random sign flips / permutations per effect.
        seed: seed of the permutations.

    Returns:
        One row per effect: ``effect``, ``kind`` (``within``/``between``), ``F``,
        ``df_effect``, ``df_error``, ``p_F``, ``p_perm``, ``p_holm``, ``partial_eta2``,
        ``n_perm``.
    """
    names, levels = list(factors), [len(v) for v in factors.values()]
    rng = np.random.default_rng(seed)
    rows = []
    for size in range(0, len(names) + 1):
        for effect in itertools.combinations(range(len(names)), size):
            c = scores @ contrasts(levels, effect)  # (S, cells) @ (cells, d) -> (S, d)
            # contrasts of equal scores are rounding noise (~1e-17), whose F ratio is anything:
            # below 1e-12 of the scores' scale they are no difference at all
            c[np.abs(c) <= 1e-12 * max(1.0, float(np.abs(scores).max(initial=0.0)))] = 0.0
            if effect:
                rows.append({"effect": TIMES.join(names[i] for i in effect), "kind": "within",
                             **within_test(c, n_perm, rng)})
            if domains is not None:
                label = TIMES.join([domain_name, *(names[i] for i in effect)])
                rows.append({"effect": label, "kind": "between", **between_test(c, domains, n_perm, rng)})
    table = pd.DataFrame(rows)
    table["p_holm"] = _holm(table["p_perm"].to_numpy(dtype=float))
    return table[["effect", "kind", "F", "df_effect", "df_error", "p_F", "p_perm", "p_holm", "partial_eta2",
                  "n_perm"]]


# --------------------------------------------------------------------------- the study's side


def read_factors(path: str | Path, sets: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The factor levels of the study's feature sets from ``--factors``.

    Args:
        path: CSV with a ``set`` column and one column per factor.
        sets: the study's feature sets.

    Returns:
        ``(table, left)``: one row per tagged set of the study (index ``set``, one column per
        factor, levels as text), and the study's sets the file does not tag (left out).

    Raises:
        ConfigError: no such file.
        DataError: no ``set`` column or factor column, an unknown or repeated set, an empty
            level, a factor with one level, or a combination of levels no set has.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Param("factors"), f" {str(path)!r}: no such file")
    table = pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns=str.strip)
    if "set" not in table.columns or len(table.columns) < 2:
        raise DataError(Param("factors"), f" {str(path)!r} needs a 'set' column and at least one factor column; "
                        f"found: {', '.join(table.columns)}")
    table["set"] = table["set"].str.strip()
    unknown = sorted(set(table["set"]) - set(sets))
    if unknown:
        raise DataError(Param("factors"), f": unknown feature set(s) {', '.join(map(repr, unknown))}; the "
                        f"study's sets: {', '.join(sets)}")
    repeated = table["set"][table["set"].duplicated()].tolist()
    if repeated:
        raise DataError(Param("factors"), f": set {repeated[0]!r} is listed more than once")
    table = table.set_index("set")
    for name in table.columns:
        values = table[name].str.strip()
        if (values == "").any():
            raise DataError(Param("factors"), f": factor {name!r} has no level for set "
                            f"{values.index[values == ''][0]!r}")
        if values.nunique() < 2:
            raise DataError(Param("factors"), f": factor {name!r} has one level ({values.iloc[0]!r}); "
                            "a factor needs at least 2")
        table[name] = values
    cells = set(map(tuple, table.to_numpy().tolist()))
    for combo in itertools.product(*(sorted(table[c].unique()) for c in table.columns)):
        if combo not in cells:
            raise DataError(Param("factors"), ": no set has " + ", ".join(
                f"{c}={v}" for c, v in zip(table.columns, combo, strict=True)) + " (the design must be complete)")
    return table, [s for s in sets if s not in table.index]


@dataclass
class FactorialResult:
    """The factorial comparison of a study.

    Attributes:
        table: one row per effect (see :func:`factorial_tests`).
        cells: one row per cell of the design: its factor levels, ``sets``, ``mean`` (the mean
            per-speaker score) and ``sd`` (over speakers).
        scores: one row per (speaker, set): ``speaker``, ``set``, the factor levels,
            ``score`` (and the domain), for a model of one's own.
        metric: the main metric.
        num_speakers: speakers (clusters) scored.
        notes: remarks (sets left out, a domain that could not be a factor).
    """

    table: pd.DataFrame
    cells: pd.DataFrame
    scores: pd.DataFrame
    metric: str
    num_speakers: int
    notes: list[str] = field(default_factory=list)


def speaker_scores(result: Any, sets: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Every speaker's score with every set's leave-one-speaker-out selected configuration.

    Args:
        result: the finished study.
        sets: feature sets, in column order.

    Returns:
        ``(scores, names, kind, tested)``: ``(S, sets)`` the main metric on each speaker's
        items, ``(S,)`` the speakers (or item blocks: ``kind`` ``block``), and the mask of the
        study's evaluated items.
    """
    from embedx.probing import metrics as M
    from embedx.probing.compare import ClusterScores, clusters_of
    from embedx.probing.sets import nested_predictions

    ds, summary = result.dataset, result.summary
    metric = M.get_metric(result.metric, ds.task)
    tested = result.folds.fold_of(ds.num_items) >= 0
    y = ds.y[tested]
    groups = None if ds.groups is None else ds.groups[tested]
    clusters, kind = clusters_of(len(y), groups, int(result.settings["seed"]))
    single = summary[~summary["concat"].astype(bool)]
    preds = []
    for name in sets:
        part = single[single["feature_set"] == name]
        candidates = [result.predictions[(r.config, r.model)][tested] for r in part.itertuples()]
        preds.append(nested_predictions(y, candidates, metric, clusters, ds.num_classes or None)[0])
    scores = ClusterScores(np.asarray(y), preds, metric, clusters, ds.num_classes or None)
    s = scores.num_clusters_
    assign = np.full((len(sets), s, s), -1, dtype=np.int64)  # (set, speaker, clusters): one speaker each
    assign[:, np.arange(s), np.arange(s)] = np.arange(len(sets))[:, None]
    values = scores.evaluate(assign.reshape(-1, s)).reshape(len(sets), s).T  # (S, sets)
    names = np.unique(groups) if groups is not None else np.array([f"block{b}" for b in range(s)])
    return values, names, kind, tested


def _speaker_domains(result: Any, column: str, labels_csv: Any, tested: np.ndarray,
                     names: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """``(S,)`` every speaker's domain, or ``None`` (noted) when a speaker has several."""
    from embedx.probing.columns import item_columns

    ds = result.dataset
    values = item_columns(ds, [column], labels_csv=labels_csv, option="domain")[column][tested]
    frame = pd.DataFrame({"speaker": ds.groups[tested], "domain": values})
    per = frame.groupby("speaker")["domain"].agg(lambda v: sorted(set(v)))
    mixed = [s for s in names if len(per[s]) > 1]
    if mixed:
        notes.append(f"--domain {column} is not a factor: speaker {mixed[0]!r} has items in "
                     f"{', '.join(per[mixed[0]])} (a test corpus must hold whole speakers)")
        return None
    domains = np.array([per[s][0] for s in names])
    if len(np.unique(domains)) < 2:
        notes.append(f"--domain {column} is not a factor: every scored speaker is in {domains[0]!r}")
        return None
    return domains


def run_factorial(result: Any, factors: pd.DataFrame, *, domain: str | None = None,
                  labels_csv: Any = None, notes: Sequence[str] = ()) -> FactorialResult:
    """The factorial comparison of a finished study.

    Args:
        result: the study.
        factors: from :func:`read_factors`.
        domain: the ``--domain`` column (a between-speaker factor), or ``None``.
        labels_csv: the study's ``--labels`` CSV.
        notes: remarks so far (sets left out).

    Returns:
        The :class:`FactorialResult`.
    """
    notes = list(notes)
    sets = factors.index.tolist()
    values, names, kind, tested = speaker_scores(result, sets)  # (S, sets)
    domains = None
    if domain is not None and kind == "group":
        domains = _speaker_domains(result, domain, labels_csv, tested, names, notes)
    elif domain is not None:
        notes.append(f"--domain {domain} is not a factor: the study has no speakers (blocks of items)")
    levels = {c: sorted(factors[c].unique()) for c in factors.columns}
    combos = list(itertools.product(*levels.values()))
    cell_of = [combos.index(tuple(factors.loc[s_].tolist())) for s_ in sets]
    cells = np.stack([values[:, [j for j, c in enumerate(cell_of) if c == k]].mean(axis=1)
                      for k in range(len(combos))], axis=1)  # (S, cells)
    table = factorial_tests(cells, levels, domains=domains, domain_name=domain or "domain",
                            n_perm=int(result.settings["n_boot"]) or 1000, seed=int(result.settings["seed"]))
    cell_rows = [{**dict(zip(levels, combo, strict=True)), "sets": ", ".join(s_ for s_, c in zip(sets, cell_of, strict=True) if c == k),
                  "mean": float(cells[:, k].mean()), "sd": float(cells[:, k].std(ddof=1)) if len(cells) > 1 else 0.0}
                 for k, combo in enumerate(combos)]
    long = pd.DataFrame([{"speaker": names[i], "set": s_, **factors.loc[s_].to_dict(), "score": float(values[i, j]),
                          **({domain: domains[i]} if domains is not None else {})}
                         for i in range(len(names)) for j, s_ in enumerate(sets)])
    if kind != "group":
        notes.append("no speaker column: the units are seeded blocks of items, taken as independent")
    return FactorialResult(table=table, cells=pd.DataFrame(cell_rows), scores=long, metric=result.metric,
                           num_speakers=len(names), notes=notes)


def factorial_section(value: FactorialResult, alpha: float) -> list[str]:
    """Markdown lines of the report's factorial section."""
    lines = ["## Factorial comparison", "",
             "| effect | kind | F (df) | p (permutation) | p (Holm) | partial η² | matters? |", "|---|---|---|---|---|---|---|"]
    for r in value.table.itertuples():
        lines.append(f"| {r.effect} | {r.kind} | {_f(r.F)} ({r.df_effect}, {r.df_error}) | {_p(r.p_perm)} | "
                     f"{_p(r.p_holm)} | {_f(r.partial_eta2)} | {'yes' if r.p_holm < alpha else 'no'} |")
    factor_cols = [c for c in value.cells.columns if c not in ("sets", "mean", "sd")]
    lines += ["", "| " + " | ".join([*factor_cols, "sets", f"mean {value.metric}", "sd"]) + " |",
              "|" + "---|" * (len(factor_cols) + 3)]
    lines += ["| " + " | ".join([*(str(getattr(r, c)) for c in factor_cols), r.sets, _f(r.mean), _f(r.sd)]) + " |"
              for r in value.cells.itertuples()]
    lines += ["", (
        f"Scores per speaker ({value.num_speakers}): the {value.metric} of a speaker's items, predicted by each "
        "set's configuration chosen on the other speakers; sets of one cell averaged. Within-speaker effects: "
        "repeated-measures F of the effect's contrasts, p by flipping each speaker's contrasts (exact up to "
        f"{EXACT_MAX} speakers); effects with the domain: one-way F between domains, p by permuting the "
        f"domains among speakers. matters?: Holm-corrected permutation p < {alpha}. Per-speaker scores in "
        "factorial_scores.csv (for a mixed model of one's own); see docs/statistics-factorial.md.")]
    lines += [f"- {n}" for n in value.notes]
    return lines


class FactorialAnalysis(Analysis):
    """``--factors``: main effects and interactions of tagged sets (and domains) on per-speaker scores."""

    name = "factorial"

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """With ``--factors``."""
        return options.get("factors") is not None

    def prepare(self, dataset: Any, options: Mapping[str, Any], note: Note) -> tuple[Any, Any]:
        """Read and check the factors file (and the domain column) before any fit."""
        from embedx.probing.columns import item_columns

        sets = list(dict.fromkeys(b.feature_set for c in dataset.configs if not getattr(c, "concat", False)
                                  for b in c.blocks))
        factors, left = read_factors(options["factors"], sets)
        notes = [f"--factors: set(s) {', '.join(left)} not tagged, left out of the factorial"] if left else []
        for n in notes:
            note(n)
        if options.get("domain") is not None:
            item_columns(dataset, [options["domain"]], labels_csv=options.get("labels"), option="domain")
        return dataset, {"factors": factors, "domain": options.get("domain"), "labels": options.get("labels"),
                         "notes": notes}

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> FactorialResult:
        """:func:`run_factorial`."""
        return run_factorial(study, state["factors"], domain=state["domain"], labels_csv=state["labels"],
                             notes=state["notes"])

    def write(self, value: FactorialResult, out: Path, files: dict[str, str]) -> None:
        """``factorial.csv`` (the effects), ``factorial_cells.csv`` and ``factorial_scores.csv``."""
        value.table.to_csv(out / "factorial.csv", index=False)
        value.cells.to_csv(out / "factorial_cells.csv", index=False)
        value.scores.to_csv(out / "factorial_scores.csv", index=False)
        files.update(factorial="factorial.csv", factorial_cells="factorial_cells.csv",
                     factorial_scores="factorial_scores.csv")

    def section(self, value: FactorialResult, study: Any, files: Mapping[str, str]) -> list[str]:
        """:func:`factorial_section`."""
        return factorial_section(value, float(study.settings["alpha"]))
