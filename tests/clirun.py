"""The real ``embedx`` command line in a child process, as a user (or ``make demo``) runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import embedx


def run_embedx(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m embedx ARGS`` with the code under test on the path, default workers, no stdin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(embedx.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "embedx", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
