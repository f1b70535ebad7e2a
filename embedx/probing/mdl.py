"""MDL probing: the online codelength of the labels given a layer (Voita & Titov 2020).

``embedx fit --mdl`` asks, per configuration and model, how many bits it takes to transmit the
labels when sender and receiver both hold the features and agree on the probe. The *online*
(prequential) code sends the labels block by block:

1. the speakers are put in a seeded random order and cut into blocks at growing fractions of the
   items (:data:`TIMESTEPS`, Voita & Titov's 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and
   100 %), each cut moved to the nearest speaker boundary, so that no speaker is in two blocks;
2. the first block is sent with the uniform code, ``log2 K`` bits per item;
3. every further block is sent with the probe trained on all blocks before it (the study's model,
   built fresh, its preprocessing fitted on those blocks only): an item costs ``-log2 p(y | x)``
   bits, ``p`` the probe's predicted probability of its true label.

The codelength is the sum over blocks; the **compression** is the uniform codelength
``N log2 K`` divided by it. A layer from which a probe learns the label *quickly and reliably*
gives a short code (high compression); a layer where the probe can only fit the label by
memorising the training items pays for every confident mistake on the next speakers, so its
code is long even when its accuracy after training on everything looks fine. Under no signal
the compression is at most about 1 (a probe cannot beat the uniform code on labels it cannot
predict, and an over-confident one loses to it).

Details:

* a probability is mixed with the uniform distribution at weight :data:`EPSILON` so that no label
  costs more than ``log2(K / EPSILON)`` bits (a probe that never saw a class gives it 0);
* while the blocks before hold fewer than two classes no classifier can be trained: such a block is
  sent with the class counts seen so far, ``(n_k + 1) / (n + K)`` (Laplace's rule, the ``prior``
  coder of ``mdl.csv``);
* models without class probabilities (``svm``, ``ridge``, ``rbf_svm``) are left out, with a note;
  ``--tune`` does not apply (the default hyper-parameters are used); ``--speaker-norm`` does;
* classification only: a regression target has no finite code without a noise model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedx.errors import ConfigError, DataError, Param
from embedx.probing.analysis import Analysis
from embedx.probing.tasks import CLASSIFICATION
from embedx.text import markdown_table, plural
from embedx.text import number as _f

__all__ = ["EPSILON", "TIMESTEPS", "MDLAnalysis", "MDLResult", "OnlineCode", "label_bits", "mdl_table",
           "online_code", "probabilistic_models", "speaker_blocks"]

#: fractions of the items at which the blocks end (Voita & Titov 2020, Section 3.2)
TIMESTEPS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
#: weight of the uniform distribution mixed into every predicted distribution
EPSILON = 1e-6


# ------------------------------------------------------------------------------ the code


def speaker_blocks(groups: np.ndarray | None, num_items: int, seed: int,
                   timesteps: Sequence[float] = TIMESTEPS) -> list[np.ndarray]:
    """The online code's blocks: whole speakers in a seeded order, cut near ``timesteps``.

    Args:
        groups: ``(num_items,)`` speaker of every item, or ``None`` (every item its own unit).
        num_items: number of items.
        seed: seed of the speakers' order.
        timesteps: increasing fractions of the items at which the blocks end (the last is 1).

    Returns:
        The blocks in sending order, each the sorted item indices of its speakers; together they
        hold every item once. Cuts that fall on the same speaker boundary merge.

    Raises:
        DataError: fewer than two speakers (no block can be sent with a probe).
    """
    units = np.arange(num_items) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    num_units = int(units.max()) + 1 if num_items else 0
    if num_units < 2:
        raise DataError(Param("mdl", switch=True), f" needs at least 2 speakers to send one block with a probe; "
                        f"got {num_units}")
    order = np.random.default_rng([seed, 22]).permutation(num_units)  # a stream of its own
    cumulative = np.cumsum(np.bincount(units, minlength=num_units)[order])  # items in the first s+1 speakers
    cuts = sorted({int(np.argmin(np.abs(cumulative - f * num_items))) + 1 for f in timesteps} | {num_units})
    rank = np.empty(num_units, dtype=np.int64)
    rank[order] = np.arange(num_units)  # unit -> its place in the sending order
    place = rank[units]  # (num_items,) place of every item's speaker
    starts = [0, *cuts[:-1]]
    return [np.flatnonzero((place >= lo) & (place < hi)) for lo, hi in zip(starts, cuts, strict=True)]


def label_bits(proba: np.ndarray, y: np.ndarray) -> float:
    """``-sum log2 p(y_i)`` of labels ``y`` under ``(n, K)`` probabilities (mixed with :data:`EPSILON`)."""
    k = proba.shape[1]
    p = (1.0 - EPSILON) * proba[np.arange(len(y)), y] + EPSILON / k
    return float(-np.sum(np.log2(p)))


@dataclass(frozen=True)
class OnlineCode:
    """The online code of one configuration's labels.

    Attributes:
        bits: ``(blocks,)`` bits spent on every block.
        items: ``(blocks,)`` items of every block.
        coders: how each block was sent: ``uniform``, ``prior`` or ``probe``.
        num_classes: K.
    """

    bits: np.ndarray
    items: np.ndarray
    coders: tuple[str, ...]
    num_classes: int

    @property
    def codelength(self) -> float:
        """Total bits of the online code."""
        return float(self.bits.sum())

    @property
    def uniform(self) -> float:
        """Bits of the uniform code of every item, ``N log2 K``."""
        return float(self.items.sum() * np.log2(self.num_classes))

    @property
    def compression(self) -> float:
        """Uniform codelength / online codelength (> 1: the probe compresses the labels)."""
        return self.uniform / self.codelength


def _probabilities(estimator: Any, X: np.ndarray, num_classes: int) -> np.ndarray:
    """``(n, num_classes)`` probabilities of a fitted classifier; classes it never saw get 0."""
    proba = np.zeros((len(X), num_classes))
    proba[:, np.asarray(estimator.classes_, dtype=np.int64)] = estimator.predict_proba(X)
    return proba


def online_code(estimator: Any, X: np.ndarray, y: np.ndarray, blocks: Sequence[np.ndarray], num_classes: int,
                *, groups: np.ndarray | None = None, speaker_norm: bool = False) -> OnlineCode:
    """Send ``y`` block by block, each block with ``estimator`` fitted on the blocks before it.

    Args:
        estimator: an unfitted classifier with ``predict_proba`` (cloned for every block).
        X: ``(num_items, ...)`` features.
        y: ``(num_items,)`` class codes in ``0..num_classes-1``.
        blocks: item indices of every block, in sending order (see :func:`speaker_blocks`).
        num_classes: K, the size of the uniform code's alphabet.
        groups: ``(num_items,)`` speakers, for ``speaker_norm``.
        speaker_norm: standardise each part by its own speakers' statistics, as the study does.

    Returns:
        The :class:`OnlineCode`.
    """
    from sklearn.base import clone

    from embedx.probing.speaker_norm import group_standardize

    y = np.asarray(y, dtype=np.int64)
    bits = [len(blocks[0]) * float(np.log2(num_classes))]
    coders = ["uniform"]
    for j in range(1, len(blocks)):
        train, coded = np.concatenate(blocks[:j]), blocks[j]
        if len(np.unique(y[train])) < 2:  # no classifier can learn from one class: Laplace's rule
            counts = np.bincount(y[train], minlength=num_classes)
            proba = np.tile((counts + 1.0) / (len(train) + num_classes), (len(coded), 1))
            bits.append(label_bits(proba, y[coded]))
            coders.append("prior")
            continue
        Xtr, Xco = X[train], X[coded]  # (n_train, dim), (n_coded, dim)
        if speaker_norm and groups is not None:
            Xtr = group_standardize(Xtr, groups[train])
            Xco = group_standardize(Xco, groups[coded], fallback=X[train])
        probe = clone(estimator).fit(Xtr, y[train])
        bits.append(label_bits(_probabilities(probe, Xco, num_classes), y[coded]))
        coders.append("probe")
    return OnlineCode(bits=np.asarray(bits), items=np.array([len(b) for b in blocks]), coders=tuple(coders),
                      num_classes=num_classes)


# ------------------------------------------------------------------------------ the study


def probabilistic_models(models: Sequence[str], task: str = CLASSIFICATION) -> list[str]:
    """The models among ``models`` whose classifier predicts class probabilities (what MDL needs)."""
    from embedx.probing.models import build_model

    return [m for m in models if hasattr(build_model(m, task), "predict_proba")]


@dataclass(frozen=True)
class MDLResult:
    """What :class:`MDLAnalysis` found.

    Attributes:
        table: one row per (configuration, model): ``set, pooling, layer, config, model, items,
            blocks, uniform_bits, codelength_bits, compression, mdl_rank, <metric>_pooled,
            warning, bits_block_0, ...`` (``mdl_rank``: 1 = the shortest code among the single
            layers of the same set, pooling and model; ``warning``: the first warning of its fits).
        blocks: one row per block: ``block, speakers, items, first_item_fraction, coder``.
        skipped: models of the study left out (no class probabilities).
        unit: what the blocks are made of: ``speakers`` (grouped data) or ``items``.
    """

    table: pd.DataFrame
    blocks: pd.DataFrame
    skipped: tuple[str, ...]
    unit: str = "speakers"


def _code_one(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, blocks: Sequence[np.ndarray],
              model: str, num_classes: int, settings: Mapping[str, Any]) -> tuple[OnlineCode, str]:
    """One configuration and model's online code and its first fit warning (runs in a joblib worker)."""
    import warnings

    from embedx.errors import one_line
    from embedx.probing.fitting import limit_threads
    from embedx.probing.models import build_model

    threads = settings.get("threads") or 1
    estimator = build_model(model, CLASSIFICATION, seed=settings["seed"], class_weight=settings["class_weight"],
                            n_jobs=threads)
    with limit_threads(threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # kept for mdl.csv, as the study keeps its fits' warnings
        code = online_code(estimator, X, y, blocks, num_classes, groups=groups,
                           speaker_norm=bool(settings.get("speaker_norm")))
    messages = sorted({one_line(w.message, first_line=True) for w in caught
                       if not issubclass(w.category, DeprecationWarning)})
    return code, messages[0][:200] if messages else ""


def mdl_table(study: Any, blocks: Sequence[np.ndarray], models: Sequence[str]) -> pd.DataFrame:
    """The online code of every (configuration, model) of ``study`` whose model is in ``models``.

    Args:
        study: a finished :class:`~embedx.probing.study.Study`.
        blocks: the blocks (see :func:`speaker_blocks`).
        models: the models to code with (those with class probabilities).

    Returns:
        The table of :attr:`MDLResult.table`, in the summary's order of sets, poolings, models
        and layers.
    """
    from joblib import Parallel, delayed

    ds, metric = study.dataset, study.metric
    s = study.summary
    rows = s[s["model"].isin(list(models))]
    configs = {c.name: c for c in ds.configs}
    jobs = int(study.settings.get("jobs") or 1)
    codes = Parallel(n_jobs=jobs)(
        delayed(_code_one)(ds.X[r["config"]], ds.y, ds.groups, blocks, r["model"], ds.num_classes, study.settings)
        for _, r in rows.iterrows())
    out = []
    for (_, r), (code, warning) in zip(rows.iterrows(), codes, strict=True):
        config = configs[r["config"]]
        row = {"set": config.feature_set, "pooling": config.pooling,
               "layer": np.nan if config.layer is None else config.layer, "config": r["config"],
               "model": r["model"], "items": int(code.items.sum()), "blocks": len(code.bits),
               "uniform_bits": code.uniform, "codelength_bits": code.codelength,
               "compression": code.compression, f"{metric}_pooled": float(r[f"{metric}_pooled"]),
               "warning": warning}
        row.update({f"bits_block_{j}": b for j, b in enumerate(code.bits)})
        out.append(row)
    table = pd.DataFrame(out).sort_values(["set", "pooling", "model", "layer"], kind="stable", ignore_index=True)
    single = table["layer"].notna()
    table["mdl_rank"] = pd.NA
    table.loc[single, "mdl_rank"] = (table[single].groupby(["set", "pooling", "model"])["codelength_bits"]
                                     .rank(method="min").astype(int))
    first = ["set", "pooling", "layer", "config", "model", "items", "blocks", "uniform_bits", "codelength_bits",
             "compression", "mdl_rank", f"{metric}_pooled", "warning"]
    return table[first + [c for c in table.columns if c not in first]]


def _blocks_frame(blocks: Sequence[np.ndarray], groups: np.ndarray | None, y: np.ndarray) -> pd.DataFrame:
    """One row per block: its speakers, items, the fraction of the items sent before it, its coder."""
    n = sum(len(b) for b in blocks)
    coders = ["uniform"] + ["prior" if len(np.unique(y[np.concatenate(blocks[:j])])) < 2 else "probe"
                            for j in range(1, len(blocks))]
    before = np.cumsum([0, *[len(b) for b in blocks[:-1]]])
    return pd.DataFrame({
        "block": np.arange(len(blocks)),
        "speakers": [len(b) if groups is None else len(np.unique(groups[b])) for b in blocks],
        "items": [len(b) for b in blocks],
        "first_item_fraction": before / n,
        "coder": list(coders),
    })


def plot_mdl_curve(table: pd.DataFrame, path: Any) -> bool:
    """Online codelength vs. layer, one line per model, one panel per set and pooling.

    Returns:
        Whether a figure was written (``False`` when no configuration has a single layer).
    """
    single = table[table["layer"].notna()]
    if single.empty:
        return False
    from embedx.figures import pyplot

    plt = pyplot()
    panels = list(dict.fromkeys(zip(single["set"], single["pooling"], strict=True)))
    models = list(dict.fromkeys(single["model"]))
    scale, unit = (1000.0, "kbits") if float(single["uniform_bits"].max()) >= 10_000 else (1.0, "bits")
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.0, 4.6 * len(panels)), 3.8), squeeze=False,
                             layout="constrained")
    for ax, (fset, pooling) in zip(axes[0], panels, strict=True):
        part = single[(single["set"] == fset) & (single["pooling"] == pooling)]
        for mi, model in enumerate(models):
            line = part[part["model"] == model]
            if len(line):
                ax.plot(line["layer"].to_numpy(dtype=float), line["codelength_bits"].to_numpy() / scale, "o-",
                        color=f"C{mi}", label=model)
        ax.axhline(float(part["uniform_bits"].iloc[0]) / scale, color="grey", ls="--", lw=1, label="uniform code")
        ax.set_title(f"{fset} ({pooling})")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        layers = np.unique(part["layer"].to_numpy(dtype=int))
        if len(layers) <= 30:
            ax.set_xticks(layers)
    axes[0][0].set_ylabel(f"online codelength ({unit}; lower is better)")
    axes[0][0].legend(fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------ analysis


class MDLAnalysis(Analysis):
    """``embedx fit --mdl``: ``mdl.csv``, ``mdl_blocks.csv``, the codelength curve and a section."""

    name = "mdl"
    figures = (("mdl_plot", "Online codelength (MDL) per layer"),)

    def wanted(self, options: Mapping[str, Any]) -> bool:
        """Only with ``mdl=True`` (``--mdl``)."""
        return bool(options.get("mdl"))

    def prepare(self, dataset: Any, options: Mapping[str, Any], note: Any) -> tuple[Any, Any]:
        """Check the task and the models, and cut the speakers into blocks (before any fit).

        Raises:
            ConfigError: a regression task, or no model with class probabilities.
            DataError: fewer than two speakers.
        """
        from embedx.probing.models import parse_models

        if dataset.task != CLASSIFICATION:
            raise ConfigError(Param("mdl", switch=True), " codes class labels; the task is "
                              f"{dataset.task} (a continuous target has no codelength without a noise model)")
        models = parse_models(options.get("models"), dataset.task)
        usable = probabilistic_models(models)
        if not usable:
            raise ConfigError(Param("mdl", switch=True), f" needs a model with class probabilities; "
                              f"{', '.join(models)} {'has' if len(models) == 1 else 'have'} none (e.g. add logreg to ",
                              Param("models"), ")")
        blocks = speaker_blocks(dataset.groups, dataset.num_items, int(options.get("seed") or 0))
        skipped = tuple(m for m in models if m not in usable)
        note(f"MDL: {plural(len(blocks), 'block')} of whole "
             f"{'speakers' if dataset.groups is not None else 'items'}, coded with {', '.join(usable)}"
             + (f" ({', '.join(skipped)}: no class probabilities, left out)" if skipped else ""))
        return dataset, {"blocks": blocks, "models": usable, "skipped": skipped}

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> MDLResult:
        """The online code of every configuration with every usable model."""
        models = list(state["models"])
        if any(getattr(c, "weighted", False) for c in study.dataset.configs):
            from embedx.probing.weighted import MODEL

            models.append(MODEL)
        ds = study.dataset
        return MDLResult(table=mdl_table(study, state["blocks"], models),
                         blocks=_blocks_frame(state["blocks"], ds.groups, ds.y), skipped=state["skipped"],
                         unit="items" if ds.groups is None else "speakers")

    def write(self, value: MDLResult, out: Path, files: dict[str, str]) -> None:
        """``mdl.csv``, ``mdl_blocks.csv`` and ``mdl.png``."""
        value.table.to_csv(out / "mdl.csv", index=False)
        files["mdl"] = "mdl.csv"
        value.blocks.to_csv(out / "mdl_blocks.csv", index=False)
        files["mdl_blocks"] = "mdl_blocks.csv"
        if plot_mdl_curve(value.table, out / "mdl.png"):
            files["mdl_plot"] = "mdl.png"

    def section(self, value: MDLResult, study: Any, files: Mapping[str, str]) -> list[str]:
        """What the codelength means, the table, and where the shortest code and the best score are."""
        return mdl_section(value, study.metric, study.best)


def mdl_section(value: MDLResult, metric: str, best: tuple[str, str]) -> list[str]:
    """Markdown lines of the report's MDL section (``best``: the study's best configuration and model)."""
    t, b, speakers = value.table, value.blocks, value.unit
    lines = ["## MDL probing (online codelength)", ""]
    lines.append(
        "How many bits it takes to send the labels when a probe trained on what was sent before predicts "
        f"the next {speakers} (Voita & Titov 2020, online code): the {speakers} were put in a seeded order and "
        f"cut into {len(b)} blocks ({', '.join(str(n) for n in b['items'])} items); the first block is sent "
        "with the uniform code (log2 K bits per item), every next one with the study's model trained on all "
        "blocks before it (no speaker is in a block and its training part). A short code (compression = "
        "uniform / online codelength well above 1) means a probe extracts the label from few examples and "
        "generalises to new speakers; accuracy alone cannot tell that apart from a probe that reaches the "
        "same score only by memorising many examples, which pays for its confident mistakes here. Under no "
        "signal the compression is about 1 or below. Rank 1 is the shortest code among the layers of a set "
        "and model; all rows and the bits of every block are in `mdl.csv` (blocks: `mdl_blocks.csv`).")
    if value.skipped:
        lines += ["", f"Left out: {', '.join(value.skipped)} (no class probabilities, so no codelength)."]
    lines.append("")
    header = ["set", "pooling", "model", "layer", "codelength (bits)", "compression", "MDL rank", f"{metric}"]
    rows = [[f"`{r['set']}`", r["pooling"], r["model"], "–" if pd.isna(r["layer"]) else str(int(r["layer"])),
             f"{r['codelength_bits']:.0f}", _f(r["compression"], 2), "–" if pd.isna(r["mdl_rank"]) else str(r["mdl_rank"]),
             _f(r[f"{metric}_pooled"])] for _, r in t.head(60).iterrows()]
    lines.append(markdown_table(header, rows))
    shortest = t.loc[t["codelength_bits"].idxmin()]
    lines += ["", f"Shortest code: `{shortest['config']}` with {shortest['model']}, "
              f"{shortest['codelength_bits']:.0f} bits against {shortest['uniform_bits']:.0f} for the uniform code "
              f"(compression {_f(shortest['compression'], 2)})."]
    top = t[(t["config"] == best[0]) & (t["model"] == best[1])]
    if len(top) and not pd.isna(top["mdl_rank"].iloc[0]):
        lines[-1] += (f" The best configuration by {metric}, `{best[0]}` with {best[1]}, has MDL rank "
                      f"{top['mdl_rank'].iloc[0]} (compression {_f(top['compression'].iloc[0], 2)}).")
    return lines
