"""Reused memory for frames on their way to the payload owner.

A frame is written here, handed to the owner (Ray copies it into the object store as the call's argument)
and the memory is reused by the next ``put``: warm pages instead of fresh ones each time, which for large
frames costs as much as the copy itself.  Frames that do not fit (too large, or the area is busy with
concurrent puts) get fresh memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np

from omni_core import BufferAllocator


class StagingArea:
    """``nbytes`` of reusable frame memory (allocated on first use); 0 = always fresh memory."""

    def __init__(self, nbytes: int) -> None:
        self._nbytes = nbytes
        self._allocator = BufferAllocator(nbytes, alignment=64) if nbytes else None
        self._memory: np.ndarray | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def frame(self, nbytes: int) -> Iterator[np.ndarray]:
        """A writable ``uint8`` array of ``nbytes`` for the duration of the block."""
        offset = self._reserve(nbytes)
        if offset is None:
            yield np.empty(nbytes, dtype=np.uint8)
            return
        assert self._allocator is not None and self._memory is not None
        try:
            yield self._memory[offset : offset + nbytes]
        finally:
            self._allocator.free(offset, nbytes)

    def _reserve(self, nbytes: int) -> int | None:
        if self._allocator is None or not 0 < nbytes <= self._nbytes:
            return None
        try:
            offset = self._allocator.alloc(nbytes)
        except MemoryError:  # taken by concurrent puts
            return None
        with self._lock:
            if self._memory is None:
                self._memory = np.empty(self._nbytes, dtype=np.uint8)
        return offset
