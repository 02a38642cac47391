"""Fuzzing the coordinator's wire decoders with JSON that is well formed but wrong in every field.

Every payload decodes to fully typed records or raises MalformedMessage, whose message quotes at most
100 characters of the bad value (the reliability campaign found 4 KB values echoed whole into the logs).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_coordinator.messages import (
    MalformedMessage,
    ReplicaStatus,
    decode_event,
    decode_registration_reply,
    decode_replica_list,
    encode_event,
)

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["up", "down", "error", "update", "heartbeat", "registered", "tcp://h:1"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_FIELDS = ["input_addr", "output_addr", "stage_id", "event_type", "status", "queue_length", "replicas", "timestamp",
           "epoch", "seq", "heartbeat_timeout", "last_heartbeat", "registered_at"]
_objects = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=4), _values, max_size=9)


def _wire(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _check_event(payload: bytes) -> None:
    try:
        event = decode_event(payload)
    except MalformedMessage as exc:
        assert 0 < len(str(exc)) < 400
        return
    assert isinstance(event.input_addr, str) and event.input_addr
    assert type(event.stage_id) is int and event.stage_id >= 0
    assert event.queue_length is None or (type(event.queue_length) is int and event.queue_length >= 0)
    assert isinstance(event.status, ReplicaStatus)
    assert decode_event(encode_event(event)) == event


@settings(max_examples=400, deadline=None)
@given(_objects)
def test_events_decode_fully_typed_or_are_rejected(obj: dict[str, Any]) -> None:
    _check_event(_wire(obj))


@settings(max_examples=300, deadline=None)
@given(st.lists(_objects, max_size=4), _values, _values, _values)
def test_lists_keep_good_records_and_count_bad_ones(records: list, timestamp: Any, epoch: Any, seq: Any) -> None:
    payload = _wire({"replicas": records, "timestamp": timestamp, "epoch": epoch, "seq": seq})
    try:
        replica_list, bad = decode_replica_list(payload)
    except MalformedMessage:
        return
    assert len(replica_list.replicas) + bad == len(records)
    assert math.isfinite(replica_list.timestamp)
    assert all(type(r.queue_length) is int and r.queue_length >= 0 for r in replica_list.replicas)


@settings(max_examples=200, deadline=None)
@given(_objects)
def test_registration_replies_decode_or_are_rejected(obj: dict[str, Any]) -> None:
    try:
        reply = decode_registration_reply(_wire({"event_type": "registered", **obj}))
    except MalformedMessage:
        return
    assert reply.heartbeat_timeout > 0 and type(reply.epoch) is int


@pytest.mark.parametrize("field", ["input_addr", "event_type", "status", "stage_id"])
def test_rejections_quote_at_most_100_characters_of_a_value(field: str) -> None:
    event = {"input_addr": "tcp://h:1", "output_addr": "", "stage_id": 1, "event_type": "update", "status": "up",
             "queue_length": 0, field: "x" * 60_000}
    if field == "input_addr":
        event[field] = 7 * [10**300]
    with pytest.raises(MalformedMessage) as info:
        decode_event(_wire(event))
    assert len(str(info.value)) < 200
