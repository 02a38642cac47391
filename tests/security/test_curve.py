"""The coordinator's CURVE authentication: encrypted traffic, and clients without the right keys refused and
counted."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import zmq
from secutil import RecordingProxy

from omni_coordinator import (
    CurveClientKeys,
    CurveServerKeys,
    OmniCoordClientForHub,
    OmniCoordClientForStage,
    OmniCoordinator,
)

SECRET_ADDRESS = "tcp://replica-address-nobody-should-see:41001"


def eventually(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.05)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain"])
def test_curve_encrypts_what_a_stage_sends(curve: bool) -> None:
    server_public, server_secret = zmq.curve_keypair()
    server = CurveServerKeys(server_public, server_secret) if curve else None
    client = CurveClientKeys(server_public) if curve else None
    coordinator = OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=5.0, curve=server)
    tap = RecordingProxy(_port(coordinator.router_zmq_addr))
    hub = OmniCoordClientForHub(coordinator.pub_zmq_addr, curve=client)
    stage = OmniCoordClientForStage(f"tcp://127.0.0.1:{tap.port}", SECRET_ADDRESS, "tcp://out:1", 0, curve=client)
    try:
        eventually(lambda: [r.input_addr for r in hub.get_replica_list().replicas] == [SECRET_ADDRESS], 10.0,
                   "the stage is listed")
        assert (SECRET_ADDRESS.encode() in tap.sent) is not curve
    finally:
        stage.close()
        hub.close()
        tap.close()
        coordinator.close()


def test_clients_without_the_right_keys_are_refused_and_counted() -> None:
    server_public, server_secret = zmq.curve_keypair()
    allowed = CurveClientKeys(server_public)
    coordinator = OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=5.0,
                                  curve=CurveServerKeys(server_public, server_secret, [allowed.public_key]))
    plain = OmniCoordClientForStage(coordinator.router_zmq_addr, "tcp://plain:1", "tcp://plain:2", 0)
    stranger = OmniCoordClientForStage(coordinator.router_zmq_addr, "tcp://stranger:1", "tcp://stranger:2", 0,
                                       curve=CurveClientKeys(server_public))
    member = OmniCoordClientForStage(coordinator.router_zmq_addr, "tcp://member:1", "tcp://member:2", 0,
                                     curve=allowed)
    try:
        eventually(lambda: coordinator.stats()["refused_peers"] >= 2, 10.0, "both strangers refused and counted")
        eventually(lambda: coordinator.stats()["registrations"] >= 1, 10.0, "the member registered")
        assert [r.input_addr for r in coordinator.get_active_replicas().replicas] == ["tcp://member:1"]
    finally:
        for client in (plain, stranger, member):
            client.close()
        coordinator.close()
