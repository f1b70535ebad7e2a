"""embedx: exact, fast, resumable speech-model embeddings in HDF5, and honest probes on them.

The Python API mirrors the command line (see :mod:`embedx.api`)::

    import embedx
    embedx.extract("wavs/", "feats.h5", model="facebook/hubert-base-ls960")
    result = embedx.fit("feats.h5", output="results")
    reader = embedx.open("feats.h5")
    embedx.similarity("feats.h5", "sim")     # linear CKA between every pair of layers
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

__all__ = ["__version__", "extract", "fit", "open", "similarity"]


def __getattr__(name: str) -> Any:
    # lazy, so `import embedx` (and `embedx --help`) stays light; `extract`, `fit` and
    # `similarity` are modules, made callable (see embedx._callable), `open` the API's reader
    if name in ("extract", "fit", "similarity"):
        return importlib.import_module(f"embedx.{name}")
    if name == "open":
        return importlib.import_module("embedx.api").open
    raise AttributeError(f"module 'embedx' has no attribute {name!r}")
