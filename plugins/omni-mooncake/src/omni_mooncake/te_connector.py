"""``MooncakeTransferEngineConnector``: point-to-point transfers between registered memory pools."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import zmq

from omni_core import (
    Delivery,
    ManagedBuffer,
    OmniConnectorBase,
    OmniSerializer,
    SerializationError,
    resolve_host,
    validate_key,
)

from . import wire
from .config import resolve_settings
from .engine import QUERY_TIMEOUT_S, pull_timeout_s, start_engine
from .hooks import TE_REGISTRATION
from .metrics import Counters
from .outbox import OutboundEntry, Outbox
from .pending import PendingPull, PendingPulls, ReadsGivenUp, RecentSet
from .quarantine import Quarantine
from .raw_payload import RawLayout, layout_of
from .side_channel import SenderSilent, SideChannelClient, SideChannelError, SideChannelServer
from .te_pool import ReceivedBuffer, RegisteredPool, fill, synchronize
from .te_sender import SenderService, claim_lease_s

logger = logging.getLogger("omni.mooncake.te")

ROLES = ("sender", "receiver")
#: Longest pause between two polls of a sender in ``get_with_deadline``.
MAX_POLL_INTERVAL_S = 0.05
#: A receiver whose pool is full (slices held for failed transfers) says so at most this often.
POOL_FULL_WARN_EVERY_S = 5.0
#: How many payloads a receiver remembers having read (its guard against reading one twice).
DELIVERED_REMEMBERED = 65536
#: Threads of a receiver running TransferEngine reads (each blocks in the engine with the GIL released).
READ_WORKERS = 4

Endpoint = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a receiver reads a payload itself: the sender's engine session, the address and the put's token."""

    session: str
    address: int
    token: int

    @classmethod
    def parse(cls, host: str, rpc_port: Any, address: Any, token: Any) -> _Source | None:
        """From metadata or a query answer; None when any part is missing (the payload is then pulled)."""
        if not all(type(value) is int and value >= 0 for value in (rpc_port, address, token)):
            return None
        return cls(f"{host}:{rpc_port}", address, token)


@dataclasses.dataclass(frozen=True)
class _Incoming:
    """What a receiver knows about a payload before it moves."""

    endpoint: Endpoint
    size: int
    layout: RawLayout | None  #: None for a serialized object
    source: _Source | None = None  #: set when the receiver may read it itself


class MooncakeTransferEngineConnector(OmniConnectorBase):
    """OmniConnector over the Mooncake TransferEngine with a registered memory pool (host or CUDA, RDMA or TCP).

    The sender copies each payload once into its pool (zero copies for a ``ManagedBuffer`` of the same
    pool, see :meth:`allocate`) and answers on a ZMQ side channel; a receiver asks the sender to write it
    into its own pool.  ``put`` returns metadata ``{source_host, source_port, data_size, is_fast_path,
    raw_layout?}`` for the receiver.  ``get`` accepts that metadata, partial metadata (``source_host`` and
    ``source_port`` only: the sender is asked for the rest, so one receiver can pull from N senders),
    ``{"sender_rank": r}`` (a sender set with :meth:`update_sender_info`), or none (the default sender).

    Tensors and bytes come back as a :class:`ReceivedBuffer` (``is_fast_path``): call ``payload()`` to
    rebuild them and ``release()`` when done.  Other objects are serialized and come back deserialized.

    Topology: each key goes to ``readers`` distinct receivers (default 1), one pull each, then its buffer
    is freed; 1 receiver <- N senders works through partial metadata.  Buffers nobody pulls are reclaimed
    after ``buffer_ttl_seconds``, never while a pull is writing from them (pulls are bounded by the
    engine's transfer timeout, so a receiver that dies mid-transfer cannot pin a buffer forever).
    """

    capabilities = TE_REGISTRATION.capabilities

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._finalizer: weakref.finalize | None = None
        self.config = resolve_settings(TE_REGISTRATION, config)
        role = str(self.config.get("role") or "sender").lower()
        if role not in ROLES:
            raise ValueError(f"role must be 'sender' or 'receiver', got {self.config.get('role')!r}")
        self.role = role
        self.can_put = role == "sender"
        self.host = resolve_host(self.config["host"])
        self.protocol: str = self.config["protocol"]
        self.device_name: str = self.config["device_name"]
        self.pool_size: int = self.config["memory_pool_size"]
        self.pool_device: str = self.config["memory_pool_device"]
        self.buffer_ttl_seconds = float(self.config["buffer_ttl_seconds"])
        self.readers: int = self.config["readers"]
        if self.readers < 1:
            raise ValueError(f"readers must be >= 1, got {self.readers}")
        if self.readers > 1:
            self.capabilities = dataclasses.replace(self.capabilities, delivery=Delivery.BROADCAST)  # type: ignore[misc]
        self.sender_host: str | None = self.config["sender_host"]
        self.sender_zmq_port: int | None = self.config["sender_zmq_port"]
        self._rank_senders: dict[int, Endpoint] = {}
        self._quarantine = Quarantine(self.config["quarantine_s"])
        self._pending = PendingPulls()
        self._pool_full_warned_at = float("-inf")
        self._counters = Counters(
            "puts", "gets", "bytes_transferred", "errors", "timeouts", "malformed_messages", "refused_peers",
            "reclaimed_buffers", "failed_transfers", "lapsed_claims", "pool_exhausted",
        )  # fmt: skip

        self.engine, self.rpc_port = start_engine(self.host, self.protocol, self.device_name)
        self.session = f"{self.host}:{self.rpc_port}"
        self.pool = RegisteredPool(self.engine, self.pool_size, self.pool_device)
        self._host_pool = not self.pool.tensor.is_cuda  # host pools are read by receivers, device pools pulled
        counters = self._counters  # callbacks must not hold the connector, or it could never be collected

        self._outbox = Outbox(
            self.readers, self.buffer_ttl_seconds, lambda n: counters.add("reclaimed_buffers", n),
            lambda n: counters.add("lapsed_claims", n),
        )  # fmt: skip
        #: Threads running this receiver's reads (a get waits on its read while it probes the sender).
        self._reads = ThreadPoolExecutor(READ_WORKERS, "omni-te-read") if self._host_pool else None
        self._reads_given_up = ReadsGivenUp(functools.partial(_after_read, self._quarantine))
        #: Payloads (key, token) this receiver read: a claim the sender let lapse (its done note lost in a
        #: partition) leaves the payload there, and asking for it again must not hand it out twice.
        self._delivered = RecentSet(DELIVERED_REMEMBERED)
        self._ctx = zmq.Context()
        self._client = SideChannelClient(self._ctx)
        try:
            self._server = self._start_server() if self.can_put else None
        except BaseException:
            _shutdown(self._ctx, self._client, self._outbox, self.pool, None, self._quarantine, self._pending,
                      self._reads, self._reads_given_up)  # fmt: skip
            raise
        self.zmq_port = self._server.port if self._server is not None else None
        self._finalizer = weakref.finalize(
            self, _shutdown, self._ctx, self._client, self._outbox, self.pool, self._server, self._quarantine,
            self._pending, self._reads, self._reads_given_up,
        )

    def _start_server(self) -> SideChannelServer:
        port = self.config["zmq_port"]
        if isinstance(port, str):
            port = 0 if port.strip().lower() in ("auto", "") else int(port)
        service = SenderService(self.engine, self._outbox, self._counters, self.rpc_port if self._host_pool else None)
        counters, ttl, outbox = self._counters, self.buffer_ttl_seconds, self._outbox
        return SideChannelServer(
            self._ctx,
            self.host,
            port,
            on_query=service.query,
            on_pull=service.pull,
            on_claim=service.claim,
            on_done=service.done,
            claims_open=lambda: outbox.claims_end is not None,
            on_tick=self._outbox.reclaim_expired,
            on_malformed=lambda: counters.add("malformed_messages"),
            on_refused=lambda: counters.add("refused_peers"),
            tick_s=min(max(ttl / 4, 0.05), 5.0) if ttl > 0 else 5.0,
        )

    # -- producer side --------------------------------------------------------------------------
    def allocate(self, size: int) -> ManagedBuffer:
        """A slice of this connector's registered pool: fill it and ``put`` it to send with zero copies."""
        self._check_open()
        return self.pool.allocate(size)

    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Expose ``data`` for receivers; returns ``(ok, size, metadata)`` (see the class docstring)."""
        validate_key(put_key)
        self._check_open()
        if not self.can_put:
            logger.warning("MooncakeTransferEngineConnector: put on a receiver (key %r) ignored", put_key)
            return False, 0, None
        key = self._make_key(put_key, str(from_stage), str(to_stage))
        try:
            entry = self._stage_with_reclaim(key, put_key, data)
        except (MemoryError, SerializationError, TypeError, ValueError) as exc:
            self._counters.add("errors")
            logger.error("MooncakeTransferEngineConnector: put of %r failed: %s", key, exc)
            return False, 0, None
        self._outbox.add(entry)
        self._counters.add("puts")
        metadata: dict[str, Any] = {
            "source_host": self.host,
            "source_port": self.zmq_port,
            "data_size": entry.size,
            "is_fast_path": entry.layout is not None,
        }
        if entry.layout is not None:
            metadata["raw_layout"] = entry.layout.to_wire()
        if self._host_pool:  # the receiver reads it itself: no round trip before the transfer
            metadata.update(source_rpc_port=self.rpc_port, source_address=entry.buffer.data_ptr, token=entry.token)
        return True, entry.size, metadata

    def _stage_with_reclaim(self, key: str, request_id: str, data: Any) -> OutboundEntry:
        try:
            return self._stage(key, request_id, data)
        except MemoryError:
            if not self._outbox.reclaim_expired():
                raise
            return self._stage(key, request_id, data)

    def _stage(self, key: str, request_id: str, data: Any) -> OutboundEntry:
        """Put ``data`` into the pool (or adopt a buffer already there) as an outbox entry."""
        if isinstance(data, ManagedBuffer) and self.pool.owns(data) and not data.released:
            layout = data.layout if isinstance(data, ReceivedBuffer) else _bytes_layout(data.size)
            return OutboundEntry(key, request_id, data, owned=False, size=data.size, layout=layout)
        if isinstance(data, ManagedBuffer):
            data = data.tensor
        layout = layout_of(data, arrays=False)
        if layout is not None:
            buffer = self.pool.allocate(layout.nbytes)
            try:
                fill(buffer, data)
            except BaseException:
                buffer.release()
                raise
            return OutboundEntry(key, request_id, buffer, owned=True, size=layout.nbytes, layout=layout)
        payload = OmniSerializer.prepare(data)
        buffer = self.pool.allocate(payload.nbytes)
        try:
            if buffer.tensor.is_cuda:
                fill(buffer, payload.to_bytes())
            else:
                payload.write_into(buffer.tensor.numpy())
        except BaseException:
            buffer.release()
            raise
        return OutboundEntry(key, request_id, buffer, owned=True, size=payload.nbytes, layout=None)

    def cleanup(self, request_id: str, from_stage: str | None = None, to_stage: str | None = None) -> None:
        """Free what this sender holds for ``request_id``: on one edge when both stages are given, else all."""
        if (from_stage is None) != (to_stage is None):
            raise ValueError("cleanup needs both from_stage and to_stage, or neither")
        if from_stage is not None:
            key = self._make_key(request_id, str(from_stage), str(to_stage))
            self._outbox.discard(lambda e: e.key == key)
        else:
            self._outbox.discard(lambda e: request_id in (e.key, e.request_id))

    # -- consumer side ---------------------------------------------------------------------------
    def update_sender_info(self, sender_host: str, sender_zmq_port: int, sender_rank: int | None = None) -> None:
        """Set the default sender (``sender_rank`` None) or the sender of one rank (``{"sender_rank": r}``)."""
        if sender_rank is None:
            self.sender_host, self.sender_zmq_port = sender_host, int(sender_zmq_port)
        else:
            self._rank_senders[int(sender_rank)] = (sender_host, int(sender_zmq_port))

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Pull ``get_key`` from its sender: ``(payload, size)``, or None if it is not there (yet) or failed.

        One attempt, waiting on the sender as :meth:`get_with_deadline` does for a deadline QUERY_TIMEOUT_S away.
        """
        return self._get(from_stage, to_stage, get_key, metadata, time.monotonic() + QUERY_TIMEOUT_S)[0]

    def get_with_deadline(
        self,
        from_stage: str,
        to_stage: str,
        get_key: str,
        metadata: dict[str, Any] | None = None,
        *,
        deadline: float,
    ) -> tuple[Any, int] | None:
        """Poll the sender until the payload is there or ``deadline`` passes.

        While a transfer runs its sender is probed every second: a transfer still running at the deadline
        finishes while the sender answers; a sender that stops answering (dead, frozen, cut off by a
        partition) is given up within about 2 s, before the deadline too, and the get then returns None at
        once (no new transfer).  A read that failed while its sender answers is tried again.
        """
        delay = 0.0005
        while True:
            result, may_retry = self._get(from_stage, to_stage, get_key, metadata, deadline)
            remaining = deadline - time.monotonic()
            if result is not None or not may_retry or remaining <= 0:
                return result
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL_INTERVAL_S)

    def _get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None, deadline: float
    ) -> tuple[tuple[Any, int] | None, bool]:
        """One attempt: ``(result, may_retry)``; a transfer that failed or was given up is not worth retrying."""
        validate_key(get_key)
        self._check_open()
        self._quarantine.release_due()
        self._pending.release_expired()
        key = self._make_key(get_key, str(from_stage), str(to_stage))
        pending = self._pending.take(key)  # a pull given up earlier: its reply, not a new pull
        incoming = pending.incoming if pending is not None else None
        try:
            if pending is not None:
                reply = pending.wait_reply(deadline - time.monotonic())
                if reply is None:
                    return None, not self._keep_pending(key, pending)
                result = self._complete(key, pending.incoming, pending.buffer, reply)
            else:
                query_timeout = min(QUERY_TIMEOUT_S, max(deadline - time.monotonic(), 0.01))
                incoming = self._incoming(key, metadata, query_timeout)
                if incoming is None:
                    return None, True
                if incoming.source is not None and self._reads is not None:
                    result = self._read(key, incoming, incoming.source)
                else:
                    result = self._pull(key, incoming)
        except SideChannelError as exc:
            self._counters.add("timeouts" if exc.timed_out else "errors")
            logger.warning("MooncakeTransferEngineConnector: get of %r: %s", key, exc)
            return None, incoming is None  # a failed query is retried, a failed transfer is not
        except MemoryError as exc:  # slices held for failed transfers come back in time: try again
            self._counters.add("pool_exhausted")
            if time.monotonic() >= self._pool_full_warned_at + POOL_FULL_WARN_EVERY_S:
                self._pool_full_warned_at = time.monotonic()
                logger.warning("MooncakeTransferEngineConnector: get of %r waits for room: %s", key, exc)
            return None, True
        except (ValueError, SerializationError) as exc:
            self._counters.add("errors")
            logger.error("MooncakeTransferEngineConnector: get of %r failed: %s", key, exc)
            return None, True
        if result is not None and incoming is not None:
            self._counters.add("gets")
            self._counters.add("bytes_transferred", incoming.size)
        return result, True

    def _keep_pending(self, key: str, pending: PendingPull) -> bool:
        """Keep waiting for a given-up pull's reply until its time is over (True), then drop it (False)."""
        if time.monotonic() < pending.expires_at:
            self._pending.add(key, pending)
            return True
        pending.release()  # no write can land any more: the next attempt pulls afresh
        return False

    def _incoming(self, key: str, metadata: dict[str, Any] | None, query_timeout: float) -> _Incoming | None:
        """Resolve the sender and the payload's size and kind from ``metadata`` (asking the sender if needed)."""
        endpoint = self._endpoint(metadata or {})
        if metadata and "data_size" in metadata:
            size = int(metadata["data_size"])
            if size <= 0:
                return None
            layout = None
            if metadata.get("is_fast_path"):
                raw = metadata.get("raw_layout")
                layout = RawLayout.from_wire(raw, size) if raw is not None else _bytes_layout(size)
            source = _Source.parse(
                endpoint[0], metadata.get("source_rpc_port"), metadata.get("source_address"), metadata.get("token")
            )
            return _Incoming(endpoint, size, layout, source)
        reply = self._client.request(endpoint, wire.Query(key), query_timeout)
        if not reply["ok"]:
            return None
        size = reply.get("size")
        if type(size) is not int or size <= 0:
            raise ValueError(f"sender {endpoint} sent a bad size {size!r}")
        raw = reply.get("layout")
        source = _Source.parse(endpoint[0], reply.get("rpc_port"), reply.get("address"), reply.get("token"))
        return _Incoming(endpoint, size, RawLayout.from_wire(raw, size) if raw is not None else None, source)

    def _endpoint(self, metadata: dict[str, Any]) -> Endpoint:
        host, port = metadata.get("source_host"), metadata.get("source_port")
        if host is not None or port is not None:
            if host is None or port is None or str(host).lower() in ("auto", ""):
                raise ValueError(f"metadata needs both source_host and source_port, got {metadata!r:.200}")
            return str(host), int(port)
        if "sender_rank" in metadata:
            rank = int(metadata["sender_rank"])
            if rank not in self._rank_senders:
                raise ValueError(f"no sender known for rank {rank}; call update_sender_info(host, port, {rank})")
            return self._rank_senders[rank]
        if self.sender_host is None or self.sender_zmq_port is None or self.sender_host.lower() == "auto":
            raise RuntimeError(
                "MooncakeTransferEngineConnector.get without metadata needs a default sender: pass the metadata "
                "put() returned, or set sender_host/sender_zmq_port (update_sender_info)"
            )
        return self.sender_host, self.sender_zmq_port

    def _read(self, key: str, incoming: _Incoming, source: _Source) -> tuple[Any, int] | None:
        """Read the payload from the sender's pool into a fresh slice, the claim on it travelling meanwhile.

        The claim is sent first and answered while the read runs (on a reader thread): a payload the sender
        still held when the claim arrived cannot be freed before the claim's lease ends (and a put is never
        reused under another token), so a read that finished within the lease holds exactly the payload the
        claim names.  Anything else (a refused claim, a read past the lease) drops what was read.  While the
        read runs the sender is probed: one that stops answering is given up (the read is left to end by
        itself, its slice held meanwhile) and the claim lapses on the sender, which keeps the payload.
        """
        assert self._reads is not None
        delivered = wire.Done(key, source.token, self.session, delivered=True)
        if self._delivered.seen((key, source.token)):  # read before; its done note may have been lost
            self._client.notify(incoming.endpoint, delivered)
            return None
        buffer = self._slice(incoming)
        claim = wire.Claim(key, source.token, self.session, source.address, incoming.size)
        started = time.monotonic()
        try:
            sock = self._client.send(incoming.endpoint, claim, QUERY_TIMEOUT_S)
        except SideChannelError:
            buffer.release()
            raise
        read = self._reads.submit(
            self.engine.transfer_sync_read, source.session, buffer.data_ptr, source.address, incoming.size
        )
        done = wire.Done(key, source.token, self.session, delivered=False)
        try:
            reply = self._client.wait(incoming.endpoint, sock, key, QUERY_TIMEOUT_S, probe=True)
            rc = self._read_result(read, incoming.endpoint, key, started + claim_lease_s(incoming.size))
        except SideChannelError as exc:  # the sender went silent: leave the read to end by itself
            self._client.notify(incoming.endpoint, done, abandon=exc.socket if isinstance(exc, SenderSilent) else None)
            self._reads_given_up.add(read, buffer, started + claim_lease_s(incoming.size))
            raise
        took = time.monotonic() - started
        if rc != 0:  # the sender answered, so it lives (a connection broken by a partition): worth retrying
            self._client.notify(incoming.endpoint, done)
            self._quarantine.hold(buffer.size, release=buffer.release)  # the read may still land in the slice
            self._counters.add("errors")
            logger.warning("TransferEngine read of %r from %s failed (%s)", key, source.session, rc)
            return None
        if not reply["ok"]:
            buffer.release()
            if reply.get("error") != wire.NOT_FOUND:
                self._counters.add("errors")
                logger.warning("sender %s refused %r: %s %s", incoming.endpoint, key, reply.get("error"),
                               reply.get("detail", ""))  # fmt: skip
            return None
        if took * 1000 >= reply.get("lease_ms", 0):  # the sender may have freed it while it was read
            buffer.release()
            self._counters.add("errors")
            logger.warning("read of %r took %.1f s, past the sender's %s ms lease: dropped", key, took,
                           reply.get("lease_ms"))  # fmt: skip
            return None
        self._delivered.add((key, source.token))
        self._client.notify(incoming.endpoint, delivered)
        return self._arrived(buffer, incoming)

    def _read_result(self, read: Future[int], endpoint: Endpoint, key: str, lease_end: float) -> int:
        """The return code of ``read``, awaited while its sender answers probes (SenderSilent once it does
        not); a read still running at the end of its lease (it cannot: the engine bounds it) counts as failed."""
        if read.done():
            return read.result()
        prober = self._client.prober(endpoint, key)
        try:
            while time.monotonic() < lease_end:
                with contextlib.suppress(FutureTimeout):
                    return read.result(max(0.0, min(prober.next_check, lease_end) - time.monotonic()))
                if not prober.check():
                    raise SenderSilent(f"the sender at {endpoint} stopped answering during a read", None)
        finally:
            prober.close()
        return -1

    def _slice(self, incoming: _Incoming) -> ManagedBuffer:
        """A fresh pool slice for ``incoming`` (a ReceivedBuffer for a raw payload)."""
        if incoming.layout is not None:
            return self.pool.allocate_received(incoming.layout)
        return self.pool.allocate(incoming.size)

    def _arrived(self, buffer: ManagedBuffer, incoming: _Incoming) -> tuple[Any, int]:
        """Hand out a raw payload's slice, or deserialize an object from it (and free the slice)."""
        if incoming.layout is None:
            with buffer:  # released once deserialized
                if self._host_pool:
                    return OmniSerializer.deserialize(buffer.tensor.numpy(), zero_copy=False), incoming.size
                synchronize(buffer.tensor)
                return OmniSerializer.deserialize(buffer.to_bytes(), zero_copy=False), incoming.size
        if not self._host_pool:
            try:
                synchronize(buffer.tensor)
            except BaseException:
                buffer.release()
                raise
        return buffer, incoming.size

    def _pull(self, key: str, incoming: _Incoming) -> tuple[Any, int] | None:
        """Have the sender write the payload into a fresh pool slice, then hand it out or deserialize it."""
        buffer = self._slice(incoming)
        timeout = pull_timeout_s(incoming.size)
        request = wire.Pull(key, self.session, buffer.data_ptr, incoming.size, int(timeout * 1000))
        try:
            reply = self._client.request(incoming.endpoint, request, timeout, probe=True)
        except SenderSilent as exc:  # its write may still land once the network heals: keep waiting for it
            assert exc.socket is not None  # a pull's reply is still awaited
            held_until = time.monotonic() + self._quarantine.hold_seconds(buffer.size)
            self._pending.add(key, PendingPull(incoming, buffer, exc.socket, held_until))
            raise
        except SideChannelError:
            self._quarantine.hold(buffer.size, release=buffer.release)
            raise
        return self._complete(key, incoming, buffer, reply)

    def _complete(
        self, key: str, incoming: _Incoming, buffer: ManagedBuffer, reply: dict[str, Any]
    ) -> tuple[Any, int] | None:
        """Act on the sender's reply to a pull into ``buffer``: the payload, or None (the slice released)."""
        if not reply["ok"]:
            error = reply.get("error")
            if error in wire.WRITE_MAY_BE_IN_FLIGHT:
                self._quarantine.hold(buffer.size, release=buffer.release)
            else:
                buffer.release()
            if error != wire.NOT_FOUND:
                self._counters.add("errors")
                logger.warning("sender %s refused %r: %s %s", incoming.endpoint, key, error, reply.get("detail", ""))
            return None
        return self._arrived(buffer, incoming)

    # -- status ----------------------------------------------------------------------------------
    def get_connection_info(self) -> dict[str, Any]:
        """Where receivers reach this connector: ``{host, zmq_port, rpc_port, can_put}``."""
        return {"host": self.host, "zmq_port": self.zmq_port, "rpc_port": self.rpc_port, "can_put": self.can_put}

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "status": "healthy",
            "role": self.role,
            "host": self.host,
            "zmq_port": self.zmq_port,
            "rpc_port": self.rpc_port,
            "metadata_server": None,
            "master": None,
            "protocol": self.protocol,
            "pool_device": self.pool_device,
            "pool_size": self.pool_size,
            # first: releases what is due
            "quarantined_bytes": self._quarantine.nbytes + self._pending.nbytes + self._reads_given_up.nbytes,
            "pending_pulls": len(self._pending),
            "reads_given_up": len(self._reads_given_up),
            "pool_used_bytes": self.pool.allocator.used_bytes,
            **self._outbox.stats(),
            **self._counters.snapshot(),
        }
        if self.closed:
            report.update(status="unhealthy", error="connector is closed")
        return report

    def pool_used_bytes(self) -> int:
        """Bytes of the registered transfer pool in use now."""
        return self.pool.allocator.used_bytes

    def close(self) -> None:
        """Stop the listener (running pulls finish first), free every buffer, unregister the pool."""
        if self._finalizer is not None:
            self._finalizer()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("MooncakeTransferEngineConnector is closed")


def _after_read(quarantine: Quarantine, buffer: ManagedBuffer, rc: int) -> None:
    """Give back the slice of a read given up once it ended (held a while more if it failed: it may still land)."""
    if rc == 0:
        buffer.release()
    else:
        quarantine.hold(buffer.size, release=buffer.release)


def _bytes_layout(size: int) -> RawLayout:
    """Layout of an untyped buffer: a flat uint8 tensor."""
    return RawLayout("tensor", "uint8", (size,), size)


def _shutdown(
    ctx: zmq.Context,
    client: SideChannelClient,
    outbox: Outbox,
    pool: RegisteredPool,
    server: SideChannelServer | None,
    quarantine: Quarantine,
    pending: PendingPulls,
    reads: ThreadPoolExecutor | None,
    reads_given_up: ReadsGivenUp,
) -> None:
    """Tear a connector down in order; also run when one is garbage-collected without close()."""
    if server is not None:
        server.close()
    if reads is not None:
        reads.shutdown(wait=False, cancel_futures=True)  # reads given up end by themselves
    # receivers still reading from this pool (past the close grace), reads still landing in it: they end by then
    in_use_until = max(filter(None, (outbox.claims_end, quarantine.ends_at, reads_given_up.ends_at)), default=None)
    outbox.close()
    pending.release_all()
    client.close()
    ctx.destroy(linger=0)
    pool.close(keep_memory_until=in_use_until)  # unregistered: no transfer can start on the pool any more
    quarantine.release_all()
