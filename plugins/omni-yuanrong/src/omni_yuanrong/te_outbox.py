"""The sender's payloads waiting for receivers: read leases, cleanup and TTL reclaim.

A receiver first claims a payload (``query_info``), which leases it for one read:
while leased, no other receiver gets it and neither the TTL nor a producer-side
cleanup frees its memory under the running read.  The receiver's ``cleanup_key``
frees it; a lease that runs out (the receiver died) makes it claimable again, or
frees it if it was cleaned up meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_core import ManagedBuffer

#: How long one claimed read may take before the payload is offered again.
READ_LEASE_S = 60.0
#: How often ``sweep`` really scans (it is called far more often).
SWEEP_INTERVAL_S = 1.0


@dataclass
class _Entry:
    raw_key: str
    buffer: ManagedBuffer
    info: dict[str, Any]
    created: float
    leased_until: float = 0.0
    doomed: bool = False


@dataclass
class Outbox:
    """Payloads by internal key; thread-safe.  ``ttl_s <= 0`` keeps unclaimed payloads forever."""

    ttl_s: float
    lease_s: float = READ_LEASE_S
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_sweep: float = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, key: str, raw_key: str, buffer: ManagedBuffer, info: dict[str, Any]) -> None:
        """Hold ``buffer`` under ``key`` (a payload already there is replaced and freed)."""
        with self._lock:
            old = self._entries.pop(key, None)
            self._entries[key] = _Entry(raw_key, buffer, info, self.clock())
        if old is not None:
            self._free(old)

    def claim(self, key: str) -> dict[str, Any] | None:
        """Lease ``key`` for one read and return its description; None if absent, leased or cleaned up."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.doomed or entry.leased_until > now:
                return None
            entry.leased_until = now + self.lease_s
            return dict(entry.info)

    def finish(self, key: str) -> bool:
        """The reader is done with ``key``: free it.  False if it was not held."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._free(entry)
        return True

    def discard(self, match: Callable[[str, str], bool]) -> int:
        """Free every payload whose ``(key, raw_key)`` matches; a leased one is freed when its read ends."""
        now = self.clock()
        freed = []
        with self._lock:
            for key, entry in list(self._entries.items()):
                if not match(key, entry.raw_key):
                    continue
                if entry.leased_until > now:
                    entry.doomed = True
                else:
                    freed.append(self._entries.pop(key))
        for entry in freed:
            self._free(entry)
        return len(freed)

    def sweep(self) -> int:
        """Free unclaimed payloads older than the TTL and cleaned-up ones whose lease ran out."""
        now = self.clock()
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_INTERVAL_S
        with self._lock:
            expired = [
                key
                for key, entry in self._entries.items()
                if entry.leased_until <= now
                and (entry.doomed or 0 < self.ttl_s < now - entry.created)
            ]
            freed = [self._entries.pop(key) for key in expired]
        for entry in freed:
            self._free(entry)
        return len(freed)

    def clear(self) -> None:
        """Free everything."""
        with self._lock:
            freed = list(self._entries.values())
            self._entries.clear()
        for entry in freed:
            self._free(entry)

    @staticmethod
    def _free(entry: _Entry) -> None:
        entry.buffer.release()
