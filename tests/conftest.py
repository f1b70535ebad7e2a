"""Shared fixtures: tiny random-weight models (built once per session) and synthetic audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: family name -> directory of a tiny random-weight model (cached per session)."""
    from embedx.testing.tiny import save_tiny_model

    cache: dict[tuple[str, int], Path] = {}

    def make(family: str = "hubert", seed: int = 0) -> Path:
        key = (family, seed)
        if key not in cache:
            cache[key] = save_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"), seed=seed)
        return cache[key]

    return make


@pytest.fixture
def write_audio(tmp_path):
    """Factory writing a float array (``(n,)`` or ``(n, channels)``) to an audio file under tmp_path."""

    def write(rel: str, data: np.ndarray, sample_rate: int = 16000, subtype: str | None = None) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sample_rate, subtype=subtype)
        return path

    return write


def fake_hub_cache(root: Path, model_dir: Path, repo_id: str, commit: str) -> Path:
    """Lay ``model_dir`` out as the Hugging Face cache holds hub model ``repo_id`` at ``commit``
    (``refs/main`` pointing at it), so a hub id loads through the real code path offline.

    Returns:
        The cache folder, for ``HF_HUB_CACHE``.
    """
    import shutil

    cache = root / "hub"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    """A local Ray of 2 CPUs (CPU only) for the session's Ray tests, stopped at the end; yields
    the folder of the kill markers.

    Its workers see the test hook of :mod:`embedx.extraction.cluster`: the first attempt at every
    extraction shard kills its own worker after one item (Ray retries it) and leaves a marker
    (``kill_marker(shard, folder)``); nothing else reads the variables.
    """
    import os

    ray = pytest.importorskip("ray")
    from embedx.extraction.cluster import KILL_AFTER_ENV, KILL_MARKERS_ENV

    markers = tmp_path_factory.mktemp("ray-kills")
    hook = {KILL_AFTER_ENV: "1", KILL_MARKERS_ENV: str(markers)}
    saved = {k: os.environ.get(k) for k in hook}
    os.environ.update(hook)  # the workers inherit the environment of the raylet started here
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                 logging_level="ERROR", log_to_driver=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    yield markers
    ray.shutdown()
