"""Registered host memory the store connector reuses: staging for puts, landing zone for gets.

Memory that was used once stays faulted in, so later transfers into it run at full speed (receiving
into fresh pages costs about twice the transfer itself).  A region handed out by :meth:`region` goes
back to the pool when the array and every view derived from it (tensors included) are garbage.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from omni_core import BufferAllocator

#: Granularity of pool regions (also their alignment).
ALIGNMENT = 4096


class _Region:
    """Owner of one pool range: arrays built on it keep it alive, and its death frees the range.

    ``extent`` is ``[offset, size]`` of the range it holds (``shrink`` gives its tail back early).
    """

    def __init__(self, view: np.ndarray, extent: list[int]) -> None:
        self.__array_interface__ = view.__array_interface__
        self._view = view
        self.extent = extent


class LocalBufferPool:
    """``size`` bytes of host memory, registered through ``register(address, size)`` (0 bytes: disabled)."""

    def __init__(self, size: int, register: Callable[[int, int], None], unregister: Callable[[int], None]) -> None:
        self._unregister = unregister
        self._memory = np.empty(max(size, 0), dtype=np.uint8)
        self._allocator = BufferAllocator(size, ALIGNMENT) if size > 0 else None
        self._registered = False
        if self._allocator is not None:
            register(self._memory.ctypes.data, size)
            self._registered = True

    def region(self, size: int) -> tuple[np.ndarray, bool]:
        """A writable uint8 array of ``size`` bytes and whether it is pool memory (registered and warm)."""
        if self._allocator is not None:
            try:
                offset = self._allocator.alloc(size)
            except MemoryError:
                pass
            else:
                extent = [offset, size]
                owner = _Region(self._memory[offset : offset + size], extent)
                weakref.finalize(owner, self._free, extent)
                return np.asarray(owner), True
        return np.empty(size, dtype=np.uint8), False

    def shrink(self, region: np.ndarray, size: int) -> np.ndarray:
        """The first ``size`` bytes of a fresh ``region`` (nothing else may view it); the rest goes back now."""
        owner = region.base
        if self._allocator is not None and isinstance(owner, _Region):
            offset, held = owner.extent
            keep = max(ALIGNMENT, -(-size // ALIGNMENT) * ALIGNMENT)
            if keep < held:
                self._allocator.free(offset + keep, held - keep)
                owner.extent[1] = keep
        return region[:size]

    def _free(self, extent: list[int]) -> None:
        assert self._allocator is not None
        self._allocator.free(*extent)

    @property
    def used_bytes(self) -> int:
        """Bytes of the pool held by regions still alive."""
        return self._allocator.used_bytes if self._allocator is not None else 0

    def close(self) -> None:
        """Unregister the pool (regions still alive keep its memory valid)."""
        if self._registered:
            self._registered = False
            self._unregister(self._memory.ctypes.data)
