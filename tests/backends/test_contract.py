"""The Backend contract names everything stage 1 reads of a backend, and stage 1 reads nothing else.

Stage 1 (embedx/extraction/*.py: extract, config, run_stats, loader, ...) reads a backend through
variables called ``backend``; every attribute it reads there must be declared on
:class:`~embedx.backends.base.Backend` (an annotation or a method), and none is probed with
``getattr``/``hasattr``, so a new backend learns from the contract alone what it must provide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import embedx
from embedx.backends.base import Backend, BackendOutput

STAGE1 = sorted((Path(embedx.__file__).parent / "extraction").glob("*.py"))


def _declared() -> set[str]:
    names: set[str] = set()
    for cls in Backend.__mro__:
        names.update(getattr(cls, "__annotations__", {}))
        names.update(n for n in vars(cls) if not n.startswith("_"))
    return names


def _reads() -> dict[str, list[str]]:
    """Attribute name -> files, of every ``backend.<name>`` and ``getattr(backend, ...)``."""
    found: dict[str, list[str]] = {}
    for path in STAGE1:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "backend":
                found.setdefault(node.attr, []).append(path.name)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id == "backend"):
                found.setdefault(f"{node.func.id}()", []).append(path.name)
    return found


def test_stage1_reads_only_what_the_contract_declares():
    reads = _reads()
    # the scan does see stage 1's reads, the four it once probed with getattr included
    assert {"forward", "num_layers", "device", "precision", "options", "max_samples"} <= set(reads)
    undeclared = {name: files for name, files in reads.items() if name not in _declared()}
    assert not undeclared, f"stage 1 reads attributes the Backend contract does not declare: {undeclared}"


def test_a_minimal_backend_gets_the_contracts_defaults():
    """A backend that sets only the required attributes runs through stage 1's reads."""
    from embedx.extraction.config import CPU_BATCH_SECONDS, ExtractConfig, batch_seconds

    class Ones(Backend):
        name, sample_rate, num_layers, dim, frame_rate, head_names = "ones", 16000, 1, 2, None, {}

        def forward(self, waves, layers):
            import torch

            return BackendOutput(hidden=torch.ones(1, len(waves), 1, 2), lengths=torch.ones(len(waves)))

    b = Ones()
    assert {"device", "precision", "options", "max_samples"} <= set(Backend.__annotations__)
    assert (str(b.device), b.precision, dict(b.options), b.max_samples) == ("cpu", "fp32", {}, None)
    assert batch_seconds(ExtractConfig(), b) == CPU_BATCH_SECONDS
    assert b.fit_length(np.zeros(3, np.float32)).shape == (3,)
