"""Stage 1: audio in, hidden states (or openSMILE features) out, into an embedx store.

:mod:`~embedx.extraction.extract` runs an extraction (the loop, signals, resume);
:mod:`~embedx.extraction.config` holds its settings (``ExtractConfig``, presets);
:mod:`~embedx.extraction.manifest` finds the items and their columns;
:mod:`~embedx.extraction.audio` decodes and resamples; :mod:`~embedx.extraction.loader` runs the
decoding workers; :mod:`~embedx.extraction.batching` forms length-bucketed batches and chunks;
:mod:`~embedx.extraction.pooling` and :mod:`~embedx.extraction.layers` are the pooling registry
and the layer grammar (stage 2 uses both); :mod:`~embedx.extraction.shard` splits a run;
:mod:`~embedx.extraction.run_stats` measures what a run did and cost.

The function users call is :func:`embedx.extract` (in :mod:`embedx.api`).
"""
