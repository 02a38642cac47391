"""The cross-process protocol on one payload region: its header and its two byte-range locks.

A region is ``HEADER_SIZE`` bytes of header followed by one serialized frame.  Header (little-endian)::

    0  4s magic     4 u8 state (READY, DONE)     6 u16 readers    8 u16 remaining claims    10 u16 released
    16 u64 generation    24 u64 offset (of the region in its slab)    32 u64 frame length    40 f64 created

Two one-byte open-file-description locks (``F_OFD_SETLK``) per region coordinate the processes; the kernel
drops them when their holder dies, which is how an abandoned read is told from a slow one:

- CLAIM (byte ``offset``), exclusive and brief: held to change ``remaining``/``released`` and the key entry;
- USE (byte ``offset + 1``), shared: held by every reader from its claim until it releases the payload.

Invariant: while a region has ``remaining > 0`` its key entry exists and points at it, and the entry is
only removed by whoever holds the CLAIM lock and sets ``remaining`` (the last reader, or a retirer).  So
unlinking the entry under the lock never removes another generation.  The producer reuses a region once
its state is DONE, or once ``remaining == 0`` and nobody holds USE (a reader died holding it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from typing import NamedTuple

from .slab import Slab

MAGIC = b"OSHR"
HEADER_SIZE = 64
READY = 1
DONE = 2
_HEADER = struct.Struct("<4sBxHHH4xQQQd")
_STATE = 4
_COUNTS = struct.Struct("<HH")  # remaining, released
_COUNTS_AT = 8
_CLAIM = 0
_USE = 1
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)


class Header(NamedTuple):
    """A decoded region header."""

    magic: bytes
    state: int
    readers: int
    remaining: int
    released: int
    generation: int
    offset: int
    length: int
    created: float


def write_header(slab: Slab, offset: int, readers: int, generation: int, length: int, created: float) -> None:
    """Stamp a fresh READY region awaiting ``readers`` claims."""
    _HEADER.pack_into(slab.view, offset, MAGIC, READY, readers, readers, 0, generation, offset, length, created)


def read_header(slab: Slab, offset: int) -> Header:
    """The header at ``offset`` (which the caller has checked lies inside the slab)."""
    return Header._make(_HEADER.unpack_from(slab.view, offset))


def is_done(slab: Slab, offset: int) -> bool:
    return slab.view[offset + _STATE] == DONE


def _lock(fd: int, kind: int, byte: int, wait: bool) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock_use(slab: Slab, offset: int) -> None:
    _lock(slab.fd, fcntl.F_UNLCK, offset + _USE, False)


def take(slab: Slab, offset: int, generation: int, entry_path: str, *, retire: bool) -> Header | None:
    """Claim one read of the region (holding USE on return), or with ``retire`` withdraw it from readers.

    Either way the key entry is removed once no claims remain.  Returns the header as it was, or None if
    the entry is stale: the region is gone, reused by another generation, or has no claims left.
    """
    if offset + HEADER_SIZE > slab.size:
        return None
    _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM, True)
    try:
        header = read_header(slab, offset)
        if (
            header.magic != MAGIC
            or header.generation != generation
            or header.offset != offset
            or header.remaining == 0
            or offset + HEADER_SIZE + header.length > slab.size
        ):
            return None
        if not retire and not _lock(slab.fd, fcntl.F_RDLCK, offset + _USE, False):
            return None  # only a producer probing a region with remaining == 0 holds USE exclusively
        remaining = 0 if retire else header.remaining - 1
        if remaining == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry_path)
        _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, remaining, header.released)
        return header
    finally:
        _lock(slab.fd, fcntl.F_UNLCK, offset + _CLAIM, False)


def release(slab: Slab, offset: int, readers: int) -> None:
    """Record that one reader is done with the region (the caller then drops its USE lock)."""
    if readers == 1:
        slab.view[offset + _STATE] = DONE
        return
    _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM, True)
    try:
        remaining, released = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)
        _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, remaining, released + 1)
        if released + 1 >= readers:
            slab.view[offset + _STATE] = DONE
    finally:
        _lock(slab.fd, fcntl.F_UNLCK, offset + _CLAIM, False)


def reclaimable(slab: Slab, offset: int, entry_path: str, expired: bool) -> bool:
    """Producer side: may the region be reused?  An ``expired`` region is first withdrawn from readers.

    True when every reader released it, or when no claims remain and no live reader holds USE.
    Never blocks: a region whose CLAIM lock is busy is simply tried again later.
    """
    if slab.view[offset + _STATE] == DONE:
        return True
    remaining = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)[0]
    if remaining and not expired:
        return False
    if not _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM, False):
        return False
    try:
        remaining, released = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)
        if remaining:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry_path)
            _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, 0, released)
        if not _lock(slab.fd, fcntl.F_WRLCK, offset + _USE, False):
            return False
        _lock(slab.fd, fcntl.F_UNLCK, offset + _USE, False)
        return True
    finally:
        _lock(slab.fd, fcntl.F_UNLCK, offset + _CLAIM, False)


def remove_stale_entry(entry_path: str, target: str, scratch_path: str) -> None:
    """Remove the key entry if it still has ``target``, without ever removing a newer entry.

    Used only for entries that no live region backs (so no CLAIM lock can guard them): the entry is moved
    aside atomically, and put back if what was moved turns out to be a newer one.
    """
    try:
        os.rename(entry_path, scratch_path)
    except FileNotFoundError:
        return
    try:
        if os.readlink(scratch_path) != target:
            with contextlib.suppress(FileExistsError):
                os.link(scratch_path, entry_path, follow_symlinks=False)
    finally:
        os.unlink(scratch_path)
