"""Replica messages and their JSON wire format.

The format is vllm-omni's: a stage sends one JSON object per event, the
coordinator publishes one JSON object per replica list.  Additions (``epoch``
and ``seq`` on lists, the registration reply) are optional and ignored by
upstream parsers.  Decoding is bounded and strict: every field is type-checked
and a bad record raises :class:`MalformedMessage` instead of passing through;
its message quotes at most 100 characters of the bad value, so a peer cannot
flood the logs with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

#: ``event_type`` of a state change (also the registration and the final goodbye).
UPDATE = "update"
#: ``event_type`` of a periodic liveness signal.
HEARTBEAT = "heartbeat"
#: ``event_type`` of the coordinator's reply to a registration (our addition).
REGISTERED = "registered"
EVENT_TYPES = frozenset({UPDATE, HEARTBEAT})

#: Largest stage -> coordinator event accepted (a real one is ~200 bytes).
MAX_EVENT_BYTES = 64 * 1024
#: Largest published replica list a hub accepts by default (~250 bytes per replica).
MAX_LIST_BYTES = 64 * 1024 * 1024


class MalformedMessage(ValueError):
    """A wire message that is not valid JSON of the expected shape."""


class ReplicaStatus(str, Enum):
    """Status of a stage replica."""

    UP = "up"
    DOWN = "down"  #: shut down gracefully
    ERROR = "error"  #: failed, self-reported or heartbeat timeout


@dataclass
class ReplicaEvent:
    """Stage -> coordinator event.  ``queue_length=None`` means "unchanged"."""

    input_addr: str
    output_addr: str
    stage_id: int
    event_type: str
    status: ReplicaStatus
    queue_length: int | None


@dataclass
class ReplicaInfo:
    """One replica as the coordinator records and publishes it (times are ``time.time()``)."""

    input_addr: str
    output_addr: str
    stage_id: int
    status: ReplicaStatus
    queue_length: int
    last_heartbeat: float
    registered_at: float


@dataclass
class ReplicaList:
    """A published snapshot of the active replicas.

    ``epoch`` identifies one coordinator run and ``seq`` orders its snapshots;
    both are ``None`` for lists from coordinators that do not send them.
    """

    replicas: list[ReplicaInfo]
    timestamp: float
    epoch: int | None = None
    seq: int | None = None


@dataclass(frozen=True)
class RegistrationReply:
    """Coordinator -> stage reply to a registration: how often to heartbeat, and which run answered."""

    heartbeat_timeout: float
    epoch: int


# -- encoding -------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_event(event: ReplicaEvent) -> bytes:
    """The event as upstream's JSON object (status as its string value)."""
    return _dumps(
        {
            "input_addr": event.input_addr,
            "output_addr": event.output_addr,
            "stage_id": event.stage_id,
            "event_type": event.event_type,
            "status": ReplicaStatus(event.status).value,
            "queue_length": event.queue_length,
        }
    )


def replica_to_wire(info: ReplicaInfo) -> dict[str, Any]:
    """The replica as the JSON object upstream hubs parse."""
    return {
        "input_addr": info.input_addr,
        "output_addr": info.output_addr,
        "stage_id": info.stage_id,
        "status": info.status.value,
        "queue_length": info.queue_length,
        "last_heartbeat": info.last_heartbeat,
        "registered_at": info.registered_at,
    }


def encode_replica(info: ReplicaInfo) -> bytes:
    """One replica record; lists are joined from these so unchanged records need no re-encoding."""
    return _dumps(replica_to_wire(info))


def join_replica_list(records: list[bytes], timestamp: float, epoch: int | None, seq: int | None) -> bytes:
    """A list payload from encoded records: upstream's JSON object plus ``epoch``/``seq`` when set."""
    envelope: dict[str, Any] = {"timestamp": timestamp}
    if epoch is not None:
        envelope["epoch"] = epoch
        envelope["seq"] = seq
    return b'{"replicas":[' + b",".join(records) + b"]," + _dumps(envelope)[1:]


def encode_replica_list(replica_list: ReplicaList) -> bytes:
    """The whole list in one go (see :func:`join_replica_list`)."""
    records = [encode_replica(r) for r in replica_list.replicas]
    return join_replica_list(records, replica_list.timestamp, replica_list.epoch, replica_list.seq)


def encode_registration_reply(reply: RegistrationReply) -> bytes:
    return _dumps({"event_type": REGISTERED, "heartbeat_timeout": reply.heartbeat_timeout, "epoch": reply.epoch})


# -- decoding -------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise MalformedMessage(f"non-finite number {name} is not allowed")


def load_json_object(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode one JSON object of at most ``max_bytes`` UTF-8 bytes, or raise MalformedMessage."""
    if len(payload) > max_bytes:
        raise MalformedMessage(f"message of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    return data


def _field(data: dict[str, Any], key: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise MalformedMessage(f"missing field {key!r}") from None


def _str(data: dict[str, Any], key: str, *, non_empty: bool = False) -> str:
    value = _field(data, key)
    if not isinstance(value, str) or (non_empty and not value):
        what = "non-empty string" if non_empty else "string"
        raise MalformedMessage(f"field {key!r} must be a {what}, got {value!r:.100}")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = _field(data, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedMessage(f"field {key!r} must be a non-negative integer, got {value!r:.100}")
    return value


def _optional_count(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _count(data, key)


def _time(data: dict[str, Any], key: str) -> float:
    value = _field(data, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedMessage(f"field {key!r} must be a number, got {value!r:.100}")
    return float(value)


def _status(data: dict[str, Any]) -> ReplicaStatus:
    value = _field(data, "status")
    try:
        return ReplicaStatus(value)
    except ValueError:
        raise MalformedMessage(f"field 'status' must be one of up/down/error, got {value!r:.100}") from None


def decode_event(payload: bytes) -> ReplicaEvent:
    """Parse a stage event; ``queue_length`` may be null (unchanged), never negative."""
    data = load_json_object(payload, MAX_EVENT_BYTES)
    event_type = _str(data, "event_type")
    if event_type not in EVENT_TYPES:
        raise MalformedMessage(f"unknown event_type {event_type!r:.100}")
    return ReplicaEvent(
        input_addr=_str(data, "input_addr", non_empty=True),
        output_addr=_str(data, "output_addr"),
        stage_id=_count(data, "stage_id"),
        event_type=event_type,
        status=_status(data),
        queue_length=_optional_count(data, "queue_length"),
    )


def decode_replica(data: Any) -> ReplicaInfo:
    """Parse one published replica record."""
    if not isinstance(data, dict):
        raise MalformedMessage(f"replica record must be an object, got {type(data).__name__}")
    return ReplicaInfo(
        input_addr=_str(data, "input_addr", non_empty=True),
        output_addr=_str(data, "output_addr"),
        stage_id=_count(data, "stage_id"),
        status=_status(data),
        queue_length=_count(data, "queue_length"),
        last_heartbeat=_time(data, "last_heartbeat"),
        registered_at=_time(data, "registered_at"),
    )


def decode_replica_list(payload: bytes, max_bytes: int = MAX_LIST_BYTES) -> tuple[ReplicaList, int]:
    """Parse a published list; return it and how many bad records were left out.

    One bad record never drops the whole list; a bad envelope raises MalformedMessage.
    """
    data = load_json_object(payload, max_bytes)
    records = data.get("replicas", [])
    if not isinstance(records, list):
        raise MalformedMessage("field 'replicas' must be a list")
    timestamp = _time(data, "timestamp")
    epoch = _optional_count(data, "epoch")
    seq = None if epoch is None else _count(data, "seq")
    replicas, bad = [], 0
    for record in records:
        try:
            replicas.append(decode_replica(record))
        except MalformedMessage:
            bad += 1
    return ReplicaList(replicas=replicas, timestamp=timestamp, epoch=epoch, seq=seq), bad


def decode_registration_reply(payload: bytes) -> RegistrationReply:
    data = load_json_object(payload, MAX_EVENT_BYTES)
    if data.get("event_type") != REGISTERED:
        raise MalformedMessage(f"not a registration reply: event_type {data.get('event_type')!r:.100}")
    timeout = _time(data, "heartbeat_timeout")
    if timeout <= 0:
        raise MalformedMessage(f"heartbeat_timeout must be positive, got {timeout}")
    return RegistrationReply(heartbeat_timeout=timeout, epoch=_count(data, "epoch"))
