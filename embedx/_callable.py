"""Make a module callable, so ``embedx.extract(...)`` and ``embedx.fit(...)`` work.

``embedx.extract`` and ``embedx.fit`` are modules (stage 1 and the stage-2 package), and
Python binds a submodule to its parent package's attribute whenever it is imported, so a
function of that name on the package would be replaced by the module. Instead the module
itself is made callable (assigning ``module.__class__`` is supported since Python 3.5) and
forwards the call to the API function in :mod:`embedx.api`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(module_name: str, target: str) -> None:
    """Let ``sys.modules[module_name](...)`` call ``embedx.api.<target>(...)``.

    Args:
        module_name: the module to make callable (pass ``__name__``).
        target: the function's name in :mod:`embedx.api`.
    """

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module("embedx.api"), target)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
