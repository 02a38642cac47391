"""The cross-process protocol on one payload region: its header and its two byte-range locks.

A region is ``HEADER_SIZE`` bytes of header followed by one serialized frame.  Header (little-endian)::

    0  4s magic     4 u8 state (READY, DONE)     6 u16 readers    8 u16 remaining claims    10 u16 released
    16 u64 generation    24 u64 offset (of the region in its slab)    32 u64 frame length

Two one-byte open-file-description locks (``F_OFD_SETLK``) per region coordinate the processes; the kernel
drops them when their holder dies, which is how an abandoned read is told from a slow one:

- CLAIM (byte ``offset``), exclusive: held to change ``remaining``/``released`` and the key entry;
- USE (byte ``offset + 1``): held by every reader from its claim until it releases the payload.

A consume-once reader (``readers == 1``) takes both bytes exclusively in one call, without waiting, and keeps
them until it releases the payload.  A broadcast reader waits for CLAIM, holds it only while it counts its
claim, and holds USE shared.

Invariant: while a region has ``remaining > 0`` its key entry exists and points at it, and the entry is
only removed by whoever holds the CLAIM lock and sets ``remaining`` (the last reader, or a retirer).  So
unlinking the entry under the lock never removes another generation.  The producer reuses a region once
its state is DONE, or once ``remaining == 0`` and nobody holds a lock on it (its reader died).
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
_HEADER = struct.Struct("<4sBxHHH4xQQQ")
_STATE = 4
_READERS = struct.Struct("<H")
_READERS_AT = 6
_GENERATION = struct.Struct("<Q")
_GENERATION_AT = 16
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


def write_header(slab: Slab, offset: int, readers: int, generation: int, length: int) -> None:
    """Stamp a fresh READY region awaiting ``readers`` claims."""
    _HEADER.pack_into(slab.view, offset, MAGIC, READY, readers, readers, 0, generation, offset, length)


def is_done(slab: Slab, offset: int) -> bool:
    return slab.view[offset + _STATE] == DONE


def _lock(fd: int, kind: int, start: int, length: int = 1, wait: bool = False) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, _FLOCK.pack(kind, 0, start, length, 0))
    except (BlockingIOError, PermissionError):
        return False
    return True


class Busy(Exception):
    """The region's only reader (or a retirer) holds it right now; its key entry is about to go."""


def _current(slab: Slab, offset: int, generation: int) -> Header | None:
    """The region's header if it is still ``generation`` with claims left, else None (stale for good)."""
    header = Header._make(_HEADER.unpack_from(slab.view, offset))
    if (
        header.magic != MAGIC
        or header.generation != generation
        or header.offset != offset
        or header.remaining == 0
        or offset + HEADER_SIZE + header.length > slab.size
    ):
        return None
    return header


def _may_be_current(slab: Slab, offset: int, generation: int) -> bool:
    """Cheap unlocked pre-check of :func:`_current` (generation and claims left)."""
    return _GENERATION.unpack_from(slab.view, offset + _GENERATION_AT)[0] == generation and bool(
        _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)[0]
    )


def take(slab: Slab, offset: int, generation: int, entry_path: str, *, retire: bool) -> Header | None:
    """Claim one read of the region (holding its locks on return), or with ``retire`` withdraw it.

    Either way the key entry is removed once no claims remain.  Returns the header as it was, or None if
    the entry that named the region is stale: the region is gone, reused by another generation or has no
    claims left (a generation never comes back, so this is checked before locking and again under the
    lock).  Raises :class:`Busy` when a consume-once region is being taken by someone else.
    """
    if offset + HEADER_SIZE > slab.size or not _may_be_current(slab, offset, generation):
        return None
    readers = _READERS.unpack_from(slab.view, offset + _READERS_AT)[0]
    single = readers == 1
    if single:
        if not _lock(slab.fd, fcntl.F_WRLCK, offset, 2):
            raise Busy
    else:
        _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM, wait=True)
    keep = False
    try:
        header = _current(slab, offset, generation)
        if header is None or header.readers != readers:
            return None
        remaining = 0 if retire else header.remaining - 1
        if remaining == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry_path)
        _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, remaining, header.released)
        if not retire and not single:
            _lock(slab.fd, fcntl.F_RDLCK, offset + _USE)  # cannot fail: exclusive USE needs CLAIM, held here
        keep = not retire
        return header
    finally:
        if not single:
            _lock(slab.fd, fcntl.F_UNLCK, offset + _CLAIM)
        elif not keep:
            _lock(slab.fd, fcntl.F_UNLCK, offset, 2)


def release(slab: Slab, offset: int, readers: int) -> None:
    """Record that one reader is done with the region and drop its locks."""
    if readers == 1:
        slab.view[offset + _STATE] = DONE
        _lock(slab.fd, fcntl.F_UNLCK, offset, 2)
        return
    _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM, wait=True)
    try:
        remaining, released = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)
        _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, remaining, released + 1)
        if released + 1 >= readers:
            slab.view[offset + _STATE] = DONE
    finally:
        _lock(slab.fd, fcntl.F_UNLCK, offset, 2)


def reclaimable(slab: Slab, offset: int, entry_path: str, expired: bool) -> bool:
    """Producer side: may the region be reused?  An ``expired`` region is first withdrawn from readers.

    True when every reader released it, or when no claims remain and no live reader holds a lock on it.
    Never blocks: a region whose CLAIM lock is busy is simply tried again later.
    """
    if slab.view[offset + _STATE] == DONE:
        return True
    remaining = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)[0]
    if remaining and not expired:
        return False
    if not _lock(slab.fd, fcntl.F_WRLCK, offset + _CLAIM):
        return False
    try:
        remaining, released = _COUNTS.unpack_from(slab.view, offset + _COUNTS_AT)
        if remaining:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry_path)
            _COUNTS.pack_into(slab.view, offset + _COUNTS_AT, 0, released)
        return _lock(slab.fd, fcntl.F_WRLCK, offset + _USE)
    finally:
        _lock(slab.fd, fcntl.F_UNLCK, offset, 2)

