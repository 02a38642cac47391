"""A checked wrapper around ``MooncakeDistributedStore``: setup that fails fast, status codes raised as errors.

Only the registered-buffer calls are used (``upsert_from``/``get_into``): they have no size limit and
copy nothing on the client.  Reads that outlive the master's object lease (``LEASE_EXPIRED``) are retried
in chunks small enough to finish within it, and the chunk size is remembered.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import store_codes as codes
from .dependencies import import_store
from .netutil import is_reachable, split_host_port, wait_until_reachable
from .quarantine import Quarantine

#: Seconds one of the library's own setup attempts takes when the master does not answer.
SETUP_ATTEMPT_SECONDS = 4.5
#: Reads bigger than this start in chunks once a lease has expired; chunks never go below the minimum.
FIRST_CHUNK_BYTES = 32 << 20
MIN_CHUNK_BYTES = 1 << 20
#: How long a health probe of the master's RPC port may take.
PROBE_TIMEOUT_S = 0.5


class StoreError(RuntimeError):
    """A store call failed; ``code`` is the Mooncake status code.

    ``unconfirmed`` means the library may still be reading or writing the call's buffers: they go to the
    client's quarantine (see :meth:`StoreClient.retaining_on_unconfirmed`).
    """

    def __init__(self, message: str, code: int, *, unconfirmed: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.unconfirmed = unconfirmed


@dataclass(frozen=True)
class StoreSettings:
    """What ``MooncakeDistributedStore.setup`` needs (the connector's config keys)."""

    host: str
    metadata_server: str
    master: str
    segment: int
    proto: str
    rdma: str
    setup_timeout_s: float
    quarantine_s: float | None = None
    replica_num: int = 1
    hard_pin: bool = False


class StoreClient:
    """One set-up store client.  Thread-safe: the library releases the GIL and serializes internally."""

    def __init__(self, settings: StoreSettings) -> None:
        module = import_store()
        self.settings = settings
        self.master_host, self.master_port = split_host_port(settings.master, "'master'")
        _wait_for_services(settings, self.master_host, self.master_port)
        retries = max(1, math.ceil(settings.setup_timeout_s / SETUP_ATTEMPT_SECONDS))
        os.environ.setdefault("MC_STORE_CLIENT_SETUP_RETRIES", str(retries))
        self._store = module.MooncakeDistributedStore()
        # local_buffer_size 0: the connector stages through its own registered buffer, not the library's
        rc = self._store.setup(
            settings.host, settings.metadata_server, settings.segment, 0, settings.proto, settings.rdma, settings.master
        )
        if rc != 0:
            raise ConnectionError(
                f"Mooncake store setup failed ({codes.describe(rc)}) with master {settings.master!r} and "
                f"metadata server {settings.metadata_server!r}"
            )
        self._config = _replicate_config(module, settings.replica_num, settings.hard_pin)
        self.quarantine = Quarantine(settings.quarantine_s)
        self._chunk_lock = threading.Lock()
        self._chunk_bytes: int | None = None  # set once a whole read outlived its lease
        self._regions: dict[int, int] = {}  # memory registered with the library: address -> size
        self._regions_lock = threading.Lock()

    # -- writes ---------------------------------------------------------------------------------
    def put(self, items: Sequence[tuple[str, int, int]]) -> None:
        """Write ``(key, address, size)`` items (replacing existing keys); StoreError on any failure."""
        self._require_master()
        if len(items) == 1:
            key, address, size = items[0]
            results = [self._store.upsert_from(key, address, size, self._config)]
        else:
            keys, addresses, sizes = zip(*items, strict=True)
            results = self._store.batch_upsert_from(list(keys), list(addresses), list(sizes), self._config)
        for (key, _, size), rc in zip(items, results, strict=True):
            if rc != 0:
                unconfirmed = rc not in codes.SAFE_PUT_FAILURES
                message = f"put of {key!r} ({size} bytes) failed: {codes.describe(rc)}"
                raise StoreError(message, rc, unconfirmed=unconfirmed)

    def remove(self, keys: Sequence[str]) -> int:
        """Remove ``keys`` now (ignoring read leases); return how many existed."""
        results = self._store.batch_remove(list(keys), True)
        failed = [(k, rc) for k, rc in zip(keys, results, strict=True) if rc not in (0, codes.OBJECT_NOT_FOUND)]
        if failed:
            key, rc = failed[0]
            raise StoreError(f"remove of {key!r} failed: {codes.describe(rc)}", rc)
        return sum(rc == 0 for rc in results)

    def remove_matching(self, pattern: str) -> int:
        """Remove every key matching the regular expression ``pattern``; return how many."""
        removed = self._store.remove_by_regex(pattern, True)
        if removed < 0:
            raise StoreError(f"remove of keys matching {pattern!r} failed: {codes.describe(removed)}", removed)
        return int(removed)

    # -- reads ------------------------------------------------------------------------------------
    def size(self, key: str) -> int | None:
        """Size of the object under ``key``, or None if there is none."""
        self._require_master()
        size = self._store.get_size(key)
        if size in codes.NOT_THERE:
            return None
        if size < 0:
            raise StoreError(f"size of {key!r}: {codes.describe(size)}", size)
        return int(size)

    def read_into(self, key: str, address: int, capacity: int) -> int | None:
        """Read the object under ``key`` into ``capacity`` bytes at ``address``; its size, or None if it is gone.

        A buffer too small for the object raises StoreError with code INVALID_PARAMS.
        """
        chunk = self._chunk_bytes
        if chunk is None or capacity <= chunk:
            rc = self._store.get_into(key, address, capacity)
            if rc != codes.LEASE_EXPIRED:
                return self._checked(key, rc)
        size = self.size(key)  # chunked reads need the exact size
        if size is None:
            return None
        if size > capacity:
            raise StoreError(f"read of {key!r}: {size} bytes do not fit in {capacity}", codes.INVALID_PARAMS)
        chunk = chunk or max(MIN_CHUNK_BYTES, min(FIRST_CHUNK_BYTES, size // 2))
        while True:
            with self.registered(address, size, always=True):  # ranged reads need registered memory, even over TCP
                rc = self._read_chunks(key, address, size, chunk)
            if rc != codes.LEASE_EXPIRED:
                with self._chunk_lock:
                    self._chunk_bytes = min(chunk, self._chunk_bytes or chunk)
                return self._checked(key, rc)
            if chunk <= MIN_CHUNK_BYTES:
                raise StoreError(f"read of {key!r}: every {chunk}-byte chunk outlived the master's lease", rc)
            chunk //= 2

    def read_many(self, items: Sequence[tuple[str, int, int]]) -> list[int | None]:
        """One batch read of ``(key, address, capacity)`` items: each object's size, or None if it is gone.

        No chunking here: a read that outlives its lease raises StoreError (LEASE_EXPIRED), like any failure.
        """
        self._require_master()
        keys, addresses, capacities = (list(column) for column in zip(*items, strict=True))
        results = self._store.batch_get_into(keys, addresses, capacities)
        return [self._checked(key, rc) for key, rc in zip(keys, results, strict=True)]

    def replicas(self, key: str) -> int:
        """How many complete replicas of ``key`` the master lists (0 when it cannot say)."""
        try:
            listed = self._store.get_replica_desc(key)
        except RuntimeError:
            return 0
        return sum(1 for replica in listed if replica.status.name == "COMPLETE")

    def _read_chunks(self, key: str, address: int, size: int, chunk: int) -> int:
        """Read in ``chunk``-byte ranges, each under its own lease; the first failure code, else ``size``."""
        for offset in range(0, size, chunk):
            length = min(chunk, size - offset)
            rc = self._store.get_into_ranges([address], [[key]], [[[offset]]], [[[offset]]], [[[length]]])[0][0][0]
            if rc < 0:
                return int(rc)
        return size

    @staticmethod
    def _checked(key: str, rc: int) -> int | None:
        if rc in codes.NOT_THERE:
            return None
        if rc < 0:
            unconfirmed = rc not in codes.SAFE_GET_FAILURES
            raise StoreError(f"read of {key!r} failed: {codes.describe(rc)}", rc, unconfirmed=unconfirmed)
        return rc

    # -- memory ----------------------------------------------------------------------------------
    def register(self, address: int, size: int) -> None:
        """Register host memory for zero-copy transfers; RuntimeError on failure."""
        rc = self._store.register_buffer(address, size)
        if rc != 0:
            raise RuntimeError(f"register_buffer of {size} bytes failed: {codes.describe(rc)}")
        with self._regions_lock:
            self._regions[address] = size

    def unregister(self, address: int) -> None:
        with self._regions_lock:
            self._regions.pop(address, None)
        self._store.unregister_buffer(address)

    def _is_registered(self, address: int, size: int) -> bool:
        with self._regions_lock:
            return any(start <= address and address + size <= start + n for start, n in self._regions.items())

    @contextmanager
    def retaining_on_unconfirmed(self, *buffers: Any) -> Iterator[None]:
        """Run a call; if it fails with I/O possibly still in flight, quarantine ``buffers`` (arrays, tensors).

        They stay alive (pool regions out of the pool) until the failed transfer cannot touch them any more.
        """
        try:
            yield
        except StoreError as exc:
            if exc.unconfirmed:
                self.quarantine.hold(sum(buffer.nbytes for buffer in buffers), buffers)
            raise

    @contextmanager
    def registered(self, address: int, size: int, *, always: bool = False) -> Iterator[None]:
        """Register memory for the duration of a call where the transport needs it (not over TCP; ``always``:
        for a call that needs it whatever the transport), unless it is registered already.

        Memory whose call may still have I/O in flight stays registered while it is quarantined.
        """
        if (self.settings.proto == "tcp" and not always) or self._is_registered(address, size):
            yield
            return
        self.register(address, size)
        in_flight = False
        try:
            yield
        except StoreError as exc:
            in_flight = exc.unconfirmed
            raise
        finally:
            if in_flight:
                self.quarantine.hold(0, release=lambda: self.unregister(address))
            else:
                self.unregister(address)

    # -- state ------------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why the store cannot serve requests right now (None when it can), from the client and the master."""
        code = self._store.health_check()
        if code == 1:
            return "store client is not initialised or closed"
        if code == 2 or not is_reachable(self.master_host, self.master_port, PROBE_TIMEOUT_S):
            return f"Mooncake master {self.settings.master} is unreachable"
        return None

    def _require_master(self) -> None:
        """Fail fast instead of waiting out the library's ~4 s RPC timeout when the master is known to be gone."""
        if self._store.health_check() == 2:
            raise StoreError(f"Mooncake master {self.settings.master} is unreachable", codes.RPC_FAIL)

    @property
    def hostname(self) -> str:
        """This client's segment name, e.g. ``127.0.0.1:13758``."""
        return str(self._store.get_hostname())

    def close(self) -> None:
        """Close the client (about 2 s; longer when the master is gone, as the library retries its RPCs).

        Quarantined memory is freed with the client, after the library has stopped.
        """
        self._store.close()


def _replicate_config(module: Any, replica_num: int, hard_pin: bool) -> Any:
    """Soft-pinned (as upstream) or hard-pinned objects in ``replica_num`` segments."""
    config = module.ReplicateConfig()
    config.replica_num = replica_num
    if hard_pin:
        config.with_hard_pin = True
        return config
    action = getattr(module, "SoftPinAction", None)
    if action is not None:
        config.soft_pin_action = action.ENABLE
    else:  # wheels before 0.3.13 spell it as a flag
        config.with_soft_pin = True
    return config


def _wait_for_services(settings: StoreSettings, master_host: str, master_port: int) -> None:
    """Raise ConnectionError unless the master (and an HTTP metadata server) accept connections in time."""
    if not wait_until_reachable(master_host, master_port, settings.setup_timeout_s):
        raise ConnectionError(
            f"Mooncake master {settings.master} is not reachable after {settings.setup_timeout_s:g} s "
            "(is mooncake_master running there? set 'master' and 'setup_timeout_s')"
        )
    url = urlsplit(settings.metadata_server)
    if url.scheme in ("http", "https"):
        port = url.port or (443 if url.scheme == "https" else 80)
        if not url.path.rstrip("/"):
            raise ValueError(f"metadata_server {settings.metadata_server!r} needs its path, e.g. /metadata")
        if not wait_until_reachable(url.hostname or "127.0.0.1", port, settings.setup_timeout_s):
            raise ConnectionError(
                f"Mooncake metadata server {settings.metadata_server} is not reachable after "
                f"{settings.setup_timeout_s:g} s (or use metadata_server: P2PHANDSHAKE)"
            )
