"""Stage 2: cross-validated probes on the features of an embedx store.

Modules: :mod:`~embedx.fit.data` (X, y, groups from the store), :mod:`~embedx.fit.models`
(model registry), :mod:`~embedx.fit.cv` (splitters), :mod:`~embedx.fit.metrics` (metric
registry), :mod:`~embedx.fit.compare` (the pooled
estimand, CIs, calibrated paired tests, the confidence set for the best), :mod:`~embedx.fit.stats`
(per-fold tests, for reference),
:mod:`~embedx.fit.study` (the grid, run with joblib) and :mod:`~embedx.fit.predict` (saved
models). Nothing here imports torch; scikit-learn and LightGBM are imported when used.
"""

from __future__ import annotations

__all__ = ["fit_study"]


def fit_study(features, *, output=None, progress: bool = False, log=None, **options):
    """Load a store, run a study and (optionally) write every output; see ``embedx fit``.

    Args:
        features: path of the HDF5 store.
        output: results folder; nothing is written when ``None``.
        progress: show a progress bar.
        log: where to send notes.
        **options: :func:`embedx.fit.data.load_dataset` keywords (label, sets, layers, pooling,
            concat, group, labels_csv, split_col, task) and
            :class:`embedx.fit.study.StudySettings` fields.

    Returns:
        The :class:`embedx.fit.study.StudyResult`.
    """
    import inspect
    from dataclasses import fields

    from embedx.fit.data import load_dataset
    from embedx.fit.study import StudySettings, run_study

    data_keys = set(inspect.signature(load_dataset).parameters) - {"path"}
    setting_keys = {f.name for f in fields(StudySettings)}
    unknown = set(options) - data_keys - setting_keys
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    dataset = load_dataset(features, **{k: v for k, v in options.items() if k in data_keys})
    settings = StudySettings(**{k: v for k, v in options.items() if k in setting_keys})
    result = run_study(dataset, settings, progress=progress, log=log)
    if output is not None:
        from embedx.report import write_report

        write_report(result, output)
    return result
