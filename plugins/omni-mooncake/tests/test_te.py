"""MooncakeTransferEngineConnector over TCP on loopback, senders and receivers in separate processes."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import torch
import zmq
from mooncake_payloads import big_tensor, build, digest, unwrap
from mooncake_procs import ConnectorProcess, MiB, te_extra

from omni_core import ConnectorSpec, OmniConnectorFactory, create_connectors_from_config
from omni_core.testing import checksum
from omni_mooncake.master import free_port
from omni_mooncake.te_connector import MooncakeTransferEngineConnector
from omni_mooncake.te_pool import ReceivedBuffer

EDGE = ("0", "1")
NAME = "MooncakeTransferEngineConnector"


def new_key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def make(role: str, **overrides: Any) -> MooncakeTransferEngineConnector:
    connector = OmniConnectorFactory.create_connector(ConnectorSpec(NAME, te_extra(role, **overrides)))
    assert isinstance(connector, MooncakeTransferEngineConnector)
    return connector


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


@pytest.fixture
def connectors() -> Iterator[Callable[..., MooncakeTransferEngineConnector]]:
    """Make in-process connectors that are closed after the test."""
    made: list[MooncakeTransferEngineConnector] = []

    def factory(role: str, **overrides: Any) -> MooncakeTransferEngineConnector:
        made.append(make(role, **overrides))
        return made[-1]

    yield factory
    for connector in made:
        connector.close()


@pytest.fixture(scope="module")
def sender_process(mooncake_available: None) -> Iterator[ConnectorProcess]:
    with ConnectorProcess(NAME, te_extra("sender", memory_pool_size=288 * MiB)) as child:
        yield child


@pytest.fixture(scope="module")
def receiver_process(mooncake_available: None) -> Iterator[ConnectorProcess]:
    with ConnectorProcess(NAME, te_extra("receiver", memory_pool_size=64 * MiB)) as child:
        yield child


@pytest.fixture(scope="module")
def receiver(sender_process: ConnectorProcess) -> Iterator[MooncakeTransferEngineConnector]:
    """A receiver in this process whose default sender is ``sender_process``."""
    info = sender_process.info
    connector = make("receiver", memory_pool_size=288 * MiB, sender_host=info["host"], sender_zmq_port=info["zmq_port"])
    yield connector
    connector.close()


def fetch(receiver: MooncakeTransferEngineConnector, key: str, metadata: dict[str, Any] | None) -> Any:
    result = receiver.get_with_deadline(*EDGE, key, metadata, deadline=time.monotonic() + 30)
    assert result is not None, f"{key} not received"
    return unwrap(result[0])


KINDS = ["request_dict", "tensor_bfloat16", "tensor_0d", "tensor_noncontiguous", "bytes", "empty_bytes",
         "tensor_empty", "tuple", "ndarray"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_payloads_from_a_sender_process(
    sender_process: ConnectorProcess, receiver: MooncakeTransferEngineConnector, kind: str
) -> None:
    """Full metadata, partial metadata (sender endpoint only) and none (the default sender)."""
    spec = {"kind": kind}
    keys = [new_key(kind) for _ in range(3)]
    puts = {key: sender_process.put(key, spec) for key in keys}
    assert all(answer["ok"] for answer in puts.values())
    metadata = [answer["metadata"] for answer in puts.values()]
    assert set(metadata[0]) >= {"source_host", "source_port", "data_size", "is_fast_path"}
    assert metadata[0]["is_fast_path"] == (kind in ("tensor_bfloat16", "tensor_0d", "tensor_noncontiguous", "bytes"))
    endpoint_only = {name: metadata[1][name] for name in ("source_host", "source_port")}
    for key, meta in zip(puts, (metadata[0], endpoint_only, None), strict=True):
        assert checksum(fetch(receiver, key, meta)) == digest(spec)


def test_256mib_tensor_arrives_intact(
    sender_process: ConnectorProcess, receiver: MooncakeTransferEngineConnector
) -> None:
    spec = {"tensor_bytes": 256 * MiB, "seed": 11}
    key = new_key("big")
    answer = sender_process.put(key, spec)
    assert answer["ok"] and answer["size"] == 256 * MiB and answer["metadata"]["is_fast_path"]
    result = receiver.get(*EDGE, key, answer["metadata"])
    assert result is not None and isinstance(result[0], ReceivedBuffer)
    try:
        assert checksum(result[0].payload(copy=False)) == digest(spec)
    finally:
        result[0].release()
    assert wait_for(lambda: sender_process.call({"op": "health"})["pool_used_bytes"] == 0)  # once its done note came


def test_concurrent_puts_reach_another_process(
    connectors: Callable[..., MooncakeTransferEngineConnector], receiver_process: ConnectorProcess
) -> None:
    sender = connectors("sender", memory_pool_size=64 * MiB)
    specs = {new_key(f"conc{i}"): ({"tensor_bytes": 2 * MiB, "seed": i} if i % 2 else {"kind": "request_dict"})
             for i in range(16)}  # fmt: skip
    metadata: dict[str, Any] = {}

    def put(key: str, spec: dict[str, Any]) -> None:
        ok, _, meta = sender.put(*EDGE, key, build(spec))
        if ok:
            metadata[key] = meta

    threads = [threading.Thread(target=put, args=item) for item in specs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(metadata) == set(specs)
    for key, spec in specs.items():
        got = receiver_process.get(key, metadata[key])
        assert got["found"] and got["checksum"] == digest(spec), key
    assert wait_for(lambda: sender.health()["pool_used_bytes"] == 0), sender.health()  # the done notes came


def test_pool_exhaustion_then_recovery(connectors: Callable[..., MooncakeTransferEngineConnector]) -> None:
    sender = connectors("sender", memory_pool_size=8 * MiB, buffer_ttl_seconds=0)
    receiver = connectors("receiver", memory_pool_size=4 * MiB)
    chunk = big_tensor(3 * MiB, 1)
    keys = [new_key(label) for label in "abc"]
    metadata = {}
    for key in keys[:2]:
        ok, _, metadata[key] = sender.put(*EDGE, key, chunk)
        assert ok
    assert sender.put(*EDGE, keys[2], chunk) == (False, 0, None)  # the sender's pool is full
    assert sender.health()["errors"] == 1
    held = receiver.get(*EDGE, keys[0], metadata[keys[0]])
    assert held is not None and torch.equal(held[0].payload(), chunk)
    # the receiver's done note reaches the sender's listener a moment after the get returned
    assert wait_for(lambda: sender.health()["outbox_entries"] == 1), sender.health()
    assert sender.put(*EDGE, keys[2], chunk)[0]  # the delivered buffer was freed: room again
    assert receiver.get(*EDGE, keys[1], metadata[keys[1]]) is None  # the receiver's pool holds the result
    health = receiver.health()
    assert health["pool_exhausted"] == 1 and health["errors"] == 0, health  # waiting for room is no error
    held[0].release()
    assert torch.equal(fetch(receiver, keys[1], metadata[keys[1]]), chunk)  # the sender kept it meanwhile


def test_two_senders_one_receiver(
    sender_process: ConnectorProcess, connectors: Callable[..., MooncakeTransferEngineConnector]
) -> None:
    receiver = connectors("receiver", memory_pool_size=16 * MiB)
    with ConnectorProcess(NAME, te_extra("sender")) as second:
        key = new_key("shard")
        shards = {0: (sender_process, {"tensor_bytes": 1 * MiB, "seed": 20}),
                  1: (second, {"tensor_bytes": 1 * MiB, "seed": 21})}  # fmt: skip
        for rank, (process, spec) in shards.items():
            assert process.put(key, spec)["ok"]
            receiver.update_sender_info(process.info["host"], process.info["zmq_port"], sender_rank=rank)
        for rank, (_, spec) in shards.items():
            assert checksum(fetch(receiver, key, {"sender_rank": rank})) == digest(spec)
        key = new_key("partial")
        for _, (process, spec) in shards.items():
            assert process.put(key, spec)["ok"]
        for _, (process, spec) in shards.items():
            endpoint = {"source_host": process.info["host"], "source_port": process.info["zmq_port"]}
            assert checksum(fetch(receiver, key, endpoint)) == digest(spec)


def test_one_sender_two_receivers(
    connectors: Callable[..., MooncakeTransferEngineConnector], receiver_process: ConnectorProcess
) -> None:
    sender = connectors("sender", readers=2)
    receiver = connectors("receiver")
    assert sender.capabilities.delivery.value == "broadcast"
    spec = {"tensor_bytes": 4 * MiB, "seed": 30}
    key = new_key("fanout")
    ok, _, metadata = sender.put(*EDGE, key, build(spec))
    assert ok
    assert checksum(fetch(receiver, key, metadata)) == digest(spec)
    assert receiver.get(*EDGE, key, metadata) is None  # one copy per receiver
    assert sender.health()["outbox_entries"] == 1
    got = receiver_process.get(key, metadata)
    assert got["found"] and got["checksum"] == digest(spec)
    assert wait_for(lambda: sender.health()["outbox_entries"] == 0), sender.health()  # once its done note came
    assert sender.health()["pool_used_bytes"] == 0
    assert not receiver_process.get(key, metadata, timeout=0.2)["found"]


def test_a_payload_read_whose_done_note_was_lost_is_not_read_twice(
    connectors: Callable[..., MooncakeTransferEngineConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A done note lost (a partition) lets the sender's claim lapse, which keeps the payload (nothing lost); the
    receiver remembers what it read, so asking again gets None, and its repeated note frees the payload."""
    monkeypatch.setenv("MC_TRANSFER_TIMEOUT", "5")  # the claim's lease: the engine's bound + 2 s
    sender, receiver = connectors("sender"), connectors("receiver")
    key = new_key("lost-note")
    ok, _, metadata = sender.put(*EDGE, key, big_tensor(1 * MiB, 90))
    assert ok
    notify = receiver._client.notify
    lost = lambda endpoint, note, **kw: None if note.delivered else notify(endpoint, note, **kw)  # noqa: E731
    monkeypatch.setattr(receiver._client, "notify", lost)
    first = receiver.get(*EDGE, key, metadata)
    assert first is not None and torch.equal(unwrap(first[0]), big_tensor(1 * MiB, 90))
    assert wait_for(lambda: sender.health()["lapsed_claims"] == 1, timeout=15), sender.health()
    assert sender.health()["outbox_entries"] == 1  # kept: the sender cannot tell a lost note from a failed read
    monkeypatch.setattr(receiver._client, "notify", notify)
    assert receiver.get(*EDGE, key, metadata) is None  # this receiver has it already
    assert wait_for(lambda: sender.health()["outbox_entries"] == 0), sender.health()


def test_receiver_killed_mid_transfer_does_not_strand_the_buffer(
    connectors: Callable[..., MooncakeTransferEngineConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed read holds the buffer past the TTL; once its lease lapses (nobody said it was delivered) the
    TTL reclaims it."""
    monkeypatch.setenv("MC_TRANSFER_TIMEOUT", "5")  # the engine's bound on a transfer, and so the claim's lease
    sender = connectors("sender", memory_pool_size=272 * MiB, buffer_ttl_seconds=1.0)
    victim = ConnectorProcess(NAME, te_extra("receiver", memory_pool_size=272 * MiB))
    try:
        key = new_key("victim")
        ok, _, metadata = sender.put(*EDGE, key, big_tensor(256 * MiB, 40))
        assert ok
        victim.send({"op": "get", "key": key, "metadata": metadata, "timeout": 60})
        assert wait_for(lambda: sender.health()["in_flight"] == 1), "the read was never claimed"
        os.kill(victim.proc.pid, signal.SIGSTOP)  # frozen mid-transfer
        time.sleep(1.5)  # past the TTL: a buffer that may be being read is not reclaimed
        health = sender.health()
        assert health["in_flight"] == 1 and health["pool_used_bytes"] >= 256 * MiB
    finally:
        victim.kill()
    assert wait_for(lambda: sender.health()["pool_used_bytes"] == 0), sender.health()
    health = sender.health()
    assert health["lapsed_claims"] == 1 and health["reclaimed_buffers"] == 1 and health["outbox_entries"] == 0


def test_malformed_messages_and_peers_are_answered_or_refused_and_counted(
    connectors: Callable[..., MooncakeTransferEngineConnector],
) -> None:
    sender = connectors("sender")
    receiver = connectors("receiver")
    bad_frames = [
        b"garbage \xff\xfe",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"op": "pull", "key": "k"}),
        msgpack.packb({"op": "query", "key": "k" * 5000}),
        msgpack.packb({"op": "pull", "key": "k", "session": "nohost", "address": -1, "capacity": 1, "wait_ms": 1}),
        b"\x80\x05\x95\x1c\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x02op\x94\x8c\x05query\x94\x8c\x03key\x94\x8c\x01k\x94u.",
        # ^ a pickle of {"op": "query", "key": "k"}
        b"\x00" * (100 << 10),
    ]
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.RCVTIMEO, 5000)
        req.connect(f"tcp://127.0.0.1:{sender.zmq_port}")
        for frame in bad_frames:
            req.send(frame)
            reply = msgpack.unpackb(req.recv())
            assert reply["ok"] is False and reply["error"] == "malformed", reply
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.RCVTIMEO, 5000)
        dealer.connect(f"tcp://127.0.0.1:{sender.zmq_port}")
        dealer.send_multipart([b"one", b"two"])
        assert msgpack.unpackb(dealer.recv_multipart()[-1])["error"] == "malformed"
        huge = ctx.socket(zmq.REQ)  # over the inbound cap: ZMQ drops the peer before buffering the message
        huge.connect(f"tcp://127.0.0.1:{sender.zmq_port}")
        huge.send(b"\x00" * (8 * MiB))
        assert not huge.poll(1000), "an oversized message was answered"
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 64):
            with socket.create_connection(("127.0.0.1", sender.zmq_port)) as raw:
                raw.sendall(garbage)
    finally:
        ctx.destroy(linger=0)
    assert wait_for(lambda: sender.health()["refused_peers"] == 2), sender.health()
    assert sender.health()["malformed_messages"] == len(bad_frames) + 1
    key = new_key("after")
    ok, _, metadata = sender.put(*EDGE, key, {"still": "working"})
    assert ok and fetch(receiver, key, metadata) == {"still": "working"}


def test_zero_copy_put_of_a_pool_buffer(connectors: Callable[..., MooncakeTransferEngineConnector]) -> None:
    sender = connectors("sender")
    receiver = connectors("receiver")
    buffer = sender.allocate(1 * MiB)
    buffer.tensor.copy_(big_tensor(1 * MiB, 50))
    used = sender.health()["pool_used_bytes"]
    key = new_key("zc")
    ok, size, metadata = sender.put(*EDGE, key, buffer)
    assert ok and size == 1 * MiB and metadata["is_fast_path"]
    assert sender.health()["pool_used_bytes"] == used  # not copied
    assert torch.equal(fetch(receiver, key, metadata), big_tensor(1 * MiB, 50))
    assert not buffer.released  # the caller owns it
    buffer.release()
    assert wait_for(lambda: sender.health()["pool_used_bytes"] == 0), sender.health()


def test_receivers_read_host_pools_and_stale_metadata_reads_nothing(
    connectors: Callable[..., MooncakeTransferEngineConnector],
) -> None:
    """Full metadata names the payload's place and token: the receiver reads it itself (no pull); after the
    key was replaced, the old metadata's claim is refused, and what that read got is dropped."""
    sender = connectors("sender")
    receiver = connectors("receiver")
    key = new_key("stale")
    old, new = big_tensor(1 * MiB, 80), big_tensor(1 * MiB, 81)
    ok, _, stale = sender.put(*EDGE, key, old)
    assert ok and {"source_rpc_port", "source_address", "token"} <= set(stale)
    ok, _, fresh = sender.put(*EDGE, key, new)  # replaces the payload under the key
    assert ok and fresh["token"] != stale["token"]
    assert receiver.get(*EDGE, key, stale) is None
    assert torch.equal(fetch(receiver, key, fresh), new)
    assert wait_for(lambda: sender.health()["bytes_transferred"] == 1 * MiB), sender.health()  # its done note
    health = sender.health()
    assert health["failed_transfers"] == 0
    assert health["pool_used_bytes"] == 0 and receiver.health()["pool_used_bytes"] == 0


def test_metadata_without_a_source_is_pulled(connectors: Callable[..., MooncakeTransferEngineConnector]) -> None:
    """A sender that names no source (a device pool, an older version) is asked to write the payload."""
    sender = connectors("sender")
    receiver = connectors("receiver")
    key = new_key("pulled")
    ok, _, metadata = sender.put(*EDGE, key, {"ids": (1, 2, 3)})
    assert ok
    for name in ("source_rpc_port", "source_address", "token"):
        del metadata[name]
    assert fetch(receiver, key, metadata) == {"ids": (1, 2, 3)}
    assert sender.health()["pool_used_bytes"] == 0


def test_roles_and_ports_come_from_core_resolution(mooncake_available: None) -> None:
    base = free_port()
    spec = ConnectorSpec(NAME, {"host": "127.0.0.1", "protocol": "tcp", "memory_pool_size": 8 * MiB, "zmq_port": base})
    senders = create_connectors_from_config({("0", "1"): spec}, caller_stage_id="0")
    receivers = create_connectors_from_config({("0", "1"): spec}, caller_stage_id="1")
    sender, receiver = senders[EDGE], receivers[EDGE]
    try:
        assert isinstance(sender, MooncakeTransferEngineConnector)
        assert isinstance(receiver, MooncakeTransferEngineConnector)
        assert (sender.role, sender.zmq_port) == ("sender", base)
        assert (receiver.role, receiver.sender_zmq_port, receiver.zmq_port) == ("receiver", base, None)
        key = new_key("resolved")
        assert sender.put(*EDGE, key, {"via": "core"})[0]
        assert fetch(receiver, key, None) == {"via": "core"}  # default sender, no metadata
    finally:
        sender.close()
        receiver.close()


def test_role_rules(connectors: Callable[..., MooncakeTransferEngineConnector]) -> None:
    receiver = connectors("receiver")
    assert receiver.put(*EDGE, "k", b"x") == (False, 0, None)
    with pytest.raises(RuntimeError, match="default sender"):
        receiver.get(*EDGE, "k")
    with pytest.raises(ValueError, match="role"):
        make("auto")


def test_ttl_reclaims_unclaimed_buffers(connectors: Callable[..., MooncakeTransferEngineConnector]) -> None:
    sender = connectors("sender", buffer_ttl_seconds=0.2)
    receiver = connectors("receiver")
    key = new_key("ttl")
    ok, _, metadata = sender.put(*EDGE, key, big_tensor(1 * MiB, 60))
    assert ok
    assert wait_for(lambda: sender.health()["pool_used_bytes"] == 0)
    assert sender.health()["reclaimed_buffers"] == 1
    assert receiver.get(*EDGE, key, metadata) is None


def test_a_killed_sender_fails_gets_within_their_deadline(
    connectors: Callable[..., MooncakeTransferEngineConnector],
) -> None:
    """Gets from a SIGKILLed sender end by their deadline (not the engine's ~40 s); their slices return later."""
    receiver = connectors("receiver", quarantine_s=2.0)
    with ConnectorProcess(NAME, te_extra("sender")) as sender:
        keys = [new_key("orphan") for _ in range(2)]
        metadata = {key: sender.put(key, {"tensor_bytes": 1 * MiB, "seed": 70})["metadata"] for key in keys}
        sender.kill()
        start = time.monotonic()
        assert receiver.get_with_deadline(*EDGE, keys[0], metadata[keys[0]], deadline=start + 1.0) is None
        assert time.monotonic() - start < 1.0 + 5, "the pull outlived its deadline"
        health = receiver.health()
        assert health["errors"] == 1 and health["quarantined_bytes"] == 1 * MiB, health
        start = time.monotonic()
        assert receiver.get(*EDGE, keys[1], metadata[keys[1]]) is None  # get waits QUERY_TIMEOUT_S (5 s)
        assert time.monotonic() - start < 5.0 + 5, "the pull outlived get's timeout"
    assert receiver.health()["errors"] == 2
    assert wait_for(lambda: receiver.health()["quarantined_bytes"] == 0, timeout=10), receiver.health()
    assert receiver.health()["pool_used_bytes"] == 0


SOURCE_FIELDS = ("source_rpc_port", "source_address", "token")


@pytest.mark.parametrize("transfer", ["read", "pull"])
def test_a_transfer_given_up_for_a_silent_sender_loses_nothing(
    connectors: Callable[..., MooncakeTransferEngineConnector], transfer: str
) -> None:
    """A frozen sender (as one cut off by a partition) is given up within about 2 s, before the deadline.
    Once it runs again: a *read* given up ends in the engine and gives its slice back, the sender's claim of
    it ends undelivered, and the next get reads the payload anew; a *pull* given up (metadata without the
    source: the receiver asks the sender to write) is written once the sender runs and counted delivered,
    so the next get takes that payload from the slice kept for it (a new pull would be refused)."""
    receiver = connectors("receiver", memory_pool_size=16 * MiB)
    held = "reads_given_up" if transfer == "read" else "pending_pulls"
    with ConnectorProcess(NAME, te_extra("sender")) as sender:
        spec = {"tensor_bytes": 4 * MiB, "seed": 80}
        key = new_key("late")
        metadata = sender.put(key, spec)["metadata"]
        if transfer == "pull":
            metadata = {name: value for name, value in metadata.items() if name not in SOURCE_FIELDS}
        os.kill(sender.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert receiver.get_with_deadline(*EDGE, key, metadata, deadline=start + 30) is None
            assert time.monotonic() - start < 10, "a silent sender was waited on until the deadline"
            health = receiver.health()
            assert health["errors"] == 1 and health[held] == 1 and health["quarantined_bytes"] == 4 * MiB, health
        finally:
            os.kill(sender.proc.pid, signal.SIGCONT)
        assert checksum(fetch(receiver, key, metadata)) == digest(spec)
        assert wait_for(lambda: sender.call({"op": "health"})["outbox_entries"] == 0)
    assert wait_for(lambda: receiver.health()[held] == 0), receiver.health()
    health = receiver.health()
    assert health["quarantined_bytes"] == 0 and health["pool_used_bytes"] == 0, health
