"""Frame-level and segment-level probing (``embedx fit --frames`` / ``--segments``).

Stage 2 reads the frames stage 1 wrote (``/features/<set>/frames``) and labels them from a
forced alignment (:mod:`embedx.probing.alignments`):

* :mod:`~embedx.probing.frames.labels` – frame labels, folds over items expanded to frames,
  the class-stratified cap on training frames;
* :mod:`~embedx.probing.frames.study` – the fitting loop (layers read a few at a time,
  incremental linear probes, per-speaker confusion counts);
* :mod:`~embedx.probing.frames.frame_study` – the frame-level study as a StudyResult;
* :mod:`~embedx.probing.frames.segments` – one pooled example per aligned segment;
* :mod:`~embedx.probing.frames.softmax` – the default frame probe (minibatch softmax regression);
* :mod:`~embedx.probing.frames.summary` – the ``frames`` entry of the analyses and its report section;
* :mod:`~embedx.probing.frames.run` – :func:`frame_study`, the one call from ``embedx.api.fit``.
"""
