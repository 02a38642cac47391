"""The coordinator across test hosts: ``omni coordinator serve --host '*'`` with CURVE on host 1, a stage
replica and a hub on each of hosts 2 and 3; a partitioned host's replica leaves the lists within the
heartbeat timeout + 1 s and comes back once the partition heals, with nothing restarted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq.auth
from multihost_helpers import open_fds

from omni_core.remote import JsonLinesChild
from omni_core.testing import eventually
from omni_core.testing.hosts import NamespaceHosts, TestHost

HEARTBEAT_TIMEOUT = 2.0
CHILD = Path(__file__).with_name("coordinator_child.py")


def replica_addr(host: TestHost) -> str:
    return f"tcp://{host.address}:41001"


def child(host: TestHost, *args: object) -> JsonLinesChild:
    """A stage or hub client (``coordinator_child.py``) on ``host``."""
    command = [*host.exec_prefix, sys.executable, str(CHILD), *(str(a) for a in args)]
    return JsonLinesChild(command, timeout=30.0, env={"PYTHONUNBUFFERED": "1"})


def listed(hub: JsonLinesChild) -> list[str]:
    return hub.call({"op": "replicas"})["replicas"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CURVE certificates: the server's, and one per client (the authorized directory holds the clients')."""
    root = tmp_path_factory.mktemp("curve")
    for directory in ("server", "clients"):
        (root / directory).mkdir()
    zmq.auth.create_certificates(root / "server", "coordinator")
    for name in ("h2", "h3"):
        zmq.auth.create_certificates(root / "clients", name)
    return {"server": root / "server", "clients": root / "clients"}


@pytest.fixture(scope="module")
def coordinator(hosts: NamespaceHosts, keys: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """``omni coordinator serve --host '*'`` with CURVE on host 1; its announced addresses."""
    from omni_coordinator.cli import parse_announcement

    proc = hosts.host(1).popen(
        [sys.executable, "-m", "omni_coordinator.cli", "serve", "--host", "*",
         "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT),
         "--curve-secret-key", str(keys["server"] / "coordinator.key_secret"),
         "--curve-authorized-keys", str(keys["clients"])],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    announced = dict(filter(None, (parse_announcement(proc.stdout.readline()) for _ in range(2))))
    yield {"proc": proc, **announced}
    proc.terminate()
    proc.wait(15)
    proc.stdout.close()


@pytest.fixture(scope="module")
def replicas(hosts: NamespaceHosts, coordinator: dict[str, Any], keys: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """A stage replica and a hub on each of hosts 2 and 3, each with its own client certificate."""
    made: dict[str, JsonLinesChild] = {}
    for index in (2, 3):
        host = hosts.host(index)
        curve = json.dumps({"server": str(keys["server"] / "coordinator.key"),
                            "client": str(keys["clients"] / f"h{index}.key_secret")})  # fmt: skip
        made[f"stage{index}"] = child(host, "stage", coordinator["router"], replica_addr(host), curve)
        made[f"hub{index}"] = child(host, "hub", coordinator["pub"], curve)
    yield made
    for client in made.values():
        client.close()


def test_serve_on_every_interface_prints_an_address_other_hosts_reach(
    hosts: NamespaceHosts, coordinator: dict[str, Any]
) -> None:
    h1 = hosts.host(1)
    for name in ("router", "pub"):
        address = coordinator[name]
        assert address.startswith(f"tcp://{h1.address}:"), address  # not tcp://0.0.0.0 or tcp://*
        assert hosts.host(2).connects(h1.address, int(address.rsplit(":", 1)[1]))


def test_replicas_on_two_hosts_are_listed_by_hubs_on_both(hosts: NamespaceHosts, replicas) -> None:
    expected = sorted(replica_addr(hosts.host(i)) for i in (2, 3))
    for hub in (replicas["hub2"], replicas["hub3"]):
        eventually(lambda hub=hub: listed(hub) == expected, 20, f"both replicas listed: {expected}")


def test_a_client_without_keys_is_refused(hosts: NamespaceHosts, coordinator, replicas) -> None:
    stranger = child(hosts.host(2), "stage", coordinator["router"], "tcp://stranger:1", "null")
    try:
        time.sleep(HEARTBEAT_TIMEOUT)
        assert "tcp://stranger:1" not in listed(replicas["hub2"])
    finally:
        stranger.close()


def test_a_partitioned_replica_leaves_the_list_within_the_timeout_and_returns_after_healing(
    hosts: NamespaceHosts, replicas
) -> None:
    h2, h3 = hosts.host(2), hosts.host(3)
    both = sorted(replica_addr(h) for h in (h2, h3))
    eventually(lambda: listed(replicas["hub2"]) == both, 20, "both replicas listed before the partition")
    seq_before = replicas["hub3"].call({"op": "replicas"})["seq"]
    fds_before = {name: open_fds(replicas[name].pid) for name in ("stage3", "hub3")}
    with h3.partitioned():
        cut = time.monotonic()
        eventually(lambda: listed(replicas["hub2"]) == [replica_addr(h2)], HEARTBEAT_TIMEOUT + 10,
                   "the partitioned replica leaves the list")  # fmt: skip
        gone_after = time.monotonic() - cut
    healed = time.monotonic()
    eventually(lambda: listed(replicas["hub2"]) == both, 60, "the replica is listed again after healing")
    back_after = time.monotonic() - healed
    eventually(lambda: replicas["hub3"].call({"op": "replicas"})["seq"] > seq_before, 60,
               "the hub on the healed host receives lists again")  # fmt: skip
    assert listed(replicas["hub3"]) == both
    assert {name: open_fds(replicas[name].pid) for name in fds_before} == fds_before  # nothing leaked
    print(f"coordinator partition: down after {gone_after:.2f} s, listed again {back_after:.2f} s after healing")
    assert gone_after <= HEARTBEAT_TIMEOUT + 1.0, f"marked down after {gone_after:.2f} s"
