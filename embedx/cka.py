"""Layer similarity: linear CKA between every pair of layers of a store's feature sets.

Centred kernel alignment (Kornblith et al. 2019) with the linear kernel compares two
representations ``X (n, d_x)`` and ``Y (n, d_y)`` of the same ``n`` items::

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T

The biased HSIC is ``tr(K H L H)`` (``H`` the centring matrix), which on centred features is
``||Y^T X||_F^2`` without any ``(n, n)`` matrix, so CKA = ``||Y^T X||_F^2 / (||X^T X||_F
||Y^T Y||_F)``. The debiased estimator (``debiased=True``) replaces it with the unbiased HSIC of
Song et al. (2012), as Nguyen et al. (2021) do for CKA::

    HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))

with ``K~``, ``L~`` the kernels with zeroed diagonals; in feature space (centred ``X``, ``Y``,
row squared norms ``r_x``, ``r_y``) its numerator is ``||Y^T X||_F^2 - n/(n-2) r_x . r_y +
sum(r_x) sum(r_y) / ((n-1)(n-2))``.

Memory is bounded: one layer (``(n, d)``, float64) is read at a time through
:class:`~embedx.store.StoreReader`, at most two are held, and per layer only its scalar
self-term (and, debiased, its ``(n,)`` row norms) is cached. When the items are few enough that
every layer's ``(n, n)`` Gram matrix fits :data:`GRAM_BUDGET_BYTES`, the Gram matrices are
cached instead and every pair costs one ``n^2`` dot product.

With ``frames=True`` the rows are frames instead of items: a seeded sample of at most
``max_frames`` frames of the items done in both sets (the same frames in both, so the sets must
have equal frame counts per item), gathered in one pass over the items and held for all
layers of the two sets (``max_frames x num_layers x dim`` float32 per set).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedx.errors import ConfigError, DataError, Param, StoreError
from embedx.paths import file_part, writable_folder

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MAX_FRAMES",
    "GRAM_BUDGET_BYTES",
    "SimilarityResult",
    "cell_digits",
    "linear_cka",
    "similarity",
]

#: columns of ``cka.csv``, in order
CSV_COLUMNS = ("set_a", "layer_a", "set_b", "layer_b", "cka")
#: frames sampled per pair of sets with ``frames=True`` when no ``max_frames`` is given
DEFAULT_MAX_FRAMES = 5000
#: cache every layer's ``(n, n)`` Gram matrix (float64) when all of them fit in this many bytes
GRAM_BUDGET_BYTES = 512 << 20


# ------------------------------------------------------------------------------- estimators


def _center(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64)  # (n, d) a float64 copy, centred in place
    x -= x.mean(axis=0, keepdims=True)
    return x


def _debias(xty: float, rx: np.ndarray, ry: np.ndarray, n: int) -> float:
    """Numerator of the unbiased HSIC (times ``n(n-3)``) from feature-space terms."""
    return float(xty - n / (n - 2) * float(rx @ ry) + rx.sum() * ry.sum() / ((n - 1) * (n - 2)))


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same items (feature-space form).

    Args:
        x: ``(n, d_x)`` features.
        y: ``(n, d_y)`` features of the same ``n`` items, in the same order.
        debiased: use the unbiased HSIC estimator (needs ``n >= 4``).

    Returns:
        CKA in [0, 1] (the debiased value may dip slightly below 0); NaN when either
        representation is constant.

    Raises:
        DataError: different numbers of rows, or too few for the estimator.
    """
    x, y = np.asarray(x), np.asarray(y)
    n = _check_rows(x.shape[0], y.shape[0], debiased)
    xc, yc = _center(x), _center(y)
    xty = float(np.sum((yc.T @ xc) ** 2))
    xx = float(np.sum((xc.T @ xc) ** 2))
    yy = float(np.sum((yc.T @ yc) ** 2))
    if debiased:
        rx, ry = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", yc, yc)
        xty, xx, yy = _debias(xty, rx, ry, n), _debias(xx, rx, rx, n), _debias(yy, ry, ry, n)
    return _ratio(xty, xx, yy)


def _check_rows(nx: int, ny: int, debiased: bool) -> int:
    if nx != ny:
        raise DataError(f"CKA needs the same items in both representations; got {nx} and {ny} rows")
    least = 4 if debiased else 2
    if nx < least:
        raise DataError(f"CKA needs at least {least} items{' (debiased)' if debiased else ''}; got {nx}")
    return nx


def _ratio(xty: float, xx: float, yy: float) -> float:
    if not (xx > 0 and yy > 0):
        return math.nan
    return xty / math.sqrt(xx * yy)


class _Layers:
    """The rows of one feature set: ``load(layer) -> (n, d)``, and the per-layer cache."""

    def __init__(self, name: str, layers: Sequence[int], load: Callable[[int], np.ndarray]):
        self.name = name
        self.layers = list(layers)
        self._load = load
        self._stats: dict[int, tuple[float, np.ndarray | None]] = {}

    def centred(self, layer: int) -> np.ndarray:
        x = self._load(layer)  # (n, d)
        if not np.isfinite(x).all():
            raise DataError(f"feature set {self.name!r} layer {layer} holds NaN or infinite values "
                            "in items marked done; CKA needs finite features (compare other sets "
                            "with ", Param("sets"), ")")
        return _center(x)  # (n, d) float64

    def stats(self, layer: int, x: np.ndarray, debiased: bool) -> tuple[float, np.ndarray | None]:
        """Self-term ``HSIC(K, K)`` (scaled) and, debiased, the row squared norms; cached."""
        if layer not in self._stats:
            xx = float(np.sum((x.T @ x) ** 2))
            rows = None
            if debiased:
                rows = np.einsum("ij,ij->i", x, x)  # (n,)
                xx = _debias(xx, rows, rows, x.shape[0])
            self._stats[layer] = (xx, rows)
        return self._stats[layer]


def _pairs_features(a: _Layers, b: _Layers, debiased: bool, step: Callable[[], None]) -> np.ndarray:
    """CKA of every layer of ``a`` with every layer of ``b``, two layers in memory at a time."""
    same = a is b
    out = np.full((len(a.layers), len(b.layers)), np.nan)
    for i, la in enumerate(a.layers):
        x = a.centred(la)
        n = x.shape[0]
        xx, rx = a.stats(la, x, debiased)
        for j, lb in enumerate(b.layers):
            if same and j < i:
                continue
            if same and j == i:
                out[i, i] = 1.0 if xx > 0 else math.nan
                step()
                continue
            y = b.centred(lb)
            yy, ry = b.stats(lb, y, debiased)
            xty = float(np.sum((y.T @ x) ** 2))  # (d_b, d_a) cross-covariance, squared norm
            if debiased and rx is not None and ry is not None:
                xty = _debias(xty, rx, ry, n)
            out[i, j] = _ratio(xty, xx, yy)
            if same:
                out[j, i] = out[i, j]
            del y  # before the next layer is read: at most two layers in memory
            step()
        del x
    return out


def _gram(x: np.ndarray, debiased: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(n, n)`` centred Gram matrix (biased), or the zero-diagonal one and its row sums."""
    k = x @ x.T  # (n, n)
    if not debiased:
        return k, None  # x is centred, so x x^T = H K H already
    np.fill_diagonal(k, 0.0)
    return k, k.sum(axis=1)  # (n,)


def _hsic_gram(k: np.ndarray, sk: np.ndarray | None, m: np.ndarray, sm: np.ndarray | None) -> float:
    if sk is None or sm is None:
        return float(np.vdot(k, m))
    n = k.shape[0]
    return float(np.vdot(k, m) + sk.sum() * sm.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (sk @ sm))


def _pairs_gram(a: _Layers, b: _Layers, debiased: bool, step: Callable[[], None]) -> np.ndarray:
    """CKA of every layer pair from cached Gram matrices (all of them fit the budget)."""
    grams = {}
    for src in (a, b):
        for layer in src.layers:
            if (src.name, layer) not in grams:
                grams[src.name, layer] = _gram(src.centred(layer), debiased)
    out = np.full((len(a.layers), len(b.layers)), np.nan)
    for i, la in enumerate(a.layers):
        k, sk = grams[a.name, la]
        kk = _hsic_gram(k, sk, k, sk)
        for j, lb in enumerate(b.layers):
            m, sm = grams[b.name, lb]
            out[i, j] = _ratio(_hsic_gram(k, sk, m, sm), kk, _hsic_gram(m, sm, m, sm))
            if a is b and i == j and kk > 0:
                out[i, j] = 1.0
            step()
    return out


# ------------------------------------------------------------------------------- the command


@dataclass
class SimilarityResult:
    """What :func:`similarity` returns.

    Attributes:
        table: ``cka.csv`` as a DataFrame (columns :data:`CSV_COLUMNS`).
        output: the folder written.
        files: output kind -> path (``csv``, ``report``, and ``heatmap:<a>:<b>`` per set pair).
        rows: set pair ``(a, b)`` -> number of rows (items or frames) compared.
        method: ``"features"`` (Gram-free) or ``"gram"`` (cached ``(n, n)`` matrices).
        seconds: wall time.
    """

    table: Any
    output: Path
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    method: str = "features"
    seconds: float = 0.0

    def line(self) -> str:
        """One summary line for the CLI."""
        pairs = len(self.rows)
        return (f"wrote {len(self.table)} CKA values of {pairs} set pair{'s' * (pairs != 1)} to "
                f"{self.output} ({self.method}, {self.seconds:.1f} s)")


def _check_options(reader: Any, sets: Sequence[str] | None, pooling: str, frames: bool,
                   max_frames: int) -> list[str]:
    available = reader.feature_sets()
    if not available:
        raise StoreError(f"{reader.path} holds no feature sets; run embedx extract first")
    if sets:
        for name in sets:
            if name not in available:
                raise ConfigError(Param("sets"), f" {name!r} is not in {reader.path}; available: "
                                  f"{', '.join(available)}")
        chosen = list(dict.fromkeys(sets))
    elif frames:
        chosen = [s for s in available if reader.spec(s).frames]
        if not chosen:
            raise StoreError(f"no feature set of {reader.path} has frames; extract one with ",
                             Param("frames", switch=True), ", or leave ", Param("frames", switch=True), " out to compare pooled features")
    else:
        chosen = list(available)
    for name in chosen:
        spec = reader.spec(name)
        if frames and not spec.frames:
            raise ConfigError(Param("sets"), f" {name!r} has no frames stored; sets with frames: "
                              f"{', '.join(s for s in available if reader.spec(s).frames) or 'none'}")
        if not frames and pooling not in spec.poolings:
            raise ConfigError(Param("pooling"), f" {pooling!r} is not stored for set {name!r}; stored: ",
                              *([", ".join(spec.poolings)] if spec.poolings else
                                ["none (frames only: use ", Param("frames", switch=True), ")"]))
    if frames and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 4):
        raise ConfigError(Param("max_frames"), f" must be an integer >= 4; got {max_frames!r}")
    return chosen


def _prepare_output(output: str | os.PathLike[str]) -> Path:
    """Create the output folder and check that it can be written, before any work."""
    return writable_folder(output, "the similarity outputs")


def _frame_sample(reader: Any, a: str, b: str, items: np.ndarray, max_frames: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items, start rows and frame positions of a seeded sample shared by sets ``a`` and ``b``."""
    counts_a = np.diff(reader.frame_offsets(a))[items]
    counts_b = np.diff(reader.frame_offsets(b))[items]
    bad = np.flatnonzero(counts_a != counts_b)
    if bad.size:
        first = int(items[bad[0]])
        item_id = reader.items["id"].iloc[first]
        raise DataError(
            Param("frames", switch=True), f" needs equal frame counts per item: item {item_id!r} has {counts_a[bad[0]]} "
            f"frames in {a!r} and {counts_b[bad[0]]} in {b!r} ({bad.size} item(s) differ); "
            "compare sets of the same frame rate, or pooled features (no ", Param("frames", switch=True), ")")
    total = int(counts_a.sum())
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(total, max_frames), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts_a)])  # (num_items + 1,) sample-local offsets
    owner = np.searchsorted(starts, picked, side="right") - 1  # item position of each frame
    return items[owner], picked - starts[owner], picked


def _gather_frames(reader: Any, name: str, owner: np.ndarray, within: np.ndarray,
                   progress: Any, task: Any) -> np.ndarray:
    """The sampled frames of every layer of set ``name``: ``(num_frames, num_layers, dim)``."""
    spec = reader.spec(name)
    out = np.empty((len(owner), len(spec.layers), spec.dim), np.float32)
    for item in np.unique(owner):
        rows = np.flatnonzero(owner == item)
        out[rows] = reader.frames(name, int(item))[within[rows]]  # (k, num_layers, dim)
        progress.advance(task)
    return out


def similarity(
    features: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sets: Sequence[str] | None = None,
    pooling: str = "mean",
    frames: bool = False,
    max_frames: int = DEFAULT_MAX_FRAMES,
    debiased: bool = False,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> SimilarityResult:
    """Linear CKA between every pair of layers within and across the store's feature sets.

    For every set ``A`` the full ``A x A`` layer matrix is computed, and for every two sets
    ``A`` before ``B`` (store order) the ``A x B`` matrix, on the items done in both.

    Args:
        features: the HDF5 store.
        output: folder for ``cka.csv``, one ``cka_<A>__<B>.png`` per set pair and
            ``similarity.md`` (created; files of the same names are replaced).
        sets: feature sets to compare (``--set``); all by default (with ``frames``: all that
            have frames).
        pooling: the pooled features to compare (``--pooling``).
        frames, max_frames: compare frame-level states instead of pooled ones, on a seeded
            sample of ``max_frames`` frames per set pair (``--frames``, ``--max-frames``).
        debiased: the unbiased HSIC estimator (``--debiased``). seed: of the frame sample.
        progress: show a progress bar. command: the command line quoted in ``similarity.md``.

    Returns:
        A :class:`SimilarityResult`.
    Raises:
        ConfigError: unknown set or pooling, a set without frames, a bad ``max_frames``, or an
            unwritable ``output``.
        StoreError: unreadable store, or no feature sets.
        DataError: too few items done in a pair of sets, or unequal frame counts with ``frames``.
    """
    import pandas as pd

    from embedx.progress import progress_bar
    from embedx.store import StoreReader

    start = time.perf_counter()
    with StoreReader(features) as reader:
        chosen = _check_options(reader, sets, pooling, frames, max_frames)
        out = _prepare_output(output)
        specs = {s: reader.spec(s) for s in chosen}
        done = {s: reader.done(s) for s in chosen}
        pairs = [(a, a) for a in chosen] + [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]]
        n_max = max_frames if frames else max(int((done[a] & done[b]).sum()) for a, b in pairs)
        layers_total = sum(len(s.layers) for s in specs.values())
        method = "gram" if n_max * n_max * 8 * layers_total <= GRAM_BUDGET_BYTES else "features"
        with progress_bar(progress) as bar:
            run = _PairRun(reader, specs, method, debiased, bar, bar.add_task(
                "CKA layer pairs", total=sum(len(specs[a].layers) * len(specs[b].layers) for a, b in pairs)))
            for a, b in pairs:
                items = np.flatnonzero(done[a] & done[b])
                if len(items) < (4 if debiased else 2):
                    raise DataError(
                        f"sets {a!r} and {b!r} have {len(items)} items done in both; CKA needs at "
                        f"least {4 if debiased else 2}")
                if frames:
                    load, n = _frame_loader(reader, a, b, items, specs, max_frames, seed, bar)
                else:
                    load, n = _pooled_loader(reader, items, pooling), len(items)
                run.pair(a, b, load, n)
    records, matrices, rows = run.records, run.matrices, run.rows
    table = pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))
    files = _write_tables_and_heatmaps(out, table, matrices, rows, specs, frames, pooling, debiased)
    seconds = time.perf_counter() - start
    result = SimilarityResult(table=table, output=out, files=files, rows=rows, method=method,
                              seconds=seconds)
    files["report"] = out / "similarity.md"
    files["report"].write_text(
        _markdown(result, matrices, specs, features, pooling, frames, debiased, command),
        encoding="utf-8")
    return result


@dataclass
class _PairRun:
    """The CKA matrices of set pairs, computed one pair at a time, and their table rows."""

    reader: Any
    specs: dict[str, Any]
    method: str
    debiased: bool
    bar: Any
    task: Any
    records: list[dict[str, Any]] = field(default_factory=list)
    matrices: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)

    def pair(self, a: str, b: str, load: Callable[..., np.ndarray], n: int) -> None:
        """Every layer of ``a`` against every layer of ``b``, on ``n`` rows read by ``load``."""
        specs = self.specs
        src_a = _Layers(a, specs[a].layers, functools.partial(load, s=a))
        src_b = src_a if a == b else _Layers(b, specs[b].layers, functools.partial(load, s=b))
        pairs_fn = _pairs_gram if self.method == "gram" else _pairs_features
        m = pairs_fn(src_a, src_b, self.debiased, lambda: self.bar.advance(self.task))
        self.matrices[a, b] = m
        self.rows[a, b] = n
        self.records.extend({"set_a": a, "layer_a": la, "set_b": b, "layer_b": lb, "cka": float(m[i, j])}
                            for i, la in enumerate(specs[a].layers) for j, lb in enumerate(specs[b].layers))


def _pooled_loader(reader: Any, items: np.ndarray, pooling: str) -> Callable[[int, str], np.ndarray]:
    """``load(layer, set)``: one layer's pooled features of ``items``."""
    every = len(items) == reader.num_items

    def load(layer: int, s: str) -> np.ndarray:
        x = reader.pooled(s, pooling, layer)  # (num_items, dim)
        return x if every else x[items]  # (n, dim)

    return load


def _frame_loader(reader: Any, a: str, b: str, items: np.ndarray, specs: dict[str, Any],
                  max_frames: int, seed: int, bar: Any) -> tuple[Callable[[int, str], np.ndarray], int]:
    """``(load(layer, set), n)``: one layer of a seeded sample of ``n`` frames shared by both sets."""
    owner, within, _ = _frame_sample(reader, a, b, items, max_frames, seed)
    gather = bar.add_task(f"reading frames of {a} / {b}", total=len(np.unique(owner)) * (1 + (a != b)))
    data = {s: _gather_frames(reader, s, owner, within, bar, gather) for s in dict.fromkeys((a, b))}
    positions = {s: {layer: k for k, layer in enumerate(specs[s].layers)} for s in data}

    def load(layer: int, s: str) -> np.ndarray:
        return data[s][:, positions[s][layer], :]  # (num_frames, num_layers, dim) -> (num_frames, dim)

    return load, len(owner)


def _write_tables_and_heatmaps(out: Path, table: Any, matrices: dict[tuple[str, str], np.ndarray],
                               rows: dict[tuple[str, str], int], specs: dict[str, Any], frames: bool,
                               pooling: str, debiased: bool) -> dict[str, Path]:
    """Write ``cka.csv`` and one heatmap per set pair; returns the files by key."""
    files: dict[str, Path] = {"csv": out / "cka.csv"}
    table.to_csv(files["csv"], index=False)
    for (a, b), m in matrices.items():
        path = out / f"cka_{file_part(a)}__{file_part(b)}.png"
        what = f"{rows[a, b]} {'frames' if frames else 'items'}" + ("" if frames else f", {pooling}-pooled")
        _heatmap(m, a, b, specs[a].layers, specs[b].layers, path, debiased, what)
        files[f"heatmap:{a}:{b}"] = path
    return files


def cell_digits(values: np.ndarray, least: int = 2, most: int = 5) -> int:
    """Decimals for the heatmap's cell texts, so that the spread of the values shows.

    With values in 0.9998-1.0000, two decimals print 1.00 in every cell; the decimals grow with
    ``-log10`` of the spread (max - min of the finite values) until one step of the last digit
    is at most a tenth of it, between ``least`` and ``most``.

    Args:
        values: the matrix (NaNs ignored).
        least: the fewest decimals.
        most: the most decimals.

    Returns:
        The number of decimals.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    if spread <= 0:
        return least
    return int(np.clip(np.ceil(-np.log10(spread)) + 1, least, most))


def _heatmap(m: np.ndarray, a: str, b: str, layers_a: Sequence[int], layers_b: Sequence[int],
             path: Path, debiased: bool, what: str = "") -> None:
    from embedx.figures import pyplot

    plt = pyplot()
    digits = cell_digits(m)
    cell = 0.35 + 0.07 * (digits - 2)  # inches per cell: room for the longer cell texts
    size = (max(4.0, cell * len(layers_b) + 2), max(3.5, 0.35 * len(layers_a) + 1.5))
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(m, vmin=0, vmax=1, cmap="magma", origin="lower", aspect="auto")
    step_a = max(1, len(layers_a) // 13)
    step_b = max(1, len(layers_b) // 13)
    ax.set_yticks(range(0, len(layers_a), step_a), [str(x) for x in layers_a[::step_a]])
    ax.set_xticks(range(0, len(layers_b), step_b), [str(x) for x in layers_b[::step_b]])
    ax.set_ylabel(f"{a} layer")
    ax.set_xlabel(f"{b} layer")
    printed = m.shape[0] <= 13 and m.shape[1] <= 13  # small enough to print the values
    finite = m[np.isfinite(m)]
    caption = (f"{what}; cells: {digits} decimals (values {finite.min():.{digits}f}–{finite.max():.{digits}f})"
               if printed and finite.size else what)
    ax.set_title(f"{'debiased ' if debiased else ''}linear CKA: {a} vs {b}" + (f"\n{caption}" if caption else ""),
                 fontsize=9)
    if printed:
        for (i, j), value in np.ndenumerate(m):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.{digits}f}", ha="center", va="center", fontsize=7 if digits <= 3 else 6,
                        color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(result: SimilarityResult, matrices: dict[tuple[str, str], np.ndarray],
              specs: dict[str, Any], features: Any, pooling: str, frames: bool, debiased: bool,
              command: str | None) -> str:
    what = "frames (seeded sample)" if frames else f"{pooling}-pooled features"
    lines = [
        "# Layer similarity (linear CKA)",
        "",
        f"Store `{features}`, {what}, {'debiased' if debiased else 'biased'} HSIC estimator, "
        f"{result.method} computation.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", "| set A | set B | rows | most similar pair | least similar pair | heatmap |",
              "|---|---|---:|---|---|---|"]
    for (a, b), m in matrices.items():
        shown = m.copy()
        if a == b:
            np.fill_diagonal(shown, np.nan)  # a layer with itself says nothing
        if np.all(np.isnan(shown)):
            hi = lo = "- (one layer)" if a == b and len(specs[a].layers) == 1 else "-"
        else:
            i, j = np.unravel_index(np.nanargmax(shown), shown.shape)
            k, n = np.unravel_index(np.nanargmin(shown), shown.shape)
            la, lb = specs[a].layers, specs[b].layers
            hi = f"{la[i]} / {lb[j]}: {shown[i, j]:.4f}"
            lo = f"{la[k]} / {lb[n]}: {shown[k, n]:.4f}"
        png = result.files[f"heatmap:{a}:{b}"].name
        lines.append(f"| {a} | {b} | {result.rows[a, b]} | {hi} | {lo} | [{png}]({png}) |")
    lines += ["", "All values: `cka.csv` (`set_a, layer_a, set_b, layer_b, cka`; the full matrix "
              "of every set with itself, and every pair of sets once, in store order).", ""]
    return "\n".join(lines)

