"""The model file: a refitted bundle saved with skops, so that loading it cannot run code.

``embedx fit`` writes ``model.skops`` (:data:`MODEL_FILE`) and ``embedx predict`` reads it. A
skops file is a zip of a JSON schema and ``.npy`` arrays: nothing in it is executed, and an object
is rebuilt only when its type is in :func:`trusted_types` – containers, numpy arrays and scalars,
the pipeline and its scaler, and every estimator of the model registry with the objects it holds
once fitted (:func:`embedx.probing.models.estimator_types`). A file naming any other type is refused
before anything in it is built, so a model file shared by a colleague is data, not a program.

embedx 0.2 wrote ``model.joblib``, a pickle: unpickling runs whatever code the file carries. Such
a file loads only with ``trust_pickle=True`` (``embedx predict --trust-pickle``), for a file from
a source one trusts; otherwise it is refused without being opened by the unpickler.

The bundle itself (keys, format version) is described in :mod:`embedx.probing.predict`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from embedx.errors import ConfigError, Param, one_line

__all__ = ["FORMAT", "FORMAT_VERSION", "LEGACY_FILE", "MODEL_FILE", "TRUST_PICKLE_OPTION", "load_model",
           "save_model", "trusted_types", "types_in_file"]

FORMAT = "embedx-model"
FORMAT_VERSION = 1
_REQUIRED = ("pipeline", "task", "blocks", "feature_sets")

#: the file ``embedx fit`` writes into its results folder
MODEL_FILE = "model.skops"
#: the pickle embedx 0.2 wrote; loads only when trusted explicitly
LEGACY_FILE = "model.joblib"
#: the option (and API argument) that allows loading a pickled model file
TRUST_PICKLE_OPTION = Param("trust_pickle", switch=True)
#: types in every bundle besides the registry's estimators: containers (skops stores None, bools,
#: numbers and strings as JSON leaves tagged builtins.str) and numpy arrays and scalars
_BASE_TYPES = (
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64",
    "numpy.int32", "numpy.bool_",
)


def trusted_types() -> frozenset[str]:
    """``module.Class`` of every type a model file may contain; any other type is refused.

    Returns:
        :data:`_BASE_TYPES`, the Pipeline and StandardScaler every registry model is wrapped in,
        and :func:`embedx.probing.models.estimator_types` (each registered estimator and the objects
        it holds once fitted).
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from embedx.probing.models import estimator_types

    wrappers = {f"{cls.__module__}.{cls.__qualname__}" for cls in (Pipeline, StandardScaler)}
    return frozenset({*_BASE_TYPES, *wrappers, *estimator_types()})


def _schema_types(node: Any, found: set[str]) -> set[str]:
    """Collect ``module.Class`` of every node of a skops schema (nodes nest in dicts and lists)."""
    if isinstance(node, dict):
        if "__loader__" in node and "__class__" in node and "__module__" in node:
            found.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _schema_types(value, found)
    elif isinstance(node, list):
        for value in node:
            _schema_types(value, found)
    return found


def types_in_file(data: bytes | str | os.PathLike[str]) -> set[str]:
    """Every type a skops file names, read from its schema without building anything.

    Args:
        data: the file's bytes or its path.

    Returns:
        ``module.Class`` names.

    Raises:
        ConfigError: not a skops file (no readable ``schema.json``).
    """
    import io

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with zipfile.ZipFile(source) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        where = "the model" if isinstance(data, bytes) else repr(str(data))
        raise ConfigError(f"cannot read model file {where}: not a skops model file ({one_line(exc)})") from None
    return _schema_types(schema, set())


def save_model(bundle: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a model bundle as a skops file (atomically: a failed write leaves no half file).

    Everything but the pipeline is stored as plain Python (:func:`embedx.serial.plain`).

    Args:
        bundle: as built by :func:`embedx.probing.refit.fit_final`.
        path: destination file (``model.skops`` by convention).

    Returns:
        The path written.

    Raises:
        ConfigError: the pipeline holds a type :func:`trusted_types` lacks (the file could not
            be loaded again); nothing is written.
    """
    import skops.io as sio

    from embedx.serial import plain

    data = {k: v if k == "pipeline" else plain(v) for k, v in bundle.items()}
    payload = sio.dumps(data)
    unknown = sorted(types_in_file(payload) - trusted_types())
    if unknown:
        raise ConfigError(f"the refitted model holds {', '.join(unknown)}, which embedx does not load from a "
                          "model file; add it to the model's fitted_types in embedx/probing/models.py")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path


def _load_skops(path: Path) -> Any:
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    trusted = trusted_types()
    unknown = sorted(types_in_file(path) - trusted)
    if unknown:
        raise ConfigError(f"model file {str(path)!r} contains {', '.join(unknown)}, which is not a type of an embedx "
                          "model; refused without loading it")
    try:
        return sio.load(path, trusted=sorted(trusted))
    except UntrustedTypesFoundException as exc:  # skops found a node the schema walk did not
        raise ConfigError(f"model file {str(path)!r} contains an untrusted type ({one_line(exc)}); "
                          "refused without loading it") from None
    except Exception as exc:  # noqa: BLE001 - any skops failure means "not a readable model file"
        raise ConfigError(f"cannot read model file {str(path)!r}: {type(exc).__name__}: {one_line(exc)}") from None


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise ConfigError(
            f"model file {str(path)!r} is a pickle (embedx 0.2), which can run any code when loaded; refused: ",
            "give ", TRUST_PICKLE_OPTION, " only if you trust where the file came from"
        )
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means "not a model file"
        raise ConfigError(f"cannot read model file {str(path)!r}: {type(exc).__name__}: {one_line(exc)}") from None


def load_model(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a model bundle; a file of untrusted types or a pickle is refused unopened.

    Args:
        path: a file written by :func:`save_model` (``model.skops``), or an embedx 0.2
            ``model.joblib``.
        trust_pickle: allow a pickled (0.2) model file; unpickling runs any code the file holds.

    Returns:
        The bundle.

    Raises:
        ConfigError: missing file; a pickle without ``trust_pickle``; a skops file naming a type
            outside :func:`trusted_types`; not an embedx model of a known format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} does not exist (expected results/{MODEL_FILE})")
    # the format is told by the content, never by the name: a skops file is a zip archive
    bundle = _load_skops(path) if zipfile.is_zipfile(path) else _load_pickle(path, trust_pickle)
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not an embedx model file (written by embedx fit)")
    if int(bundle.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(
            f"{str(path)!r} has model format {bundle['format_version']}; this embedx reads up to "
            f"{FORMAT_VERSION} (upgrade embedx)"
        )
    missing = [k for k in _REQUIRED if k not in bundle]
    if missing:
        raise ConfigError(f"model file {str(path)!r} lacks {', '.join(missing)}")
    return bundle
