"""A host partitioned mid-transfer: the caller gets its answer within its configured bound, the counters show
it, nothing leaks on either side, and once the partition heals the next transfer succeeds with nothing
restarted.  (Coordinator heartbeats under a partition: ``test_coordinator.py``.)  Each test prints what it
measured; RELIABILITY.md's multi-host section quotes them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from multihost_helpers import (
    MiB,
    assert_descriptors_back,
    descriptors,
    digest,
    get,
    health,
    link_bytes,
    put,
    wait_for_traffic,
)

from omni_core import ConnectorSpec
from omni_core.remote import ChildConnector
from omni_core.testing import eventually
from omni_core.testing.hosts import NamespaceHosts

BIG = f"bytes:{256 * MiB}"
#: The TransferEngine's bound on one write (MC_TRANSFER_TIMEOUT, at least 5 s): a sender's write to a host
#: cut off fails after it, and slices a failed pull may still receive are held a bit longer (QUARANTINE_S).
#: One TCP connection per peer, so the engine's own connection pool does not blur the descriptor counts.
ENGINE_ENV = {"MC_TRANSFER_TIMEOUT": "5", "MC_TCP_LANES_PER_PEER": "1"}
QUARANTINE_S = 8.0
#: The store connector's bound on one put or read.
STORE_TRANSFER_TIMEOUT_S = 3.0


@pytest.fixture
def te_pair(hosts: NamespaceHosts, mooncake_available: None) -> Iterator[tuple[ChildConnector, ChildConnector]]:
    """A TE sender on host 1 and a receiver on host 2 (room for two 256 MiB slices: one may be held)."""
    base = {"protocol": "tcp", "quarantine_s": QUARANTINE_S}
    sender = hosts.host(1).child_connector(
        ConnectorSpec("MooncakeTransferEngineConnector", {**base, "role": "sender", "memory_pool_size": 288 * MiB}),
        env=ENGINE_ENV,
    )
    receiver = hosts.host(2).child_connector(
        ConnectorSpec("MooncakeTransferEngineConnector", {**base, "role": "receiver", "memory_pool_size": 600 * MiB}),
        env=ENGINE_ENV,
    )
    yield sender, receiver
    sender.close()
    receiver.close()


@pytest.fixture
def store_pair(hosts: NamespaceHosts, mooncake_master) -> Iterator[tuple[ChildConnector, ChildConnector]]:
    """A store client without a segment on host 2 (its puts cross to host 3) and the segment's holder on host 3."""
    base = {"metadata_server": "P2PHANDSHAKE", "master": mooncake_master.address, "localbuf": 32 * MiB,
            "quarantine_s": QUARANTINE_S}  # fmt: skip
    bounded = {**base, "segment": 0, "transfer_timeout_s": STORE_TRANSFER_TIMEOUT_S}
    client = hosts.host(2).child_connector(ConnectorSpec("MooncakeStoreConnector", bounded), env=ENGINE_ENV)
    holder = hosts.host(3).child_connector(
        ConnectorSpec("MooncakeStoreConnector", {**base, "segment": 320 * MiB}), env=ENGINE_ENV
    )
    yield client, holder
    client.close()
    holder.close()


def test_te_receiver_cut_off_during_a_256mib_pull(hosts: NamespaceHosts, te_pair) -> None:
    sender, receiver = te_pair
    h2 = hosts.host(2)
    warm = put(sender, "warm", "bytes:1024")
    assert get(receiver, "warm", warm["metadata"])["found"]
    fds = descriptors(*te_pair)
    metadata = put(sender, "big", BIG)["metadata"]
    deadline_s = 20.0
    moved = link_bytes(h2)
    started = time.monotonic()
    receiver.send({"op": "get", "from": "0", "to": "1", "key": "big", "metadata": metadata, "timeout": deadline_s})
    wait_for_traffic(h2, moved, 32 * MiB)
    with h2.partitioned():
        answer = receiver.read(timeout=deadline_s + 60)
        gave_up_s = time.monotonic() - started
        assert not answer["found"] and gave_up_s < deadline_s, (answer, gave_up_s)
        report = health(receiver)
        assert report["errors"] == 1, report  # the read given up: its slice held until the engine ends it
        assert report["quarantined_bytes"] >= 256 * MiB, report
    healed = time.monotonic()
    got = get(receiver, "big", metadata, wait=30)  # read anew once the sender's claim of it lapsed
    recovered_s = time.monotonic() - healed
    assert got["found"] and got["checksum"] == digest(BIG), got
    eventually(lambda: health(sender)["outbox_entries"] == 0, 10, "the sender freed the payload (its done note)")
    sent = health(sender)
    assert sent["in_flight"] == 0 and sent["pool_used_bytes"] == 0, sent
    eventually(lambda: health(receiver)["quarantined_bytes"] == 0, QUARANTINE_S + 10, "held slices released")
    report = health(receiver)
    assert report["pool_used_bytes"] == 0 and report["pending_pulls"] == 0, report
    assert_descriptors_back(fds)
    print(f"TE partition: None after {gave_up_s:.2f} s (deadline {deadline_s:g} s); the payload arrived "
          f"{recovered_s:.2f} s after healing; receiver errors {report['errors']}, "
          f"sender failed_transfers {sent['failed_transfers']}")  # fmt: skip


def test_store_segment_host_cut_off_during_a_256mib_put(hosts: NamespaceHosts, store_pair) -> None:
    client, holder = store_pair
    h3 = hosts.host(3)
    warm = put(client, "warm", "bytes:1048576")
    assert get(holder, "warm", warm["metadata"])["found"]
    fds = descriptors(client, holder)
    moved = link_bytes(h3)
    started = time.monotonic()
    client.send({"op": "put", "from": "0", "to": "1", "key": "big", "kind": BIG})
    wait_for_traffic(h3, moved, 32 * MiB)
    with h3.partitioned():
        answer = client.read(timeout=120)
        failed_s = time.monotonic() - started
        assert not answer["ok"] and failed_s < STORE_TRANSFER_TIMEOUT_S + 5, (answer, failed_s)
        report = health(client)
        assert report["timeouts"] == 1 and report["calls_in_background"] == 1, report
    healed = time.monotonic()
    eventually(lambda: health(client)["calls_in_background"] == 0, 70, "the put given up ends")
    # The put given up may still have completed once the link healed (its TCP retransmission came within the
    # engine's MC_TRANSFER_TIMEOUT): then its 256 MiB object sits in the holder's 320 MiB segment and no 64 MiB put
    # fits until it is removed, as a stage removes a request it gave up (or replaces it by retrying the key).
    landed = get(holder, "big", None, wait=0.5)["found"]
    holder.call({"op": "cleanup", "key": "big"})

    def transfer_works() -> bool:
        answer = put(client, "after", "bytes:67108864")
        return answer["ok"] and get(holder, "after", answer["metadata"])["checksum"] == digest("bytes:67108864")

    eventually(transfer_works, 60, "a put and a get across the healed link", interval=0.5)
    recovered_s = time.monotonic() - healed
    eventually(lambda: health(client)["quarantined_bytes"] == 0, QUARANTINE_S + 10, "held memory released")
    report = health(client)
    assert report["pool_used_bytes"] == 0 and health(holder)["pool_used_bytes"] == 0, report
    # The holder is the host that was cut off: in some runs its Mooncake engine keeps 2 more TCP sockets after
    # healing (measured, also 40 s later, and at the commit before this stop's changes): connections the library
    # opened to the client after the cut beside those from before it. Nothing of the connector's; its other
    # descriptors, and all of the client's, are checked.
    assert_descriptors_back(fds, library_sockets=(holder.pid,))
    for key in ("warm", "after"):
        client.call({"op": "cleanup", "key": key})
    print(f"Store partition: put failed after {failed_s:.2f} s (transfer_timeout_s {STORE_TRANSFER_TIMEOUT_S:g}); "
          f"{'it completed after healing; ' if landed else ''}a put and get worked {recovered_s:.2f} s after "
          f"healing; client timeouts {report['timeouts']}, errors {report['errors']}")  # fmt: skip
