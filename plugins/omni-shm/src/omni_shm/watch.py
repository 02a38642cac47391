"""Sleeping until an entry appears in a directory (inotify), so waiting readers wake at once without polling."""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time

_IN_CREATE = 0x100
_IN_MOVED_TO = 0x80
_IN_Q_OVERFLOW = 0x4000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _inotify_init1 = _libc.inotify_init1
    _inotify_add_watch = _libc.inotify_add_watch
except (OSError, AttributeError):  # not Linux/glibc: waiters fall back to short sleeps
    _inotify_init1 = _inotify_add_watch = None


class EntryWatch:
    """Watches ``directory`` for one file name being created (or renamed into place).

    ``wait(deadline)`` returns True when that name appeared (or may have: the kernel's event queue overflowed,
    or inotify is unavailable and it just slept ``fallback`` seconds).
    """

    def __init__(self, directory: str, name: str, fallback: float = 0.005) -> None:
        self._name = os.fsencode(name)
        self._fallback = fallback
        self._fd = -1
        if _inotify_init1 is not None:
            fd = _inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0 and _inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE | _IN_MOVED_TO) >= 0:
                self._fd = fd
            elif fd >= 0:
                os.close(fd)

    def wait(self, deadline: float) -> bool:
        """Sleep until the watched name appears or ``time.monotonic()`` reaches ``deadline``.

        Returns False at the deadline, True when the name appeared (or may have).
        """
        while (remaining := deadline - time.monotonic()) > 0:
            if self._fd < 0:
                time.sleep(min(remaining, self._fallback))
                return True
            if select.select([self._fd], [], [], remaining)[0] and self._drain():
                return True
        return False

    def _drain(self) -> bool:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        pos = 0
        while pos < len(data):
            _, mask, _, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
            if name == self._name or mask & _IN_Q_OVERFLOW:  # events were lost: the name may have appeared
                return True
            pos += _EVENT.size + length
        return False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EntryWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
