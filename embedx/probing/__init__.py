"""Stage 2: cross-validated probes on the features of an embedx store.

Modules: :mod:`~embedx.probing.data` (X, y, groups from the store), :mod:`~embedx.probing.models`
(model registry), :mod:`~embedx.probing.cv` (splitters), :mod:`~embedx.probing.metrics` (metric
registry), :mod:`~embedx.probing.compare` (the pooled
estimand, CIs, calibrated paired tests, the confidence set for the best), :mod:`~embedx.probing.stats`
(per-fold tests, for reference),
:mod:`~embedx.probing.study` (the grid, run with joblib), :mod:`~embedx.probing.report` (report.md, tables, figures), :mod:`~embedx.probing.predict` (saved
models), and the probing controls: :mod:`~embedx.probing.weighted` (learned softmax layer weights),
:mod:`~embedx.probing.permutation` (label-permutation chance control) and
:mod:`~embedx.probing.selectivity` (trained vs. random-initialised network); and the analyses
across sets, corpora and speakers: :mod:`~embedx.probing.sets` (model comparison table),
:mod:`~embedx.probing.transfer` (cross-corpus transfer, ``--domain``, ``--label-map``) and
:mod:`~embedx.probing.subgroups` (subgroup breakdowns, ``--by``). These six share one interface,
:class:`~embedx.probing.analysis.Analysis` (prepare → run → tables and figures → report section), and
are registered by name in :mod:`~embedx.probing.analyses`; :mod:`~embedx.probing.orchestrate` runs a whole
``embedx fit`` (options, data, analyses, study, report). Nothing here imports torch; scikit-learn and LightGBM are imported when used.

The function users call is :func:`embedx.fit` (in :mod:`embedx.api`).
"""
