"""The TransferEngine connector's registered memory pool (host or CUDA) and the buffers it hands out."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np
import torch

from omni_core import BufferAllocator, ManagedBuffer

from .raw_payload import RawLayout, flat_bytes, rebuild

ALIGNMENT = 4096


class ReceivedBuffer(ManagedBuffer):
    """A raw payload received into the pool.  ``release()`` it when done (upstream contract).

    ``layout`` says what the bytes are; :meth:`payload` rebuilds the tensor or bytes that were put.
    """

    def __init__(
        self, allocator: BufferAllocator, offset: int, size: int, pool_tensor: torch.Tensor, layout: RawLayout
    ) -> None:
        super().__init__(allocator, offset, size, pool_tensor)
        self.layout = layout

    def payload(self, *, copy: bool = True) -> Any:
        """The tensor or bytes that were put; with ``copy=False`` a tensor is a view of this buffer."""
        return rebuild(self.layout, self.tensor, copy=copy)


class RegisteredPool:
    """``size`` bytes on ``device`` registered with a TransferEngine, carved up by a BufferAllocator."""

    def __init__(self, engine: Any, size: int, device: str) -> None:
        if size <= 0:
            raise ValueError(f"memory_pool_size must be > 0, got {size}")
        if device == "cpu" and torch.cuda.is_available():
            tensor = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        elif device == "cpu":
            # numpy asks for transparent huge pages (torch does not): transfers into them run ~30% faster
            tensor = torch.from_numpy(np.empty(size, dtype=np.uint8))
        else:
            tensor = torch.empty(size, dtype=torch.uint8, device=device)
        self.tensor = tensor
        self.base = tensor.data_ptr()
        self.allocator = BufferAllocator(size, ALIGNMENT)
        rc = engine.register_memory(self.base, size)
        if rc != 0:
            raise RuntimeError(f"TransferEngine.register_memory of the {size}-byte {device} pool failed ({rc})")
        self._engine = engine

    def allocate(self, size: int) -> ManagedBuffer:
        """A pool slice of ``size`` bytes; MemoryError when the pool has no room."""
        return ManagedBuffer(self.allocator, self.allocator.alloc(size), size, self.tensor)

    def allocate_received(self, layout: RawLayout) -> ReceivedBuffer:
        """A pool slice for an incoming raw payload of ``layout``."""
        return ReceivedBuffer(self.allocator, self.allocator.alloc(layout.nbytes), layout.nbytes, self.tensor, layout)

    def owns(self, buffer: ManagedBuffer) -> bool:
        return buffer.allocator is self.allocator

    def close(self, keep_memory_until: float | None = None) -> None:
        """Unregister the pool; its memory stays allocated until ``keep_memory_until`` (``time.monotonic()``),
        for reads of it that may still be running (a daemon timer holds it)."""
        self._engine.unregister_memory(self.base)
        linger = 0.0 if keep_memory_until is None else keep_memory_until - time.monotonic()
        if linger > 0:
            holder = threading.Timer(linger, lambda memory=self.tensor: None)
            holder.daemon = True
            holder.start()


def fill(buffer: ManagedBuffer, data: Any) -> None:
    """Copy a raw payload (tensor on any device, or bytes-like) into ``buffer``; waits for device copies."""
    source = flat_bytes(data)
    target = buffer.tensor
    if not target.is_cuda and (isinstance(source, np.ndarray) or not source.is_cuda):
        # numpy copies on this thread; torch's copy_ fans out to its intra-op threads, which spin-wait and
        # stall on a busy host
        np.copyto(target.numpy(), source if isinstance(source, np.ndarray) else source.numpy(), casting="no")
        return
    if isinstance(source, np.ndarray):
        with warnings.catch_warnings():  # read-only sources (bytes) are only read
            warnings.simplefilter("ignore", UserWarning)
            source = torch.from_numpy(source)
    target.copy_(source)
    synchronize(target)


def synchronize(tensor: torch.Tensor) -> None:
    """Wait until queued device work on ``tensor``'s device is done (no-op on the CPU)."""
    if tensor.is_cuda:
        torch.cuda.current_stream(tensor.device).synchronize()
