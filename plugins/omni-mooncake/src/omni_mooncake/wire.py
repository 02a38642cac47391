"""Side-channel messages between TransferEngine receivers and senders: msgpack maps, decoded with limits.

Requests (receiver -> sender):

- ``{"op": "query", "key": K}`` -> ``{"ok": true, "size": n, "fast": bool, "layout": {...} | null}``
- ``{"op": "pull", "key": K, "session": "host:rpc_port", "address": A, "capacity": C, "wait_ms": W}``
  asks the sender to write the payload into the receiver's registered memory at ``A`` -> ``{"ok": true}``

Every failure is ``{"ok": false, "error": CODE, "detail": text}``.  Nothing here ever unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

MAX_MESSAGE_BYTES = 64 << 10
MAX_KEY_CHARS = 1024
MAX_HOST_CHARS = 255
_LIMITS = {"max_str_len": 4096, "max_bin_len": 0, "max_array_len": 64, "max_map_len": 16, "max_ext_len": 0}

NOT_FOUND = "not_found"
MALFORMED = "malformed"
ALREADY_DELIVERED = "already_delivered"
IN_PROGRESS = "in_progress"
TOO_SMALL = "too_small"
EXPIRED = "expired"
TRANSFER_FAILED = "transfer_failed"
CLOSING = "closing"
INTERNAL = "internal"

#: Failed pulls after which the sender's write may still be landing in the receiver's buffer.
WRITE_MAY_BE_IN_FLIGHT = frozenset({TRANSFER_FAILED, INTERNAL})


class MalformedMessage(ValueError):
    """A side-channel message that is not valid msgpack or does not follow the schema."""


@dataclass(frozen=True)
class Query:
    """Ask for the size and kind of the payload under ``key``."""

    key: str


@dataclass(frozen=True)
class Pull:
    """Ask the sender to write ``key`` into ``capacity`` bytes at ``address`` of the engine at ``session``.

    ``wait_ms`` is how long the receiver waits for the answer: a sender that cannot finish the write
    within it refuses, so it never writes into memory the receiver has given up on.
    """

    key: str
    session: str
    address: int
    capacity: int
    wait_ms: int


def encode_request(request: Query | Pull) -> bytes:
    if isinstance(request, Query):
        return msgpack.packb({"op": "query", "key": request.key})
    return msgpack.packb(
        {
            "op": "pull",
            "key": request.key,
            "session": request.session,
            "address": request.address,
            "capacity": request.capacity,
            "wait_ms": request.wait_ms,
        }
    )


def decode_request(frame: bytes) -> Query | Pull:
    """Parse one request; MalformedMessage says what is wrong with it."""
    message = _unpack(frame)
    op = message.get("op")
    if op == "query" and set(message) == {"op", "key"}:
        return Query(_key(message["key"]))
    if op == "pull" and set(message) == {"op", "key", "session", "address", "capacity", "wait_ms"}:
        return Pull(
            _key(message["key"]),
            _session(message["session"]),
            _uint(message["address"], "address"),
            _uint(message["capacity"], "capacity"),
            _uint(message["wait_ms"], "wait_ms"),
        )
    raise MalformedMessage(f"unknown request {_short(message)}")


def error_reply(code: str, detail: str = "") -> dict[str, Any]:
    return {"ok": False, "error": code, "detail": detail[:500]}


def encode_reply(reply: dict[str, Any]) -> bytes:
    return msgpack.packb(reply)


def decode_reply(frame: bytes) -> dict[str, Any]:
    """Parse one reply; MalformedMessage if it is not a map with a boolean ``ok``."""
    reply = _unpack(frame)
    if type(reply.get("ok")) is not bool:
        raise MalformedMessage(f"reply without 'ok': {_short(reply)}")
    return reply


def _unpack(frame: bytes) -> dict[str, Any]:
    if len(frame) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(frame)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=True, **_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not a msgpack message: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage(f"message must be a map, got {type(message).__name__}")
    return message


def _key(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_CHARS:
        raise MalformedMessage(f"bad key {_short(value)}")
    return value


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**64:
        raise MalformedMessage(f"bad {what} {_short(value)}")
    return value


def _session(value: Any) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"bad session {_short(value)}")
    host, sep, port = value.rpartition(":")
    if not sep or not 0 < len(host) <= MAX_HOST_CHARS or not port.isdigit() or not 0 < int(port) < 65536:
        raise MalformedMessage(f"bad session {_short(value)}")
    return value


def _short(value: Any) -> str:
    return f"{value!r:.120}"
