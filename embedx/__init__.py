"""embedx: exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them.

The Python API mirrors the command line (see :mod:`embedx.api`)::

    import embedx
    embedx.extract("wavs/", "feats.h5", model="facebook/hubert-base-ls960")
    result = embedx.fit("feats.h5", output="results")
    reader = embedx.open("feats.h5")
    embedx.similarity("feats.h5", "sim")     # linear CKA between every pair of layers

Stage 1 lives in :mod:`embedx.extraction`, stage 2 in :mod:`embedx.probing`, the HDF5 contract in
:mod:`embedx.store`, the feature sources in :mod:`embedx.backends`; ``docs/architecture.md`` maps
the rest.
"""

from __future__ import annotations

from typing import Any

from embedx.version import __version__

__all__ = ["__version__", "extract", "fit", "open", "similarity"]

_API = ("extract", "fit", "open", "similarity")


def __getattr__(name: str) -> Any:
    # the API's functions are plain functions of embedx.api, imported on first use so that
    # `import embedx` (and `embedx --help`) stays light
    if name in _API:
        from embedx import api

        return getattr(api, name)
    raise AttributeError(f"module 'embedx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
