"""Stage 1's settings: :class:`ExtractConfig` (what one extraction stores and how it runs), the
fields that define the stored values (:data:`DATA_KEYS`), YAML presets, and a config built from
CLI options or rebuilt from a stored feature set.

Light on purpose (no torch, no h5py at import): the CLI and ``predict`` validate settings here
before anything heavy loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedx.backends.base import RANDOM_INIT_SEED, SHORT_POLICIES, Backend
from embedx.backends.hub import check_local_model
from embedx.errors import ConfigError, Param, one_line
from embedx.extraction.audio import RESAMPLER
from embedx.extraction.layers import ALL_LAYERS, parse_layers
from embedx.extraction.pooling import parse_poolings, split_poolings

#: options named in the messages below (the CLI spells them as flags)
OPENSMILE = Param("opensmile")
RANDOM_INIT = Param("random_init", switch=True)

#: default batch budgets (padded seconds) per kind of device (``--help`` quotes them)
BATCH_SECONDS = {"cuda": 60.0, "cpu": 8.0}
CUDA_BATCH_SECONDS = BATCH_SECONDS["cuda"]
CPU_BATCH_SECONDS = BATCH_SECONDS["cpu"]
#: on CUDA the default budget is this share of the free device memory over the backend's
#: ``activation_bytes_per_second``, between CUDA_BATCH_SECONDS and MAX_CUDA_BATCH_SECONDS
CUDA_MEMORY_SHARE = 0.4
MAX_CUDA_BATCH_SECONDS = 480.0
#: ExtractConfig fields that define the stored values; they are stored with the feature set
#: and a resume with any of them changed is refused
DATA_KEYS = ("backend", "model", "revision", "name", "layers", "poolings", "frames", "dtype",
             "precision", "short", "max_chunk_seconds", "resampler", "backend_options")


@dataclass
class ExtractConfig:
    """Everything that controls one extraction.

    The fields in :data:`DATA_KEYS` define the stored values and are saved with the feature
    set (``ExtractConfig(**spec.config)`` rebuilds an equivalent config, e.g. for ``predict`` on
    new audio); the others only control how the run goes.

    Attributes:
        backend: backend registry name (``"hf"``).
        model: hub id or local directory of the model.
        revision: hub revision (branch, tag or commit).
        name: feature-set name in the store (default: the backend's, e.g. the model's name).
        layers: layer spec (``all``, ``last``, ``0,6,12``, ``-1``, ``4:9``).
        poolings: pooling names (see :mod:`embedx.extraction.pooling`); a comma string is split on
            construction.
        frames: also store frame-level states of the chosen layers.
        dtype: storage dtype, ``float32`` or ``float16``.
        precision: compute precision, ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        short: policy for items shorter than the model's minimum, ``pad`` or ``fail``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_seconds: budget of padded audio seconds per batch (``None``: 60 on a GPU, where
            batching is what matters, 8 on the CPU, where large padded batches only cost cache).
        max_chunk_seconds: items longer than this run in chunks of at most this length whose
            frames tile the item exactly; pooled values are combined over the chunks
            (``None``: never chunk). Chunking bounds memory but gives every chunk its own
            attention context, so it is part of the stored config.
        max_batch_items: optional cap on items per batch.
        workers: DataLoader worker processes for decoding (``None``: every available core but
            one, see :func:`default_workers`; 0 decodes in the main process).
        manifest: CSV with a path column and label/group columns.
        path_column: the manifest's path column.
        overwrite: replace an existing feature set of the same name with other settings.
        retry_failed: retry items recorded as failed by an earlier run.
        progress: show a progress bar.
        shard: ``"K/N"``: process only shard K (0-based) of N, balanced by duration, into its
            own file (:mod:`embedx.extraction.shard`; ``embedx merge`` combines them). A run option: not
            stored with the data, so shards and an unsharded run have the same config.
        devices: several devices of this host (``"cuda:0,cuda:1"``, ``"all"``), one process
            each over shards of the items (:mod:`embedx.extraction.scale`); a run option.
        engine: where the shards run: ``"local"`` (this host) or ``"ray"`` (a Ray cluster).
        shards: shards of a Ray run (``None``: one per GPU of the cluster).
        scheduler: the Ray cluster's address (``None``: ``$RAY_ADDRESS`` or a local Ray).
        backend_options: further keyword arguments of the backend (opensmile: ``feature_set``
            and ``level``); stored, as the backend resolved them, when not empty.
        resampler: the resampler (:data:`embedx.extraction.audio.RESAMPLER`, the only one available). It
            is stored because it defines the values of every item not at the model's rate: a
            resume of a store written with another resampler is refused.
    """

    backend: str = "hf"
    model: str | None = None
    revision: str | None = None
    name: str | None = None
    layers: str = ALL_LAYERS
    poolings: Sequence[str] = ("mean",)
    frames: bool = False
    dtype: str = "float32"
    precision: str = "auto"
    short: str = "pad"
    device: str = "auto"
    batch_seconds: float | None = None
    max_chunk_seconds: float | None = 60.0
    max_batch_items: int | None = None
    workers: int | None = None
    manifest: str | None = None
    path_column: str | None = None
    overwrite: bool = False
    retry_failed: bool = False
    progress: bool = True
    shard: str | None = None
    devices: str | None = None
    engine: str = "local"
    shards: int | None = None
    scheduler: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    resampler: str = RESAMPLER

    def __post_init__(self) -> None:
        # the one pooling grammar (a comma string or a sequence), read once; the names are
        # checked against the registry by validate()
        self.poolings = split_poolings(self.poolings)

    def validate(self) -> None:
        """Check the run-independent options.

        Raises:
            ConfigError: naming the bad value and what is accepted.
        """
        if self.resampler != RESAMPLER:
            raise ConfigError(f"resampler {self.resampler!r} is not available; accepted: {RESAMPLER}")
        from embedx.store.spec import (
            STORAGE_DTYPES,  # the store owns them (spec.py: no h5py)
        )

        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(Param("dtype"), f" {self.dtype!r} not accepted; accepted: {', '.join(STORAGE_DTYPES)}")
        if self.short not in SHORT_POLICIES:
            raise ConfigError(Param("short"), f" {self.short!r} not accepted; accepted: {', '.join(SHORT_POLICIES)}")
        if self.batch_seconds is not None and not self.batch_seconds > 0:
            raise ConfigError(Param("batch_seconds"), f" must be positive, got {self.batch_seconds}")
        if self.max_chunk_seconds is not None and not self.max_chunk_seconds > 0:
            raise ConfigError(Param("max_chunk_seconds"), f" must be positive, got {self.max_chunk_seconds}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(Param("workers"), f" must be >= 0, got {self.workers}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ConfigError(f"feature-set name {self.name!r} must be non-empty and contain no '/'")
        self.poolings = parse_poolings(self.poolings)
        parse_layers(self.layers, None)  # the form now; the range once the model is known
        if self.model:
            # a misspelt local folder is one line now, not a hub error after the audio scan
            check_local_model(self.model)
        if self.model and Path(self.model).expanduser().is_dir():
            # a local model is stored by absolute path, so `predict` on new audio and resumes
            # from another working directory find it again
            self.model = str(Path(self.model).expanduser().resolve())
        if self.shard is not None:
            from embedx.extraction.shard import parse_shard

            parse_shard(self.shard)

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`embedx.backends.create_backend`."""
        kwargs: dict[str, Any] = {"device": self.device, "precision": self.precision,
                                  "short": self.short}
        if self.model is not None:
            kwargs["model"] = self.model
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.name is not None:
            kwargs["name"] = self.name
        kwargs.update(self.backend_options)
        return kwargs


#: CLI option -> ExtractConfig field, for :func:`config_from_options`
CLI_FIELDS = {
    "backend": "backend", "model": "model", "revision": "revision", "name": "name",
    "layers": "layers", "pooling": "poolings", "frames": "frames", "dtype": "dtype",
    "precision": "precision", "short": "short", "device": "device",
    "batch_seconds": "batch_seconds", "max_chunk_seconds": "max_chunk_seconds",
    "workers": "workers", "manifest": "manifest", "path_column": "path_column",
    "overwrite": "overwrite", "retry_failed": "retry_failed", "shard": "shard",
    "devices": "devices", "engine": "engine", "shards": "shards", "scheduler": "scheduler",
}


def packaged_presets() -> dict[str, Any]:
    """The extraction presets shipped in ``embedx/configs/``, by name (file name without ``.yaml``).

    Returns:
        Name -> an importlib.resources traversable of the YAML file (``grids.yaml`` excluded:
        tuning grids are not an extraction preset).
    """
    from importlib.resources import files

    return {p.name[:-5]: p for p in sorted(files("embedx.configs").iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml") and p.name != "grids.yaml"}


def _preset_text(path: str | Path) -> str:
    """The text of a preset file, or of a packaged preset named ``path`` when no such file exists.

    A wheel has no ``configs/`` folder beside the user's work, so ``--config hubert-base`` names
    the packaged copy; a file of that name in the current folder still wins.
    """
    candidate = Path(path)
    if not candidate.exists() and candidate.parent == Path("."):
        presets = packaged_presets()
        name = candidate.name[:-5] if candidate.name.endswith(".yaml") else candidate.name
        if name in presets:
            return presets[name].read_text(encoding="utf-8")
        if not candidate.suffix:
            raise ConfigError(f"no preset file {str(path)!r} and no packaged preset of that name; "
                              f"packaged: {', '.join(presets)}")
    return candidate.read_text(encoding="utf-8")


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a YAML preset of extraction settings (keys: :class:`ExtractConfig` fields).

    Args:
        path: the YAML file, or the name of a packaged preset (``hubert-base``; see
            :func:`packaged_presets`).

    Returns:
        The settings, keyed by field name.

    Raises:
        ConfigError: unreadable file, not a mapping, or an unknown key.
    """
    import yaml

    try:
        data = yaml.safe_load(_preset_text(path)) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"preset {str(path)!r} is not a UTF-8 text (YAML) file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read preset {str(path)!r}: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {str(path)!r} must be a mapping of settings, got {type(data).__name__}")
    fields = ExtractConfig.__dataclass_fields__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in preset {str(path)!r}; "
                          f"accepted: {', '.join(f for f in fields if f != 'progress')}")
    return data


def config_from_options(options: dict[str, Any], given: set[str] | None = None,
                        preset: str | Path | None = None) -> ExtractConfig:
    """Build the config of ``embedx extract`` from its options and an optional YAML preset.

    A preset fills every setting whose option was not typed on the command line; typed options
    win. ``--opensmile SET`` / ``--opensmile-level`` select the openSMILE backend.

    Args:
        options: CLI parameter name -> value (typer's ``ctx.params``).
        given: the parameters typed on the command line (default: all of ``options``).
        preset: YAML preset (see :func:`load_preset`).

    Returns:
        The :class:`ExtractConfig`.

    Raises:
        ConfigError: conflicting or missing options, or a bad preset.
    """
    given = set(options) if given is None else given
    values: dict[str, Any] = load_preset(preset) if preset is not None else {}
    for param, field_name in CLI_FIELDS.items():
        if param in options and (param in given or field_name not in values):
            values[field_name] = options[param]
    if "max_chunk_seconds" in values:  # 0 = never chunk; not given: the config's default
        values["max_chunk_seconds"] = values["max_chunk_seconds"] or None
    feature_set, level = options.get("opensmile"), options.get("opensmile_level")
    if feature_set is not None or level is not None or values.get("backend") == "opensmile":
        if values.get("backend", "hf") not in ("hf", "opensmile"):
            raise ConfigError(OPENSMILE, " selects the opensmile backend; it cannot be combined with ",
                              Param("backend", values["backend"]))
        if values.get("model") is not None:
            raise ConfigError(OPENSMILE, " and ", Param("model"), " are exclusive: run embedx extract once "
                              "per feature source with the same ", Param("output"), " file to store both")
        stored = dict(values.get("backend_options") or {})
        values["backend"] = "opensmile"
        values["backend_options"] = {"feature_set": feature_set or stored.get("feature_set", "egemaps"),
                                     "level": level or stored.get("level", "functionals")}
    if options.get("random_init"):
        if values.get("backend", "hf") != "hf":
            raise ConfigError(RANDOM_INIT, f" needs a model of the hf backend, not {values['backend']!r}")
        seed = options.get("seed")
        values["backend_options"] = {**(values.get("backend_options") or {}), "random_init": True,
                                     "seed": RANDOM_INIT_SEED if seed is None else seed}
    elif options.get("seed") is not None:
        raise ConfigError(Param("seed", options["seed"]), " seeds the weights of ", RANDOM_INIT,
                          "; give ", RANDOM_INIT, " too")
    if values.get("backend", "hf") == "hf" and not values.get("model"):
        raise ConfigError(Param("model"), " is required for the hf backend (a hub id or a local directory); "
                          "or extract openSMILE features with ", Param("opensmile", "egemaps"))
    return ExtractConfig(**values, progress=not options.get("quiet", False))


def config_from_spec(spec_config: dict[str, Any], **overrides: Any) -> ExtractConfig:
    """Rebuild an :class:`ExtractConfig` from a stored feature set's config.

    Args:
        spec_config: ``FeatureSetSpec.config`` of a stored feature set.
        **overrides: run options to set (device, workers, progress, ...).

    Returns:
        A config that extracts the same features.
    """
    known = {k: v for k, v in spec_config.items() if k in ExtractConfig.__dataclass_fields__}
    return ExtractConfig(**{**known, **overrides})


def batch_seconds(config: ExtractConfig, backend: Backend) -> float:
    """The batch budget in padded seconds: the configured one, else a per-device default.

    On the CPU the forward is compute-bound and big padded batches were slower (base HuBERT,
    2 cores: 12.9 s for 164 s of audio with 5-s batches, 15.3 s with 20-s ones), so the CPU
    default is small; a GPU needs large batches to be busy.
    """
    if config.batch_seconds is not None:
        return config.batch_seconds
    device = str(backend.device)
    return cuda_batch_seconds(backend) if device.startswith("cuda") else CPU_BATCH_SECONDS


def cuda_batch_seconds(backend: Backend) -> float:
    """The CUDA default budget: sized from the device's free memory when that can be known.

    :data:`CUDA_MEMORY_SHARE` of the free memory (``torch.cuda.mem_get_info``, read after the
    model is loaded) over the backend's ``activation_bytes_per_second``, clipped to
    ``CUDA_BATCH_SECONDS .. MAX_CUDA_BATCH_SECONDS``: a 60-s batch keeps an H100 busy for about
    a millisecond (HuBERT-base), so the loop would be bound by Python and kernel launches.
    Fallback, :data:`CUDA_BATCH_SECONDS`: a backend without an estimate, or free memory that
    cannot be read. Running out of memory anyway shrinks the budget for the rest of the run
    (:class:`~embedx.extraction.forward.Budget`).
    """
    per_second = backend.activation_bytes_per_second
    if not per_second:
        return CUDA_BATCH_SECONDS
    import torch

    try:
        free, _total = torch.cuda.mem_get_info(torch.device(str(backend.device)))
    except (RuntimeError, AssertionError, ValueError):  # no driver, or not a CUDA build
        return CUDA_BATCH_SECONDS
    seconds = CUDA_MEMORY_SHARE * free / per_second
    return float(min(max(seconds, CUDA_BATCH_SECONDS), MAX_CUDA_BATCH_SECONDS))
