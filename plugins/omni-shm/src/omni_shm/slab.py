"""Slabs: files in the shared-memory directory, mapped once and reused for many payloads."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import stat
import sys
from typing import Any

#: Slabs are created and opened with these; O_NOFOLLOW refuses a symlink planted under a slab's name.
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class Slab:
    """One slab file: its descriptor (which carries the region locks), its mapping and a byte view of it."""

    __slots__ = ("_pinned", "fd", "inode", "mm", "name", "path", "size", "view")

    def __init__(self, name: str, path: str, fd: int, size: int, populate: bool) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.size = size
        self.inode = os.fstat(fd).st_ino
        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
        self.mm = mmap.mmap(fd, size, flags=flags)
        self.view = memoryview(self.mm)
        self._pinned: Any = None

    @classmethod
    def create(cls, directory: str, name: str, size: int) -> Slab:
        """Create ``name`` (mode 0600, exclusive) with ``size`` bytes reserved and pre-faulted.

        The bytes are reserved with ``posix_fallocate`` so a full tmpfs fails here with ENOSPC instead of
        SIGBUS on first write; on any failure the file is removed again.
        """
        path = os.path.join(directory, name)
        fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            return cls(name, path, fd, size, populate=True)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    @classmethod
    def open(cls, directory: str, name: str) -> Slab | None:
        """Map another process's slab, or None if it is gone or is not a regular file of this user.

        Other failures to open or map it (no descriptors left, a symlink planted under its name, no memory)
        raise OSError.
        """
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size == 0:
                os.close(fd)
                return None
            return cls(name, path, fd, st.st_size, populate=False)
        except BaseException:
            os.close(fd)
            raise

    def exists(self) -> bool:
        """True while this very file (same inode) is still linked under its name."""
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino == self.inode
        except FileNotFoundError:
            return False

    def pin(self) -> None:
        """Register the mapping as pinned host memory with CUDA (fast DMA); a no-op if already pinned."""
        if self._pinned is not None:
            return
        anchor = (ctypes.c_char * self.size).from_buffer(self.mm)
        torch = sys.modules["torch"]
        if int(torch.cuda.cudart().cudaHostRegister(ctypes.addressof(anchor), self.size, 1)) == 0:
            self._pinned = anchor

    def unlink(self) -> None:
        """Remove the slab's name (mappings stay valid until closed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        """Unpin, unmap and close; views into the mapping that are still alive keep it mapped until dropped."""
        if self.fd < 0:
            return
        if self._pinned is not None:
            torch = sys.modules["torch"]
            torch.cuda.cudart().cudaHostUnregister(ctypes.addressof(self._pinned))
            self._pinned = None
        self.view.release()
        with contextlib.suppress(BufferError):
            self.mm.close()
        os.close(self.fd)
        self.fd = -1


def cuda_in_use() -> bool:
    """True when this process has already initialised CUDA (so pinning costs no new context)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()
