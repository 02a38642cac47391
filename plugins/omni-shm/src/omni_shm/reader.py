"""Reader side: finds payloads by key, claims them, and keeps the slabs they live in mapped."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections import OrderedDict

from . import names, protocol
from .slab import Slab

_ATTEMPTS = 3  # stale entries removed before a lookup gives up
_MAX_MAPPED = 64  # slabs kept mapped while no payload in them is held
_MAX_SEEN = 4096  # broadcast payloads remembered as already read by this reader

logger = logging.getLogger("omni.shm")


class _Unmappable(Exception):
    """A slab that exists could not be opened or mapped just now: its payloads are not stale, only out of reach."""


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

    def exported_frame(self) -> ctypes.Array:
        """The frame as a buffer exporter of its own: it lives exactly as long as the last view made from it."""
        return (ctypes.c_char * self.length).from_buffer(self.slab.mm, self.offset + protocol.HEADER_SIZE)


class PayloadReader:
    """Claims payloads for one connector through its own descriptors (so its locks are its own).

    Locks are owned by the open file description, which all threads of this reader share: the reader
    therefore never takes a region it already holds (a second claim would succeed and its failure path
    would drop the first claim's locks).  A slab that exists but cannot be opened or mapped (no descriptors
    left, a symlink under its name) is counted in :attr:`open_errors`; its payloads are left published, never
    mistaken for stale entries and withdrawn.
    """

    def __init__(self, directory: str, namespace: str, *, pin: bool) -> None:
        self._directory = directory
        self._namespace = namespace
        self._pin = pin
        self._mapped: OrderedDict[str, Slab] = OrderedDict()  # least recently used first
        self._held: set[tuple[str, int]] = set()  # (slab, offset) of every claim not yet released
        self._held_per_slab: dict[str, int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()  # broadcast targets this reader already read
        self._lock = threading.RLock()  # re-entrant: a garbage-collected view may release inside a claim
        self._closed = False
        self.open_errors = 0

    def claim(self, entry_path: str) -> Claim | None:
        """Claim one read of the payload published at ``entry_path``; None if there is none for us."""
        for _ in range(_ATTEMPTS):
            try:
                target = os.readlink(entry_path)
            except OSError:
                return None
            with self._lock:
                if target in self._seen:
                    return None
                try:
                    found = self._locate(target)
                except _Unmappable:
                    return None  # the payload stays published for a later get
                if found is not None:
                    slab, offset, generation = found
                    if (slab.name, offset) in self._held:
                        return None
                    try:
                        header = protocol.take(slab, offset, generation, entry_path, retire=False)
                    except protocol.Busy:
                        return None
                    if header is not None:
                        return self._hold(slab, target, header)
            self._drop_if_stale(entry_path, target)
        return None

    def release(self, claim: Claim) -> None:
        """Give a claimed read back; the producer may reuse the region once every reader has."""
        slab = claim.slab
        with self._lock:
            protocol.release(slab, claim.offset, claim.readers)
            self._held.discard((slab.name, claim.offset))
            left = self._held_per_slab[slab.name] - 1
            if left:
                self._held_per_slab[slab.name] = left
            else:
                del self._held_per_slab[slab.name]
                if self._closed:
                    self._unmap(slab)

    def retire_entry(self, entry_path: str) -> None:
        """Withdraw whatever payload is published at ``entry_path`` (any namespace, any producer).

        Raises :class:`protocol.Busy` if a reader is taking it right now (its entry is about to go).
        """
        try:
            target = os.readlink(entry_path)
        except OSError:
            return
        try:
            retired = self._retire(entry_path, target)
        except _Unmappable:
            return  # tried again by the next sweep or put
        if not retired:
            self._drop_if_stale(entry_path, target)

    def forget(self, slab_name: str) -> None:
        """Drop the mapping of a slab that was just removed, unless payloads in it are still held."""
        with self._lock:
            slab = self._mapped.get(slab_name)
            if slab is not None and slab_name not in self._held_per_slab:
                self._unmap(slab)

    def trim(self) -> None:
        """Unmap slabs their producer removed (once no payload in them is held)."""
        with self._lock:
            for slab in list(self._mapped.values()):
                if slab.name not in self._held_per_slab and not slab.exists():
                    self._unmap(slab)

    def close(self) -> None:
        """Unmap every slab; slabs with payloads still held are unmapped when those are released."""
        with self._lock:
            self._closed = True
            for slab in list(self._mapped.values()):
                if slab.name not in self._held_per_slab:
                    self._unmap(slab)

    # -- internals ------------------------------------------------------------------------
    def _locate(self, target: str, any_namespace: bool = False) -> tuple[Slab, int, int] | None:
        """The mapped slab, offset and generation a key entry's target names (None if malformed or gone)."""
        name, _, rest = target.partition(":")
        slab = self._mapped.get(name)
        if slab is None:
            location = names.parse_target(target, None if any_namespace else self._namespace)
            slab = None if location is None else self._map(location.slab)
            if slab is None:
                return None
        else:
            self._mapped.move_to_end(name)
        offset, _, generation = rest.partition(":")
        try:
            return slab, int(offset), int(generation)
        except ValueError:
            return None

    def _hold(self, slab: Slab, target: str, header: protocol.Header) -> Claim:
        self._held.add((slab.name, header.offset))
        self._held_per_slab[slab.name] = self._held_per_slab.get(slab.name, 0) + 1
        if header.readers > 1:
            self._seen[target] = None
            if len(self._seen) > _MAX_SEEN:
                self._seen.popitem(last=False)
        return Claim(slab, header.offset, header.readers, header.length)

    def _map(self, name: str) -> Slab | None:
        try:
            slab = Slab.open(self._directory, name)
        except OSError as exc:
            self.open_errors += 1
            logger.warning("SharedMemoryConnector cannot map slab %s: %s", name, exc)
            raise _Unmappable(name) from exc
        if slab is None:
            return None
        if self._pin:
            slab.pin()
        excess = len(self._mapped) + 1 - _MAX_MAPPED
        for old in [s for s in self._mapped.values() if s.name not in self._held_per_slab][: max(0, excess)]:
            self._unmap(old)
        self._mapped[name] = slab
        return slab

    def _unmap(self, slab: Slab) -> None:
        if self._mapped.get(slab.name) is slab:
            del self._mapped[slab.name]
        slab.close()

    def _retire(self, entry_path: str, target: str) -> bool:
        with self._lock:
            found = self._locate(target, any_namespace=True)
            if found is None or (found[0].name, found[1]) in self._held:
                return False
            return protocol.take(*found, entry_path, retire=True) is not None

    def _drop_if_stale(self, entry_path: str, target: str) -> None:
        """Remove the entry if it still names ``target``, which no live region backs, never a newer entry.

        Such an entry has no CLAIM lock to guard its removal, so it is moved aside atomically first; if what
        was moved turns out to be a newer entry it is put back, or, when an even newer put took the key in
        the meantime, withdrawn like any superseded payload.  Stale entries only outlive crashes, so this
        path is rare.
        """
        try:
            if os.readlink(entry_path) != target:
                return
            scratch = os.path.join(self._directory, names.scratch_name(self._namespace))
            os.rename(entry_path, scratch)
        except OSError:
            return
        try:
            moved = os.readlink(scratch)
            if moved != target:
                try:
                    os.link(scratch, entry_path, follow_symlinks=False)
                except FileExistsError:
                    with contextlib.suppress(protocol.Busy, _Unmappable):
                        self._retire(scratch, moved)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)
