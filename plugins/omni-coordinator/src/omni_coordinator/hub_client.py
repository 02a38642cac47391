"""The hub side: follow the coordinator's published replica lists and cache the latest."""

from __future__ import annotations

import logging
import threading

import zmq

from .auth import CurveClientKeys, secure_client_socket
from .messages import MAX_LIST_BYTES, MalformedMessage, ReplicaList, decode_replica_list

logger = logging.getLogger("omni.coordinator")

_POLL_MS = 100


class OmniCoordClientForHub:
    """A SUB socket on the coordinator's PUB endpoint, caching the newest :class:`ReplicaList`.

    Lists from one coordinator run (same ``epoch``) are applied only in
    increasing ``seq`` order, so a stale or reordered snapshot never replaces
    a newer one; a new ``epoch`` means the coordinator restarted and is
    accepted.  Lists without epoch (upstream coordinators) are always applied.
    A bad replica record is left out of its list, never drops the list.
    """

    def __init__(
        self,
        coord_zmq_addr: str,
        *,
        curve: CurveClientKeys | None = None,
        max_message_bytes: int = MAX_LIST_BYTES,
    ) -> None:
        self._coord_zmq_addr = coord_zmq_addr
        self._curve = curve
        self._max_message_bytes = max_message_bytes
        self._ctx = zmq.Context()
        self._lock = threading.Lock()
        self._replica_list = ReplicaList(replicas=[], timestamp=0.0)
        self._counters = {"applied": 0, "stale": 0, "malformed": 0, "bad_records": 0, "coordinator_restarts": 0}
        self._closed = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="OmniCoordHub", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=5.0)
        if self._start_error is not None or not self._ready.is_set():
            self._stop.set()
            self._thread.join(timeout=1.0)
            raise RuntimeError(f"cannot subscribe to coordinator at {coord_zmq_addr}") from self._start_error

    def get_replica_list(self) -> ReplicaList:
        """The newest list received; empty with ``timestamp=0.0`` before the first one."""
        with self._lock:
            return self._replica_list

    def get_replicas_for_stage(self, stage_id: int) -> ReplicaList:
        """The newest list restricted to one stage (same timestamp, epoch and seq)."""
        current = self.get_replica_list()
        return ReplicaList(
            replicas=[r for r in current.replicas if r.stage_id == stage_id],
            timestamp=current.timestamp,
            epoch=current.epoch,
            seq=current.seq,
        )

    def stats(self) -> dict[str, int]:
        """Counters: lists applied, stale lists skipped, malformed messages, bad records, restarts seen."""
        with self._lock:
            return dict(self._counters)

    def close(self) -> None:
        """Stop the receive thread and close the socket; a second call raises RuntimeError."""
        if self._closed:
            raise RuntimeError("OmniCoordClientForHub already closed")
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=1.0)

    # -- receive thread -------------------------------------------------------------
    def _subscribe(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.linger = 0  # no ZMQ_MAXMSGSIZE: libzmq would drop the connection for good; decoding checks size
            secure_client_socket(sock, self._curve)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(self._coord_zmq_addr)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _run(self) -> None:
        try:
            sock = self._subscribe()
        except (zmq.ZMQError, ValueError) as exc:
            self._start_error = exc
            self._ctx.term()
            return
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                if sock.poll(_POLL_MS):
                    self._receive(sock.recv())
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                logger.error("hub subscription to %s failed: %s", self._coord_zmq_addr, exc)
        finally:
            sock.close(linger=0)
            self._ctx.term()

    def _receive(self, payload: bytes) -> None:
        try:
            incoming, bad_records = decode_replica_list(payload, self._max_message_bytes)
        except MalformedMessage as exc:
            logger.warning("dropping malformed replica list: %s", exc)
            with self._lock:
                self._counters["malformed"] += 1
            return
        if bad_records:
            logger.warning("left %d malformed replica record(s) out of a published list", bad_records)
        with self._lock:
            self._counters["bad_records"] += bad_records
            current = self._replica_list
            if incoming.epoch is not None and current.epoch is not None:
                if incoming.epoch != current.epoch:
                    self._counters["coordinator_restarts"] += 1
                elif incoming.seq <= current.seq:  # type: ignore[operator]
                    self._counters["stale"] += 1
                    return
            self._replica_list = incoming
            self._counters["applied"] += 1
