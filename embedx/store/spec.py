"""What a store holds and how it is described: the schema constants, the feature-set spec and
its validation, and the shard description.

Nothing here touches h5py: these are the values every other module of :mod:`embedx.store`
writes, reads or compares. The layout itself is described in :mod:`embedx.store` (the package
docstring). Names with a leading underscore are private to the package: its modules share
them, nothing outside it uses them.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from embedx.errors import StoreError
from embedx.serial import plain

#: version of the layout in the package docstring; a reader refuses files with a higher one
SCHEMA_VERSION = 1

#: item columns every store has, in this order, before the extra manifest columns
REQUIRED_ITEM_COLUMNS = ("id", "path", "duration", "sample_rate", "num_samples")
#: storage dtypes a feature set may use
STORAGE_DTYPES = ("float32", "float16")
#: suffix of the feature set of a random-initialised model (``embedx extract --random-init``);
#: a store holding ``NAME`` and ``NAME-random`` gets the random-network control in ``embedx fit``
RANDOM_SUFFIX = "-random"
#: prefix of a feature set's attrs that describe the last extraction run (throughput, device,
#: peak memory, finish time), not its values: never compared on resume or merge
RUN_ATTR_PREFIX = "run_"
#: columns of /failed and of :meth:`StoreReader.failed`
FAILED_COLUMNS = ("set", "index", "id", "path", "stage", "message")

def random_name(name: str, random_init: bool, *, explicit: bool = False) -> str:
    """The feature-set name of a backend: ``name``, with :data:`RANDOM_SUFFIX` for ``random_init``.

    ``--name X --random-init`` stores ``X-random``, the twin a study pairs with ``X`` (as the
    model's own name gets it); a name given that already ends in the suffix is kept as given.

    Args:
        name: the name given, or the model's.
        random_init: whether the weights are random.
        explicit: ``name`` was given by the user (not derived from the model).

    Returns:
        The name to store the set as.
    """
    if not random_init or (explicit and name.endswith(RANDOM_SUFFIX)):
        return name
    return name + RANDOM_SUFFIX



# group attrs of a feature set that are not free spec attrs
_SET_ATTRS = (
    "backend",
    "layers",
    "dim",
    "poolings",
    "frames",
    "dtype",
    "frame_rate",
    "config",
    "created",
    "command",
    "embedx_version",
)
# spec fields compared by FeatureSetSpec.differences, in message order
_COMPARED_FIELDS = ("backend", "layers", "dim", "poolings", "frames", "dtype", "heads")
#: what a config key absent from an older store meant (shown instead of "<absent>")
_ABSENT_CONFIG = {"resampler": "'torchaudio' (not recorded before embedx 0.2)"}


#: root attrs of a shard file, in :class:`ShardInfo` field order
_SHARD_ATTRS = ("shard_index", "shard_count", "shard_total_items", "shard_items_digest")
#: feature-set attrs that say which run extracted the data (kept when :func:`merge` copies a set)
_ORIGIN_ATTRS = ("created", "command", "embedx_version")


def _embedx_version() -> str:
    from embedx.version import __version__

    return str(__version__)


def _now() -> str:
    # one format for every timestamp a store or its lock file records
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")

# ---------------------------------------------------------------------------------------------
# the feature-set spec
# ---------------------------------------------------------------------------------------------


#: the one definition lives in embedx.serial; the store's modules use it under this name
_plain = plain


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _yaml(value: Any) -> str:
    # keys sorted here, not only by ``sort_keys``: an imported ``oyaml`` (opensmile's audobject
    # pulls it in) replaces PyYAML's dict representer and ignores ``sort_keys``, which would make a
    # store's config text depend on what the writing process had imported
    return yaml.safe_dump(_sorted(_plain(value)), sort_keys=True, allow_unicode=True, width=1_000_000)


def _short(value: Any, limit: int = 80) -> str:
    text = _yaml(value).strip().replace("\n", " ")
    if text.endswith(" ..."):
        text = text[:-4]
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FeatureSetSpec:
    """What defines one feature set of the store.

    Sequences are normalised to tuples (and layer numbers to ``int``) on construction, so a
    spec built from lists equals the one read back from the file.

    Attributes:
        name: feature-set name, e.g. ``"hubert-base-ls960"``; an HDF5 group name (no ``/``).
        backend: backend registry key (``"hf"``, ``"opensmile"``, ...).
        layers: model layer numbers stored, strictly increasing; axis 0 of ``pooled/*`` and
            axis 1 of ``frames/data`` follow this order.
        dim: feature dimension of every layer.
        poolings: pooling names, one ``pooled/<pooling>`` dataset each.
        frames: whether frame-level states are stored.
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
        frame_rate: frames per second, ``None`` for utterance-level features.
        heads: head name -> names of its outputs, stored under ``heads/<name>``.
        feature_names: names of the ``dim`` features, when they have names (openSMILE).
        attrs: free metadata (model id, revision, commit, library versions); values are
            str / int / float / bool, ``None`` values are not stored. Not compared on resume.
        config: the full extraction config, stored as YAML text; every key is compared on
            resume, so keep runtime-only settings (device, workers) out of it.
    """

    name: str
    backend: str
    layers: tuple[int, ...]
    dim: int
    poolings: tuple[str, ...]
    frames: bool
    dtype: str
    frame_rate: float | None = None
    heads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    feature_names: tuple[str, ...] | None = None
    attrs: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        try:
            put("layers", tuple(int(x) for x in self.layers))
            put("dim", int(self.dim))
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"feature set {self.name!r}: layers must be integers and dim an integer, "
                f"got layers={self.layers!r}, dim={self.dim!r}"
            ) from exc
        if isinstance(self.poolings, str):
            put("poolings", (self.poolings,))
        put("poolings", tuple(str(p) for p in self.poolings))
        put("frames", bool(self.frames))
        put("dtype", str(np.dtype(self.dtype).name) if _is_dtype(self.dtype) else str(self.dtype))
        if self.frame_rate is not None:
            put("frame_rate", float(self.frame_rate))
        put("heads", {str(k): tuple(str(n) for n in v) for k, v in dict(self.heads).items()})
        if self.feature_names is not None:
            put("feature_names", tuple(str(n) for n in self.feature_names))
        put("attrs", dict(self.attrs))
        put("config", dict(self.config))

    def differences(self, other: FeatureSetSpec) -> list[str]:
        """Differences in what defines the data, ``self`` being the stored spec.

        Compared: backend, layers, dim, poolings (as a set), frames, dtype, heads,
        feature_names and every config key. Not compared: name, frame_rate and attrs (model
        revision, versions, times), which describe rather than define the data.

        Args:
            other: the requested spec.

        Returns:
            One line per difference, e.g. ``"layers: stored (0, 6, 12) vs requested (0, 12)"``;
            empty when the specs define the same data.
        """
        out = []
        reported = set()
        for name in _COMPARED_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "poolings":
                same = sorted(mine) == sorted(theirs)
            elif name == "heads":
                same = dict(mine) == dict(theirs)
            else:
                same = mine == theirs
            if not same:
                out.append(f"{name}: stored {mine!r} vs requested {theirs!r}")
                reported.add(name)
        a, b = self.feature_names, other.feature_names
        if a != b:
            if a is None or b is None:
                out.append(
                    "feature_names: stored "
                    + ("none" if a is None else f"{len(a)} names")
                    + " vs requested "
                    + ("none" if b is None else f"{len(b)} names")
                )
            else:
                first = next(
                    (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                    min(len(a), len(b)),
                )
                x = repr(a[first]) if first < len(a) else "<end>"
                y = repr(b[first]) if first < len(b) else "<end>"
                out.append(
                    f"feature_names: stored {len(a)} names vs requested {len(b)} names "
                    f"(first difference at {first}: {x} vs {y})"
                )
        mine_cfg, their_cfg = _plain(self.config), _plain(other.config)
        for key in sorted(set(mine_cfg) | set(their_cfg)):
            if key in reported or (key == "poolings" and "poolings" in reported):
                continue  # the same difference, already stated through the spec field
            x = _short(mine_cfg[key]) if key in mine_cfg else _ABSENT_CONFIG.get(key, "<absent>")
            y = _short(their_cfg[key]) if key in their_cfg else _ABSENT_CONFIG.get(key, "<absent>")
            if (key in mine_cfg) != (key in their_cfg) or _yaml(mine_cfg[key]) != _yaml(
                their_cfg[key]
            ):
                out.append(f"config.{key}: stored {x} vs requested {y}")
        return out


def _is_dtype(value: Any) -> bool:
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise StoreError(f"invalid {kind} name {name!r}: expected a non-empty string without '/'")
    return name


def _validate_spec(spec: FeatureSetSpec) -> None:
    where = f"feature set {spec.name!r}"
    _check_name("feature-set", spec.name)
    if not isinstance(spec.backend, str) or not spec.backend:
        raise StoreError(f"{where}: backend must be a non-empty string, got {spec.backend!r}")
    if not spec.layers:
        raise StoreError(f"{where}: no layers; expected at least one layer number")
    if (
        any(b <= a for a, b in zip(spec.layers, spec.layers[1:], strict=False))
        or min(spec.layers) < 0
    ):
        raise StoreError(
            f"{where}: layers {spec.layers} must be non-negative and strictly increasing "
            "(sort them, and order the data the same way)"
        )
    if spec.dim < 1:
        raise StoreError(f"{where}: dim must be positive, got {spec.dim}")
    if spec.dtype not in STORAGE_DTYPES:
        raise StoreError(
            f"{where}: storage dtype {spec.dtype!r} is not supported; "
            f"accepted: {', '.join(STORAGE_DTYPES)}"
        )
    if len(set(spec.poolings)) != len(spec.poolings):
        raise StoreError(f"{where}: duplicate pooling names in {spec.poolings}")
    for p in spec.poolings:
        _check_name("pooling", p)
    if not spec.poolings and not spec.frames:
        raise StoreError(f"{where}: nothing to store; give at least one pooling or frames=True")
    for head, names in spec.heads.items():
        _check_name("head", head)
        if not names:
            raise StoreError(f"{where}: head {head!r} has no output names")
    if spec.feature_names is not None and len(spec.feature_names) != spec.dim:
        raise StoreError(
            f"{where}: {len(spec.feature_names)} feature_names for dim {spec.dim}; "
            "expected one name per feature"
        )
    if spec.frame_rate is not None and not (spec.frame_rate > 0 and math.isfinite(spec.frame_rate)):
        raise StoreError(f"{where}: frame_rate must be positive or None, got {spec.frame_rate}")
    for key, value in spec.attrs.items():
        if not isinstance(key, str) or not key or key in _SET_ATTRS:
            raise StoreError(
                f"{where}: attr name {key!r} is empty or reserved; reserved: {', '.join(_SET_ATTRS)}"
            )
        if value is not None and not isinstance(value, (str, int, float, bool, np.generic)):
            raise StoreError(
                f"{where}: attr {key!r} has a {type(value).__name__} value; "
                "accepted: str, int, float, bool"
            )


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """Which part of which item list a shard file holds (see :mod:`embedx.extraction.shard`).

    Attributes:
        index: K, 0-based.
        count: N, the number of shards.
        total_items: items of the full, unsharded list.
        items_digest: SHA-256 (hex) of the full list's ids joined by newlines.
        indices: ``(num_items,)`` int64 global position of each of the file's items, increasing.
    """

    index: int
    count: int
    total_items: int
    items_digest: str
    indices: np.ndarray = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``"K/N"``."""
        return f"{self.index}/{self.count}"

    def same(self, other: ShardInfo) -> bool:
        """Whether both describe the same shard (fields and indices)."""
        return (
            (self.index, self.count, self.total_items, self.items_digest)
            == (other.index, other.count, other.total_items, other.items_digest)
            and np.array_equal(self.indices, other.indices)
        )
