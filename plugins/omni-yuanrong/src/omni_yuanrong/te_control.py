"""The TransferEngine connector's ZMQ side channel: messages, the sender's server, the receiver's requests.

Wire format (upstream's): a request is a type prefix followed by a msgpack map
``{"request_id": str}``: ``b"query_info"`` is answered with ``b"info_not_found"``
or a msgpack map describing the payload, ``b"cleanup_key"`` with ``b"ack_ok"`` or
``b"ack_error"``.  Anything else is answered ``b"ack_error"`` followed by a
msgpack map ``{"error": reason}`` and counted.  Decoding is bounded in message
size, string length and item counts; nothing is ever unpickled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from omni_core import validate_key

logger = logging.getLogger("omni.yuanrong.te")

QUERY_INFO = b"query_info"
CLEANUP_KEY = b"cleanup_key"
INFO_NOT_FOUND = b"info_not_found"
ACK_OK = b"ack_ok"
ACK_ERROR = b"ack_error"
REQUEST_TYPES = (QUERY_INFO, CLEANUP_KEY)

MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 1 << 20
MAX_SEGMENTS = 4096
_POLL_MS = 100
#: A peer that connects but does not finish the ZMTP handshake in this time is dropped (libzmq: 30 s).
HANDSHAKE_TIMEOUT_MS = 5000
#: Socket events counted: a peer refused at the handshake (garbage, silence), an accept that failed (no
#: descriptors left; libzmq retries it at once, so these count attempts, not peers).
_REFUSED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
_WATCHED = _REFUSED | zmq.EVENT_ACCEPT_FAILED
#: Most socket events handled per loop turn, so a flood of them never starves the requests.
_MONITOR_BATCH = 256
_LIMITS = {"max_str_len": 1024, "max_bin_len": 0, "max_ext_len": 0, "max_array_len": MAX_SEGMENTS, "max_map_len": 16}


class ControlProtocolError(ValueError):
    """A control message that does not follow the protocol."""


def _unpack_map(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises a family of unrelated types on hostile input
        raise ControlProtocolError(f"undecodable {what}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlProtocolError(f"{what} must be a msgpack map, got {type(obj).__name__}")
    return obj


def encode_request(kind: bytes, request_id: str) -> bytes:
    """A ``query_info`` or ``cleanup_key`` request for ``request_id``."""
    return kind + msgpack.packb({"request_id": request_id})


def decode_request(frame: bytes) -> tuple[bytes, str]:
    """``(kind, request_id)`` of a request; raises ControlProtocolError for anything malformed."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ControlProtocolError(f"request of {len(frame)} bytes exceeds {MAX_REQUEST_BYTES}")
    kind = next((k for k in REQUEST_TYPES if frame.startswith(k)), None)
    if kind is None:
        raise ControlProtocolError(f"unknown request type {bytes(frame[:16])!r}")
    body = _unpack_map(frame[len(kind) :], "request body")
    try:
        request_id = validate_key(body.get("request_id"), max_length=1024)
    except ValueError as exc:
        raise ControlProtocolError(f"bad request_id: {exc}") from None
    return kind, request_id


def encode_error(reason: str) -> bytes:
    """An ``ack_error`` reply carrying ``reason``."""
    return ACK_ERROR + msgpack.packb({"error": reason[:512]})


def encode_info(info: dict[str, Any]) -> bytes:
    """A ``query_info`` reply describing one payload."""
    return msgpack.packb(info)


def decode_info(frame: bytes, request_id: str) -> dict[str, Any] | None:
    """The payload description in a ``query_info`` reply, ``None`` for ``info_not_found``.

    Checks every field a receiver relies on: the RPC port, one address per
    length, lengths that add up to ``data_size``; raises ControlProtocolError.
    """
    if frame == INFO_NOT_FOUND:
        return None
    if frame.startswith(ACK_ERROR):
        raise ControlProtocolError(f"sender refused query_info for {request_id!r}: {frame[:200]!r}")
    if len(frame) > MAX_REPLY_BYTES:
        raise ControlProtocolError(f"query_info reply of {len(frame)} bytes exceeds {MAX_REPLY_BYTES}")
    info = _unpack_map(frame, "query_info reply")
    if info.get("request_id") != request_id:
        raise ControlProtocolError(f"query_info reply is for {info.get('request_id')!r}, asked for {request_id!r}")
    addrs, lengths = info.get("src_addrs"), info.get("lengths")
    if not isinstance(addrs, list) or not isinstance(lengths, list) or len(addrs) != len(lengths) or not addrs:
        raise ControlProtocolError("query_info reply needs equally long, non-empty src_addrs and lengths")
    numbers = [info.get("rpc_port"), *addrs, *lengths]
    if not all(type(n) is int and n > 0 for n in numbers) or info["rpc_port"] > 65535:
        raise ControlProtocolError("query_info reply has a bad rpc_port, address or length")
    data_size = info.setdefault("data_size", sum(lengths))
    if data_size != sum(lengths):
        raise ControlProtocolError(f"query_info reply: data_size {data_size!r} != sum of lengths {sum(lengths)}")
    if type(info.get("is_fast_path", False)) is not bool:
        raise ControlProtocolError("query_info reply: is_fast_path must be a bool")
    return info


class ControlServer:
    """A ROUTER socket answering requests on one background thread.

    ``handler(kind, request_id)`` returns the reply; malformed requests and
    handler failures are answered with ``ack_error`` and counted in
    :attr:`malformed`; peers dropped at the handshake (garbage, silence for
    ``HANDSHAKE_TIMEOUT_MS``) in :attr:`refused_peers`, failed accepts in
    :attr:`accept_failures`.  ``on_idle`` runs between requests, at least every 100 ms.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        host: str,
        port: int | None,
        handler: Callable[[bytes, str], bytes],
        on_idle: Callable[[], object],
    ) -> None:
        self.malformed = 0
        self.refused_peers = 0
        self.accept_failures = 0
        self._handler = handler
        self._on_idle = on_idle
        self._stop = threading.Event()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        address = f"tcp://{host}:{port if port is not None else '*'}"
        try:
            socket.bind(address)
        except zmq.ZMQError as exc:
            socket.close()
            raise OSError(f"cannot bind the TransferEngine control socket to {address}: {exc}") from exc
        self.port = int(socket.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        self._socket = socket
        self._monitor = socket.get_monitor_socket(_WATCHED)
        self._thread = threading.Thread(target=self._serve, name=f"yuanrong-te-control-{self.port}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        socket, monitor = self._socket, self._monitor
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(_POLL_MS))
            if socket in ready:
                frames = socket.recv_multipart()
                socket.send_multipart([*frames[:-1], self._answer(frames[-1])])
            for _ in range(_MONITOR_BATCH if monitor in ready else 0):
                if not monitor.poll(0):
                    break
                if recv_monitor_message(monitor)["event"] & _REFUSED:
                    self.refused_peers += 1
                else:
                    self.accept_failures += 1
            self._on_idle()

    def _answer(self, frame: bytes) -> bytes:
        try:
            kind, request_id = decode_request(frame)
        except ControlProtocolError as exc:
            self.malformed += 1
            logger.warning("malformed TransferEngine control message on port %d: %s", self.port, exc)
            return encode_error(str(exc))
        try:
            return self._handler(kind, request_id)
        except Exception as exc:
            self.malformed += 1
            logger.exception("TransferEngine control handler failed for %r", request_id)
            return encode_error(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Stop the thread and close the sockets."""
        self._stop.set()
        self._thread.join()
        self._monitor.close()
        self._socket.close()


def request(context: zmq.Context[Any], endpoint: str, message: bytes, timeout_ms: int) -> bytes:
    """Send ``message`` to ``tcp://endpoint`` and return the reply; TimeoutError after ``timeout_ms``."""
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
    socket.setsockopt(zmq.SNDTIMEO, timeout_ms)
    socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
    try:
        socket.connect(f"tcp://{endpoint}")
        socket.send(message)
        return socket.recv()
    except zmq.Again:
        raise TimeoutError(f"TransferEngine sender at {endpoint} did not answer within {timeout_ms} ms") from None
    finally:
        socket.close()
