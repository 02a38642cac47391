"""CURVE: keyed peers are served, peers without the right keys are refused."""

from __future__ import annotations

import pytest
import zmq
import zmq.auth
from coord_helpers import addrs, eventually

from omni_coordinator import CurveClientKeys, CurveServerKeys

SERVER_PUBLIC, SERVER_SECRET = zmq.curve_keypair()


def served_after_keyed_traffic(coordinator, make_stage, make_hub, **hub_kwargs) -> None:
    """Register one properly keyed replica and wait until it and several of its heartbeats went through."""
    keyed_hub = make_hub(coordinator.pub_zmq_addr, curve=CurveClientKeys(SERVER_PUBLIC))
    make_stage(coordinator.router_zmq_addr, 7000, curve=CurveClientKeys(SERVER_PUBLIC), heartbeat_interval=0.05)
    eventually(lambda: addrs(keyed_hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 5.0, "keyed replica")
    seen = coordinator.stats()["events"]
    eventually(lambda: coordinator.stats()["events"] >= seen + 5, 5.0, "keyed heartbeats")


@pytest.mark.parametrize(
    "stage_keys",
    [None, CurveClientKeys(zmq.curve_keypair()[0])],
    ids=["plaintext", "wrong-server-key"],
)
def test_stage_without_the_right_keys_is_refused(make_coordinator, make_stage, make_hub, stage_keys) -> None:
    coordinator = make_coordinator(curve=CurveServerKeys(SERVER_PUBLIC, SERVER_SECRET))
    make_stage(coordinator.router_zmq_addr, 7100, curve=stage_keys, heartbeat_interval=0.05)
    served_after_keyed_traffic(coordinator, make_stage, make_hub)
    assert addrs(coordinator.get_active_replicas()) == {"tcp://127.0.0.1:7000"}
    assert coordinator.stats()["registrations"] == 1


def test_hub_without_keys_receives_nothing(make_coordinator, make_stage, make_hub) -> None:
    coordinator = make_coordinator(curve=CurveServerKeys(SERVER_PUBLIC, SERVER_SECRET), keepalive_interval=0.1)
    plain_hub = make_hub(coordinator.pub_zmq_addr)
    served_after_keyed_traffic(coordinator, make_stage, make_hub)
    published = coordinator.stats()["published"]
    eventually(lambda: coordinator.stats()["published"] >= published + 3, 5.0, "three more keep-alives")
    assert plain_hub.get_replica_list().timestamp == 0.0 and plain_hub.stats()["applied"] == 0


def test_allow_list_refuses_unlisted_client_keys(make_coordinator, make_stage, make_hub) -> None:
    allowed = CurveClientKeys(SERVER_PUBLIC)
    coordinator = make_coordinator(curve=CurveServerKeys(SERVER_PUBLIC, SERVER_SECRET, [allowed.public_key]))
    make_stage(coordinator.router_zmq_addr, 7100, curve=CurveClientKeys(SERVER_PUBLIC), heartbeat_interval=0.05)
    hub = make_hub(coordinator.pub_zmq_addr, curve=allowed)
    make_stage(coordinator.router_zmq_addr, 7000, curve=allowed, heartbeat_interval=0.05)
    eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 5.0, "listed client served")
    seen = coordinator.stats()["events"]
    eventually(lambda: coordinator.stats()["events"] >= seen + 5, 5.0, "listed client's heartbeats")
    assert coordinator.stats()["registrations"] == 1


def test_keys_load_from_certificate_files(tmp_path, make_coordinator, make_stage, make_hub) -> None:
    (tmp_path / "server").mkdir()
    clients = tmp_path / "clients"
    clients.mkdir()
    server_public_file, server_secret_file = zmq.auth.create_certificates(tmp_path / "server", "coordinator")
    client_public_file, client_secret_file = zmq.auth.create_certificates(clients, "stage")
    keys = CurveServerKeys.from_files(server_secret_file, str(clients))
    assert keys.authorized_client_keys == {zmq.auth.load_certificate(client_public_file)[0]}
    assert repr(keys.secret_key)[2:-1] not in repr(keys)  # secrets stay out of logs
    coordinator = make_coordinator(curve=keys)
    client_keys = CurveClientKeys.from_files(server_public_file, client_secret_file)
    hub = make_hub(coordinator.pub_zmq_addr, curve=client_keys)
    make_stage(coordinator.router_zmq_addr, 7000, curve=client_keys)
    eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 5.0, "file-keyed replica")
    with pytest.raises(ValueError, match="no secret key"):
        CurveServerKeys.from_files(server_public_file)


@pytest.mark.parametrize("bad", ["short", b"x" * 41])
def test_malformed_keys_are_rejected(bad) -> None:
    with pytest.raises(ValueError, match="40-character"):
        CurveClientKeys(bad)
    with pytest.raises(ValueError, match="40-character"):
        CurveServerKeys(SERVER_PUBLIC, SERVER_SECRET, [bad])


def test_client_keypair_is_all_or_nothing() -> None:
    with pytest.raises(ValueError, match="both"):
        CurveClientKeys(SERVER_PUBLIC, public_key=SERVER_PUBLIC)
