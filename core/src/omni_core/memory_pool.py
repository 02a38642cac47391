"""A first-fit allocator over one pre-registered byte pool, and handles to its slices.

``BufferAllocator`` hands out aligned ``(offset, size)`` ranges of a pool of
``total_size`` bytes; ``ManagedBuffer`` wraps one range of a 1-D ``uint8`` torch
tensor (CPU or CUDA) and gives it back to the allocator exactly once.
Importing this module does not import torch.
"""

from __future__ import annotations

import bisect
import operator
import threading
import warnings
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from typing_extensions import Self


class BufferAllocator:
    """Thread-safe first-fit allocator of aligned ranges in a pool of ``total_size`` bytes.

    The free list is kept sorted by offset and coalesced.  Sizes are rounded up
    to ``alignment`` on both ``alloc`` and ``free``, so every offset handed out is
    a multiple of ``alignment``; a tail shorter than ``alignment`` (when
    ``total_size`` is not a multiple of it) can never be allocated.
    """

    def __init__(self, total_size: int, alignment: int = 4096) -> None:
        total_size = operator.index(total_size)
        alignment = operator.index(alignment)
        if total_size <= 0:
            raise ValueError(f"total_size must be > 0, got {total_size}")
        if alignment <= 0:
            raise ValueError(f"alignment must be > 0, got {alignment}")
        self._total = total_size
        self._alignment = alignment
        self._free: list[tuple[int, int]] = [(0, total_size)]
        self._free_total = total_size
        self._lock = threading.Lock()

    def _aligned(self, size: int, what: str) -> int:
        size = operator.index(size)
        if size <= 0:
            raise ValueError(f"{what} size must be > 0, got {size}")
        return -(-size // self._alignment) * self._alignment

    def alloc(self, size: int) -> int:
        """Reserve ``size`` bytes (rounded up to the alignment) and return their offset.

        Raises ValueError for ``size <= 0`` and MemoryError when no free block is big enough.
        """
        need = self._aligned(size, "alloc")
        with self._lock:
            for i, (offset, length) in enumerate(self._free):
                if length >= need:
                    if length == need:
                        del self._free[i]
                    else:
                        self._free[i] = (offset + need, length - need)
                    self._free_total -= need
                    return offset
            largest = max((length for _, length in self._free), default=0)
            raise MemoryError(
                f"cannot allocate {size} bytes ({need} aligned to {self._alignment}): "
                f"{self._free_total} of {self._total} bytes free, largest free block {largest} bytes"
            )

    def free(self, offset: int, size: int) -> None:
        """Return the range ``[offset, offset + size)`` (size rounded up) to the pool.

        Freeing a range that is already free warns ("double free", RuntimeWarning)
        and is ignored; a range that partly overlaps free space raises RuntimeError;
        a misaligned or out-of-range offset raises ValueError.
        """
        offset = operator.index(offset)
        length = self._aligned(size, "free")
        end = offset + length
        if offset < 0 or offset % self._alignment or end > self._total:
            raise ValueError(
                f"cannot free [{offset}, {end}): offset must be a multiple of {self._alignment} "
                f"and the range must lie within the pool of {self._total} bytes"
            )
        with self._lock:
            blocks = self._free
            i = bisect.bisect_right(blocks, offset, key=lambda block: block[0])
            prev = blocks[i - 1] if i > 0 else None
            nxt = blocks[i] if i < len(blocks) else None
            if prev is not None and end <= prev[0] + prev[1]:
                double_free = True
            elif (prev is not None and prev[0] + prev[1] > offset) or (nxt is not None and nxt[0] < end):
                raise RuntimeError(
                    f"memory corruption: freeing [{offset}, {end}) partially overlaps a free block "
                    f"(free list around it: {prev}, {nxt})"
                )
            else:
                double_free = False
                if prev is not None and prev[0] + prev[1] == offset:
                    offset = prev[0]
                    i -= 1
                    del blocks[i]
                if nxt is not None and nxt[0] == end:
                    end = nxt[0] + nxt[1]
                    del blocks[i]
                blocks.insert(i, (offset, end - offset))
                self._free_total += length
        if double_free:
            warnings.warn(
                f"double free of [{offset}, {end}) ignored: the range is already free",
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def total_size(self) -> int:
        """Size of the pool in bytes."""
        return self._total

    @property
    def alignment(self) -> int:
        """Granularity of every offset and size."""
        return self._alignment

    @property
    def free_bytes(self) -> int:
        """Bytes currently free (including an unusable unaligned tail)."""
        with self._lock:
            return self._free_total

    @property
    def used_bytes(self) -> int:
        """Bytes currently allocated (aligned sizes)."""
        with self._lock:
            return self._total - self._free_total

    @property
    def largest_free_block(self) -> int:
        """Length of the largest free block, 0 when the pool is full."""
        with self._lock:
            return max((length for _, length in self._free), default=0)

    @property
    def free_blocks(self) -> list[tuple[int, int]]:
        """A copy of the free list as sorted ``(offset, length)`` pairs."""
        with self._lock:
            return list(self._free)

    def __repr__(self) -> str:
        return (
            f"BufferAllocator(total_size={self._total}, alignment={self._alignment}, "
            f"free_bytes={self.free_bytes}, free_blocks={len(self.free_blocks)})"
        )


def _release_dropped(allocator: BufferAllocator, offset: int, size: int) -> None:
    """Finalizer of a ManagedBuffer that was garbage-collected without ``release()``."""
    warnings.warn(
        f"ManagedBuffer(offset={offset}, size={size}) garbage-collected without release(); "
        "returning its space to the allocator",
        ResourceWarning,
        stacklevel=2,
    )
    allocator.free(offset, size)


class ManagedBuffer:
    """Handle to ``size`` bytes at ``offset`` of ``pool_tensor`` (1-D uint8, CPU or CUDA).

    ``release()`` (or leaving a ``with`` block) returns the range to ``allocator``
    exactly once; a buffer dropped without release is returned by a finalizer that
    warns with ResourceWarning.  Views from ``tensor``/``as_tensor`` alias the pool
    and must not be used after release.
    """

    def __init__(self, allocator: BufferAllocator, offset: int, size: int, pool_tensor: torch.Tensor) -> None:
        import torch

        offset = operator.index(offset)
        size = operator.index(size)
        if pool_tensor.dim() != 1 or pool_tensor.dtype != torch.uint8:
            raise ValueError(
                f"pool_tensor must be a 1-D uint8 tensor, got dtype {pool_tensor.dtype} "
                f"with shape {tuple(pool_tensor.shape)}"
            )
        if size <= 0 or offset < 0 or offset + size > pool_tensor.numel():
            raise ValueError(
                f"buffer [{offset}, {offset + size}) does not fit in a pool of {pool_tensor.numel()} bytes"
            )
        self._allocator = allocator
        self._offset = offset
        self._size = size
        self._pool = pool_tensor
        self._lock = threading.Lock()
        self._released = False
        self._finalizer = weakref.finalize(self, _release_dropped, allocator, offset, size)
        self._finalizer.atexit = False

    def release(self) -> None:
        """Return the range to the allocator; later calls do nothing."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._finalizer.detach()
        self._allocator.free(self._offset, self._size)

    @property
    def released(self) -> bool:
        """True once ``release()`` has run."""
        return self._released

    @property
    def allocator(self) -> BufferAllocator:
        """The allocator the range belongs to."""
        return self._allocator

    @property
    def offset(self) -> int:
        """Byte offset of the range in the pool."""
        return self._offset

    @property
    def size(self) -> int:
        """Length of the range in bytes (as requested, not aligned)."""
        return self._size

    def _check_live(self) -> None:
        if self._released:
            raise RuntimeError(f"ManagedBuffer(offset={self._offset}, size={self._size}) was already released")

    @property
    def data_ptr(self) -> int:
        """Address of the first byte of the range (device address for a CUDA pool)."""
        self._check_live()
        return self._pool.data_ptr() + self._offset

    @property
    def tensor(self) -> torch.Tensor:
        """Zero-copy 1-D uint8 view ``pool[offset:offset + size]``."""
        self._check_live()
        return self._pool[self._offset : self._offset + self._size]

    def as_tensor(self, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
        """Zero-copy view of the whole range as a ``dtype`` tensor of ``shape``.

        Raises ValueError for a negative dimension or a byte count other than
        ``size``, and RuntimeError when ``offset`` is not a multiple of the itemsize.
        """
        shape = tuple(operator.index(dim) for dim in shape)
        if any(dim < 0 for dim in shape):
            raise ValueError(f"shape {shape} has a negative dimension")
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * dtype.itemsize
        if nbytes != self._size:
            raise ValueError(f"{dtype} tensor of shape {shape} needs {nbytes} bytes, buffer holds {self._size}")
        if self._offset % dtype.itemsize:
            raise RuntimeError(f"offset {self._offset} is not a multiple of the {dtype} itemsize {dtype.itemsize}")
        return self.tensor.view(dtype).view(shape)

    def to_bytes(self) -> bytes:
        """Copy the range into ``bytes`` (device-to-host for a CUDA pool)."""
        from .digest import host_bytes

        return bytes(host_bytes(self.tensor.cpu()))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "live"
        return f"ManagedBuffer(offset={self._offset}, size={self._size}, {state})"
