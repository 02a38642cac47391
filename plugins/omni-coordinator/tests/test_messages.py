"""Wire format: upstream's exact JSON, our optional additions, strict bounded decoding."""

from __future__ import annotations

import json

import pytest
from coord_helpers import event

from omni_coordinator import ReplicaEvent, ReplicaInfo, ReplicaList, ReplicaStatus
from omni_coordinator.messages import (
    MAX_EVENT_BYTES,
    MalformedMessage,
    RegistrationReply,
    decode_event,
    decode_registration_reply,
    decode_replica_list,
    encode_event,
    encode_registration_reply,
    encode_replica_list,
)

INFO = ReplicaInfo("tcp://10.0.0.5:41001", "tcp://10.0.0.5:41002", 0, ReplicaStatus.UP, 3, 1.7e9, 1.6e9)


def test_event_encodes_as_upstream_json() -> None:
    ev = ReplicaEvent("tcp://10.0.0.5:41001", "tcp://10.0.0.5:41002", 1, "heartbeat", ReplicaStatus.UP, 3)
    assert json.loads(encode_event(ev)) == {
        "input_addr": "tcp://10.0.0.5:41001", "output_addr": "tcp://10.0.0.5:41002", "stage_id": 1,
        "event_type": "heartbeat", "status": "up", "queue_length": 3,
    }
    assert decode_event(encode_event(ev)) == ev


def test_list_encodes_as_upstream_json_plus_epoch_and_seq() -> None:
    wire = json.loads(encode_replica_list(ReplicaList([INFO], 1.8e9, epoch=7, seq=2)))
    assert wire == {
        "replicas": [{"input_addr": "tcp://10.0.0.5:41001", "output_addr": "tcp://10.0.0.5:41002", "stage_id": 0,
                      "status": "up", "queue_length": 3, "last_heartbeat": 1.7e9, "registered_at": 1.6e9}],
        "timestamp": 1.8e9, "epoch": 7, "seq": 2,
    }
    assert "epoch" not in json.loads(encode_replica_list(ReplicaList([INFO], 1.8e9)))


def test_upstream_list_without_epoch_decodes() -> None:
    upstream = json.dumps({"replicas": [{**json.loads(encode_replica_list(ReplicaList([INFO], 1.0)))["replicas"][0]}],
                           "timestamp": 5.0}).encode()
    decoded, bad = decode_replica_list(upstream)
    assert (decoded, bad) == (ReplicaList([INFO], 5.0), 0)


def test_null_queue_length_in_event_means_unchanged() -> None:
    assert decode_event(event("tcp://a:1", queue_length=None)).queue_length is None
    missing = json.loads(event("tcp://a:1"))
    del missing["queue_length"]
    assert decode_event(json.dumps(missing).encode()).queue_length is None


def test_unknown_extra_fields_are_ignored() -> None:
    data = {**json.loads(event("tcp://a:1")), "future_field": [1, 2]}
    assert decode_event(json.dumps(data).encode()).input_addr == "tcp://a:1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (event("tcp://a:1", queue_length=-1), "queue_length"),
        (event("tcp://a:1", queue_length=True), "queue_length"),
        (event("tcp://a:1", queue_length=1.5), "queue_length"),
        (event("tcp://a:1", status="sleeping"), "status"),
        (event("tcp://a:1", event_type="reboot"), "event_type"),
        (event("", queue_length=0), "input_addr"),
        (event("tcp://a:1", stage_id=-1), "stage_id"),
        (json.dumps({"input_addr": "tcp://a:1"}).encode(), "missing field"),
        (b'{"queue_length": NaN}', "non-finite"),
        (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
        (b" " * (MAX_EVENT_BYTES + 1), "exceeds"),
    ],
)
def test_bad_events_are_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_event(payload)


def test_one_bad_record_never_drops_the_list() -> None:
    good = json.loads(encode_replica_list(ReplicaList([INFO], 1.0)))["replicas"][0]
    records = [good, {**good, "input_addr": "tcp://b:1", "queue_length": None}, {**good, "status": "zombie"}, 42]
    payload = json.dumps({"replicas": records, "timestamp": 2.0, "epoch": 1, "seq": 9}).encode()
    decoded, bad = decode_replica_list(payload)
    assert [r.input_addr for r in decoded.replicas] == ["tcp://10.0.0.5:41001"]
    assert (bad, decoded.epoch, decoded.seq) == (3, 1, 9)


@pytest.mark.parametrize(
    "payload",
    [b'{"replicas": {}, "timestamp": 1}', b'{"replicas": []}', b'{"replicas": [], "timestamp": 1, "epoch": 3}'],
)
def test_bad_list_envelopes_are_rejected(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_replica_list(payload)


def test_list_size_limit() -> None:
    payload = encode_replica_list(ReplicaList([INFO] * 10, 1.0))
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_replica_list(payload, max_bytes=len(payload) - 1)


def test_registration_reply_round_trip() -> None:
    reply = RegistrationReply(heartbeat_timeout=2.5, epoch=11)
    assert decode_registration_reply(encode_registration_reply(reply)) == reply
    with pytest.raises(MalformedMessage):
        decode_registration_reply(b'{"event_type": "registered", "heartbeat_timeout": 0, "epoch": 1}')
    with pytest.raises(MalformedMessage):
        decode_registration_reply(event("tcp://a:1"))
