"""Layer capture and precision: which hidden states a forward records, and in which dtype it runs.

Shared by every transformer backend (:mod:`embedx.backends.hf`, :mod:`embedx.backends.whisper`):
:func:`capture_layers` records the requested layers with hooks and runs only the blocks up to the
highest one (early stopping leaves layers ``0..k`` bitwise unchanged); :func:`autocast` runs a
forward in bf16/fp16 under ``torch.autocast``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["autocast", "capture_layers", "cast_autocast_weights"]

#: reduced precisions -> the autocast dtype (fp32 runs without autocast)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def capture_layers(
    container: nn.Module, wanted: set[int], num_blocks: int, max_block: int | None = None
) -> Iterator[dict[int, torch.Tensor]]:
    """Run only the first ``num_blocks`` of ``container.layers`` and record hidden states.

    Layer 0 is the input of block 1 and layer k the output of block k, recorded with hooks on
    the blocks exactly where transformers' ``output_hidden_states`` records them (its own hooks
    are installed once, on first use, so they would miss blocks cut off by an early stop).

    Args:
        container: the module holding the blocks in ``.layers`` (an encoder).
        wanted: layer numbers to record.
        num_blocks: blocks to run (the highest wanted layer, or all for a head).
        max_block: record block outputs only up to this block (Whisper takes its last layer
            from the encoder's output instead); default: all that run.

    Yields:
        Layer number -> ``(batch, num_frames, dim)`` state, filled while the model runs.
    """
    states: dict[int, torch.Tensor] = {}
    all_blocks = container.layers
    last = num_blocks if max_block is None else min(num_blocks, max_block)

    def record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if 0 in wanted:
            states[0] = args[0] if args else kwargs["hidden_states"]

    def record_output(k: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if k in wanted:
                # WavLM blocks return (hidden_states, position_bias)
                states[k] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [all_blocks[0].register_forward_pre_hook(record_input, with_kwargs=True)]
    handles += [all_blocks[k - 1].register_forward_hook(record_output(k)) for k in range(1, last + 1)]
    container.layers = all_blocks[:num_blocks]
    try:
        yield states
    finally:
        container.layers = all_blocks
        for handle in handles:
            handle.remove()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16``; nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])



def cast_autocast_weights(model: nn.Module, precision: str) -> int:
    """Cast, once, the parameters that autocast would cast on every forward.

    Under ``torch.autocast`` a ``Linear`` or ``Conv1d`` casts its weight and bias to the
    autocast dtype at every call (163 casts per HuBERT-base forward); storing them in that dtype
    gives the same values without the casts (and half the weight memory). Only these modules
    are cast: norms and other fp32-list operations keep float32 weights, and weight-normed
    convolutions (recomputed from ``weight_g``/``weight_v`` each call) are left alone.

    Args:
        model: the model, run only under :func:`autocast` afterwards.
        precision: ``"bf16"`` or ``"fp16"``; ``"fp32"`` casts nothing.

    Returns:
        The number of modules cast.
    """
    if precision == "fp32":
        return 0
    dtype = _DTYPES[precision]
    cast = 0
    for module in model.modules():
        if type(module) not in (nn.Linear, nn.Conv1d):
            continue
        if hasattr(module, "parametrizations") or hasattr(module, "weight_g"):
            continue  # weight norm: the weight is recomputed from float32 parameters
        module.to(dtype)
        cast += 1
    return cast
