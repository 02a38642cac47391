"""``YuanrongTransferEngineConnector``: receivers read payloads out of the sender's registered NPU pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import zmq

from omni_core import (
    BufferAllocator,
    Capabilities,
    Delivery,
    ManagedBuffer,
    OmniConnectorBase,
    get_connector_local_rank,
    validate_key,
)

from .te_control import (
    ACK_OK,
    CLEANUP_KEY,
    INFO_NOT_FOUND,
    QUERY_INFO,
    ControlServer,
    decode_info,
    encode_error,
    encode_info,
    encode_request,
    request,
)
from .te_device import HOST_POOL_DEVICE, allocate_pool, require_npu, synchronize
from .te_engine import EngineFactory, TransferEngineAPI, check, initialize_engine, real_engine
from .te_outbox import Outbox
from .te_payload import Outgoing, RawPayloadBuffer, check_raw_fields, decode_frame
from .te_settings import TESettings

logger = logging.getLogger("omni.yuanrong.te")

POOL_ALIGNMENT = 4096


class YuanrongTransferEngineConnector(OmniConnectorBase):
    """Pull-based connector backed by Yuanrong transfer_engine.

    The sender copies each payload once into its registered pool and answers
    ``query_info``/``cleanup_key`` on a ZMQ side channel; the receiver claims the
    payload, reads it into its own pool with ``batch_transfer_sync_read`` and tells
    the sender to free it (consume-once).  Tensors and bytes come back as a
    :class:`~omni_yuanrong.te_payload.RawPayloadBuffer` the caller must release;
    other objects are deserialized.  Unclaimed payloads are reclaimed after
    ``buffer_ttl_seconds``.

    The data plane needs an Ascend NPU.  ``engine_factory`` is the test hook: it
    replaces the real engine (``yr.datasystem.TransferEngine``) and is the only way
    to use a host (``memory_pool_device: cpu``) pool.
    """

    capabilities = Capabilities(
        raw_data=True, needs_endpoint=True, delivery=Delivery.CONSUME_ONCE, cross_host=True, device_memory=True
    )

    def __init__(self, config: Mapping[str, Any] | None = None, *, engine_factory: EngineFactory | None = None) -> None:
        self._server: ControlServer | None = None
        self._engine: TransferEngineAPI | None = None
        self._pool: Any = None
        self._registered = False
        self._zmq: zmq.Context[Any] | None = None
        self.zmq_port: int | None = None
        self.rpc_port = 0
        self.config = dict(config or {})
        settings = TESettings.from_config(
            self.config, allow_host_pool=engine_factory is not None, local_rank=get_connector_local_rank()
        )
        self.settings = settings
        self._outbox = Outbox(ttl_s=settings.buffer_ttl_seconds)
        self.role, self.host, self.protocol = settings.role, settings.host, settings.protocol
        self.pool_size, self.pool_device = settings.memory_pool_size, settings.memory_pool_device
        self.sender_host, self.sender_zmq_port = settings.sender_host, settings.sender_zmq_port
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(("puts", "gets", "errors", "timeouts", "bytes_transferred"), 0)
        #: Payloads read from a sender that did not confirm freeing them (it was unreachable), by "host:port":
        #: the free is asked again with the next payload read from that sender.
        self._unreleased: dict[str, list[str]] = {}
        if self.pool_device != HOST_POOL_DEVICE:
            require_npu(self.pool_device)
        try:
            self._start(engine_factory or real_engine)
        except BaseException:
            self.close()
            raise

    def _start(self, engine_factory: EngineFactory) -> None:
        settings = self.settings
        self._engine = engine_factory()
        self.rpc_port = initialize_engine(
            self._engine, self.host, settings.rpc_port, settings.protocol, settings.device_name
        )
        self._pool = allocate_pool(self.pool_device, self.pool_size)
        self.base_ptr = int(self._pool.data_ptr())
        check(self._engine.register_memory(self.base_ptr, self.pool_size), f"register_memory({self.pool_size} bytes)")
        self._registered = True
        self.allocator = BufferAllocator(self.pool_size, alignment=POOL_ALIGNMENT)
        self._zmq = zmq.Context()
        if self.role == "sender":
            self._server = ControlServer(self._zmq, self.host, settings.zmq_port, self._answer, self._outbox.sweep)
            self.zmq_port = self._server.port

    # -- contract -----------------------------------------------------------------
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Sender: copy ``data`` into the pool and return the metadata a receiver needs."""
        self._check_open()
        validate_key(put_key)
        if self.role != "sender":
            logger.warning("YuanrongTransferEngineConnector put(%r) refused: this instance is a receiver", put_key)
            self._count(errors=1)
            return False, 0, None
        outgoing = Outgoing(data)
        try:
            buffer = self._allocate(outgoing.nbytes)
        except MemoryError as exc:
            logger.warning("YuanrongTransferEngineConnector put(%r): pool full: %s", put_key, exc)
            self._count(errors=1)
            return False, 0, None
        try:
            outgoing.write_into(buffer)
        except BaseException:
            buffer.release()
            raise
        info = {"data_size": outgoing.nbytes, "is_fast_path": outgoing.is_fast_path, **(outgoing.fields or {})}
        address = self.base_ptr + buffer.offset
        self._outbox.add(self._make_key(put_key, from_stage, to_stage), put_key, buffer, {**info, "src": address})
        self._count(puts=1, bytes_transferred=outgoing.nbytes)
        metadata = {
            "source_host": self.host,
            "source_port": self.zmq_port,
            "source_rpc_port": self.rpc_port,
            "source_addrs": [address],
            "lengths": [outgoing.nbytes],
            **info,
        }
        return True, outgoing.nbytes, metadata

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Receiver: claim the payload from its sender, read it into the pool, free it at the sender.

        Returns ``(RawPayloadBuffer, size)`` for tensors and bytes (release it when
        done), ``(obj, size)`` for other objects, ``None`` when the sender does not
        hold the key (not yet put, already consumed or cleaned up).  Raises
        TimeoutError when the sender does not answer and TransferEngineError when
        the read fails.
        """
        self._check_open()
        validate_key(get_key)
        key = self._make_key(get_key, from_stage, to_stage)
        host, port = self._sender_of(metadata)
        try:
            reply = request(self._context, f"{host}:{port}", encode_request(QUERY_INFO, key), self._timeout_ms)
            info = decode_info(reply, key)
            fields = check_raw_fields(info) if info is not None and info["is_fast_path"] else None
        except (TimeoutError, ValueError) as exc:
            self._count(errors=1, timeouts=int(isinstance(exc, TimeoutError)))
            raise
        if info is None:
            return None
        buffer = self._read(host, info, fields)
        self._release_at_sender(f"{host}:{port}", key)
        self._count(gets=1, bytes_transferred=buffer.size)
        if isinstance(buffer, RawPayloadBuffer):
            return buffer, buffer.size
        with buffer:
            return decode_frame(buffer), buffer.size

    def cleanup(self, request_id: str, from_stage: str | None = None, to_stage: str | None = None) -> None:
        """Sender: free the payload of ``request_id`` on one edge (both stages given) or on every edge."""
        if from_stage is not None and to_stage is not None:
            internal = self._make_key(request_id, from_stage, to_stage)
            self._outbox.discard(lambda key, raw_key: key == internal)
        else:
            self._outbox.discard(lambda key, raw_key: raw_key == request_id or key == request_id)

    def health(self) -> dict[str, Any]:
        """Status plus counters, pool usage, and the side channel's malformed messages, refused peers and failed
        accepts."""
        with self._lock:
            report: dict[str, Any] = dict(self._counters)
            report["unreleased"] = sum(len(keys) for keys in self._unreleased.values())
        report.update(self.get_connection_info())
        report.update(
            protocol=self.protocol,
            pool_device=self.pool_device,
            pool_size=self.pool_size,
            pending=len(self._outbox),
            control_errors=self._server.malformed if self._server is not None else 0,
            control_refused_peers=self._server.refused_peers if self._server is not None else 0,
            control_accept_failures=self._server.accept_failures if self._server is not None else 0,
        )
        if self.closed:
            return {"status": "unhealthy", "reason": "connector is closed", **report}
        if self._server is not None and not self._server.alive:
            return {"status": "unhealthy", "reason": "control thread stopped", **report}
        return {"status": "healthy", **report}

    def close(self) -> None:
        """Stop the side channel, free held payloads, unregister the pool and finalize the engine."""
        if self._server is not None:
            self._server.close()
        self._outbox.clear()
        if self._zmq is not None:
            self._zmq.term()
        engine = self._engine
        if engine is not None:
            if self._registered:
                self._log_failure(engine.unregister_memory(self.base_ptr), "unregister_memory")
            self._log_failure(engine.finalize(), "finalize")
        self._engine = self._pool = self._zmq = self._server = None

    # -- upstream extras ------------------------------------------------------------
    def update_sender_info(self, sender_host: str, sender_zmq_port: int) -> None:
        """Receiver: the sender ``get`` asks when it is given no metadata."""
        self.sender_host, self.sender_zmq_port = sender_host, int(sender_zmq_port)

    def get_connection_info(self) -> dict[str, Any]:
        """Where this instance listens: host, side-channel and engine RPC ports, role."""
        return {
            "host": self.host,
            "zmq_port": self.zmq_port,
            "rpc_port": self.rpc_port,
            "role": self.role,
        }

    # -- internals ------------------------------------------------------------------
    @property
    def _context(self) -> zmq.Context[Any]:
        assert self._zmq is not None
        return self._zmq

    @property
    def _timeout_ms(self) -> int:
        return self.settings.control_timeout_ms

    def _check_open(self) -> None:
        if self.closed or self._engine is None:
            raise RuntimeError("YuanrongTransferEngineConnector is closed")

    def _sender_of(self, metadata: Mapping[str, Any] | None) -> tuple[str, int]:
        host = (metadata or {}).get("source_host") or self.sender_host
        port = (metadata or {}).get("source_port") or self.sender_zmq_port
        if not host or not port:
            raise ValueError(
                "YuanrongTransferEngineConnector.get needs the sender's address: pass put()'s metadata, "
                "set sender_host/sender_zmq_port in the config, or call update_sender_info()"
            )
        return str(host), int(port)

    def _allocate(self, size: int, raw_fields: dict[str, Any] | None = None) -> ManagedBuffer:
        """A pool slice; a RawPayloadBuffer when ``raw_fields`` describe a received tensor or bytes."""
        offset = self.allocator.alloc(size)
        try:
            if raw_fields is not None:
                return RawPayloadBuffer(self.allocator, offset, size, self._pool, raw_fields)
            return ManagedBuffer(self.allocator, offset, size, self._pool)
        except BaseException:
            self.allocator.free(offset, size)
            raise

    def _read(self, host: str, info: Mapping[str, Any], fields: dict[str, Any] | None) -> ManagedBuffer:
        size = info["data_size"]
        buffer = self._allocate(size, fields)
        local, destinations = self.base_ptr + buffer.offset, []
        for length in info["lengths"]:
            destinations.append(local)
            local += length
        target = f"{host}:{info['rpc_port']}"
        try:
            assert self._engine is not None
            check(
                self._engine.batch_transfer_sync_read(target, destinations, info["src_addrs"], info["lengths"]),
                f"batch_transfer_sync_read of {size} bytes from {target}",
            )
            synchronize(self._pool)
        except BaseException:
            buffer.release()
            self._count(errors=1)
            raise
        return buffer

    def _release_at_sender(self, endpoint: str, key: str) -> None:
        """Tell the sender to free ``key`` (and what it could not be told before); keep what it does not answer."""
        with self._lock:
            keys = [key, *self._unreleased.pop(endpoint, [])]
        for index, pending in enumerate(keys):
            try:
                reply = request(self._context, endpoint, encode_request(CLEANUP_KEY, pending), self._timeout_ms)
            except TimeoutError as exc:
                logger.warning("%s; freeing %d payload(s) there is asked again with its next read", exc, len(keys))
                self._count(timeouts=1)
                with self._lock:
                    self._unreleased.setdefault(endpoint, []).extend(keys[index:])
                return
            if reply != ACK_OK:
                logger.warning("sender %s did not free %r after the read (its TTL will): %r", endpoint, pending, reply)

    def _answer(self, kind: bytes, key: str) -> bytes:
        """Sender side of the control protocol (runs on the control thread)."""
        if kind == CLEANUP_KEY:
            return ACK_OK if self._outbox.finish(key) else encode_error(f"no payload held for {key!r}")
        info = self._outbox.claim(key)
        if info is None:
            return INFO_NOT_FOUND
        address = info.pop("src")
        segments = {"src_addrs": [address], "lengths": [info["data_size"]]}
        return encode_info({"request_id": key, "rpc_port": self.rpc_port, **segments, **info})

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._counters[name] += value

    @staticmethod
    def _log_failure(result: Any, action: str) -> None:
        if result.is_error():
            logger.warning("TransferEngine %s failed during close: %s", action, result.to_string())

