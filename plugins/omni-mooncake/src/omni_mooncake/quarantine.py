"""Memory a failed transfer may still write into (or read from), held until no transfer can touch it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .engine import pull_timeout_s


@dataclass(frozen=True)
class _Held:
    release_at: float
    nbytes: int
    keep: Any  #: referenced until the release, so the memory stays allocated
    release: Callable[[], None] | None


class Quarantine:
    """Thread-safe holding area: each entry is released once its time is up (or on :meth:`release_all`).

    A failed transfer is bounded by the TransferEngine's own timeout, so memory it used is safe to reuse
    ``seconds`` after the failure: by default :func:`hold_seconds` of its size, or a fixed ``seconds``.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self._seconds = seconds
        self._held: list[_Held] = []
        self._lock = threading.Lock()

    def hold_seconds(self, nbytes: int) -> float:
        """How long memory of a failed transfer of ``nbytes`` is held: the longest such a transfer can run."""
        return pull_timeout_s(nbytes) if self._seconds is None else self._seconds

    def hold(self, nbytes: int, keep: Any = None, release: Callable[[], None] | None = None) -> None:
        """Keep ``keep`` alive for :meth:`hold_seconds`, then drop it and call ``release``."""
        entry = _Held(time.monotonic() + self.hold_seconds(nbytes), nbytes, keep, release)
        with self._lock:
            self._held.append(entry)

    def release_due(self) -> None:
        """Release the entries whose time is up."""
        self._release(lambda entry, now: entry.release_at <= now)

    def release_all(self) -> None:
        """Release everything (once no transfer can run any more: the engine or its memory is gone)."""
        self._release(lambda entry, now: True)

    @property
    def ends_at(self) -> float | None:
        """When the last entry is due (``time.monotonic()``), None when nothing is held."""
        with self._lock:
            return max((entry.release_at for entry in self._held), default=None)

    @property
    def nbytes(self) -> int:
        """Bytes still held (after releasing what is due)."""
        self.release_due()
        with self._lock:
            return sum(entry.nbytes for entry in self._held)

    def _release(self, due: Callable[[_Held, float], bool]) -> None:
        now = time.monotonic()
        with self._lock:
            released = [entry for entry in self._held if due(entry, now)]
            self._held = [entry for entry in self._held if not due(entry, now)]
        for entry in released:
            if entry.release is not None:
                entry.release()
