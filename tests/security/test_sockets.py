"""What each socket binds, and so who can reach it: loopback unless told otherwise, never a wildcard by default."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
from secutil import ports_of

from omni_core import ConnectorSpec, OmniConnectorFactory

LOOPBACK = {"127.0.0.1"}
WILDCARDS = {"0.0.0.0", "::"}


def _socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    return count


def test_coordinator_serve_binds_loopback_by_default() -> None:
    from omni_coordinator.cli import parse_announcement

    proc = subprocess.Popen([sys.executable, "-m", "omni_coordinator.cli", "serve"], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        announced = [parse_announcement(proc.stdout.readline().decode()) for _ in range(2)]
        ports = {int(addr.rsplit(":", 1)[1]) for _, addr in announced}  # type: ignore[misc]
        bound = ports_of(proc.pid)
        assert set(bound) == ports and all(hosts == LOOPBACK for hosts in bound.values()), bound
    finally:
        proc.terminate()
        proc.wait(15)
        assert proc.stdout is not None
        proc.stdout.close()


def _run_coordinator_bound(placement) -> dict[int, set[str]]:
    """What the coordinator ``omni run`` starts binds, with the local launcher and ``placement``."""
    from omni_pipeline.local_launcher import LocalLauncher
    from omni_pipeline.router import CoordinatorSettings, Router

    settings = CoordinatorSettings.from_config({"policy": "round-robin", "heartbeat_timeout": 1.0})
    router = Router({}, settings, host=LocalLauncher(placement, {"0": 1}).orchestrator_host)
    try:
        return ports_of(router.runtime.pid)
    finally:
        router.close()


def test_omni_run_starts_its_coordinator_on_loopback() -> None:
    from omni_core import Placement

    bound = _run_coordinator_bound(Placement())
    assert len(bound) == 2 and all(hosts == LOOPBACK for hosts in bound.values()), bound


def test_omni_run_with_stages_on_other_hosts_binds_its_coordinator_to_this_hosts_address(monkeypatch) -> None:
    from omni_core import HostSpec, Placement, StagePlacement

    monkeypatch.setenv("OMNI_HOST_IP", "127.0.0.2")  # this host's address, as the operator names it (a loopback one)
    h1 = HostSpec("h1", "198.18.0.1", ("ssh", "h1"))
    bound = _run_coordinator_bound(Placement(hosts={"h1": h1}, stages={"0": StagePlacement(host=h1)}))
    assert len(bound) == 2 and all(hosts == {"127.0.0.2"} for hosts in bound.values()), bound


def test_yuanrong_te_sender_binds_its_side_channel_and_engine_port_to_its_host_only(te_sender) -> None:
    bound = ports_of(os.getpid())
    assert bound[te_sender.zmq_port] == LOOPBACK and bound[te_sender.rpc_port] == LOOPBACK


def test_yuanrong_te_auto_host_binds_this_hosts_address_not_a_wildcard() -> None:
    from omni_core import resolve_host
    from omni_yuanrong.te_connector import YuanrongTransferEngineConnector
    from omni_yuanrong.te_engine import real_engine

    config = {"role": "sender", "memory_pool_device": "cpu", "memory_pool_size": 1 << 20, "device_name": "npu:0"}
    with YuanrongTransferEngineConnector(config, engine_factory=real_engine) as sender:
        assert sender.host == resolve_host(None)
        assert ports_of(os.getpid())[sender.zmq_port] == {sender.host}
        assert not ports_of(os.getpid())[sender.zmq_port] & WILDCARDS


def test_local_datasystem_worker_listens_on_loopback_only(yuanrong_worker) -> None:
    bound = ports_of(yuanrong_worker.pid)
    assert yuanrong_worker.port in bound and all(hosts == LOOPBACK for hosts in bound.values()), bound


def test_shared_memory_connector_opens_no_sockets() -> None:
    before = _socket_fds()
    spec = ConnectorSpec("SharedMemoryConnector", {"namespace": f"sec{uuid.uuid4().hex[:8]}"})
    with OmniConnectorFactory.create_connector(spec) as producer, OmniConnectorFactory.create_connector(spec) as reader:
        assert producer.put("0", "1", "k", np.arange(1000))[0]
        assert reader.get("0", "1", "k") is not None
        assert _socket_fds() == before


def test_stage_and_hub_clients_listen_on_nothing() -> None:
    from omni_coordinator import OmniCoordClientForHub, OmniCoordClientForStage, OmniCoordinator

    coordinator = OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=5.0)
    before = set(ports_of(os.getpid()))
    stage = OmniCoordClientForStage(coordinator.router_zmq_addr, "tcp://a:1", "tcp://a:2", 0)
    hub = OmniCoordClientForHub(coordinator.pub_zmq_addr)
    try:
        assert set(ports_of(os.getpid())) == before
    finally:
        stage.close()
        hub.close()
        coordinator.close()


def test_anyone_who_reaches_a_te_sender_can_free_its_payloads(te_sender) -> None:
    """The side channel is unauthenticated (as upstream's): reachability is the only protection."""
    import torch
    import zmq

    from omni_yuanrong.te_control import ACK_OK, CLEANUP_KEY, encode_request, request

    assert te_sender.put("0", "1", "victim", torch.ones(1000))[0]
    assert te_sender.health()["pending"] == 1
    context = zmq.Context()
    try:
        key = te_sender._make_key("victim", "0", "1")
        assert request(context, f"127.0.0.1:{te_sender.zmq_port}", encode_request(CLEANUP_KEY, key), 5000) == ACK_OK
    finally:
        context.destroy(linger=0)
    assert te_sender.health()["pending"] == 0


def test_mooncake_master_launcher_listens_on_loopback_only(mooncake_master) -> None:
    bound = ports_of(mooncake_master.proc.pid)
    assert mooncake_master.rpc_port in bound and all(hosts == LOOPBACK for hosts in bound.values()), bound


def test_mooncake_te_sender_binds_its_side_channel_to_its_host_and_its_engine_to_every_interface(
    mooncake_sender,
) -> None:
    """The side channel binds ``host``; the Mooncake TransferEngine's own listener ignores it (the library's)."""
    info = mooncake_sender.health()
    bound = ports_of(os.getpid())
    assert bound[info["zmq_port"]] == LOOPBACK
    assert bound[info["rpc_port"]] & WILDCARDS, bound[info["rpc_port"]]


def test_mooncake_store_connector_listens_only_through_its_engine_on_every_interface(mooncake_master) -> None:
    """A store client's TransferEngine listens on 0.0.0.0 / :: even with ``host: 127.0.0.1`` (the library's)."""
    before = set(ports_of(os.getpid()))
    extra = {"host": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master": mooncake_master.address,
             "segment": 16 << 20, "localbuf": 8 << 20}
    with OmniConnectorFactory.create_connector(ConnectorSpec("MooncakeStoreConnector", extra)) as store:
        assert store.put("0", "1", "k", b"x")[0]
        new = {port: hosts for port, hosts in ports_of(os.getpid()).items() if port not in before}
        assert new and all(hosts <= WILDCARDS for hosts in new.values()), new
