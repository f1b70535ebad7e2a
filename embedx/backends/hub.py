"""Where a checkpoint's files are: a local directory, or a hub id resolved to a cached snapshot.

Every model backend loads from the local directory this module returns, so transformers never
talks to the network itself: one place decides between online and offline, pins the revision
to a commit, and turns every failure into one line (no retry chatter, no repeated prefixes).
Only huggingface_hub's public API is used (``model_info``, ``snapshot_download``,
``try_to_load_from_cache``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from embedx.errors import ModelError, Param, one_line

#: a snapshot folder in the HF cache: .../snapshots/<commit>/
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)")
#: seconds to wait for the hub before falling back to the cache
HUB_TIMEOUT = 10.0
#: what a model backend reads; weights in one format are enough (safetensors preferred)
_CONFIG_FILES = ("*.json", "*.txt", "*.model")
_WEIGHT_FORMATS = (("*.safetensors",), ("*.bin",))

OFFLINE_HINT = (
    "download it once where the hub is reachable (it is then cached; set HF_HUB_OFFLINE=1 to "
    "use the cache without asking the hub), or pass a local model directory"
)


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint.

    Attributes:
        source: the hub id or directory as the user gave it.
        path: the local directory holding the checkpoint's files.
        commit: the hub commit the files belong to (``""`` for a local directory).
        from_cache: True when the hub could not be asked and the cache answered.
    """

    source: str
    path: str
    commit: str = ""
    from_cache: bool = False


def looks_local(model: str) -> bool:
    """True when ``model`` names a path rather than a hub id.

    A path starts with ``.``, ``~`` or a separator, exists, or begins with an existing local
    folder (``demo/tiny-hubrt`` where ``demo/`` is here): a hub id ``org/name`` is read as a
    hub id only while no folder ``org`` is in the working directory.
    """
    if model.startswith((".", "~", os.sep, "/")) or os.path.isabs(model) or os.path.exists(model):
        return True
    first = re.split(r"[\\/]", model, maxsplit=1)[0]
    return first != model and os.path.isdir(first)


def check_local_model(model: str | os.PathLike[str]) -> None:
    """Refuse a model that names a path (:func:`looks_local`) where no folder is, in one line.

    Cheap (no hub request, no import of huggingface_hub), so stage 1 calls it before it scans
    any audio: a misspelt local folder must not read as a hub problem, nor cost a scan.

    Args:
        model: the model as the user gave it (a string or a path).

    Raises:
        ModelError: ``model`` looks like a path and no folder is there; the message names the
            folders of the parent directory whose names are close to it.
    """
    model = os.fspath(model)  # the Python API takes a Path too
    path = os.path.expanduser(model)
    if not looks_local(model) or os.path.isdir(path):
        return
    if os.path.exists(path):
        raise ModelError(Param("model", model), ": is a file, not a model folder (the folder that "
                         "holds its config.json)")
    close = _close_folders(model)
    hint = ("did you mean " + " or ".join(close) + "?"
            if close else "give a folder that holds the model's config.json, or a hub id (owner/name)")
    raise ModelError(Param("model", model), f": no such model folder; {hint}")


def _close_folders(model: str) -> list[str]:
    """Folders beside where ``model`` would be whose names are close to its name, spelt as the
    user spelt the parent (``./tiny-hubert`` for ``tiny-hubrt``: a bare name is looked for here)."""
    import difflib

    parent, name = os.path.split(os.path.normpath(os.path.expanduser(model)))
    try:
        folders = [e.name for e in os.scandir(parent or ".") if e.is_dir()]
    except OSError:
        return []
    shown = os.path.dirname(model.rstrip("/\\")) or "."
    return [os.path.join(shown, c) for c in difflib.get_close_matches(name, folders, n=3, cutoff=0.6)]


def _near_hint(model: str) -> str:
    """For a hub failure: the local folders of a close name, which the user may have meant."""
    close = _close_folders(model)
    return f" (a local folder of a close name is here: {', '.join(close)})" if close else ""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _quiet_hub_logs() -> None:
    # huggingface_hub logs every retry of a failed request ("Retrying in 1s [Retry 1/5]") at
    # WARNING; embedx reports the outcome in one line instead
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _from_cache(model: str, revision: str | None) -> Checkpoint | None:
    """The cached snapshot of ``model`` at ``revision`` (default ``main``), if any."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(model, "config.json", revision=revision or "main")
    if not isinstance(path, str):
        return None
    folder = os.path.dirname(path)
    match = _SNAPSHOT.search(folder + os.sep)
    return Checkpoint(source=model, path=folder, commit=match.group(1) if match else "",
                      from_cache=True)


def locate(model: str, revision: str | None = None) -> Checkpoint:
    """Find the local directory of a checkpoint, downloading a hub model's files if needed.

    A hub id is resolved to a commit with one request (``HUB_TIMEOUT`` seconds, no retries);
    when the hub cannot be reached, or ``HF_HUB_OFFLINE=1`` is set, the Hugging Face cache
    answers instead.

    Args:
        model: hub id (``facebook/hubert-base-ls960``) or local directory.
        revision: hub branch, tag or commit (``None``: the default branch). Ignored for a
            local directory.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        ModelError: no such directory; the hub does not know the model or revision; the hub is
            unreachable and the model is not cached (the message names ``HF_HUB_OFFLINE=1``
            and a local directory).
    """
    if looks_local(model):
        check_local_model(model)
        path = os.path.expanduser(model)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelError(f"{model!r} is not a model directory (it has no config.json)")
        return Checkpoint(source=model, path=os.path.abspath(path))

    _quiet_hub_logs()
    if _offline():
        cached = _from_cache(model, revision)
        if cached is None:
            raise ModelError(f"{model!r}" + (f" at revision {revision!r}" if revision else "")
                             + " is not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                             + OFFLINE_HINT + _near_hint(model))
        return cached

    from huggingface_hub import model_info, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = model_info(model, revision=revision, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        raise ModelError(f"{model!r} is a gated model: accept its terms on the hub and log in "
                         "(`hf auth login`), or pass a local model directory") from None
    except RevisionNotFoundError:
        raise ModelError(f"{model!r} has no revision {revision!r} on the hub") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{model!r} is neither a local directory nor a model on the hub (a private "
                         "model needs `hf auth login`)" + _near_hint(model)) from None
    except HFValidationError:
        raise ModelError(f"{model!r} is neither a local directory nor a valid hub id "
                         "(owner/name)" + _near_hint(model)) from None
    except Exception as exc:  # the hub is unreachable (DNS, refused, timeout, proxy, 5xx)
        cached = _from_cache(model, revision)
        if cached is None:
            raise ModelError(f"cannot reach the Hugging Face hub for {model!r} "
                             f"({one_line(exc, first_line=True)}) and it is not cached; {OFFLINE_HINT}"
                             + _near_hint(model)) from None
        return cached

    commit = str(info.sha or "")
    files = [s.rfilename for s in (info.siblings or [])]
    patterns = list(_CONFIG_FILES)
    for formats in _WEIGHT_FORMATS:  # one weight format: never download both copies
        if any(f.endswith(formats[0][1:]) for f in files):
            patterns += list(formats)
            break
    try:
        path = snapshot_download(model, revision=commit or revision, allow_patterns=patterns,
                                 etag_timeout=HUB_TIMEOUT)
    except Exception as exc:
        raise ModelError(f"cannot download {model!r} from the hub: {one_line(exc, first_line=True)}") from None
    return Checkpoint(source=model, path=str(path), commit=commit)


__all__ = ["HUB_TIMEOUT", "Checkpoint", "check_local_model", "locate", "looks_local"]
