"""Stage 2: cross-validated probes on the features of an embedx store.

Modules: :mod:`~embedx.fit.data` (X, y, groups from the store), :mod:`~embedx.fit.models`
(model registry), :mod:`~embedx.fit.cv` (splitters), :mod:`~embedx.fit.metrics` (metric
registry), :mod:`~embedx.fit.compare` (the pooled
estimand, CIs, calibrated paired tests, the confidence set for the best), :mod:`~embedx.fit.stats`
(per-fold tests, for reference),
:mod:`~embedx.fit.study` (the grid, run with joblib), :mod:`~embedx.fit.predict` (saved
models), and the probing controls: :mod:`~embedx.fit.weighted` (learned softmax layer weights),
:mod:`~embedx.fit.permutation` (label-permutation chance control) and
:mod:`~embedx.fit.selectivity` (trained vs. random-initialised network); and the analyses
across sets, corpora and speakers: :mod:`~embedx.fit.sets` (model comparison table),
:mod:`~embedx.fit.transfer` (cross-corpus transfer, ``--domain``, ``--label-map``) and
:mod:`~embedx.fit.subgroups` (subgroup breakdowns, ``--by``). These six share one interface,
:class:`~embedx.fit.analysis.Analysis` (prepare → run → tables and figures → report section), and
are registered by name in :mod:`~embedx.fit.analyses`; :mod:`~embedx.fit.orchestrate` runs a whole
``embedx fit`` (options, data, analyses, study, report). Nothing here imports torch;
scikit-learn and LightGBM are imported when used.

The package is callable: ``embedx.fit("feats.h5", output="results")`` runs
:func:`embedx.api.fit`.
"""

from __future__ import annotations

from embedx._callable import make_callable

make_callable(__name__, "fit")
