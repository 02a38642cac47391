"""The coordinator: replica registry, liveness and coalesced list publishing over ZMQ."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import zmq
from zmq.utils.monitor import recv_monitor_message

from .auth import CurveServerKeys, secure_server_socket, start_authenticator
from .messages import (
    MAX_EVENT_BYTES,
    MalformedMessage,
    RegistrationReply,
    ReplicaEvent,
    ReplicaInfo,
    ReplicaList,
    ReplicaStatus,
    decode_event,
    encode_registration_reply,
    encode_replica,
    join_replica_list,
)

logger = logging.getLogger("omni.coordinator")

#: Most events handled per lock acquisition, so publishing is never starved.
_EVENT_BATCH = 512
#: Longest the service loop sleeps, which bounds how fast it notices close().
_MAX_POLL_S = 0.1
#: Shortest service loop turn: under steady heartbeat traffic events are handled in
#: batches instead of one wake-up per message (adds at most this much latency).
_MIN_TURN_S = 0.005
#: A peer that connects but does not finish the ZMTP (or CURVE) handshake in this time is dropped
#: (libzmq's default is 30 s: a silent connection would hold a descriptor that long).
HANDSHAKE_TIMEOUT_MS = 5000
#: Socket events counted: a peer refused at the handshake (garbage, silence, wrong CURVE keys) or an accept
#: that failed (no descriptors left; libzmq retries it at once, so these count attempts, not peers).
_REFUSED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
_WATCHED = _REFUSED | zmq.EVENT_ACCEPT_FAILED
#: Most socket events handled per loop turn, so a flood of them never starves the replicas' events.
_MONITOR_BATCH = 256


def default_keepalive_interval(heartbeat_timeout: float) -> float:
    """How often the full list is re-published for late-joining hubs."""
    return max(0.5, min(heartbeat_timeout / 2.0, 5.0))


class OmniCoordinator:
    """Registry of stage replicas fed by a ROUTER socket, published to hubs on a PUB socket.

    Any event from a replica proves it alive and carries its own status; a
    replica silent for ``heartbeat_timeout`` seconds becomes ERROR and leaves
    the published list.  Changes are coalesced (at most one publish per
    ``publish_min_interval``) and the whole list is re-sent every
    ``keepalive_interval``.  Each list carries this run's ``epoch`` and an
    increasing ``seq``.  Both sockets bind in the constructor; the real
    endpoints are in ``router_zmq_addr`` and ``pub_zmq_addr``.  Peers that never
    complete the handshake (garbage, silence, wrong CURVE keys) are dropped after
    ``HANDSHAKE_TIMEOUT_MS`` and counted in ``stats()["refused_peers"]``; accepts
    that fail (no descriptors left) in ``stats()["accept_failures"]``.
    """

    def __init__(
        self,
        router_zmq_addr: str,
        pub_zmq_addr: str,
        heartbeat_timeout: float = 30.0,
        *,
        keepalive_interval: float | None = None,
        publish_min_interval: float = 0.1,
        gc_after: float = 600.0,
        curve: CurveServerKeys | None = None,
    ) -> None:
        if not heartbeat_timeout > 0:
            raise ValueError(f"heartbeat_timeout must be > 0, got {heartbeat_timeout}")
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.keepalive_interval = keepalive_interval or default_keepalive_interval(self.heartbeat_timeout)
        self.publish_min_interval = publish_min_interval
        self.gc_after = gc_after
        #: Identifies this coordinator run; hubs see it change when the coordinator restarts.
        self.epoch = time.time_ns()

        self._ctx = zmq.Context()
        self._authenticator = None
        self._monitors: list[zmq.Socket] = []
        try:
            self._authenticator = start_authenticator(self._ctx, curve)
            self._router = self._bind(zmq.ROUTER, router_zmq_addr, curve)
            self._router.maxmsgsize = MAX_EVENT_BYTES
            self._pub = self._bind(zmq.PUB, pub_zmq_addr, curve)
            self._monitors = [sock.get_monitor_socket(_WATCHED) for sock in (self._router, self._pub)]
        except BaseException:
            self._release_sockets()
            raise
        self.router_zmq_addr: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_zmq_addr: str = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)

        self._replicas: dict[str, ReplicaInfo] = {}
        #: Encoded wire record of each UP replica, dropped whenever the replica changes.
        self._encoded: dict[str, bytes] = {}
        #: UP replicas by monotonic last-seen time, oldest first: expiry never scans live ones.
        self._live: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._publish_pending = False
        self._pub_lock = threading.Lock()
        self._seq = 0
        self._counters = {
            "events": 0, "malformed": 0, "refused_peers": 0, "accept_failures": 0, "registrations": 0, "published": 0,
            "publish_dropped": 0,
        }  # fmt: skip
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="OmniCoordinator", daemon=True)
        self._thread.start()

    def _bind(self, kind: int, addr: str, curve: CurveServerKeys | None) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        try:
            sock.linger = 0
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
            secure_server_socket(sock, curve)
            sock.bind(addr)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    # -- public API -------------------------------------------------------------
    def get_active_replicas(self) -> ReplicaList:
        """The UP replicas, stamped now (no epoch/seq: this is not a publication)."""
        with self._lock:
            active = [_copy(info) for info in self._replicas.values() if info.status is ReplicaStatus.UP]
        return ReplicaList(replicas=active, timestamp=time.time())

    def add_new_replica(self, event: ReplicaEvent) -> None:
        """Register (or re-register) the replica the event describes."""
        _validate(event)
        with self._lock:
            self._register(event)
        self._schedule_publish()

    def update_replica_info(self, event: ReplicaEvent) -> None:
        """Apply an event to a known replica (KeyError if unknown); it also proves liveness."""
        _validate(event)
        with self._lock:
            info = self._replicas[event.input_addr]
            self._update(info, event)
        self._schedule_publish()

    def remove_replica(self, event: ReplicaEvent) -> None:
        """Mark the replica DOWN: kept in the registry, gone from the published list."""
        with self._lock:
            info = self._replicas.get(event.input_addr)
            if info is not None:
                self._set_status(info, ReplicaStatus.DOWN)
        self._schedule_publish()

    def publish_replica_list_update(self) -> bool:
        """Send the active list now; False if the PUB socket dropped it."""
        with self._lock:
            records = [self._encoded.get(a) or self._encode(a, i) for a, i in self._replicas.items()
                       if i.status is ReplicaStatus.UP]
        with self._pub_lock:
            self._seq += 1
            payload = join_replica_list(records, time.time(), epoch=self.epoch, seq=self._seq)
            try:
                self._pub.send(payload, zmq.NOBLOCK)
            except zmq.ZMQError:
                self._counters["publish_dropped"] += 1
                return False
            self._counters["published"] += 1
        return True

    def stats(self) -> dict[str, int]:
        """Counters: events handled, malformed messages dropped, peers refused at the handshake, failed accepts,
        registrations, lists published/dropped."""
        return dict(self._counters)

    def wait_for_shutdown(self) -> None:
        """Block until :meth:`close` is called."""
        self._stop.wait()

    def close(self) -> None:
        """Stop the service thread and close the sockets; a second call raises RuntimeError."""
        if self._closed:
            raise RuntimeError("OmniCoordinator already closed")
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._release_sockets()

    def _release_sockets(self) -> None:
        for monitor in self._monitors:
            monitor.close(linger=0)
        for name in ("_router", "_pub"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._ctx.term()

    # -- registry (caller holds _lock) ---------------------------------------------
    def _register(self, event: ReplicaEvent) -> ReplicaInfo:
        now = time.time()
        info = ReplicaInfo(
            input_addr=event.input_addr,
            output_addr=event.output_addr,
            stage_id=event.stage_id,
            status=ReplicaStatus(event.status),
            queue_length=event.queue_length or 0,
            last_heartbeat=now,
            registered_at=now,
        )
        self._replicas[info.input_addr] = info
        self._set_status(info, info.status)
        self._counters["registrations"] += 1
        return info

    def _update(self, info: ReplicaInfo, event: ReplicaEvent) -> bool:
        """Apply the event; return True if the published list changes."""
        before = (info.status, info.queue_length, info.stage_id, info.output_addr)
        info.output_addr = event.output_addr
        info.stage_id = event.stage_id
        if event.queue_length is not None:
            info.queue_length = event.queue_length
        info.last_heartbeat = time.time()
        self._set_status(info, ReplicaStatus(event.status))
        after = (info.status, info.queue_length, info.stage_id, info.output_addr)
        return before != after and ReplicaStatus.UP in (before[0], after[0])

    def _encode(self, addr: str, info: ReplicaInfo) -> bytes:
        self._encoded[addr] = record = encode_replica(info)
        return record

    def _set_status(self, info: ReplicaInfo, status: ReplicaStatus) -> None:
        """Every change ends here: set the status, keep the liveness order, drop the stale encoding."""
        info.status = status
        self._encoded.pop(info.input_addr, None)
        if status is ReplicaStatus.UP:
            self._live[info.input_addr] = time.monotonic()
            self._live.move_to_end(info.input_addr)
        else:
            self._live.pop(info.input_addr, None)

    def _handle(self, event: ReplicaEvent) -> tuple[bool, bool]:
        """Apply a wire event; return (registered, published list changed)."""
        info = self._replicas.get(event.input_addr)
        if info is not None:
            return False, self._update(info, event)
        if event.status is ReplicaStatus.DOWN:
            return False, False  # the goodbye of a replica we never knew
        info = self._register(event)
        return True, info.status is ReplicaStatus.UP

    def _expire_silent(self) -> bool:
        """Mark UP replicas silent for longer than the timeout ERROR; True if any."""
        deadline = time.monotonic() - self.heartbeat_timeout
        expired = []
        for addr, seen in self._live.items():
            if seen > deadline:
                break
            expired.append(addr)
        for addr in expired:
            logger.info("replica %s missed its heartbeats for %.1fs: marked error", addr, self.heartbeat_timeout)
            self._set_status(self._replicas[addr], ReplicaStatus.ERROR)
        return bool(expired)

    def _collect_garbage(self) -> None:
        """Forget DOWN/ERROR replicas not heard from for ``gc_after`` seconds."""
        cutoff = time.time() - self.gc_after
        stale = [a for a, i in self._replicas.items() if i.status is not ReplicaStatus.UP and i.last_heartbeat < cutoff]
        for addr in stale:
            del self._replicas[addr]

    # -- service loop ---------------------------------------------------------------
    def _schedule_publish(self) -> None:
        self._publish_pending = True

    def _serve(self) -> None:
        poller = zmq.Poller()
        for sock in (self._router, *self._monitors):
            poller.register(sock, zmq.POLLIN)
        last_publish = next_keepalive = 0.0
        while not self._stop.is_set():
            try:
                last_publish, next_keepalive = self._serve_once(poller, last_publish, next_keepalive)
            except Exception:  # a bug here must not silently end liveness tracking
                logger.exception("OmniCoordinator service loop error; continuing")
                self._stop.wait(_MAX_POLL_S)

    def _serve_once(self, poller: zmq.Poller, last_publish: float, next_keepalive: float) -> tuple[float, float]:
        """One loop turn: receive, expire, keep alive, publish.  Returns the updated schedule."""
        turn_start = now = time.monotonic()
        due = next_keepalive
        if self._publish_pending:
            due = min(due, last_publish + self.publish_min_interval)
        ready = dict(poller.poll(min(max(due - now, 0.0), _MAX_POLL_S) * 1000))
        if self._router in ready:
            self._drain_router()
        for monitor in self._monitors:
            if monitor in ready:
                self._drain_monitor(monitor)
        now = time.monotonic()
        with self._lock:
            if self._expire_silent():
                self._publish_pending = True
            if now >= next_keepalive:
                self._collect_garbage()
                self._publish_pending = True
                next_keepalive = now + self.keepalive_interval
        if self._publish_pending and now - last_publish >= self.publish_min_interval:
            self._publish_pending = False
            if not self.publish_replica_list_update():
                self._publish_pending = True  # retried next turn
            last_publish = now
        self._stop.wait(_MIN_TURN_S - (time.monotonic() - turn_start))
        return last_publish, next_keepalive

    def _drain_monitor(self, monitor: zmq.Socket) -> None:
        """Count refused peers and failed accepts (the monitor reports only those), one batch per turn."""
        for _ in range(_MONITOR_BATCH):
            if not monitor.poll(0):
                return
            event = recv_monitor_message(monitor)["event"]
            counter = "refused_peers" if event & _REFUSED else "accept_failures"
            self._counters[counter] += 1
            count = self._counters[counter]
            if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th, ...
                logger.warning("%s: %d so far (latest: %s)", counter.replace("_", " "), count, zmq.Event(event).name)

    def _drain_router(self) -> None:
        """Handle up to one batch of queued events under a single lock acquisition."""
        events: list[tuple[bytes, ReplicaEvent]] = []
        for _ in range(_EVENT_BATCH):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                if len(frames) != 2:
                    raise MalformedMessage(f"expected one payload frame, got {len(frames) - 1}")
                events.append((frames[0], decode_event(frames[1])))
            except MalformedMessage as exc:
                self._counters["malformed"] += 1
                count = self._counters["malformed"]
                level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG  # 1st, 2nd, 4th, 8th, ...
                logger.log(level, "dropping malformed replica event (%d so far): %s", count, exc)
        if not events:
            return
        registered = []
        with self._lock:
            for identity, event in events:
                is_new, changed = self._handle(event)
                if is_new:
                    registered.append(identity)
                self._publish_pending |= changed
            self._counters["events"] += len(events)
        reply = encode_registration_reply(RegistrationReply(self.heartbeat_timeout, self.epoch))
        for identity in registered:
            try:
                self._router.send_multipart([identity, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the replica learns the timeout from its next registration


def _copy(info: ReplicaInfo) -> ReplicaInfo:
    return ReplicaInfo(**vars(info))


def _validate(event: ReplicaEvent) -> None:
    ReplicaStatus(event.status)  # ValueError if not up/down/error
    if not event.input_addr:
        raise ValueError("event.input_addr must be non-empty")
    if event.stage_id < 0:
        raise ValueError(f"event.stage_id must be >= 0, got {event.stage_id}")
    if event.queue_length is not None and event.queue_length < 0:
        raise ValueError(f"queue_length must be non-negative, got {event.queue_length}")
