"""The coordinator on real loopback sockets: registry, liveness, publishing, malformed input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import zmq
from coord_helpers import TIMEOUT, addrs, event, eventually, recv_json

from omni_coordinator import (
    OmniCoordClientForHub,
    OmniCoordClientForStage,
    OmniCoordinator,
    ReplicaEvent,
    ReplicaStatus,
)
from omni_coordinator.messages import MAX_EVENT_BYTES, decode_registration_reply, decode_replica_list

MakeStage = Callable[..., OmniCoordClientForStage]
MakeHub = Callable[..., OmniCoordClientForHub]
#: Long enough for a replica to be expired and the change published, with margin for a loaded machine.
EXPIRY_BOUND = TIMEOUT + 0.5 + 3.0


def subscriber(ctx: zmq.Context, pub_addr: str) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(pub_addr)
    return sock


def listed(hub: OmniCoordClientForHub) -> set[str]:
    return addrs(hub.get_replica_list())


def test_binds_port_zero_and_wildcard_and_reports_real_endpoints(make_coordinator, make_stage, make_hub) -> None:
    for router, pub in [("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"), ("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")]:
        coordinator = make_coordinator(router, pub)
        for endpoint in (coordinator.router_zmq_addr, coordinator.pub_zmq_addr):
            assert endpoint.startswith("tcp://127.0.0.1:") and int(endpoint.rsplit(":", 1)[1]) > 0
        hub = make_hub(coordinator.pub_zmq_addr)
        make_stage(coordinator.router_zmq_addr, 7000)
        eventually(lambda hub=hub: listed(hub) == {"tcp://127.0.0.1:7000"}, 5.0, "replica published")


def test_wait_for_shutdown_returns_on_close(coordinator: OmniCoordinator) -> None:
    waiter = threading.Thread(target=coordinator.wait_for_shutdown)
    waiter.start()
    coordinator.close()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive()
    with pytest.raises(RuntimeError, match="already closed"):
        coordinator.close()


def test_three_stages_are_published(coordinator, make_stage, make_hub) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    for port in (7000, 7010, 7020):
        make_stage(coordinator.router_zmq_addr, port, stage_id=port % 3)
    eventually(lambda: len(hub.get_replica_list().replicas) == 3, 5.0, "three replicas")
    current = hub.get_replica_list()
    assert isinstance(current.timestamp, float) and current.timestamp > 0
    assert current.epoch == coordinator.epoch and current.seq > 0
    assert addrs(hub.get_replicas_for_stage(1)) == {"tcp://127.0.0.1:7000"}


def test_rapid_updates_are_coalesced(coordinator, make_stage, zmq_ctx) -> None:
    sub = subscriber(zmq_ctx, coordinator.pub_zmq_addr)
    client = make_stage(coordinator.router_zmq_addr, 7000)
    recv_json(sub)  # subscribed and receiving
    for i in range(80):
        client.update_info(queue_length=i)
    received, deadline = [], time.monotonic() + 1.1
    while (remaining := deadline - time.monotonic()) > 0:
        if sub.poll(int(remaining * 1000) + 1):
            received.append(json.loads(sub.recv()))
    assert len(received) < 40
    final = eventually(lambda: coordinator.get_active_replicas().replicas[0].queue_length, 5.0, "last update applied")
    assert final == 79


def test_publications_carry_epoch_and_increasing_seq(coordinator, make_stage, zmq_ctx) -> None:
    sub = subscriber(zmq_ctx, coordinator.pub_zmq_addr)
    client = make_stage(coordinator.router_zmq_addr, 7000)
    seqs = []
    for i in range(5):
        client.update_info(queue_length=i + 1)
        published = recv_json(sub)
        assert published["epoch"] == coordinator.epoch
        seqs.append(published["seq"])
    assert seqs == sorted(set(seqs))


def test_silent_replica_expires_while_heartbeating_ones_stay(coordinator, make_stage, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    for port in (7000, 7010):
        make_stage(coordinator.router_zmq_addr, port)
    silent = raw_dealer(coordinator.router_zmq_addr)
    silent.send(event("tcp://silent:1"))
    eventually(lambda: "tcp://silent:1" in listed(hub), 5.0, "silent replica registered")
    eventually(lambda: listed(hub) == {"tcp://127.0.0.1:7000", "tcp://127.0.0.1:7010"}, EXPIRY_BOUND,
               "silent replica expired, heartbeating replicas kept")


def test_graceful_down_empties_the_list(coordinator, make_stage, make_hub) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    client = make_stage(coordinator.router_zmq_addr, 7000)
    eventually(lambda: listed(hub), 5.0, "replica published")
    client.update_info(status=ReplicaStatus.DOWN)
    eventually(lambda: not listed(hub), 5.0, "list empty after DOWN")


def test_self_reported_error_survives_heartbeats(coordinator, make_stage, make_hub) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    client = make_stage(coordinator.router_zmq_addr, 7000, heartbeat_interval=0.05)
    eventually(lambda: listed(hub), 5.0, "replica published")
    client.update_info(status=ReplicaStatus.ERROR)
    eventually(lambda: not listed(hub), 5.0, "replica withdrawn after ERROR")
    seen = coordinator.stats()["events"]
    eventually(lambda: coordinator.stats()["events"] >= seen + 10, 10.0, "ten more heartbeats")
    assert not coordinator.get_active_replicas().replicas
    client.update_info(status=ReplicaStatus.UP)
    eventually(lambda: listed(hub), 5.0, "replica back after reporting UP")


def test_timed_out_replica_returns_with_its_next_heartbeat(coordinator, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    dealer = raw_dealer(coordinator.router_zmq_addr)
    dealer.send(event("tcp://slow:1"))
    eventually(lambda: listed(hub), 5.0, "replica published")
    eventually(lambda: not listed(hub), EXPIRY_BOUND, "replica expired")
    dealer.send(event("tcp://slow:1", event_type="heartbeat"))
    eventually(lambda: listed(hub) == {"tcp://slow:1"}, 5.0, "replica back after a heartbeat")


def test_heartbeat_from_unknown_replica_registers_it_and_is_answered(coordinator, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    dealer = raw_dealer(coordinator.router_zmq_addr)
    dealer.send(event("tcp://orphan:1", event_type="heartbeat", queue_length=5))
    assert dealer.poll(5000)
    reply = decode_registration_reply(dealer.recv())
    assert (reply.heartbeat_timeout, reply.epoch) == (TIMEOUT, coordinator.epoch)
    eventually(lambda: [(r.input_addr, r.queue_length) for r in hub.get_replica_list().replicas]
               == [("tcp://orphan:1", 5)], 5.0, "orphan heartbeat registered")


def test_goodbye_from_unknown_replica_registers_nothing(coordinator, raw_dealer) -> None:
    dealer = raw_dealer(coordinator.router_zmq_addr)
    dealer.send(event("tcp://ghost:1", status="down"))
    dealer.send(event("tcp://marker:1"))
    eventually(lambda: coordinator.stats()["events"] == 2, 5.0, "both events handled")
    assert addrs(coordinator.get_active_replicas()) == {"tcp://marker:1"}
    assert "tcp://ghost:1" not in coordinator._replicas


def test_null_queue_length_keeps_the_previous_value(coordinator, raw_dealer) -> None:
    dealer = raw_dealer(coordinator.router_zmq_addr)
    dealer.send(event("tcp://a:1", queue_length=4))
    dealer.send(event("tcp://a:1", queue_length=None))
    eventually(lambda: coordinator.stats()["events"] == 2, 5.0, "both events handled")
    assert coordinator.get_active_replicas().replicas[0].queue_length == 4


def test_malformed_messages_are_counted_and_dropped(coordinator, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    dealer = raw_dealer(coordinator.router_zmq_addr)
    for bad in [b"{not json", b"\xff", b"[]", event("tcp://neg:1", queue_length=-3), event("tcp://x:1", status="?")]:
        dealer.send(bad)
    dealer.send_multipart([b"two", b"frames"])
    dealer.send(event("tcp://good:1", queue_length=None))
    eventually(lambda: listed(hub) == {"tcp://good:1"}, 5.0, "good event after bad ones")
    assert coordinator.stats()["malformed"] == 6
    assert hub.get_replica_list().replicas[0].queue_length == 0  # null at registration is 0, never null


def test_oversized_message_does_not_disturb_the_loop(coordinator, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    raw_dealer(coordinator.router_zmq_addr).send(b"x" * (MAX_EVENT_BYTES + 1))  # libzmq drops this peer
    raw_dealer(coordinator.router_zmq_addr).send(event("tcp://good:1"))
    eventually(lambda: listed(hub) == {"tcp://good:1"}, 5.0, "good event from another peer")
    assert coordinator.stats()["events"] == 1


def test_updates_also_prove_liveness(coordinator, make_hub, raw_dealer) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    dealer = raw_dealer(coordinator.router_zmq_addr)
    dealer.send(event("tcp://busy:1"))
    eventually(lambda: listed(hub), 5.0, "replica published")
    updates = int(3 * TIMEOUT / 0.2)
    for i in range(updates):  # updates only, spanning three timeouts, no heartbeat
        dealer.send(event("tcp://busy:1", queue_length=i))
        time.sleep(0.2)
    eventually(lambda: coordinator.stats()["events"] == updates + 1, 5.0, "all updates handled")
    assert addrs(coordinator.get_active_replicas()) == {"tcp://busy:1"}


def test_short_timeout_does_not_flap_default_clients(make_coordinator, make_stage, zmq_ctx) -> None:
    coordinator = make_coordinator(heartbeat_timeout=0.6)
    sub = subscriber(zmq_ctx, coordinator.pub_zmq_addr)
    client = make_stage(coordinator.router_zmq_addr, 7000)  # asks for upstream's 5 s heartbeat
    eventually(lambda: client.heartbeat_interval <= 0.2, 5.0, "interval learned from the coordinator")
    lists, deadline = [], time.monotonic() + 3.0
    while (remaining := deadline - time.monotonic()) > 0:
        if sub.poll(int(remaining * 1000) + 1):
            lists.append(addrs(decode_replica_list(sub.recv())[0]))
    first = next(i for i, seen in enumerate(lists) if seen)
    assert len(lists) - first >= 3 and all(seen == {"tcp://127.0.0.1:7000"} for seen in lists[first:])


def test_late_hub_gets_the_list_within_one_keepalive(make_coordinator, make_stage, make_hub) -> None:
    coordinator = make_coordinator(heartbeat_timeout=30.0, keepalive_interval=0.5)
    make_stage(coordinator.router_zmq_addr, 7000)
    eventually(lambda: coordinator.get_active_replicas().replicas, 5.0, "replica registered")
    time.sleep(0.3)  # let the change publication go out before the hub exists
    hub = make_hub(coordinator.pub_zmq_addr)
    eventually(lambda: listed(hub) == {"tcp://127.0.0.1:7000"}, 0.5 + 2.0, "late hub caught up by a keep-alive")


def test_down_replicas_are_forgotten_after_gc_delay(make_coordinator, make_stage) -> None:
    coordinator = make_coordinator(gc_after=0.2, keepalive_interval=0.2)
    client = make_stage(coordinator.router_zmq_addr, 7000)
    eventually(lambda: "tcp://127.0.0.1:7000" in coordinator._replicas, 5.0, "registered")
    client.close()
    eventually(lambda: not coordinator._replicas, 5.0, "DOWN replica garbage-collected")


def test_public_registry_methods(coordinator, make_hub) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    ev = ReplicaEvent("tcp://api:1", "tcp://api:2", 3, "update", ReplicaStatus.UP, 2)
    coordinator.add_new_replica(ev)
    eventually(lambda: listed(hub) == {"tcp://api:1"}, 5.0, "added replica published")
    coordinator.update_replica_info(ReplicaEvent("tcp://api:1", "tcp://api:2", 3, "update", ReplicaStatus.UP, 9))
    eventually(lambda: [r.queue_length for r in hub.get_replica_list().replicas] == [9], 5.0, "update published")
    coordinator.remove_replica(ev)
    eventually(lambda: not listed(hub), 5.0, "removed replica withdrawn")
    assert coordinator.publish_replica_list_update() is True
    with pytest.raises(KeyError):
        coordinator.update_replica_info(ReplicaEvent("tcp://nobody:1", "", 0, "update", ReplicaStatus.UP, 0))
    with pytest.raises(ValueError, match="non-negative"):
        coordinator.add_new_replica(ReplicaEvent("tcp://neg:1", "", 0, "update", ReplicaStatus.UP, -1))


def test_rejects_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=0)


def test_bind_failure_releases_the_socket_already_bound(zmq_ctx: zmq.Context) -> None:
    probe = zmq_ctx.socket(zmq.ROUTER)
    probe.bind("tcp://127.0.0.1:*")
    router = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close(linger=0)
    taken = zmq_ctx.socket(zmq.PUB)
    taken.bind("tcp://127.0.0.1:*")
    with pytest.raises(zmq.ZMQError):
        OmniCoordinator(router, taken.getsockopt_string(zmq.LAST_ENDPOINT))  # PUB port in use
    rebound = zmq_ctx.socket(zmq.ROUTER)
    rebound.bind(router)  # the coordinator's ROUTER was closed, not leaked
    assert rebound.getsockopt_string(zmq.LAST_ENDPOINT) == router
