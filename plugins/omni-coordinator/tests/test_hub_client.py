"""Hub client against a bare PUB: caching, filtering, ordering by epoch/seq, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from coord_helpers import addrs, eventually

from omni_coordinator import OmniCoordClientForHub

Pub = tuple[zmq.Socket, str]
MakeHub = Callable[..., OmniCoordClientForHub]


def record(addr: str, stage_id: int = 0, status: str = "up", queue_length: Any = 0) -> dict[str, Any]:
    return {"input_addr": addr, "output_addr": addr + "/out", "stage_id": stage_id, "status": status,
            "queue_length": queue_length, "last_heartbeat": 1.7e9, "registered_at": 1.7e9}


def publish_until_seen(pub: zmq.Socket, hub: OmniCoordClientForHub, payload: dict[str, Any]) -> None:
    """Publish (repeatedly: PUB drops messages until the SUB has joined) until the hub applied it."""
    data = json.dumps(payload).encode()
    eventually(lambda: pub.send(data) or hub.get_replica_list().timestamp == payload["timestamp"], 5.0,
               f"hub applied list stamped {payload['timestamp']}", interval=0.05)


def test_empty_list_before_first_message(raw_pub: Pub, make_hub: MakeHub) -> None:
    current = make_hub(raw_pub[1]).get_replica_list()
    assert (current.replicas, current.timestamp, current.epoch, current.seq) == ([], 0.0, None, None)


def test_caches_lists_unfiltered_and_filters_by_stage(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1", 0), record("tcp://b:1", 1),
                                               record("tcp://c:1", 1, status="error")], "timestamp": 10.0})
    assert addrs(hub.get_replica_list()) == {"tcp://a:1", "tcp://b:1", "tcp://c:1"}  # hubs do not filter status
    by_stage = hub.get_replicas_for_stage(1)
    assert addrs(by_stage) == {"tcp://b:1", "tcp://c:1"} and by_stage.timestamp == 10.0
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1")], "timestamp": 11.0})
    assert addrs(hub.get_replica_list()) == {"tcp://a:1"}


def test_close_twice_raises(raw_pub: Pub) -> None:
    hub = OmniCoordClientForHub(raw_pub[1])
    hub.close()
    with pytest.raises(RuntimeError, match="already closed"):
        hub.close()


def test_bad_record_is_left_out_not_the_list(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1"), record("tcp://null:1", queue_length=None)],
                                  "timestamp": 3.0})
    assert addrs(hub.get_replica_list()) == {"tcp://a:1"}
    assert hub.stats()["bad_records"] >= 1


def test_stale_and_reordered_lists_are_ignored(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)

    def send(name: str, seq: int) -> None:
        pub.send(json.dumps({"replicas": [record(name)], "timestamp": float(seq), "epoch": 1, "seq": seq}).encode())

    publish_until_seen(pub, hub, {"replicas": [], "timestamp": 5.0, "epoch": 1, "seq": 5})
    send("tcp://fence:1", 6)  # once applied, every repeat of seq 5 has been handled
    eventually(lambda: hub.get_replica_list().seq == 6, 5.0, "fence applied")
    stale_before = hub.stats()["stale"]
    send("tcp://old:1", 4)
    send("tcp://dup:1", 6)
    send("tcp://next:1", 7)
    eventually(lambda: hub.get_replica_list().seq == 7, 5.0, "seq 7 applied")
    assert hub.stats()["stale"] == stale_before + 2
    assert addrs(hub.get_replica_list()) == {"tcp://next:1"}


def test_new_epoch_is_a_coordinator_restart(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1")], "timestamp": 5.0, "epoch": 1, "seq": 90})
    publish_until_seen(pub, hub, {"replicas": [], "timestamp": 6.0, "epoch": 2, "seq": 1})
    assert (hub.get_replica_list().epoch, hub.stats()["coordinator_restarts"]) == (2, 1)


def test_lists_without_epoch_are_always_applied(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1")], "timestamp": 5.0, "epoch": 1, "seq": 9})
    publish_until_seen(pub, hub, {"replicas": [record("tcp://up:1")], "timestamp": 4.0})  # an upstream coordinator
    assert addrs(hub.get_replica_list()) == {"tcp://up:1"}


def test_malformed_lists_are_counted_and_skipped(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1")], "timestamp": 1.0})
    for bad in (b"{oops", b"[]", b'{"replicas": 3, "timestamp": 1}'):
        pub.send(bad)
    pub.send(json.dumps({"replicas": [record("tcp://b:1")], "timestamp": 2.0}).encode())
    eventually(lambda: hub.get_replica_list().timestamp == 2.0, 5.0, "good list after the bad ones")
    assert hub.stats()["malformed"] == 3


def test_oversized_list_is_refused(raw_pub: Pub, make_hub: MakeHub) -> None:
    pub, addr = raw_pub
    hub = make_hub(addr, max_message_bytes=2048)
    publish_until_seen(pub, hub, {"replicas": [record("tcp://a:1")], "timestamp": 1.0})
    pub.send(json.dumps({"replicas": [record(f"tcp://h:{i}") for i in range(100)], "timestamp": 2.0}).encode())
    pub.send(json.dumps({"replicas": [record("tcp://b:1")], "timestamp": 3.0}).encode())
    eventually(lambda: hub.get_replica_list().timestamp == 3.0, 5.0, "next list applied after the oversized one")
    assert hub.stats()["malformed"] == 1


def test_unusable_address_raises() -> None:
    with pytest.raises(RuntimeError, match="cannot subscribe"):
        OmniCoordClientForHub("nonsense://")
