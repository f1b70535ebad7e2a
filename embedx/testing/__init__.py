"""Fixtures for demos and tests, kept apart from the real code: within ``embedx`` only the
``embedx synth`` command imports them (tests, benchmarks and the README's example do too).

- :mod:`embedx.testing.synth`: synthetic speech-like audio and the built-in example corpus
  (``embedx synth``, ``make demo``, the README's API example);
- :mod:`embedx.testing.tiny`: tiny random-weight models of every supported family, saved with
  ``save_pretrained`` so they load through the same code path as a hub id (no download).
"""
