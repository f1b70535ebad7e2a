"""Results from the model's device to the host: the seam that lets the loop overlap the GPU.

The loop never waits for a batch's results itself: it starts their copy to the host
(:meth:`DeviceOps.to_host`), hands the returned :class:`HostCopy` to the writer thread, and goes
on to stage and run the next batch. The writer calls :meth:`HostCopy.wait` before it writes, so
an item is still marked done only after its data are on the host and then flushed to disk.

- :class:`DeviceOps` (CPU and any device without streams): the copy is done when
  :meth:`~DeviceOps.to_host` returns.
- :class:`CudaOps`: the copy runs on a second CUDA stream into pinned host memory
  (``non_blocking``), ordered after the batch's forward and pooling on the compute stream, and
  ends in a CUDA event that :meth:`HostCopy.wait` blocks on (a blocking-sync event: the writer
  thread sleeps rather than spins). The forward of the next batch is queued meanwhile, so the
  copy of batch N overlaps the forward of batch N + 1 on the device.

A backend may bring its own ops in ``transfer_ops`` (tests use a slowed fake device that records
the order of events).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is heavy; only the type checker needs it here
    import torch

__all__ = ["CudaOps", "DeviceOps", "HostCopy", "ops_for"]


class HostCopy:
    """Arrays on their way to the host; :meth:`wait` returns them once they have arrived.

    Args:
        arrays: name -> host array (already complete for a synchronous copy).
        event: a CUDA event recorded after the copies, or ``None`` when they are done.
    """

    def __init__(self, arrays: Mapping[str, Any], event: Any = None) -> None:
        self._arrays = dict(arrays)
        self._event = event

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the copies are done.

        Returns:
            name -> host array, in the dtype and shape of the device tensor.
        """
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in self._arrays.items()}


class DeviceOps:
    """Synchronous copies to the host: right for the CPU, where a copy is a no-op or a memcpy."""

    def to_host(self, tensors: Mapping[str, torch.Tensor]) -> HostCopy:
        """Copy ``tensors`` to the host.

        Args:
            tensors: name -> tensor on the model's device.

        Returns:
            The copy, complete.
        """
        return HostCopy({k: t.cpu() for k, t in tensors.items()})


class CudaOps(DeviceOps):
    """Copies on a side stream into pinned memory, completed by an event (see the module doc).

    Args:
        device: the CUDA device the model runs on.
    """

    def __init__(self, device: torch.device) -> None:
        import torch

        self.device = device
        self.stream = torch.cuda.Stream(device)

    def to_host(self, tensors: Mapping[str, torch.Tensor]) -> HostCopy:
        """Start copying ``tensors`` to pinned host memory; returns without waiting.

        The copy stream waits for the work queued so far on the compute stream (the forward and
        pooling that produce ``tensors``); ``record_stream`` keeps the caching allocator from
        handing their device memory to the next batch before the copy has read it.
        """
        import torch

        compute = torch.cuda.current_stream(self.device)
        ready = {k: t.contiguous() for k, t in tensors.items()}  # a strided D2H copy would stage
        self.stream.wait_stream(compute)
        hosts = {}
        with torch.cuda.stream(self.stream):
            for k, t in ready.items():
                host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                host.copy_(t, non_blocking=True)
                t.record_stream(self.stream)
                hosts[k] = host
            event = torch.cuda.Event(blocking=True)
            event.record(self.stream)
        return HostCopy(hosts, event)


def ops_for(backend: Any) -> DeviceOps:
    """The device ops of ``backend``: its own ``transfer_ops``, else by its device.

    Args:
        backend: a :class:`~embedx.backends.base.Backend`.

    Returns:
        :class:`CudaOps` for a CUDA device, else synchronous :class:`DeviceOps`.
    """
    own = backend.transfer_ops
    if own is not None:
        return own
    if str(backend.device).startswith("cuda"):
        import torch

        return CudaOps(torch.device(str(backend.device)))
    return DeviceOps()
