"""The frame-level study as a :class:`~embedx.probing.study.StudyResult`: every frame is an
example, one configuration per layer (``SET@LAYER/frames``), folds over items grouped by
speaker, statistics from per-speaker confusion counts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedx.probing.tasks import CLASSIFICATION

__all__ = ["DEFAULT_MODELS", "frame_dataset", "run_frame_study"]

#: models of a frame-level study when --models is not given (suits millions of frames)
DEFAULT_MODELS = ["softmax"]


def frame_dataset(features: str | Path, setup: Any) -> Any:
    """A :class:`~embedx.probing.data.Dataset` whose units are the labelled frames (no X)."""
    from embedx.probing.data import Block, Dataset, FeatureConfig

    t = setup.table
    configs = [FeatureConfig((Block(setup.name, layer, "frames"),)) for layer in setup.layers]
    return Dataset(
        configs=configs, X={}, y=t.y, task=CLASSIFICATION, classes=list(t.classes),
        groups=None if setup.groups is None else setup.groups[t.item], split=None,
        ids=t.items["id"].astype(str).to_numpy()[t.item],
        paths=t.items["path"].astype(str).to_numpy()[t.item], rows=t.rows,
        label=f"alignment labels ({Path(setup.source).name})", group=setup.group,
        group_auto=setup.group_auto, store=str(features), specs={setup.name: setup.spec},
        skipped=dict(setup.skipped),
    )


def _clusters(setup: Any, seed: int) -> tuple[np.ndarray, str]:
    """Cluster code of every frame: its speaker, else a seeded random block of its *items*."""
    from embedx.probing.compare import clusters_of

    t = setup.table
    if setup.groups is not None:
        _, codes = np.unique(setup.groups, return_inverse=True)
        return codes[t.item].astype(np.int64), "group"
    codes, kind = clusters_of(len(t.items), None, seed)  # frames of one item stay together
    return codes[t.item], kind


def run_frame_study(features: str | Path, setup: Any, opts: Any, settings: Any, *, progress: bool,
                    log: Callable[[str], None] | None) -> Any:
    """Fit every layer × model × fold on frames and assemble the study's tables.

    Args:
        features: the store.
        setup: the labelled frames (see :func:`embedx.probing.frames.run.frame_study`).
        opts: the :class:`~embedx.probing.frames.run.FrameOptions`.
        settings: the :class:`~embedx.probing.study.StudySettings` (``models=None``:
            :data:`DEFAULT_MODELS`).
        progress: show a progress bar. log: where notes go.

    Returns:
        The :class:`~embedx.probing.study.StudyResult`.
    """
    from embedx.probing import metrics as M
    from embedx.probing.compare import ClusterScores, compare_scores
    from embedx.probing.frames.labels import frame_folds
    from embedx.probing.frames.study import layer_batches, run_layers
    from embedx.probing.frames.summary import describe
    from embedx.probing.study import assemble, model_pairs, task_threads, validate_settings
    from embedx.progress import progress_bar
    from embedx.store import StoreReader

    note = log or (lambda _m: None)
    if settings.models is None:
        settings = dataclasses.replace(settings, models=list(DEFAULT_MODELS))
    dataset = frame_dataset(features, setup)
    models, metric = validate_settings(dataset, settings)
    t = setup.table
    item_folds, folds = frame_folds(t, setup.groups, scheme=settings.scheme, n_splits=settings.n_splits,
                                    seed=settings.seed, group_name=setup.group)
    if folds.reason:
        note(folds.reason)
    clusters, kind = _clusters(setup, settings.seed)
    configs = dataset.configs
    pairs, all_models = model_pairs(configs, models)
    total = len(pairs) * folds.n_splits
    batches = layer_batches(setup.layers, int(setup.offsets[-1]), setup.spec.dim,
                            np.dtype(setup.spec.dtype).itemsize)
    note(f"{len(configs)} layers × {len(models)} model(s) × {folds.n_splits} folds = {total} fits on "
         f"{t.num_frames} frames ({len(batches)} pass(es) over the stored frames; at most "
         f"{opts.max_train_frames or 'all'} training frames per fold, every held-out frame evaluated)")
    start = time.perf_counter()
    with StoreReader(features) as reader, progress_bar(progress) as bar:
        handle = bar.add_task("fit", total=total)
        outputs, counts, seconds = run_layers(
            lambda layers: reader.frames_layers(setup.name, layers), t, configs, all_models,
            folds.splits, clusters, cap=opts.max_train_frames, seed=settings.seed,
            class_weight=settings.class_weight, threads=task_threads(settings), batches=batches,
            advance=lambda: bar.advance(handle))
    fit_seconds = time.perf_counter() - start
    outputs.sort(key=lambda o: o["key"])
    main = M.get_metric(metric, CLASSIFICATION)
    t0 = time.perf_counter()
    comparison = compare_scores(ClusterScores.from_counts(counts, main), kind, alpha=settings.alpha,
                                n_perm=settings.n_boot, seed=settings.seed)
    seconds["statistics"] = time.perf_counter() - t0
    frames = describe(setup, opts, seconds=seconds, passes=len(batches),
                      n_train_used=[int(o["n_train_used"]) for o in outputs],
                      item_test_sizes=[len(te) for _, te in item_folds.splits])
    result = assemble(dataset, settings, folds, all_models, pairs, metric, outputs, fit_seconds,
                      comparison=comparison, notes=[_protocol_note(opts, folds, kind)],
                      analyses={"frames": frames})
    note(f"{total} fits in {fit_seconds:.1f} s (read {seconds['read']:.1f} s, fit {seconds['fit']:.1f} s, "
         f"evaluate {seconds['evaluate']:.1f} s, statistics {seconds['statistics']:.1f} s)")
    return result


def _protocol_note(opts: Any, folds: Any, kind: str) -> str:
    """The frame-level protocol in one note."""
    cap = (f"a seeded class-stratified sample of at most {opts.max_train_frames} training frames "
           "per fold" if opts.max_train_frames else "every training frame")
    unit = "speakers" if kind == "group" else "random blocks of items (no speaker column)"
    return (f"Frame level: every frame labelled by the aligned segment covering its centre; folds "
            f"over items ({folds.scheme}), so no item (and with speakers no speaker) has frames "
            f"in both parts of a fold; probes trained on {cap}, evaluated on every held-out frame; "
            f"CIs and the confidence set over {unit}, from per-cluster confusion counts. "
            "No model file is saved for frame-level probes; --weighted-layers and --permutations "
            "are not available with --frames (yet).")
