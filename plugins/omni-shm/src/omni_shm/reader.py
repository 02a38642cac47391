"""Reader side: finds payloads by key, claims them, and keeps the slabs they live in mapped."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from . import names, protocol
from .slab import Slab

_ATTEMPTS = 3  # stale entries removed before a lookup gives up
_MAX_MAPPED = 64  # slabs kept mapped while no payload in them is held
_MAX_SEEN = 4096  # broadcast payloads remembered as already read by this reader


class Claim:
    """One claimed read of a region; :meth:`PayloadReader.release` hands it back."""

    __slots__ = ("length", "offset", "readers", "slab")

    def __init__(self, slab: Slab, offset: int, readers: int, length: int) -> None:
        self.slab = slab
        self.offset = offset
        self.readers = readers
        self.length = length

    def frame(self) -> memoryview:
        """The serialized frame, as a view into shared memory."""
        start = self.offset + protocol.HEADER_SIZE
        return self.slab.view[start : start + self.length]


class PayloadReader:
    """Claims payloads for one connector through its own descriptors (so its locks are its own)."""

    def __init__(self, directory: str, namespace: str, *, pin: bool) -> None:
        self._directory = directory
        self._namespace = namespace
        self._pin = pin
        self._mapped: OrderedDict[str, Slab] = OrderedDict()  # least recently used first
        self._holds: dict[str, dict[int, int]] = {}  # slab name -> region offset -> claims held (one USE lock)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.RLock()  # re-entrant: a garbage-collected view may release inside a claim
        self._closed = False

    def claim(self, entry_path: str) -> Claim | None:
        """Claim one read of the payload published at ``entry_path``; None if there is none for us."""
        for _ in range(_ATTEMPTS):
            try:
                target = os.readlink(entry_path)
            except OSError:
                return None
            location = names.parse_target(target, self._namespace)
            if location is not None:
                with self._lock:
                    if target in self._seen:
                        return None
                    slab = self._map(location.slab)
                    header = None
                    if slab is not None:
                        header = protocol.take(slab, location.offset, location.generation, entry_path, retire=False)
                    if header is not None:
                        return self._hold(slab, target, header)
            self._remove_stale(entry_path, target)
        return None

    def release(self, claim: Claim) -> None:
        """Give a claimed read back; the producer may reuse the region once every reader has."""
        slab, offset = claim.slab, claim.offset
        with self._lock:
            protocol.release(slab, offset, claim.readers)
            regions = self._holds[slab.name]
            regions[offset] -= 1
            if not regions[offset]:
                del regions[offset]
                protocol.unlock_use(slab, offset)
                if not regions:
                    del self._holds[slab.name]
                    if self._closed:
                        self._unmap(slab)

    def retire_entry(self, entry_path: str) -> None:
        """Withdraw whatever payload is published at ``entry_path`` (any namespace, any producer)."""
        try:
            target = os.readlink(entry_path)
        except OSError:
            return
        location = names.parse_target(target)
        if location is not None:
            with self._lock:
                slab = self._map(location.slab)
                if slab is not None:
                    header = protocol.take(slab, location.offset, location.generation, entry_path, retire=True)
                    if header is not None:
                        return
        self._remove_stale(entry_path, target)

    def forget(self, slab_name: str) -> None:
        """Drop the mapping of a slab that was just removed, unless payloads in it are still held."""
        with self._lock:
            slab = self._mapped.get(slab_name)
            if slab is not None and slab_name not in self._holds:
                self._unmap(slab)

    def trim(self) -> None:
        """Unmap slabs their producer removed (once no payload in them is held)."""
        with self._lock:
            for slab in list(self._mapped.values()):
                if slab.name not in self._holds and not slab.exists():
                    self._unmap(slab)

    def close(self) -> None:
        """Unmap every slab; slabs with payloads still held are unmapped when those are released."""
        with self._lock:
            self._closed = True
            for slab in list(self._mapped.values()):
                if slab.name not in self._holds:
                    self._unmap(slab)

    # -- internals ------------------------------------------------------------------------
    def _hold(self, slab: Slab, target: str, header: protocol.Header) -> Claim:
        regions = self._holds.setdefault(slab.name, {})
        regions[header.offset] = regions.get(header.offset, 0) + 1
        if header.readers > 1:
            self._seen[target] = None
            if len(self._seen) > _MAX_SEEN:
                self._seen.popitem(last=False)
        return Claim(slab, header.offset, header.readers, header.length)

    def _map(self, name: str) -> Slab | None:
        slab = self._mapped.get(name)
        if slab is not None:
            self._mapped.move_to_end(name)
            return slab
        slab = Slab.open(self._directory, name)
        if slab is None:
            return None
        if self._pin:
            slab.pin()
        excess = len(self._mapped) + 1 - _MAX_MAPPED
        for old in [s for s in self._mapped.values() if s.name not in self._holds][: max(0, excess)]:
            self._unmap(old)
        self._mapped[name] = slab
        return slab

    def _unmap(self, slab: Slab) -> None:
        if self._mapped.get(slab.name) is slab:
            del self._mapped[slab.name]
        slab.close()

    def _remove_stale(self, entry_path: str, target: str) -> None:
        scratch = os.path.join(self._directory, names.scratch_name(self._namespace))
        protocol.remove_stale_entry(entry_path, target, scratch)
