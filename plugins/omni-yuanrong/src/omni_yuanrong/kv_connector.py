"""``YuanrongConnector``: payloads in an openYuanrong datasystem worker, addressed by key."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni_core import (
    Capabilities,
    Delivery,
    OmniConnectorBase,
    OmniSerializer,
    SerializedPayload,
    expand_env_int,
    expand_env_value,
    private_copy,
    resolve_host,
)

from .backend import KEY_NOT_FOUND, RPC_UNAVAILABLE, import_datasystem, status_code
from .keys import store_key

logger = logging.getLogger("omni.yuanrong.kv")

#: The bindings hold the GIL for a whole call, so a long blocking get is cut into slices this long
#: to let the process's other threads run in between (a payload arriving mid-slice is returned at once).
WAIT_SLICE_MS = 50
#: Requests remembered for ``cleanup(request_id)``; the oldest are forgotten beyond this.
MAX_TRACKED_REQUESTS = 100_000
#: Smaller values are serialized to bytes and sent with one ``set`` (one round trip, one extra copy); larger
#: ones are serialized straight into a worker-allocated shared-memory buffer (``mcreate`` + ``mset_buffer``:
#: two round trips, no extra copy).  Measured on loopback, the extra copy costs less than the second round
#: trip up to a few MiB (and ``set`` has the steadier latency); from here up the zero-copy path wins.
ZERO_COPY_WRITE_BYTES = 4 << 20
#: How the worker refuses to overwrite a value written through the other of those two paths.
_REWRITE_CONFLICTS = ("Inconsistency in publish or set", "cannot be modified")


class DatasystemUnavailableError(ConnectionError):
    """The datasystem worker did not answer within the configured timeout."""


#: ``write_mode`` -> the datasystem's ``WriteMode``.  The L2 modes need the worker's second-level cache
#: (``--l2_cache_type``); with it, values written through survive a worker restart (measured: RELIABILITY.md).
WRITE_MODES = {
    "evict": "NONE_L2_CACHE_EVICT",
    "memory": "NONE_L2_CACHE",
    "write_through": "WRITE_THROUGH_L2_CACHE",
    "write_back": "WRITE_BACK_L2_CACHE",
}


@dataclass(frozen=True)
class KVSettings:
    """The connector's settings (the keys of ``ConnectorSpec.extra``, see ``omni_yuanrong.hooks``)."""

    host: str = "127.0.0.1"
    port: int = 35001
    get_sub_timeout_ms: int = 1000
    connect_timeout_ms: int = 5000
    req_timeout_ms: int = 5000
    zero_copy: bool = False
    write_mode: str = "evict"
    ttl_seconds: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> KVSettings:
        """Read, expand (``${VAR}``) and check the settings; unrelated keys are ignored."""

        def number(name: str) -> int:
            return expand_env_int(config.get(name, getattr(cls, name)), field_name=f"YuanrongConnector {name}")

        host = str(expand_env_value(config.get("host", cls.host)))
        settings = cls(
            host=resolve_host(host) if host.strip().lower() == "auto" else host,
            port=number("port"),
            get_sub_timeout_ms=max(0, number("get_sub_timeout_ms")),
            connect_timeout_ms=number("connect_timeout_ms"),
            req_timeout_ms=number("req_timeout_ms"),
            zero_copy=config.get("zero_copy", cls.zero_copy),
            write_mode=config.get("write_mode", cls.write_mode),
            ttl_seconds=number("ttl_seconds"),
        )
        if not isinstance(settings.zero_copy, bool):
            raise ValueError(f"YuanrongConnector zero_copy must be a bool, got {settings.zero_copy!r}")
        if settings.write_mode not in WRITE_MODES:
            raise ValueError(
                f"YuanrongConnector write_mode must be one of {', '.join(WRITE_MODES)}, got {settings.write_mode!r}"
            )
        if not settings.host:
            raise ValueError("YuanrongConnector host must not be empty")
        if not 1 <= settings.port <= 65535:
            raise ValueError(f"YuanrongConnector port must be in 1..65535, got {settings.port}")
        if settings.ttl_seconds < 0:
            raise ValueError(f"YuanrongConnector ttl_seconds must be >= 0, got {settings.ttl_seconds}")
        for name in ("connect_timeout_ms", "req_timeout_ms"):
            if getattr(settings, name) <= 0:
                raise ValueError(f"YuanrongConnector {name} must be > 0, got {getattr(settings, name)}")
        return settings


class YuanrongConnector(OmniConnectorBase):
    """Datasystem-based distributed connector for OmniConnector.

    Values live in the worker's shared memory under ``{key}:{from}_{to}`` (keys
    encoded for the worker's alphabet, see ``omni_yuanrong.keys``), written in the
    evictable mode: under memory pressure the worker may drop old values.  ``put``
    sends small values inline and serializes large ones straight into a
    worker-allocated shared-memory buffer (one copy of tensor bytes);
    ``get`` maps the value read-only, waits up to ``get_sub_timeout_ms`` for a late
    producer, and copies it once into private memory that the returned tensors and
    arrays are views of (or, with ``zero_copy``, returns read-only views into the
    worker's memory that keep the value alive).  Reads do not consume: a value stays
    until ``cleanup``.  ``get`` raises :class:`DatasystemUnavailableError` when the
    worker does not answer; ``put`` reports that as ``(False, 0, None)``.
    """

    capabilities = Capabilities(delivery=Delivery.PERSISTENT, cross_host=True)

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.settings = KVSettings.from_config(self.config)
        self.host, self.port = self.settings.host, self.settings.port
        self.get_sub_timeout_ms = self.settings.get_sub_timeout_ms
        api = import_datasystem(names=("KVClient", "WriteMode"))
        self._write_mode = getattr(api.WriteMode, WRITE_MODES[self.settings.write_mode])
        self._lock = threading.Lock()
        self._tracked: OrderedDict[str, set[str]] = OrderedDict()
        self._counters = dict.fromkeys(("puts", "gets", "misses", "errors", "timeouts", "bytes_transferred"), 0)
        self._last_error = ""
        #: Buffers of zero-copy writes the worker did not answer: the client library may still send them (a
        #: request queued while the network was down goes out once it is back), so they are kept until the
        #: worker answers a later request, and freed only after the client on close.
        self._quarantine: list[tuple[Any, int]] = []
        client = api.KVClient(
            self.host,
            self.port,
            connect_timeout_ms=self.settings.connect_timeout_ms,
            req_timeout_ms=self.settings.req_timeout_ms,
        )
        try:
            client.init()
        except RuntimeError as exc:
            raise DatasystemUnavailableError(
                f"cannot connect to the openYuanrong datasystem worker at {self.endpoint} within "
                f"connect_timeout_ms={self.settings.connect_timeout_ms}: {exc}. Is a worker listening there?"
            ) from exc
        self._client: Any = client

    @property
    def endpoint(self) -> str:
        """``host:port`` of the worker."""
        return f"{self.host}:{self.port}"

    # -- contract -----------------------------------------------------------------
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Serialize ``data`` into the worker under the edge's key; ``(False, 0, None)`` if the worker refuses."""
        client = self._open_client()
        key = store_key(put_key, from_stage, to_stage)
        payload = OmniSerializer.prepare(data)
        try:
            self._store(client, key, payload)
        except RuntimeError as exc:
            logger.warning("%s", self._note_failure("put", key, exc))
            if status_code(exc) == RPC_UNAVAILABLE:
                self._track(put_key, key)  # the request may still reach the worker: cleanup must delete it
            return False, 0, None
        self._done(put_key, key, "puts", payload.nbytes)
        return True, payload.nbytes, None

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Return ``(obj, size)``, waiting up to ``get_sub_timeout_ms`` for the value; ``None`` if it never came."""
        deadline = time.monotonic() + self.get_sub_timeout_ms / 1000
        return self._get(from_stage, to_stage, get_key, deadline)

    def get_with_deadline(
        self,
        from_stage: str,
        to_stage: str,
        get_key: str,
        metadata: dict[str, Any] | None = None,
        *,
        deadline: float,
    ) -> tuple[Any, int] | None:
        """Like ``get`` but wait until ``deadline`` (a ``time.monotonic()`` value), woken by the worker."""
        return self._get(from_stage, to_stage, get_key, deadline)

    def cleanup(self, request_id: str, from_stage: str | None = None, to_stage: str | None = None) -> None:
        """Delete the values of ``request_id``: on one edge when both stages are given, else every
        value this instance put or got under that key.  Deleting a missing value is not an error."""
        if self.closed:
            return
        if from_stage is not None and to_stage is not None:
            keys = {store_key(request_id, from_stage, to_stage)}
        else:
            with self._lock:
                keys = self._tracked.pop(request_id, set())
        if not keys:
            return
        try:
            self._client.delete(sorted(keys))
        except RuntimeError as exc:
            logger.warning("%s", self._note_failure("cleanup", ",".join(sorted(keys)), exc))

    def health(self) -> dict[str, Any]:
        """Probe the worker (one round trip) and report the counters."""
        with self._lock:
            report: dict[str, Any] = {"host": self.host, "port": self.port, **self._counters}
            report["last_error"] = self._last_error
            report["quarantined_bytes"] = sum(nbytes for _, nbytes in self._quarantine)
        if self.closed:
            return {"status": "unhealthy", "reason": "connector is closed", **report}
        probe = self._client.health_check()
        if probe.is_ok():
            return {"status": "healthy", **report}
        return {"status": "unhealthy", "reason": f"worker {self.endpoint}: {probe.to_string()}", **report}

    def close(self) -> None:
        """Drop the client (the bindings disconnect when it is freed), then the quarantined buffers; stored
        values stay in the worker."""
        self._client = None
        with self._lock:
            self._quarantine.clear()

    # -- internals ------------------------------------------------------------------
    def _open_client(self) -> Any:
        client = getattr(self, "_client", None)
        if client is None:
            raise RuntimeError("YuanrongConnector is closed")
        return client

    def _store(self, client: Any, key: str, payload: SerializedPayload) -> None:
        """Write one frame under ``key``, replacing a value written through the other write path."""
        try:
            self._write(client, key, payload)
        except RuntimeError as exc:
            if not any(marker in str(exc) for marker in _REWRITE_CONFLICTS):
                raise
            client.delete([key])
            self._write(client, key, payload)

    def _write(self, client: Any, key: str, payload: SerializedPayload) -> None:
        if payload.nbytes < ZERO_COPY_WRITE_BYTES:
            client.set(key, payload.to_bytes(), self._write_mode, self.settings.ttl_seconds)
            return
        buffers = client.mcreate([key], [payload.nbytes], self._write_mode, self.settings.ttl_seconds)
        payload.write_into(buffers[0].MutableData())
        try:
            client.mset_buffer(buffers)
        except RuntimeError as exc:
            if status_code(exc) == RPC_UNAVAILABLE:
                with self._lock:
                    self._quarantine.append((buffers, payload.nbytes))
            raise

    def _get(self, from_stage: str, to_stage: str, get_key: str, deadline: float) -> tuple[Any, int] | None:
        client = self._open_client()
        key = store_key(get_key, from_stage, to_stage)
        buffer = self._wait_for(client, key, deadline)
        if buffer is None:
            self._count(misses=1)
            return None
        size = memoryview(buffer).nbytes
        frame = buffer if self.settings.zero_copy else private_copy(buffer)
        try:
            obj = OmniSerializer.deserialize(frame, zero_copy=True)
        except ValueError as exc:
            self._note_failure("decode", key, exc)
            raise
        self._done(get_key, key, "gets", size)
        return obj, size

    def _wait_for(self, client: Any, key: str, deadline: float) -> Any | None:
        """The value's read-only buffer, polled in GIL-friendly slices until ``deadline``; None if absent.

        A request no worker answered is tried again while the deadline allows (the first request over a
        connection that a network partition broke fails once the network is back), so the call raises at
        most ``req_timeout_ms`` after its deadline.
        """
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                buffers = client.get_buffers([key], min(remaining_ms, WAIT_SLICE_MS))
            except RuntimeError as exc:
                code = status_code(exc)
                if code == RPC_UNAVAILABLE and time.monotonic() < deadline:
                    self._count(timeouts=1)
                    logger.info("YuanrongConnector get of %r at worker %s: no answer, trying again: %s",
                                key, self.endpoint, exc)
                    time.sleep(min(WAIT_SLICE_MS / 1000, max(0.0, deadline - time.monotonic())))  # no busy loop
                    continue
                if code != KEY_NOT_FOUND:
                    raise self._backend_error("get", key, exc) from exc
                buffers = [None]
            self._release_quarantine()
            if buffers[0] is not None or time.monotonic() >= deadline:
                return buffers[0]

    def _backend_error(self, action: str, key: str, exc: RuntimeError) -> Exception:
        message = self._note_failure(action, key, exc)
        if status_code(exc) == RPC_UNAVAILABLE:
            return DatasystemUnavailableError(message)
        return RuntimeError(message)

    def _note_failure(self, action: str, key: str, exc: Exception) -> str:
        unavailable = status_code(exc) == RPC_UNAVAILABLE
        detail = f" (no answer within req_timeout_ms={self.settings.req_timeout_ms})" if unavailable else ""
        message = f"YuanrongConnector {action} of {key!r} at worker {self.endpoint} failed{detail}: {exc}"
        self._count(errors=1, timeouts=int(unavailable))
        with self._lock:
            self._last_error = message
        return message

    def _release_quarantine(self) -> None:
        """The worker answered a request: whatever was queued before it has gone out, so the buffers can go."""
        if self._quarantine:
            with self._lock:
                self._quarantine.clear()

    def _done(self, request_id: str, key: str, counter: str, nbytes: int) -> None:
        """Count a successful put/get and remember its key for ``cleanup(request_id)``."""
        self._release_quarantine()
        with self._lock:
            self._counters[counter] += 1
            self._counters["bytes_transferred"] += nbytes
        self._track(request_id, key)

    def _track(self, request_id: str, key: str) -> None:
        """Remember ``key`` for ``cleanup(request_id)``."""
        with self._lock:
            keys = self._tracked.get(request_id)
            if keys is None:
                self._tracked[request_id] = {key}
                if len(self._tracked) > MAX_TRACKED_REQUESTS:
                    self._tracked.popitem(last=False)
            else:
                keys.add(key)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._counters[name] += value
