"""MooncakeStoreConnector against a real master, with a second client in a child process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from mooncake_payloads import build, digest
from mooncake_procs import ConnectorProcess, MiB, MooncakeMaster, store_extra

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.testing import checksum
from omni_mooncake.master import free_port
from omni_mooncake.store_connector import MooncakeStoreConnector

EDGE = ("0", "1")
NAME = "MooncakeStoreConnector"


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def new_key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def store(master: MooncakeMaster) -> Iterator[MooncakeStoreConnector]:
    """The test process's client: its local buffer holds a 256 MiB result."""
    connector = OmniConnectorFactory.create_connector(
        ConnectorSpec(NAME, store_extra(master, localbuf=288 * MiB, get_timeout_s=0.5))
    )
    assert isinstance(connector, MooncakeStoreConnector)
    yield connector
    connector.close()


@pytest.fixture(scope="module")
def peer(master: MooncakeMaster) -> Iterator[ConnectorProcess]:
    """A second client in another process; its segment is the one that can hold 256 MiB."""
    with ConnectorProcess(NAME, store_extra(master, segment=400 * MiB, localbuf=64 * MiB)) as child:
        yield child


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "request_dict"},
        {"kind": "tensor_bfloat16"},
        {"kind": "tensor_noncontiguous"},
        {"kind": "ndarray"},
        {"kind": "bytes"},
        {"kind": "empty_bytes"},
        {"kind": "tuple"},
        {"tensor_bytes": 8 * MiB, "seed": 1},  # direct layout
        {"bytes": 5 * MiB, "seed": 2},  # direct layout
    ],
    ids=lambda spec: next(iter(spec.values())) if "kind" in spec else f"{next(iter(spec))}-{spec[next(iter(spec))]}",
)
def test_payloads_cross_processes_both_ways(
    store: MooncakeStoreConnector, peer: ConnectorProcess, spec: dict[str, Any]
) -> None:
    key = new_key("kinds")
    answer = peer.put(key, spec)
    assert answer["ok"] and answer["metadata"]["value_size"] > 0
    result = store.get(*EDGE, key, answer["metadata"])  # with the metadata: no size lookup
    assert result is not None
    assert checksum(result[0]) == digest(spec) and result[1] == answer["size"]

    back = new_key("back")
    ok, size, _ = store.put(*EDGE, back, build(spec))
    assert ok
    got = peer.get(back)
    assert got["found"] and got["checksum"] == digest(spec) and got["size"] == size
    store.cleanup(key)
    store.cleanup(back)


def test_256mib_tensor_arrives_intact(store: MooncakeStoreConnector, peer: ConnectorProcess) -> None:
    """Written from the peer's own memory, read in lease-sized chunks (the master's lease is 200 ms)."""
    spec = {"tensor_bytes": 256 * MiB, "seed": 7}
    key = new_key("big")
    answer = peer.put(key, spec)
    assert answer["ok"] and answer["size"] == 256 * MiB
    result = store.get_with_deadline(*EDGE, key, deadline=float("inf"))
    assert result is not None and result[1] == 256 * MiB
    assert checksum(result[0]) == digest(spec)
    del result
    store.cleanup(key)
    assert store.get(*EDGE, key) is None


def test_concurrent_puts_are_all_readable(store: MooncakeStoreConnector, peer: ConnectorProcess) -> None:
    specs = {new_key(f"conc{i}"): ({"tensor_bytes": 6 * MiB, "seed": i} if i % 2 else {"kind": "tensor_in_dict"})
             for i in range(8)}  # fmt: skip
    failures: list[str] = []

    def put(key: str, spec: dict[str, Any]) -> None:
        if not store.put(*EDGE, key, build(spec))[0]:
            failures.append(key)

    threads = [threading.Thread(target=put, args=item) for item in specs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    for key, spec in specs.items():
        got = peer.get(key)
        assert got["found"] and got["checksum"] == digest(spec), key
        store.cleanup(key)


def test_empty_values_are_not_missing_keys(store: MooncakeStoreConnector) -> None:
    for value in (b"", {}, None, 0, "", ()):
        key = new_key("empty")
        assert store.put(*EDGE, key, value)[0]
        result = store.get(*EDGE, key)
        assert result is not None and checksum(result[0]) == checksum(value)
        store.cleanup(key)
    assert store.get(*EDGE, new_key("never")) is None


def test_cleanup_really_removes_even_with_a_read_lease(store: MooncakeStoreConnector, peer: ConnectorProcess) -> None:
    key = new_key("clean")
    spec = {"tensor_bytes": 6 * MiB, "seed": 3}
    assert store.put(*EDGE, key, build(spec))[0]
    assert store.put("1", "2", key, {"other": "edge"})[0]
    assert peer.get(key)["found"]  # the read grants a lease; cleanup removes anyway
    store.cleanup(key, *EDGE)
    assert not peer.get(key, timeout=0.3)["found"]
    assert store.get("1", "2", key) is not None  # only that edge went
    store.cleanup(key)  # every edge
    assert store.get("1", "2", key) is None
    with pytest.raises(ValueError, match="both"):
        store.cleanup(key, "0")


def test_second_put_replaces_the_value(store: MooncakeStoreConnector) -> None:
    key = new_key("replace")
    ok, _, small = store.put(*EDGE, key, {"version": 1})
    assert ok
    ok, _, direct = store.put(*EDGE, key, build({"tensor_bytes": 8 * MiB, "seed": 5}))
    assert ok and direct["raw_nbytes"] == 8 * MiB
    ok, _, last = store.put(*EDGE, key, {"version": 3, "pad": "x" * 5000})
    assert ok
    for metadata in (None, small, direct, last):  # stale metadata still finds the newest value
        result = store.get(*EDGE, key, metadata)
        assert result is not None and result[0]["version"] == 3
    store.cleanup(key)


def test_get_waits_for_a_late_put(store: MooncakeStoreConnector, peer: ConnectorProcess) -> None:
    key = new_key("late")
    found: list[Any] = []
    waiter = threading.Thread(target=lambda: found.append(store.get_with_deadline(*EDGE, key, deadline=float("inf"))))
    waiter.start()
    assert peer.put(key, {"kind": "request_dict"})["ok"]
    waiter.join(30)
    assert found and found[0] is not None and checksum(found[0][0]) == digest({"kind": "request_dict"})
    store.cleanup(key)


def test_results_hand_their_local_buffer_back(store: MooncakeStoreConnector) -> None:
    key = new_key("pool")
    assert store.put(*EDGE, key, torch.ones(4 * MiB // 4))[0]
    before = store.health()["pool_used_bytes"]
    result = store.get(*EDGE, key)
    assert result is not None
    assert store.health()["pool_used_bytes"] >= before + 4 * MiB
    view = result[0][1:]  # a view keeps the region alive
    del result
    assert store.health()["pool_used_bytes"] >= before + 4 * MiB
    del view
    assert store.health()["pool_used_bytes"] == before
    store.cleanup(key)


def test_gets_by_key_alone_read_with_room_for_the_last_value(
    store: MooncakeStoreConnector, peer: ConnectorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get without metadata reads with room for the value read before: no size lookup while sizes repeat;
    a bigger value is looked up, and a smaller one gives the room it did not use back to the local buffer."""
    client = store._client
    assert client is not None
    lookups: list[str] = []
    size = client.size
    monkeypatch.setattr(client, "size", lambda key: lookups.append(key) or size(key))
    specs = {new_key(f"room{i}"): spec for i, spec in enumerate(
        [{"tensor_bytes": 1 * MiB, "seed": 90}, {"tensor_bytes": 1 * MiB, "seed": 91}, {"bytes": 3 * MiB, "seed": 92}]
    )}  # fmt: skip
    for key, spec in specs.items():
        assert peer.put(key, spec)["ok"]
    sizes = []
    for key, spec in specs.items():
        result = store.get(*EDGE, key)
        assert result is not None and checksum(result[0]) == digest(spec)
        sizes.append(len(lookups))
        del result
    assert sizes[1] == sizes[0] and sizes[2] == sizes[1] + 1, lookups  # only the bigger value was looked up
    small, spec = new_key("room-small"), {"tensor_bytes": 64 << 10, "seed": 93}
    assert peer.put(small, spec)["ok"]
    before = store.health()["pool_used_bytes"]
    result = store.get(*EDGE, small)  # read with 3 MiB of room; its tensor views the region it landed in
    assert result is not None and checksum(result[0]) == digest(spec)
    assert 64 << 10 <= store.health()["pool_used_bytes"] - before <= 128 << 10, "the unused room was kept"
    del result
    for key in (*specs, small):
        store.cleanup(key)


def test_health_comes_from_the_store(store: MooncakeStoreConnector) -> None:
    health = store.health()
    assert health["status"] == "healthy", health
    assert health["segment_name"].startswith("127.0.0.1:") and health["master"] == store.master


def test_master_down_at_setup_fails_within_the_timeout(mooncake_available: None) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}.*not reachable"):
        MooncakeStoreConnector({"master": f"127.0.0.1:{port}", "metadata_server": "P2PHANDSHAKE", "setup_timeout_s": 1})


@pytest.mark.timeout(120)
def test_master_killed_mid_run_gives_clear_errors(mooncake_available: None) -> None:
    own = MooncakeMaster().start()
    child = ConnectorProcess(NAME, store_extra(own, segment=32 * MiB, localbuf=8 * MiB))
    try:
        key = new_key("doomed")
        assert child.put(key, {"kind": "request_dict"})["ok"]
        assert child.get(key)["found"]
        own.kill()
        assert not child.put(new_key("after"), {"kind": "request_dict"})["ok"]
        assert not child.get(key, timeout=1.0)["found"]
        health = child.call({"op": "health"})
        assert health["status"] == "unhealthy" and "unreachable" in health["error"], health
        assert health["errors"] >= 2
    finally:
        child.kill()  # its close() would retry the dead master's RPCs for several seconds
        own.stop()


@pytest.mark.timeout(180)
def test_failed_calls_hand_their_local_buffer_back(mooncake_available: None) -> None:
    """Gets from and a put into the segment of a SIGKILLed client fail; their regions return after the quarantine."""
    own = MooncakeMaster().start()
    owner = ConnectorProcess(NAME, store_extra(own, segment=64 * MiB, localbuf=8 * MiB))
    # a pure client: every object lives in the owner's segment
    client = MooncakeStoreConnector(store_extra(own, segment=0, localbuf=16 * MiB, quarantine_s=2.0))
    try:
        specs = {new_key("framed"): {"kind": "request_dict"}, new_key("direct"): {"tensor_bytes": 2 * MiB, "seed": 3}}
        metadata = {key: owner.put(key, spec)["metadata"] for key, spec in specs.items()}
        owner.kill()
        for key in specs:
            assert client.get(*EDGE, key, metadata[key]) is None
            assert client.get(*EDGE, key) is None  # without metadata: sizes looked up
        assert client.put(*EDGE, new_key("lost"), build({"kind": "request_dict"})) == (False, 0, None)
        assert client.put(*EDGE, new_key("lost"), build({"tensor_bytes": 2 * MiB, "seed": 4})) == (False, 0, None)
        health = client.health()
        assert health["errors"] == 6, health
        assert health["quarantined_bytes"] > 2 * MiB, health  # the transfers failed, maybe with I/O in flight
        assert wait_for(lambda: client.health()["quarantined_bytes"] == 0, timeout=10), client.health()
        assert client.health()["pool_used_bytes"] == 0
    finally:
        owner.kill()
        client.close()
        own.stop()


@pytest.mark.timeout(120)
def test_two_replicas_lose_nothing_when_a_client_is_killed(mooncake_available: None) -> None:
    """``replica_num: 2``: a client holding one replica of every object is SIGKILLed right after its puts; every
    acknowledged payload is still read intact from the other (a read that picks the dead replica is tried again
    until the master drops the dead client: ``client_ttl``)."""
    own = MooncakeMaster(client_ttl_s=2).start()
    writer = ConnectorProcess(NAME, store_extra(own, segment=64 * MiB, localbuf=8 * MiB, replica_num=2))
    keeper = ConnectorProcess(NAME, store_extra(own, segment=64 * MiB, localbuf=8 * MiB))
    reader = MooncakeStoreConnector(store_extra(own, segment=0, localbuf=16 * MiB, quarantine_s=1.0))
    try:
        specs = {new_key(f"kept{i}"): ({"tensor_bytes": 2 * MiB, "seed": i} if i % 2 else {"kind": "tensor_in_dict"})
                 for i in range(12)}  # fmt: skip
        metadata = {}
        for key, spec in specs.items():
            answer = writer.put(key, spec)
            assert answer["ok"], answer
            metadata[key] = answer["metadata"]
        store_client, _ = reader._open()  # the store's own view: one replica is in the writer's segment
        assert all(store_client.replicas(reader._make_key(key, *EDGE)) == 2 for key in specs)
        writer.kill()
        for key, spec in specs.items():
            result = reader.get_with_deadline(*EDGE, key, metadata[key], deadline=time.monotonic() + 20)
            assert result is not None, f"{key} was lost"
            assert checksum(result[0]) == digest(spec), key
            del result
            reader.cleanup(key)
            assert reader.get(*EDGE, key) is None
        assert reader.health()["errors"] == 0
        assert wait_for(lambda: reader.health()["quarantined_bytes"] == 0, timeout=10), reader.health()
        assert reader.health()["pool_used_bytes"] == 0
        assert keeper.call({"op": "health"})["pool_used_bytes"] == 0
    finally:
        writer.kill()
        keeper.close()
        reader.close()
        own.stop()


@pytest.mark.timeout(120)
def test_hard_pinned_objects_are_never_evicted(mooncake_available: None) -> None:
    """``hard_pin: true``: a full store refuses new puts instead of evicting acknowledged objects (soft-pinned
    ones are evicted, oldest first, to make room)."""
    own = MooncakeMaster().start()
    client = MooncakeStoreConnector(store_extra(own, segment=32 * MiB, localbuf=8 * MiB, hard_pin=True))
    try:
        payload = {"tensor_bytes": 3 * MiB, "seed": 5}
        acked = [key for key in (new_key(f"pinned{i}") for i in range(16)) if client.put(*EDGE, key, build(payload))[0]]
        assert 0 < len(acked) < 16  # the segment filled up: later puts were refused
        time.sleep(1.0)  # eviction runs in the master's background
        for key in acked:
            result = client.get(*EDGE, key)
            assert result is not None and checksum(result[0]) == digest(payload), key
            del result
            client.cleanup(key)
        assert client.put(*EDGE, new_key("room-again"), build(payload))[0]
    finally:
        client.close()
        own.stop()
