"""``MooncakeStoreConnector``: payloads in a Mooncake distributed store, addressed by key."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from omni_core import OmniConnectorBase, OmniSerializer, SerializationError, resolve_host, validate_key

from . import store_codes as codes
from .bounded import BoundedCalls, CallTimedOut
from .config import resolve_settings
from .hooks import STORE_REGISTRATION
from .local_pool import LocalBufferPool
from .metrics import Counters
from .raw_payload import host_address, layout_of, rebuild
from .store_client import StoreClient, StoreError, StoreSettings
from .store_values import DIRECT_MIN_BYTES, data_key, decode_descriptor, encode_descriptor

logger = logging.getLogger("omni.mooncake.store")

#: Longest pause between two looks for a key that has not appeared yet.
MAX_POLL_INTERVAL_S = 0.05
#: Pause before a read that failed on a dead client's replica is tried again (another replica exists).
REPLICA_RETRY_PAUSE_S = 0.2
#: Metadata ``put`` returns: the size of the value stored under the key, and for the direct layout the
#: size of its data object (then ``get`` reads both in one batch).
VALUE_SIZE = "value_size"
RAW_NBYTES = "raw_nbytes"
#: The least room a get without metadata reads a value with at first.
MIN_SIZE_GUESS = 64 << 10


class MooncakeStoreConnector(OmniConnectorBase):
    """Mooncake-based distributed connector: any process that knows the key can read the payload.

    Keys are stored as ``{key}@{from}_{to}`` with a soft-pinned replicate config.  Reads are persistent:
    a payload stays until :meth:`cleanup` removes it (or the store evicts it under memory pressure).
    A second ``put`` of the same key replaces the value.  ``get`` waits up to ``get_timeout_s`` for a
    key to appear (``get_with_deadline`` until its deadline); the ``metadata`` argument is not needed.
    Tensors and arrays returned by ``get`` are views of the connector's registered local buffer, which
    gets them back once they are dropped.  With ``transfer_timeout_s`` a put, or one read of a get, is waited
    for at most that long (it fails, counted in ``timeouts``, while the library finishes it in the background).
    """

    capabilities = STORE_REGISTRATION.capabilities

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._client: StoreClient | None = None
        self._pool: LocalBufferPool | None = None
        self._calls = BoundedCalls(None, "")  # inline until the settings are known
        self.config = resolve_settings(STORE_REGISTRATION, config)
        self.host = resolve_host(self.config["host"])
        self.metadata: str = self.config["metadata_server"]
        self.master: str = self.config["master"]
        self.segment: int = self.config["segment"]
        self.localbuf: int = self.config["localbuf"]
        self.proto: str = self.config["proto"]
        self.rdma: str = self.config["rdma"]
        self.get_timeout_s = float(self.config["get_timeout_s"])
        self.replica_num: int = self.config["replica_num"]
        if self.replica_num < 1:
            raise ValueError(f"MooncakeStoreConnector replica_num must be >= 1, got {self.replica_num}")
        settings = StoreSettings(
            self.host, self.metadata, self.master, self.segment, self.proto, self.rdma,
            float(self.config["setup_timeout_s"]), self.config["quarantine_s"], self.replica_num,
            self.config["hard_pin"],
        )  # fmt: skip
        self._counters = Counters("puts", "gets", "bytes_transferred", "errors", "timeouts", "replica_retries")
        self._calls = BoundedCalls(self.config["transfer_timeout_s"], "mooncake-store-call")
        self._size_guess = MIN_SIZE_GUESS  # room a get without metadata first reads with
        self._client = StoreClient(settings)
        try:
            self._pool = LocalBufferPool(self.localbuf, self._client.register, self._client.unregister)
        except BaseException:
            self._client.close()
            raise

    # -- contract -----------------------------------------------------------------------------
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Store ``data`` under ``put_key`` for the edge; returns ``(ok, size, {"value_size": n, ...})``.

        The key is the rendezvous: the metadata is optional for ``get`` (it saves lookups).
        """
        validate_key(put_key)
        client, pool = self._open()
        key = self._make_key(put_key, str(from_stage), str(to_stage))
        try:
            metadata = self._calls.run(self._write, client, pool, key, data)
        except CallTimedOut as exc:
            self._counters.add("timeouts")
            logger.error("MooncakeStoreConnector: put of %r failed: %s", key, exc)
            return False, 0, None
        except (StoreError, SerializationError, TypeError, ValueError, MemoryError) as exc:
            self._counters.add("errors")
            # str(exc): a kept log record must not keep the traceback, and the buffers in its frames, alive
            logger.error("MooncakeStoreConnector: put of %r failed: %s", key, str(exc))
            return False, 0, None
        size = metadata.get(RAW_NBYTES, metadata[VALUE_SIZE])
        self._counters.add("puts")
        self._counters.add("bytes_transferred", size)
        return True, size, metadata

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """``(payload, size)`` once ``get_key`` is in the store (waiting up to ``get_timeout_s``), else None.

        ``metadata`` from ``put`` is optional; it saves one size lookup.
        """
        return self.get_with_deadline(
            from_stage, to_stage, get_key, metadata, deadline=time.monotonic() + self.get_timeout_s
        )

    def get_with_deadline(
        self,
        from_stage: str,
        to_stage: str,
        get_key: str,
        metadata: dict[str, Any] | None = None,
        *,
        deadline: float,
    ) -> tuple[Any, int] | None:
        """Like :meth:`get`, waiting until ``deadline`` (``time.monotonic()``); a store failure ends the wait, except
        a failed transfer from one replica of an object that has others (tried again until the deadline)."""
        validate_key(get_key)
        client, pool = self._open()
        key = self._make_key(get_key, str(from_stage), str(to_stage))
        hints = _Hints.from_metadata(metadata)
        delay = 0.001
        while True:
            try:
                result = self._calls.run(self._read, client, pool, key, hints)
            except CallTimedOut as exc:
                self._counters.add("timeouts")
                logger.error("MooncakeStoreConnector: get of %r failed: read %s", key, exc)
                return None
            except StoreError as exc:
                if _another_replica_may_answer(client, key, exc) and time.monotonic() < deadline:
                    self._counters.add("replica_retries")
                    time.sleep(max(0.0, min(REPLICA_RETRY_PAUSE_S, deadline - time.monotonic())))
                    continue
                self._counters.add("errors")
                logger.error("MooncakeStoreConnector: get of %r failed: %s", key, str(exc))  # str: as in put
                return None
            except (SerializationError, ValueError) as exc:
                self._counters.add("errors")
                logger.error("MooncakeStoreConnector: get of %r failed: %s", key, str(exc))
                return None
            if result is not None:
                self._counters.add("gets")
                self._counters.add("bytes_transferred", result[1])
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._counters.add("timeouts")
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL_INTERVAL_S)

    def cleanup(self, request_id: str, from_stage: str | None = None, to_stage: str | None = None) -> None:
        """Remove ``request_id`` from the store: on one edge when both stages are given, else on every edge."""
        if (from_stage is None) != (to_stage is None):
            raise ValueError("cleanup needs both from_stage and to_stage, or neither")
        client, _ = self._open()
        try:
            if from_stage is None:
                client.remove_matching(f"^{_regex_literal(request_id)}@[^@]*$")
            else:
                key = self._make_key(request_id, str(from_stage), str(to_stage))
                client.remove([key, data_key(key)])
        except StoreError as exc:
            self._counters.add("errors")
            logger.error("MooncakeStoreConnector: cleanup of %r failed: %s", request_id, exc)

    def health(self) -> dict[str, Any]:
        """Status from the store client and a probe of the master, plus counters and local-buffer use."""
        report: dict[str, Any] = {
            "status": "healthy",
            "host": self.host,
            "metadata_server": self.metadata,
            "master": self.master,
            "protocol": self.proto,
            "pool_device": "cpu",
            "pool_size": self.localbuf,
            **self._counters.snapshot(),
        }
        if self.closed or self._client is None or self._pool is None:
            return {**report, "status": "unhealthy", "error": "connector is closed"}
        problem = self._client.problem()
        if problem is not None:
            report.update(status="unhealthy", error=problem)
        quarantined = self._client.quarantine.nbytes  # first: releases what is due
        report.update(
            segment_name=self._client.hostname, pool_used_bytes=self._pool.used_bytes, quarantined_bytes=quarantined,
            calls_in_background=self._calls.in_background,
        )  # fmt: skip
        return report

    def pool_used_bytes(self) -> int | None:
        """Bytes of the registered local buffer in use now (None once closed)."""
        pool = self._pool
        return pool.used_bytes if pool is not None else None

    def close(self) -> None:
        """Unregister the local buffer and close the store client (about 2 s; longer if the master is gone).

        Calls given up at ``transfer_timeout_s`` are waited for first (the library ends them within 60 s).
        """
        pool, client = self._pool, self._client
        self._pool = self._client = None
        self._calls.close()
        if pool is not None:
            pool.close()
        if client is not None:
            client.close()

    # -- internals ----------------------------------------------------------------------------
    def _open(self) -> tuple[StoreClient, LocalBufferPool]:
        client, pool = self._client, self._pool
        if client is None or pool is None:
            raise RuntimeError("MooncakeStoreConnector is closed")
        client.quarantine.release_due()
        return client, pool

    @staticmethod
    def _write(client: StoreClient, pool: LocalBufferPool, key: str, data: Any) -> dict[str, int]:
        """Write ``data`` under ``key`` (direct layout when it pays, else framed); return the put metadata."""
        layout = layout_of(data, arrays=True)
        source = host_address(data) if layout is not None and layout.nbytes >= DIRECT_MIN_BYTES else None
        if layout is not None and source is not None:
            descriptor = np.frombuffer(encode_descriptor(layout), dtype=np.uint8)
            address = source[0]
            items = [(data_key(key), address, layout.nbytes), (key, descriptor.ctypes.data, descriptor.size)]
            with (
                client.retaining_on_unconfirmed(source[1], descriptor),
                client.registered(address, layout.nbytes),
                client.registered(descriptor.ctypes.data, descriptor.size),
            ):
                client.put(items)
            return {VALUE_SIZE: descriptor.size, RAW_NBYTES: layout.nbytes}
        payload = OmniSerializer.prepare(data)
        region, pooled = pool.region(payload.nbytes)
        payload.write_into(region)
        with client.retaining_on_unconfirmed(region), _registered_unless(pooled, client, region):
            client.put([(key, region.ctypes.data, payload.nbytes)])
        return {VALUE_SIZE: payload.nbytes}

    def _read(self, client: StoreClient, pool: LocalBufferPool, key: str, hints: _Hints) -> tuple[Any, int] | None:
        """``(payload, size)`` under ``key``, or None if it is not (completely) there.

        Without metadata the value is read with room for the last value read (one call instead of a size
        lookup and a read, when sizes repeat); a value that does not fit is looked up and read again.
        """
        if hints.value_size is not None and hints.raw_nbytes is not None:
            result = _read_direct_in_one_batch(client, pool, key, hints.value_size, hints.raw_nbytes)
            if result is not None:
                return result
        guess = self._size_guess if self._size_guess <= self.localbuf else None
        value = _fetch(client, pool, key, hints.value_size, guess)
        if value is None:
            return None
        self._size_guess = max(value.size, MIN_SIZE_GUESS)
        layout = decode_descriptor(value)
        if layout is None:
            return OmniSerializer.deserialize(value, zero_copy=True), value.size
        data = _fetch(client, pool, data_key(key), layout.nbytes)
        if data is None or data.size != layout.nbytes:
            return None  # the descriptor is visible before its data has landed, or the data was removed
        return rebuild(layout, data, copy=False), layout.nbytes


@dataclass(frozen=True)
class _Hints:
    """Sizes from the metadata of ``put`` (absent or malformed values are ignored)."""

    value_size: int | None = None
    raw_nbytes: int | None = None

    @classmethod
    def from_metadata(cls, metadata: Any) -> _Hints:
        if not isinstance(metadata, dict):
            return cls()
        sizes = [metadata.get(name) for name in (VALUE_SIZE, RAW_NBYTES)]
        return cls(*(size if type(size) is int and size > 0 else None for size in sizes))


def _read_direct_in_one_batch(
    client: StoreClient, pool: LocalBufferPool, key: str, value_size: int, raw_nbytes: int
) -> tuple[Any, int] | None:
    """Read a direct-layout payload's descriptor and data in one batch, as the metadata describes them.

    None when that does not work out (the key was replaced, the read outlived its lease, ...): the caller
    then takes the general path, which looks everything up.
    """
    (head, head_pooled), (data, data_pooled) = pool.region(value_size), pool.region(raw_nbytes)
    items = [(key, head.ctypes.data, value_size), (data_key(key), data.ctypes.data, raw_nbytes)]
    try:
        with (
            client.retaining_on_unconfirmed(head, data),
            _registered_unless(head_pooled, client, head),
            _registered_unless(data_pooled, client, data),
        ):
            sizes = client.read_many(items)
    except StoreError as exc:
        if exc.unconfirmed:
            raise
        return None
    if sizes[0] is None or sizes[1] != raw_nbytes:
        return None
    layout = decode_descriptor(head[: sizes[0]])
    if layout is None or layout.nbytes != raw_nbytes:
        return None
    return rebuild(layout, data, copy=False), raw_nbytes


def _fetch(
    client: StoreClient, pool: LocalBufferPool, key: str, size: int | None, guess: int | None = None
) -> np.ndarray | None:
    """The object under ``key`` read into a local-buffer region (None if it is not there).

    ``size`` is what the caller expects (from metadata); without it the read tries ``guess`` bytes of room
    (one call; the unused tail goes back to the pool), and when the value does not fit, or there is no
    guess, the store is asked for its size first.
    """
    exact = size is not None
    capacity = size if size is not None else guess if guess is not None else client.size(key)
    if capacity is None:
        return None
    region, pooled = pool.region(capacity)
    try:
        with client.retaining_on_unconfirmed(region), _registered_unless(pooled, client, region):
            read = client.read_into(key, region.ctypes.data, capacity)
    except StoreError as exc:
        if exc.code != codes.INVALID_PARAMS or (size is None and guess is None):
            raise
        # bigger than the metadata said (replaced since) or than the guess: ask for its size
        return _fetch(client, pool, key, None)
    if read is None:
        return None
    if read == capacity:
        return region
    return region[:read] if exact or not pooled else pool.shrink(region, read)


def _another_replica_may_answer(client: StoreClient, key: str, exc: StoreError) -> bool:
    """A read that failed in transfer while the object has several replicas: one was in a dead client's segment.

    Mooncake reads the first replica the master lists and does not try the next; once the master drops the dead
    client (its ``client_ttl``, 10 s by default) a read goes to a live replica.
    """
    return exc.code == codes.TRANSFER_FAIL and client.replicas(key) > 1


def _registered_unless(pooled: bool, client: StoreClient, region: np.ndarray) -> AbstractContextManager[None]:
    """Pool memory is registered already; temporary memory is registered for the call where needed."""
    return nullcontext() if pooled else client.registered(region.ctypes.data, region.size)


def _regex_literal(text: str) -> str:
    """``text`` escaped for the master's (ECMAScript) regular expressions."""
    return "".join(c if c.isalnum() or c == "_" or ord(c) > 127 else "\\" + c for c in text)
