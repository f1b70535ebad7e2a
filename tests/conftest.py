"""Shared fixtures: tiny random-weight models (built once per session) and synthetic audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: family name -> directory of a tiny random-weight model (cached per session)."""
    from embedx.backends.tiny import save_tiny_model

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
