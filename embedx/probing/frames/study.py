"""The frame-level study: every layer × model × fold on frames, statistics over speakers.

Memory and time are bounded so that a base model's 300,000 frames × 13 layers fit a laptop:

* Layers are read a few at a time (:meth:`embedx.store.StoreReader.frames_layers` reads every
  stored chunk once per call), as many as fit :data:`LAYER_BYTES`.
* Training frames of a fold are capped by a seeded class-stratified sample
  (``max_train_frames``); every held-out frame is evaluated, in blocks of :data:`EVAL_ROWS`.
* A model whose estimator has ``partial_fit`` (``softmax``, the default, and ``sgd``) is
  trained on minibatches of the standardised training frames (the scaler fitted on them,
  inside the fold) for :data:`EPOCHS` passes; others (``lgbm``, ``logreg``) are fitted whole.
  ``softmax`` (:mod:`embedx.probing.frames.softmax`) is ~20x faster than ``sgd`` on 768 dims.
* Statistics keep per-speaker confusion counts only: they are sufficient for UAR, accuracy
  and F1 of any mix of speakers, so CIs, the confidence set for the best and
  ``worse_than_best`` (:mod:`embedx.probing.compare`) cost the same as for an utterance study.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from embedx.errors import one_line
from embedx.probing import metrics as M
from embedx.probing.frames.labels import FrameTable, cap_training

__all__ = ["EPOCHS", "EVAL_ROWS", "LAYER_BYTES", "fit_probe", "run_layers"]

#: passes over the (capped) training frames of an incremental learner
EPOCHS = 5
#: minibatch of an incremental learner
BATCH = 4096
#: frames predicted at a time
EVAL_ROWS = 65536
#: bytes of stored frames held at once (layers read together share one pass over the file)
LAYER_BYTES = 1 << 30


def _balanced_weights(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-sample weights of ``class_weight="balanced"`` (``partial_fit`` does not take it)."""
    counts = np.bincount(y, minlength=len(classes)).astype(np.float64)
    per_class = np.divide(len(y), len(classes) * counts, out=np.zeros_like(counts), where=counts > 0)
    return per_class[y]


def fit_probe(model: str, X: np.ndarray, y: np.ndarray, classes: np.ndarray, *, seed: int,
              class_weight: str | None, threads: int) -> Any:
    """Fit the registry's ``model`` on training frames.

    Args:
        model: a name of :mod:`embedx.probing.models`.
        X: ``(n, dim)`` float32 training frames.
        y: ``(n,)`` class codes.
        classes: every class code (a minibatch need not hold them all).
        seed: seed of the model and of the minibatch order.
        class_weight: ``None`` or ``"balanced"``.
        threads: threads of threaded estimators.

    Returns:
        The fitted pipeline (``scale`` step when the model has one, then ``model``).
    """
    from embedx.probing.models import build_model

    pipe = build_model(model, M.CLASSIFICATION, seed=seed, class_weight=class_weight, n_jobs=threads)
    est = pipe.steps[-1][1]
    if not hasattr(est, "partial_fit"):
        return pipe.fit(X, y)
    for _, step in pipe.steps[:-1]:
        X = step.fit_transform(X).astype(np.float32, copy=False)  # fitted on this fold's training frames
    weights = None
    if class_weight == "balanced":
        est.set_params(class_weight=None)
        weights = _balanced_weights(y, classes)
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        order = rng.permutation(len(y))
        for a in range(0, len(order), BATCH):
            part = order[a:a + BATCH]
            est.partial_fit(X[part], y[part], classes=classes,
                            sample_weight=None if weights is None else weights[part])
    return pipe


def _predict(pipe: Any, X16: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Predictions of ``X16[rows]``, converted to float32 a block at a time."""
    out = np.empty(len(rows), dtype=np.int64)
    for a in range(0, len(rows), EVAL_ROWS):
        part = rows[a:a + EVAL_ROWS]
        out[a:a + len(part)] = pipe.predict(X16[part].astype(np.float32))  # (block, dim)
    return out


def _one_fit(X16: np.ndarray, table: FrameTable, train: np.ndarray, test: np.ndarray, *,
             model: str, key: tuple[int, int, int], cap: int | None, seed: int,
             class_weight: str | None, threads: int) -> dict[str, Any]:
    """Fit on a capped sample of ``train``, predict every frame of ``test`` (one task).

    ``X16`` is one layer of every stored frame; ``train``/``test`` are positions into ``table``.
    """
    from embedx.probing.fitting import limit_threads

    k = len(table.classes)
    start = time.perf_counter()
    sample = cap_training(train, table.y, cap, seed + key[2])
    with limit_threads(threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Xtr = X16[table.rows[sample]].astype(np.float32)  # (n_sample, dim)
        pipe = fit_probe(model, Xtr, table.y[sample], np.arange(k),
                         seed=seed, class_weight=class_weight, threads=threads)
        del Xtr
        fit_seconds = time.perf_counter() - start
        pred = _predict(pipe, X16, table.rows[test])
    messages = sorted({one_line(w.message, first_line=True) for w in caught
                       if not issubclass(w.category, DeprecationWarning)})
    y_test = table.y[test]
    conf = M.confusion(y_test, pred, k)
    return {
        "key": key, "pred": pred, "fit_seconds": fit_seconds,
        "seconds": time.perf_counter() - start, "params": None, "layer_weights": None,
        "scores": {m.name: float(m.weighted(conf[None].astype(np.float64))[0])
                   for m in M.metrics_for(M.CLASSIFICATION)},
        "warning": messages[0][:200] if messages else "",
        "recall": M.per_class_recall(y_test, pred, k), "confusion": conf,
        "n_train_used": len(sample),
    }


def layer_batches(layers: list[int], total_frames: int, dim: int, itemsize: int,
                  budget: int = LAYER_BYTES) -> list[list[int]]:
    """Split ``layers`` into groups read together, each within ``budget`` bytes (at least one)."""
    per_pass = max(1, int(budget // max(1, total_frames * dim * itemsize)))
    return [layers[i:i + per_pass] for i in range(0, len(layers), per_pass)]


def run_layers(read: Callable[[list[int]], np.ndarray], table: FrameTable, configs: list[Any],
               models: list[str], splits: list[tuple[np.ndarray, np.ndarray]], clusters: np.ndarray,
               *, cap: int | None, seed: int, class_weight: str | None, threads: int,
               batches: list[list[int]], advance: Callable[[], None] = lambda: None,
               ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, float]]:
    """Fit every configuration (one per layer) × model × fold, reading a batch of layers at a time.

    Args:
        read: ``layers -> (len(layers), total_stored_frames, dim)`` stored frames.
        table: the labelled frames (``table.rows`` index the stored frames).
        configs: one configuration per layer, in study order (``config.layer``).
        models: model names.
        splits: frame-level ``(train, test)`` positions into ``table``.
        clusters: ``(num_frames,)`` cluster code (speaker) of every frame, ``0..S-1``.
        cap: most training frames per fold (``None``: all).
        seed, class_weight, threads: as in :func:`fit_probe`.
        batches: the layers read together (see :func:`layer_batches`).
        advance: called after every fit (progress).

    Returns:
        ``(outputs, counts, seconds)``: the fits' outputs in the form of
        :func:`embedx.probing.fitting.run_task` keyed ``(config, model, fold)``;
        ``(configs × models, S, k, k)`` per-cluster confusion counts in that pair order;
        seconds spent reading, fitting, evaluating (predicting) and counting.
    """
    k, s = len(table.classes), int(clusters.max()) + 1
    counts = np.zeros((len(configs) * len(models), s, k, k), dtype=np.int64)
    position = {c.layer: ci for ci, c in enumerate(configs)}
    outputs, seconds = [], {"read": 0.0, "fit": 0.0, "evaluate": 0.0, "count": 0.0}
    for batch in batches:
        t0 = time.perf_counter()
        stored = read(batch)  # (len(batch), total_stored_frames, dim)
        seconds["read"] += time.perf_counter() - t0
        for bi, layer in enumerate(batch):
            X16 = stored[bi]  # (total_stored_frames, dim), the stored dtype; no copy
            ci = position[layer]
            for mi, model in enumerate(models):
                for fi, (train, test) in enumerate(splits):
                    t0 = time.perf_counter()
                    out = _one_fit(X16, table, train, test, model=model, key=(ci, mi, fi), cap=cap,
                                   seed=seed, class_weight=class_weight, threads=threads)
                    t1 = time.perf_counter()
                    code = (clusters[test] * k + table.y[test]) * k + out["pred"]
                    counts[ci * len(models) + mi] += np.bincount(
                        code, minlength=s * k * k).reshape(s, k, k)
                    seconds["fit"] += out["fit_seconds"]
                    seconds["evaluate"] += t1 - t0 - out["fit_seconds"]
                    seconds["count"] += time.perf_counter() - t1
                    outputs.append(out)
                    advance()
            del X16
        del stored
    return outputs, counts, seconds
