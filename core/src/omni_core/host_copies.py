"""Private copies of received bytes, in host memory that is reused once the copy is dropped.

A connector that hands out owned (not shared) tensors copies the received bytes once.  Into fresh
memory that copy pays the kernel for every page (zeroing and mapping it): on a 2-core VM a 64 MiB copy
into fresh memory took twice to four times as long as into memory touched before.  glibc's malloc hands
blocks below 32 MiB out of its heap, which reuses freed memory warm; from 32 MiB on it maps fresh memory
for every allocation and unmaps it on free.  So from ``MIN_BYTES`` on, the memory of a copy whose last
view is gone goes back to a small cache here and the next copy of a similar size reuses it.  The cache
keeps at most ``IDLE_BYTES`` of idle memory and drops blocks idle for ``IDLE_SECONDS``.

Importing this module imports nothing heavy; numpy is imported by the first copy.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

#: Copies smaller than this use plain numpy memory (malloc's heap reuses such blocks warm by itself).
MIN_BYTES = 32 << 20
#: Idle memory kept for reuse, at most ...
IDLE_BYTES = 512 << 20
#: ... and for at most this long.
IDLE_SECONDS = 30.0
#: Block sizes are rounded up to this (a copy may reuse a block up to twice its size).
GRANULE = 1 << 20


class _Lease:
    """Owner of one block while a copy lives in it: numpy arrays made from it keep it alive."""

    def __init__(self, view: Any) -> None:
        self.__array_interface__ = view.__array_interface__
        self._view = view


class HostCopies:
    """A cache of idle host memory blocks (numpy uint8 arrays) for private copies; thread-safe."""

    def __init__(
        self, idle_bytes: int = IDLE_BYTES, idle_seconds: float = IDLE_SECONDS, min_bytes: int = MIN_BYTES
    ) -> None:
        self._min_bytes = min_bytes
        self._idle_bytes_cap = idle_bytes
        self._idle_seconds = idle_seconds
        self._idle: list[tuple[float, Any]] = []  # (when it became idle, block), oldest first
        self._lock = threading.Lock()

    def copy_of(self, source: Any) -> Any:
        """A writable uint8 numpy array holding a copy of ``source`` (any buffer), owned by the caller."""
        import numpy as np

        data = np.frombuffer(source, dtype=np.uint8)
        if data.size < self._min_bytes:
            return data.copy()
        block = self._take(data.size)
        lease = _Lease(block[: data.size])
        weakref.finalize(lease, self._give_back, block)
        copy: Any = np.asarray(lease)
        np.copyto(copy, data)
        return copy

    @property
    def idle_bytes(self) -> int:
        """Bytes of idle memory held for reuse."""
        with self._lock:
            return sum(block.size for _, block in self._idle)

    def _take(self, nbytes: int) -> Any:
        import numpy as np

        with self._lock:
            self._expire(time.monotonic())
            fits = [i for i, (_, block) in enumerate(self._idle) if nbytes <= block.size <= 2 * nbytes]
            if fits:
                best = min(fits, key=lambda i: self._idle[i][1].size)
                return self._idle.pop(best)[1]
        return np.empty(-(-nbytes // GRANULE) * GRANULE, dtype=np.uint8)

    def _give_back(self, block: Any) -> None:
        with self._lock:
            if block.size <= self._idle_bytes_cap:
                self._idle.append((time.monotonic(), block))
            while sum(b.size for _, b in self._idle) > self._idle_bytes_cap:
                self._idle.pop(0)

    def _expire(self, now: float) -> None:
        while self._idle and now - self._idle[0][0] > self._idle_seconds:
            self._idle.pop(0)


_HOST_COPIES = HostCopies()


def private_copy(source: Any) -> Any:
    """A writable private copy of ``source``'s bytes (a uint8 numpy array) in reused host memory.

    Tensors and arrays may be views of it; its memory is reused only after the last of them is gone.
    """
    return _HOST_COPIES.copy_of(source)
