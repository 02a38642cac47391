"""What binds where, measured from another host: each server or connector runs on host 1, and host 2 tries
every port it listens on (SECURITY.md's table quotes these)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from omni_core import ConnectorSpec
from omni_core.testing.hosts import NamespaceHosts, listening_ports

WILDCARDS = {"0.0.0.0", "::"}


def exposure(hosts: NamespaceHosts, pid: int, address: str | None = None) -> dict[int, tuple[set[str], bool]]:
    """Each port process ``pid`` listens on: its bound addresses, and whether host 2 reaches it at ``address``
    (default: host 1's)."""
    bound = listening_ports(pid)
    reached = hosts.host(2).reachable(address or hosts.host(1).address, sorted(bound))
    print(f"pid {pid}: " + ", ".join(f"{port} on {sorted(a)}: {port in reached}" for port, a in sorted(bound.items())))
    return {port: (addresses, port in reached) for port, addresses in bound.items()}


@pytest.fixture(scope="module")
def te_senders(hosts: NamespaceHosts, mooncake_available: None) -> Iterator[dict[str, object]]:
    made = {}
    for host in ("auto", "127.0.0.1"):
        extra = {"role": "sender", "host": host, "protocol": "tcp", "zmq_port": 0, "memory_pool_size": 4 << 20}
        made[host] = hosts.host(1).child_connector(ConnectorSpec("MooncakeTransferEngineConnector", extra))
    yield made
    for child in made.values():
        child.close()


def test_mooncake_te_sender_side_channel_follows_host_its_engine_listens_everywhere(hosts, te_senders) -> None:
    for host, child in te_senders.items():
        info = child.call({"op": "health"})
        seen = exposure(hosts, child.pid)
        side_channel_bound, side_channel_reached = seen.pop(info["zmq_port"])
        if host == "auto":
            assert side_channel_bound == {hosts.host(1).address} and side_channel_reached
        else:
            assert side_channel_bound == {"127.0.0.1"} and not side_channel_reached
        # the TransferEngine's own listeners (handshake/RPC and TCP data) bind every interface whatever host says
        assert info["rpc_port"] in seen and seen, seen
        assert all(bound <= WILDCARDS and reached for bound, reached in seen.values()), seen


def test_mooncake_store_client_listens_only_through_its_engine_on_every_interface(hosts, mooncake_master) -> None:
    extra = {"metadata_server": "P2PHANDSHAKE", "master": mooncake_master.address, "segment": 16 << 20,
             "localbuf": 8 << 20}  # fmt: skip
    with hosts.host(1).child_connector(ConnectorSpec("MooncakeStoreConnector", extra)) as child:
        seen = exposure(hosts, child.pid)
    assert seen and all(bound <= WILDCARDS and reached for bound, reached in seen.values()), seen


@pytest.mark.parametrize("bind", ["default", "host address"])
def test_mooncake_master_launcher_binds_loopback_unless_given_a_host(hosts, mooncake_available, bind: str) -> None:
    """By default the launcher binds 127.0.0.1 (here: of the test process's host, reached at the bridge's address)."""
    from omni_mooncake.master import MooncakeMaster

    h1 = hosts.host(1)
    master = MooncakeMaster(host=h1.address, launcher=h1.exec_prefix) if bind == "host address" else MooncakeMaster()
    master.start()
    try:
        assert master.proc is not None
        seen = exposure(hosts, master.proc.pid, h1.address if bind == "host address" else hosts.gateway)
    finally:
        master.stop()
    assert {master.rpc_port, master.metrics_port} <= set(seen)
    assert all(reached == (bind == "host address") for _, reached in seen.values()), seen


@pytest.mark.parametrize("bind", [[], ["--host", "*"]], ids=["default", "every interface"])
def test_coordinator_serve_binds_loopback_unless_told(hosts: NamespaceHosts, bind: list[str]) -> None:
    command = [sys.executable, "-m", "omni_coordinator.cli", "serve", *bind]
    proc = hosts.host(1).popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        announced = [proc.stdout.readline() for _ in range(2)]
        seen = exposure(hosts, proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)
    assert len(seen) == 2, (announced, seen)
    assert all(reached == bool(bind) for _, reached in seen.values()), seen
