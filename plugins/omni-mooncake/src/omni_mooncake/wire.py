"""Side-channel messages between TransferEngine receivers and senders: msgpack maps, decoded with limits.

Requests (receiver -> sender):

- ``{"op": "query", "key": K}`` -> ``{"ok": true, "size": n, "fast": bool, "layout": {...} | null}``, plus
  ``"address": A, "token": T`` when the payload can be read (it lies in host memory)
- ``{"op": "pull", "key": K, "session": "host:rpc_port", "address": A, "capacity": C, "wait_ms": W}``
  asks the sender to write the payload into the receiver's registered memory at ``A`` -> ``{"ok": true}``
- ``{"op": "claim", "key": K, "token": T, "session": "host:rpc_port", "address": A, "size": N}`` announces
  that the receiver at ``session`` reads payload ``T`` (the token of the put, at ``A``, ``N`` bytes) itself
  -> ``{"ok": true, "lease_ms": L}``: the payload stays in place for ``L`` ms from the claim's arrival, or
  until the receiver is done
- ``{"op": "done", "key": K, "token": T, "session": S, "delivered": bool}`` ends a claim (no reply)

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


@dataclass(frozen=True)
class Claim:
    """The receiver at ``session`` reads payload ``token`` under ``key`` (``size`` bytes at ``address`` of the
    sender's pool) itself; the sender checks all of it against the payload it holds."""

    key: str
    token: int
    session: str
    address: int
    size: int


@dataclass(frozen=True)
class Done:
    """The receiver at ``session`` is done with its claim of ``token``; ``delivered`` if its read succeeded."""

    key: str
    token: int
    session: str
    delivered: bool


Request = Query | Pull | Claim | Done


def encode_request(request: Request) -> bytes:
    if isinstance(request, Query):
        return msgpack.packb({"op": "query", "key": request.key})
    if isinstance(request, Claim):
        return msgpack.packb(
            {"op": "claim", "key": request.key, "token": request.token, "session": request.session,
             "address": request.address, "size": request.size}
        )  # fmt: skip
    if isinstance(request, Done):
        return msgpack.packb(
            {"op": "done", "key": request.key, "token": request.token, "session": request.session,
             "delivered": request.delivered}
        )  # fmt: skip
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


def decode_request(frame: bytes) -> Request:
    """Parse one request; MalformedMessage says what is wrong with it."""
    message = _unpack(frame)
    op = message.get("op")
    if op == "query" and set(message) == {"op", "key"}:
        return Query(_key(message["key"]))
    if op == "claim" and set(message) == {"op", "key", "token", "session", "address", "size"}:
        key, token, session = _key(message["key"]), _uint(message["token"], "token"), _session(message["session"])
        return Claim(key, token, session, _uint(message["address"], "address"), _uint(message["size"], "size"))
    if op == "done" and set(message) == {"op", "key", "token", "session", "delivered"}:
        if type(message["delivered"]) is not bool:
            raise MalformedMessage(f"bad delivered {_short(message['delivered'])}")
        key, token, session = _key(message["key"]), _uint(message["token"], "token"), _session(message["session"])
        return Done(key, token, session, message["delivered"])
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
