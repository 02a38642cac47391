"""Producer side: writes payloads into reused slabs, publishes their key entries and reclaims their regions."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import names, protocol
from .ring import Ring
from .slab import Slab, cuda_in_use

_ALIGN = 64
_SLAB_GRANULE = 1 << 20
_QUICK_RECLAIM = 4  # regions checked (without syscalls) before every write
_PUBLISH_ATTEMPTS = 100


class _WriterSlab:
    __slots__ = ("arena", "last_used", "ring", "slab")

    def __init__(self, slab: Slab, arena: bool) -> None:
        self.slab = slab
        self.ring = Ring(slab.size)
        self.arena = arena
        self.last_used = time.monotonic()


class _Region:
    __slots__ = ("created", "entry_path", "generation", "home", "offset", "size")

    def __init__(self, home: _WriterSlab, offset: int, size: int, generation: int, entry_path: str) -> None:
        self.home = home
        self.offset = offset
        self.size = size
        self.generation = generation
        self.entry_path = entry_path
        self.created = time.monotonic()


class PayloadWriter:
    """Owns this connector's slabs and every region it published that is not yet reclaimed.

    Payloads up to a quarter of ``arena_bytes`` share arena slabs; larger ones get a slab of their own size
    (rounded to 1 MiB) that later payloads of similar size reuse.  Empty slabs are kept for reuse up to
    ``keep_idle_bytes``.
    """

    def __init__(
        self, directory: str, namespace: str, *, arena_bytes: int, keep_idle_bytes: int, ttl: float, pin_memory: bool
    ) -> None:
        self._directory = directory
        self._namespace = namespace
        self._arena_bytes = arena_bytes
        self._small = arena_bytes // 4
        self._keep_idle_bytes = keep_idle_bytes
        self._ttl = ttl
        self._pin_memory = pin_memory
        self._slabs: list[_WriterSlab] = []  # by capacity, smallest first
        self._outstanding: dict[int, _Region] = {}  # by generation, oldest first
        self._published: dict[str, _Region] = {}  # entry path -> newest region this writer published there
        self._generations = itertools.count(1)
        self._lock = threading.Lock()
        self.expired = 0
        self.used_bytes = 0  #: bytes of the regions not reclaimed yet (published payloads, read or not)

    @property
    def pending(self) -> int:
        return len(self._outstanding)

    @property
    def shm_bytes(self) -> int:
        return sum(home.slab.size for home in self._slabs)

    def publish(
        self, entry_path: str, payload: Any, readers: int, retire_existing: Callable[[str], object]
    ) -> None:
        """Write ``payload`` (a ``SerializedPayload``) into a region and publish it under ``entry_path``.

        An entry already published under the key is retired first through ``retire_existing`` (the newer
        put replaces it).  Raises OSError (e.g. ENOSPC) or the serializer's error; nothing is left behind.
        """
        length = payload.nbytes
        size = protocol.HEADER_SIZE + -(-length // _ALIGN) * _ALIGN
        with self._lock:
            self._reclaim_done()
            home, offset = self._allocate(size)
            generation = next(self._generations)
        slab = home.slab
        try:
            if self._pin_memory and cuda_in_use():
                slab.pin()
            protocol.write_header(slab, offset, readers, generation, length)
            start = offset + protocol.HEADER_SIZE
            payload.write_into(slab.view[start : start + length])
            _link(names.target(slab.name, offset, generation), entry_path, retire_existing)
        except BaseException:
            with self._lock:
                home.ring.free(offset)
            raise
        region = _Region(home, offset, size, generation, entry_path)
        with self._lock:
            self._outstanding[generation] = region
            self.used_bytes += size
            self._published[entry_path] = region

    def retire(self, entry_path: str) -> None:
        """Withdraw this writer's unconsumed payload published under ``entry_path`` (if any)."""
        with self._lock:
            region = self._published.get(entry_path)
            if region is not None:
                self._withdraw(region)
                self._reclaim([region], time.monotonic())

    def reclaim(self) -> int:
        """Reuse every region that is consumed, expired (withdrawn first) or abandoned by a dead reader.

        Also unlinks empty slabs beyond ``keep_idle_bytes``.  Returns the number of regions reclaimed.
        """
        with self._lock:
            count = self._reclaim(list(self._outstanding.values()), time.monotonic())
            self._trim_idle()
            return count

    def close(self) -> None:
        """Withdraw every unconsumed payload and remove all slabs (readers' mappings stay valid)."""
        with self._lock:
            for region in self._outstanding.values():
                self._withdraw(region)
            self._outstanding.clear()
            self._published.clear()
            self.used_bytes = 0
            for home in self._slabs:
                home.slab.unlink()
                home.slab.close()
            self._slabs.clear()

    # -- internals (called with the lock held) --------------------------------------------
    @staticmethod
    def _withdraw(region: _Region) -> None:
        with contextlib.suppress(protocol.Busy):  # busy: a reader is consuming it, nothing to withdraw
            protocol.take(region.home.slab, region.offset, region.generation, region.entry_path, retire=True)

    def _reclaim_done(self) -> None:
        for _ in range(_QUICK_RECLAIM):  # the oldest first: readers mostly consume in order
            region = next(iter(self._outstanding.values()), None)
            if region is None or not protocol.is_done(region.home.slab, region.offset):
                return
            self._free(region)

    def _reclaim(self, regions: list[_Region], now: float) -> int:
        count = 0
        for region in regions:
            expired = now - region.created > self._ttl
            if protocol.reclaimable(region.home.slab, region.offset, region.entry_path, expired):
                if expired and not protocol.is_done(region.home.slab, region.offset):
                    self.expired += 1
                self._free(region)
                count += 1
        return count

    def _free(self, region: _Region) -> None:
        del self._outstanding[region.generation]
        self.used_bytes -= region.size
        if self._published.get(region.entry_path) is region:
            del self._published[region.entry_path]
        region.home.ring.free(region.offset)
        region.home.last_used = time.monotonic()

    def _allocate(self, size: int) -> tuple[_WriterSlab, int]:
        for attempt in range(2):
            for home in self._slabs:
                if home.arena if size <= self._small else (not home.arena and size <= home.slab.size <= 2 * size):
                    offset = home.ring.alloc(size)
                    if offset is not None:
                        return home, offset
            if attempt == 0:
                self._reclaim(list(self._outstanding.values()), time.monotonic())
        arena = size <= self._small
        capacity = self._arena_bytes if arena else -(-size // _SLAB_GRANULE) * _SLAB_GRANULE
        home = _WriterSlab(Slab.create(self._directory, names.slab_name(self._namespace), capacity), arena)
        self._slabs.append(home)
        self._slabs.sort(key=lambda h: h.slab.size)
        offset = home.ring.alloc(size)
        assert offset is not None
        return home, offset

    def _trim_idle(self) -> None:
        idle = sorted((h for h in self._slabs if h.ring.empty), key=lambda h: h.last_used, reverse=True)
        kept = 0
        for home in idle:
            kept += home.slab.size
            if kept > self._keep_idle_bytes:
                self._slabs.remove(home)
                home.slab.unlink()
                home.slab.close()


def _link(target: str, entry_path: str, retire_existing: Callable[[str], object]) -> None:
    """Create the key entry; an existing one (an older put of the key) is retired, then we try again."""
    for attempt in range(_PUBLISH_ATTEMPTS):
        try:
            os.symlink(target, entry_path)
            return
        except FileExistsError:
            try:
                retire_existing(entry_path)
            except protocol.Busy:  # a reader is taking the old payload: its entry goes in a moment
                time.sleep(min(1e-4 * (attempt + 1), 0.01))
    raise FileExistsError(f"key entry {entry_path} kept reappearing; {_PUBLISH_ATTEMPTS} attempts to replace it")
