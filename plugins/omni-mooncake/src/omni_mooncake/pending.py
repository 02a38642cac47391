"""Transfers a receiver gave up while their sender was silent.

Pulls are kept until their reply comes or their wait is over; reads until they end in the engine.

A partition stalls the sender's write; once the network heals the write may finish, and the sender then
counts the payload as delivered (consume-once).  So a pull given up for a silent sender keeps its slice and
its socket: a later ``get`` of the same key takes the reply (and the payload in the slice) instead of
pulling again, which the sender would refuse.  An entry is dropped after the quarantine time of its slice
(by default the pull's whole wait, which outlasts the engine's bound on one write: no write can land any
more).  A read given up leaves its claim to lapse on the sender, which keeps the payload for the next read;
its slice comes back when the engine ends the read.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from omni_core import ManagedBuffer

from . import wire
from .side_channel import read_answer


@dataclasses.dataclass
class PendingPull:
    """One pull awaiting its reply after its sender went silent."""

    incoming: Any  #: what the receiver knew about the payload (endpoint, size, layout)
    buffer: ManagedBuffer  #: the slice the sender writes into
    socket: zmq.Socket  #: the socket the reply comes on
    expires_at: float  #: ``time.monotonic()`` after which the slice is given back

    def wait_reply(self, timeout: float) -> dict[str, Any] | None:
        """The sender's reply within ``timeout`` seconds, or None; the socket is closed once it came."""
        if not self.socket.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
            return None
        try:
            return read_answer(self.socket)
        except (wire.MalformedMessage, zmq.ZMQError) as exc:
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


class ReadsGivenUp:
    """Reads a get gave up on (its sender went silent) that still run in the engine.

    Each slice stays out of the pool until its read ends, then goes to ``on_end(buffer, rc)`` (the read's
    return code; -1 if it failed to run, 0 if it never started): at once, not after a fixed hold.
    """

    def __init__(self, on_end: Callable[[ManagedBuffer, int], None]) -> None:
        self._on_end = on_end
        self._reads: dict[int, tuple[ManagedBuffer, float]] = {}
        self._lock = threading.Lock()

    def add(self, read: Future[int], buffer: ManagedBuffer, ends_by: float) -> None:
        """Track ``read`` into ``buffer``; the engine ends it by ``ends_by`` (``time.monotonic()``)."""
        with self._lock:
            self._reads[id(read)] = (buffer, ends_by)
        read.add_done_callback(self._ended)

    def _ended(self, read: Future[int]) -> None:
        with self._lock:
            buffer, _ = self._reads.pop(id(read))
        if read.cancelled():
            rc = 0  # never started: nothing lands in the slice
        else:
            rc = -1 if read.exception() is not None else read.result()
        self._on_end(buffer, rc)

    @property
    def ends_at(self) -> float | None:
        """When the last read still running must have ended, None when none runs."""
        with self._lock:
            return max((ends_by for _, ends_by in self._reads.values()), default=None)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(buffer.size for buffer, _ in self._reads.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._reads)


class RecentSet:
    """Thread-safe set of the last ``size`` items added (the oldest are forgotten first)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self._items[item] = None
            self._items.move_to_end(item)
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def seen(self, item: Any) -> bool:
        with self._lock:
            return item in self._items
