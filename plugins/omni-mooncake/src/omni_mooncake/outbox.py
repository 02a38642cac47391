"""The sender's table of payloads waiting for their receivers.

An entry is handed to at most ``readers`` distinct receivers (one pull or claimed read each), then freed.
A buffer is never freed while a pull is writing from it or a claimed read may be reading it: retiring an
entry that is being transferred (cleanup, a new put of the same key, the TTL, close) only marks it, and
the last transfer to finish frees it.  A claim ends when its receiver says it is done, or at the end of
its lease; a lease that runs out does not count as a delivery (the receiver was cut off or died before it
said so): the payload stays for another read until the TTL, so nothing acknowledged is lost.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from omni_core import ManagedBuffer

from . import wire
from .raw_payload import RawLayout


@dataclass(eq=False)
class OutboundEntry:
    """One put payload: its pool ``buffer`` (freed by the outbox only if ``owned``) and who has pulled it."""

    key: str
    request_id: str
    buffer: ManagedBuffer
    owned: bool
    size: int
    layout: RawLayout | None  #: None for a serialized object
    created: float = field(default_factory=time.monotonic)
    served: set[str] = field(default_factory=set)
    pulling: set[str] = field(default_factory=set)  #: receivers pulling or reading it right now
    retired: bool = False
    token: int = field(default_factory=lambda: secrets.randbits(63))  #: names this put in claims


class Outbox:
    """Thread-safe ``key -> OutboundEntry`` table with per-receiver bookkeeping and TTL reclaim."""

    def __init__(
        self,
        readers: int,
        ttl_s: float,
        on_reclaim: Callable[[int], None],
        on_lapsed_claims: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._readers = readers
        self._ttl_s = ttl_s
        self._on_reclaim = on_reclaim
        self._on_lapsed_claims = on_lapsed_claims
        self._entries: dict[str, OutboundEntry] = {}
        self._claims: dict[tuple[str, int, str], tuple[OutboundEntry, float]] = {}  # -> (entry, lease end)
        self._lock = threading.Lock()

    def add(self, entry: OutboundEntry) -> None:
        """Publish ``entry``, retiring an earlier entry under the same key."""
        with self._lock:
            previous = self._entries.pop(entry.key, None)
            self._entries[entry.key] = entry
            release = self._retire(previous) if previous is not None else None
        _release(release)

    def find(self, key: str) -> OutboundEntry | None:
        with self._lock:
            return self._entries.get(key)

    def begin_pull(self, key: str, receiver: str) -> OutboundEntry | str:
        """Claim ``key`` for one pull by ``receiver``; an error code if it may not pull it now."""
        with self._lock:
            entry = self._entries.get(key)
            return wire.NOT_FOUND if entry is None else self._begin(entry, receiver)

    def claim(self, request: wire.Claim, lease_s: Callable[[int], float]) -> OutboundEntry | str:
        """Let a receiver read the payload itself for ``lease_s(size)`` seconds; an error code if it may not.

        The claim must name the payload exactly (key, token, address, size), else it is not found.
        """
        key, token, receiver = request.key, request.token, request.session
        with self._lock:
            entry = self._entries.get(key)
            named = entry is not None and (entry.token, entry.buffer.data_ptr, entry.size) == (
                token, request.address, request.size
            )  # fmt: skip
            if entry is None or not named:
                return wire.NOT_FOUND
            claimed = self._begin(entry, receiver)
            if claimed is entry:
                self._claims[(key, token, receiver)] = (entry, time.monotonic() + lease_s(entry.size))
            return claimed

    def finish_claim(self, key: str, token: int, receiver: str, delivered: bool) -> OutboundEntry | None:
        """End ``receiver``'s claim of ``token``; the entry, or None if there is nothing to end.

        A delivery reported after the claim's lease ran out (its note was held up, e.g. by a partition) still
        counts, as long as the payload is still here under that token: the receiver has it.
        """
        with self._lock:
            found = self._claims.pop((key, token, receiver), None)
            late = self._entries.get(key) if found is None and delivered else None
            if late is not None and (late.token != token or receiver in late.pulling):
                late = None
        entry = found[0] if found is not None else late
        if entry is not None:
            self.end_pull(entry, receiver, delivered)
        return entry

    def lapse_claims(self, now: float | None = None) -> int:
        """End the claims whose lease ran out, as transfers that did not deliver; return how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            lapsed = [(claim, entry) for claim, (entry, end) in self._claims.items() if end <= now]
            for claim, _ in lapsed:
                del self._claims[claim]
        for (_, _, receiver), entry in lapsed:
            self.end_pull(entry, receiver, delivered=False)
        if lapsed:
            self._on_lapsed_claims(len(lapsed))
        return len(lapsed)

    @property
    def claims_end(self) -> float | None:
        """When the last open claim's lease runs out (``time.monotonic()``), None without claims."""
        with self._lock:
            return max((end for _, end in self._claims.values()), default=None)

    def _begin(self, entry: OutboundEntry, receiver: str) -> OutboundEntry | str:
        """Start one transfer of ``entry`` to ``receiver`` (lock held): at most ``readers`` receivers in all."""
        if receiver in entry.served:
            return wire.ALREADY_DELIVERED
        if receiver in entry.pulling or len(entry.served) + len(entry.pulling) >= self._readers:
            return wire.IN_PROGRESS
        entry.pulling.add(receiver)
        return entry

    def end_pull(self, entry: OutboundEntry, receiver: str, delivered: bool) -> None:
        """Finish a pull; the entry is freed once ``readers`` receivers have it (or if it was retired meanwhile)."""
        with self._lock:
            entry.pulling.discard(receiver)
            if delivered:
                entry.served.add(receiver)
            release = None
            if len(entry.served) >= self._readers and self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
                release = self._retire(entry)
            elif entry.retired and not entry.pulling:
                release = entry
        _release(release)

    def discard(self, matches: Callable[[OutboundEntry], bool]) -> int:
        """Retire every entry ``matches`` selects; return how many."""
        with self._lock:
            chosen = [e for e in self._entries.values() if matches(e)]
            releases = [self._retire(self._entries.pop(e.key)) for e in chosen]
        for entry in releases:
            _release(entry)
        return len(chosen)

    def reclaim_expired(self, now: float | None = None) -> int:
        """End lapsed claims, retire entries older than the TTL that nobody transfers; return how many were freed."""
        self.lapse_claims(now)
        if self._ttl_s <= 0:
            return 0
        limit = (time.monotonic() if now is None else now) - self._ttl_s
        count = self.discard(lambda e: e.created <= limit and not e.pulling)
        if count:
            self._on_reclaim(count)
        return count

    def close(self) -> None:
        """Retire everything (buffers being pulled are freed when their pull ends)."""
        self.discard(lambda e: True)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "outbox_entries": len(self._entries),
                "in_flight": sum(len(e.pulling) for e in self._entries.values()),
            }

    @staticmethod
    def _retire(entry: OutboundEntry) -> OutboundEntry | None:
        """Mark ``entry`` retired (lock held); return it if its buffer can be freed right away."""
        entry.retired = True
        return entry if not entry.pulling else None


def _release(entry: OutboundEntry | None) -> None:
    if entry is not None and entry.owned:
        entry.buffer.release()
