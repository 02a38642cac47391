"""The stage side: register a replica with the coordinator, heartbeat, report status and load."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from .auth import CurveClientKeys, secure_client_socket
from .messages import (
    HEARTBEAT,
    UPDATE,
    MalformedMessage,
    ReplicaEvent,
    ReplicaStatus,
    decode_registration_reply,
    encode_event,
)

logger = logging.getLogger("omni.coordinator")

#: Heartbeat interval until the coordinator's timeout is known (upstream's fixed value).
DEFAULT_HEARTBEAT_INTERVAL = 5.0
#: Heartbeats per timeout: a replica may lose two in a row and stay UP.
HEARTBEATS_PER_TIMEOUT = 3
#: How often the heartbeat thread looks for coordinator replies.
_REPLY_POLL_S = 0.1
#: How long close() lets the final "down" event flush.
_CLOSE_LINGER_MS = 500


def _check_queue_length(queue_length: Any) -> int:
    if isinstance(queue_length, bool) or not isinstance(queue_length, int) or queue_length < 0:
        raise ValueError(f"queue_length must be a non-negative int, got {queue_length!r}")
    return queue_length


class OmniCoordClientForStage:
    """A stage replica's DEALER connection to the coordinator's ROUTER.

    Registers (an ``update`` with status UP) on construction, then heartbeats
    from a daemon thread.  The heartbeat interval is ``heartbeat_interval``
    (default 5 s) capped at a third of the coordinator's timeout, which is
    taken from ``heartbeat_timeout`` or learned from the coordinator's reply
    to the registration.  Heartbeats carry the replica's own status, so a
    self-reported ERROR stays ERROR.
    """

    def __init__(
        self,
        coord_zmq_addr: str,
        input_addr: str,
        output_addr: str,
        stage_id: int,
        *,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        curve: CurveClientKeys | None = None,
    ) -> None:
        if not input_addr:
            raise ValueError("input_addr must be non-empty: it identifies the replica")
        if isinstance(stage_id, bool) or not isinstance(stage_id, int) or stage_id < 0:
            raise ValueError(f"stage_id must be a non-negative int, got {stage_id!r}")
        for name, value in (("heartbeat_interval", heartbeat_interval), ("heartbeat_timeout", heartbeat_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self._coord_zmq_addr = coord_zmq_addr
        self._input_addr = input_addr
        self._output_addr = output_addr
        self._stage_id = stage_id
        self._curve = curve
        self._requested_interval = heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        self._coordinator_timeout = heartbeat_timeout
        #: Epoch of the coordinator run that last acknowledged our registration.
        self.coordinator_epoch: int | None = None

        self._status = ReplicaStatus.UP
        self._queue_length = 0
        self._closed = False
        self._closing = False
        self._send_lock = threading.RLock()
        self._stop = threading.Event()
        self._on_heartbeat: Callable[[], None] | None = None

        self._ctx, self._socket = self._connect()
        self._send_event(UPDATE)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="OmniCoordHeartbeat", daemon=True)
        self._heartbeat_thread.start()

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats: the requested interval, at most a third of the coordinator's timeout."""
        if self._coordinator_timeout is None:
            return self._requested_interval
        return min(self._requested_interval, self._coordinator_timeout / HEARTBEATS_PER_TIMEOUT)

    def _connect(self) -> tuple[zmq.Context, zmq.Socket]:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        try:
            secure_client_socket(sock, self._curve)
            sock.connect(self._coord_zmq_addr)
        except (zmq.ZMQError, ValueError) as exc:
            sock.close(linger=0)
            ctx.term()
            raise RuntimeError(f"cannot connect to coordinator at {self._coord_zmq_addr}: {exc}") from exc
        return ctx, sock

    def _reconnect(self, max_retries: int = 3, retry_interval: float = 5.0) -> bool:
        """Replace the socket with a fresh connection; True once one attempt succeeds."""
        for attempt in range(1, max_retries + 1):
            with contextlib.suppress(zmq.ZMQError):
                self._socket.close(linger=0)
                self._ctx.term()
            try:
                self._ctx, self._socket = self._connect()
                return True
            except RuntimeError as exc:
                logger.warning("reconnect %d/%d to %s failed: %s", attempt, max_retries, self._coord_zmq_addr, exc)
            if attempt < max_retries and retry_interval > 0:
                time.sleep(retry_interval)
        return False

    def _send_event(self, event_type: str) -> None:
        """Send the current state; on a socket error reconnect and retry once, else raise."""
        with self._send_lock:
            if self._closed:
                raise RuntimeError("OmniCoordClientForStage already closed")
            payload = encode_event(
                ReplicaEvent(
                    self._input_addr, self._output_addr, self._stage_id, event_type, self._status, self._queue_length
                )
            )
            try:
                self._send(payload)
            except (RuntimeError, zmq.ZMQError):
                if not self._reconnect(max_retries=3):
                    raise
                self._send(payload)

    def _send(self, payload: bytes) -> None:
        try:
            self._socket.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("coordinator send queue full; event dropped (the next heartbeat carries the state)")

    def update_info(self, status: ReplicaStatus | None = None, queue_length: int | None = None) -> None:
        """Change the status and/or queue length and tell the coordinator now."""
        if status is None and queue_length is None:
            raise ValueError("update_info needs status or queue_length")
        if queue_length is not None:
            _check_queue_length(queue_length)
        with self._send_lock:
            if self._closing or self._closed:
                raise RuntimeError("OmniCoordClientForStage is closing or closed")
            if status is not None:
                self._status = ReplicaStatus(status)
            if queue_length is not None:
                self._queue_length = queue_length
            self._send_event(UPDATE)

    def _read_replies(self) -> None:
        """Take the coordinator's timeout and epoch from its registration replies."""
        with self._send_lock:
            while not self._closed:
                try:
                    payload = self._socket.recv(zmq.NOBLOCK)
                except zmq.ZMQError:
                    return
                try:
                    reply = decode_registration_reply(payload)
                except MalformedMessage as exc:
                    logger.debug("ignoring unexpected coordinator reply: %s", exc)
                    continue
                if self.coordinator_epoch not in (None, reply.epoch):
                    logger.info("coordinator restarted (epoch %s); re-registered", reply.epoch)
                self.coordinator_epoch = reply.epoch
                self._coordinator_timeout = reply.heartbeat_timeout

    def _heartbeat_loop(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(min(_REPLY_POLL_S, max(0.0, last_beat + self.heartbeat_interval - time.monotonic()))):
            self._read_replies()
            if time.monotonic() - last_beat < self.heartbeat_interval:
                continue
            last_beat = time.monotonic()
            if self._on_heartbeat is not None:
                try:
                    self._on_heartbeat()
                except Exception:
                    logger.warning("heartbeat hook failed; sending the previous state", exc_info=True)
            try:
                self._send_event(HEARTBEAT)
            except (RuntimeError, zmq.ZMQError) as exc:
                if self._closed:
                    return
                logger.warning("heartbeat to %s failed (retrying next interval): %s", self._coord_zmq_addr, exc)

    def close(self) -> None:
        """Send a final ``down`` update (best effort) and close the socket; a second call raises."""
        if self._closed:
            raise RuntimeError("OmniCoordClientForStage already closed")
        self._stop.set()
        self._heartbeat_thread.join(timeout=1.0)
        with self._send_lock:
            self._closing = True
            self._status = ReplicaStatus.DOWN
            try:
                self._send_event(UPDATE)
            except Exception:
                logger.debug("final down event not sent", exc_info=True)
            self._closed = True
            self._socket.close(linger=_CLOSE_LINGER_MS)
            self._ctx.term()


def create_stage_coord_client(
    *,
    coord_zmq_addr: str,
    input_addr: str,
    output_addr: str,
    stage_id: int,
    queue_length_getter: Callable[[], int] | None = None,
    **options: Any,
) -> OmniCoordClientForStage:
    """A stage client whose heartbeats carry ``queue_length_getter()`` (bad values are rejected, not sent).

    ``options`` are the client's keyword options (``heartbeat_interval``, ``heartbeat_timeout``, ``curve``).
    """
    client = OmniCoordClientForStage(coord_zmq_addr, input_addr, output_addr, stage_id, **options)
    if queue_length_getter is not None:

        def refresh_queue_length() -> None:
            queue_length = _check_queue_length(queue_length_getter())
            with client._send_lock:
                client._queue_length = queue_length

        client._on_heartbeat = refresh_queue_length
    return client
