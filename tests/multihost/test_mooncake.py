"""Mooncake across test hosts, every connector configured ``host: auto`` (the default).

Store: the master on host 1, a pure client on host 2 (no segment: its puts cross to host 3) and a client
holding the only segment on host 3 (its puts stay local, host 2 reads them across).  TransferEngine: one
sender to receivers on two other hosts, and two senders (TP ranks on two hosts) to one receiver that knows
only their addresses (partial metadata, the heterogeneous-TP path).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multihost_helpers import MiB, digest, get, health, put

from omni_core import ConnectorSpec, compute_connector_zmq_port
from omni_core.remote import ChildConnector
from omni_core.testing import eventually
from omni_core.testing.hosts import NamespaceHosts

STORE = "MooncakeStoreConnector"
TE = "MooncakeTransferEngineConnector"
KINDS = ["bytes:1048576", "bytes:67108864", "tensor_bfloat16", "request_dict"]
#: Side-channel port base of the TE senders; each TP rank adds 16 (core's port resolution).
TE_BASE_PORT = 50051


def te_port(rank: int) -> int:
    return compute_connector_zmq_port(TE_BASE_PORT, purpose="kv_transfer", from_stage=0, local_rank=rank)


@pytest.fixture(scope="module")
def stores(hosts: NamespaceHosts, mooncake_master) -> Iterator[tuple[ChildConnector, ChildConnector]]:
    extra = {"metadata_server": "P2PHANDSHAKE", "master": mooncake_master.address, "localbuf": 32 * MiB,
             "get_timeout_s": 2.0}  # fmt: skip
    client = hosts.host(2).child_connector(ConnectorSpec(STORE, {**extra, "segment": 0}))
    holder = hosts.host(3).child_connector(ConnectorSpec(STORE, {**extra, "segment": 320 * MiB}))
    yield client, holder
    client.close()
    holder.close()


@pytest.fixture(scope="module")
def te(hosts: NamespaceHosts, mooncake_available: None) -> Iterator[dict[str, ChildConnector]]:
    """Senders (TP ranks 0 and 1) on hosts 1 and 2, receivers on hosts 2 and 3."""

    def connector(host: int, role: str, **extra: object) -> ChildConnector:
        config = {"role": role, "protocol": "tcp", "memory_pool_size": 160 * MiB, **extra}  # host: auto
        return hosts.host(host).child_connector(ConnectorSpec(TE, config))

    made = {
        "rank0": connector(1, "sender", zmq_port=te_port(0)),
        "rank1": connector(2, "sender", zmq_port=te_port(1)),
        "receiver2": connector(2, "receiver"),
        "receiver3": connector(3, "receiver"),
    }
    yield made
    for child in made.values():
        child.close()


def test_store_clients_register_their_hosts_address(hosts: NamespaceHosts, stores) -> None:
    for host, child in zip((hosts.host(2), hosts.host(3)), stores, strict=True):
        assert health(child)["segment_name"].startswith(f"{host.address}:")


@pytest.mark.parametrize("kind", KINDS)
def test_store_put_on_one_host_get_on_another_both_ways(stores, kind: str) -> None:
    client, holder = stores
    for writer, reader, key in ((client, holder, f"to3-{kind}"), (holder, client, f"to2-{kind}")):
        answer = put(writer, key, kind)
        assert answer["ok"], answer
        got = get(reader, key, answer["metadata"])
        assert got["found"] and got["checksum"] == digest(kind), got
        got = get(reader, key, None)  # the key alone is the rendezvous
        assert got["found"] and got["checksum"] == digest(kind), got


def test_store_cleanup_on_one_host_removes_for_every_host(stores) -> None:
    client, holder = stores
    assert put(client, "short-lived", "bytes:1048576")["ok"]
    assert holder.call({"op": "cleanup", "key": "short-lived"})["cleaned"]
    assert not get(client, "short-lived", None, wait=0.5)["found"]


def test_store_read_outliving_its_lease_on_a_slow_link(hosts: NamespaceHosts, stores) -> None:
    """64 MiB at 1 Gbit/s takes > 0.5 s, past the master's 200 ms read lease: read again in chunks, into
    memory outside the 32 MiB local buffer."""
    client, holder = stores
    kind = "bytes:67108864"
    answer = put(holder, "slow-link", kind)
    assert answer["ok"]
    hosts.host(2).limit_bandwidth("1gbit")
    try:
        got = get(client, "slow-link", answer["metadata"])
    finally:
        hosts.host(2).clear_bandwidth_limit()
    assert got["found"] and got["checksum"] == digest(kind), got
    assert health(client)["pool_used_bytes"] == 0


def test_te_host_auto_advertises_each_hosts_address(hosts: NamespaceHosts, te) -> None:
    for name, host in (("rank0", 1), ("rank1", 2), ("receiver2", 2), ("receiver3", 3)):
        assert health(te[name])["host"] == hosts.host(host).address
    answer = put(te["rank0"], "advertised", "bytes:1024")
    assert answer["metadata"]["source_host"] == hosts.host(1).address
    assert get(te["receiver3"], "advertised", answer["metadata"])["found"]


def test_te_one_sender_to_receivers_on_two_hosts(hosts: NamespaceHosts, te) -> None:
    """Sender TP < receiver TP: the sender puts one key per receiving rank; each pulls its own."""
    sender = te["rank0"]
    sent = {name: (f"slice-for-{name}", kind) for name, kind in
            (("receiver2", "bytes:1048576"), ("receiver3", "bytes:67108864"))}  # fmt: skip
    metadata = {name: put(sender, key, kind)["metadata"] for name, (key, kind) in sent.items()}
    partial = {"source_host": hosts.host(1).address, "source_port": te_port(0)}
    for name, (key, kind) in sent.items():
        got = get(te[name], key, metadata[name] if name == "receiver2" else partial)
        assert got["found"] and got["checksum"] == digest(kind), got
        assert not get(te[name], key, metadata[name], wait=0.2)["found"]  # consume-once
    eventually(lambda: health(sender)["outbox_entries"] == 0, 10, "the sender freed both slices (their done notes)")


def test_te_two_senders_on_two_hosts_to_one_receiver_by_partial_metadata(hosts: NamespaceHosts, te) -> None:
    """Sender TP 2 > receiver TP 1: the receiver pulls the same key from each rank, knowing only where
    each rank listens (``{source_host, source_port}``, as vllm-omni's KV manager builds it)."""
    shards = {0: (te["rank0"], 1, "bytes:3145728"), 1: (te["rank1"], 2, "bytes:5242880")}
    for sender, _, kind in shards.values():
        assert put(sender, "kv-shard", kind)["ok"]
    for rank, (_, host, kind) in shards.items():
        partial = {"source_host": hosts.host(host).address, "source_port": te_port(rank)}
        got = get(te["receiver3"], "kv-shard", partial)
        assert got["found"] and got["size"] == int(kind.split(":")[1]) and got["checksum"] == digest(kind), got
    assert health(te["receiver3"])["pool_used_bytes"] == 0
