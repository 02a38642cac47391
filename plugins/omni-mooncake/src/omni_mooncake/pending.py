"""Pulls a receiver gave up while their sender was silent, kept until their reply comes or their wait is over.

A partition stalls the sender's write; once the network heals the write may finish, and the sender then
counts the payload as delivered (consume-once).  So a pull given up for a silent sender keeps its slice and
its socket: a later ``get`` of the same key takes the reply (and the payload in the slice) instead of
pulling again, which the sender would refuse.  An entry is dropped after the quarantine time of its slice
(by default the pull's whole wait, which outlasts the engine's bound on one write: no write can land any
more).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import zmq

from omni_core import ManagedBuffer

from . import wire


@dataclasses.dataclass
class PendingPull:
    """One pull awaiting its reply after its sender went silent."""

    incoming: Any  #: what the receiver knew about the payload (endpoint, size, layout)
    buffer: ManagedBuffer  #: the slice the sender writes into
    socket: zmq.Socket  #: the REQ socket the reply comes on
    expires_at: float  #: ``time.monotonic()`` after which the slice is given back

    def wait_reply(self, timeout: float) -> dict[str, Any] | None:
        """The sender's reply within ``timeout`` seconds, or None; the socket is closed once it came."""
        if not self.socket.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
            return None
        try:
            return wire.decode_reply(self.socket.recv(zmq.NOBLOCK))
        except wire.MalformedMessage as exc:
            return wire.error_reply(wire.MALFORMED, str(exc))
        finally:
            self.socket.close(linger=0)

    def release(self) -> None:
        """Drop the pull: close its socket, give its slice back."""
        self.socket.close(linger=0)
        self.buffer.release()


class PendingPulls:
    """Thread-safe table of :class:`PendingPull` by key; one thread at a time takes an entry."""

    def __init__(self) -> None:
        self._entries: dict[str, PendingPull] = {}
        self._lock = threading.Lock()

    def add(self, key: str, pull: PendingPull) -> None:
        with self._lock:
            previous = self._entries.pop(key, None)
            self._entries[key] = pull
        if previous is not None:
            previous.release()

    def take(self, key: str) -> PendingPull | None:
        """The entry for ``key``, removed from the table (put it back with :meth:`add`)."""
        with self._lock:
            return self._entries.pop(key, None)

    def release_expired(self) -> None:
        """Drop the entries whose wait is over."""
        self._release(lambda pull, now: pull.expires_at <= now)

    def release_all(self) -> None:
        self._release(lambda pull, now: True)

    @property
    def nbytes(self) -> int:
        """Bytes of the slices held (after dropping what expired)."""
        self.release_expired()
        with self._lock:
            return sum(pull.buffer.size for pull in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _release(self, due: Any) -> None:
        now = time.monotonic()
        with self._lock:
            released = {key: pull for key, pull in self._entries.items() if due(pull, now)}
            for key in released:
                del self._entries[key]
        for pull in released.values():
            pull.release()
