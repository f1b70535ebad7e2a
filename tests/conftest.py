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
