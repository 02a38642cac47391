"""Stage client against a bare ROUTER: registration, updates, heartbeats, reconnects, close."""

from __future__ import annotations

import json
from collections.abc import Callable
from unittest import mock

import pytest
import zmq
from coord_helpers import eventually, recv_json

from omni_coordinator import OmniCoordClientForStage, ReplicaStatus, create_stage_coord_client
from omni_coordinator.messages import RegistrationReply, encode_registration_reply

Router = tuple[zmq.Socket, str]
MakeStage = Callable[..., OmniCoordClientForStage]


def test_registers_on_construction(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    make_stage(addr, 7000, stage_id=2)
    assert recv_json(sock) == {"input_addr": "tcp://127.0.0.1:7000", "output_addr": "tcp://127.0.0.1:7001",
                               "stage_id": 2, "event_type": "update", "status": "up", "queue_length": 0}


def test_update_info_sends_each_change(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000)
    recv_json(sock)
    client.update_info(status=ReplicaStatus.ERROR)
    client.update_info(queue_length=10)
    first, second = recv_json(sock), recv_json(sock)
    assert (first["event_type"], first["status"], first["queue_length"]) == ("update", "error", 0)
    assert (second["status"], second["queue_length"]) == ("error", 10)


@pytest.mark.parametrize("bad", [-1, True, 2.5, "3"])
def test_update_info_rejects_bad_queue_lengths_at_the_source(raw_router: Router, make_stage: MakeStage, bad) -> None:
    client = make_stage(raw_router[1], 7000)
    with pytest.raises(ValueError, match="non-negative int"):
        client.update_info(queue_length=bad)


def test_update_info_needs_something_to_update(raw_router: Router, make_stage: MakeStage) -> None:
    with pytest.raises(ValueError, match="status or queue_length"):
        make_stage(raw_router[1], 7000).update_info()


def test_close_sends_down_and_closes_the_socket(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000)
    recv_json(sock)
    client.close()
    assert recv_json(sock)["status"] == "down"
    assert client._socket.closed
    with pytest.raises(RuntimeError, match="already closed"):
        client.close()


def test_update_info_while_closing_is_refused(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000)
    client._closing = True
    with pytest.raises(RuntimeError, match="closing"):
        client.update_info(queue_length=1)
    client._closing = False


def test_send_failure_reconnects_once_and_retries(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000)
    failing = mock.Mock(side_effect=[zmq.ZMQError(zmq.ENOTSOCK), None])
    with mock.patch.object(client, "_reconnect", return_value=True) as reconnect, \
            mock.patch.object(client, "_socket", mock.Mock(send=failing)):
        client.update_info(queue_length=3)
    reconnect.assert_called_once_with(max_retries=3)
    assert failing.call_count == 2


def test_reconnect_failure_propagates_the_send_error(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000)
    broken = mock.Mock(send=mock.Mock(side_effect=RuntimeError("socket gone")))
    with mock.patch.object(client, "_reconnect", return_value=False), mock.patch.object(client, "_socket", broken):
        with pytest.raises(RuntimeError, match="socket gone"):
            client.update_info(queue_length=3)


def test_reconnect_attempts_exactly_max_retries(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000)
    with mock.patch.object(client, "_connect", side_effect=RuntimeError("refused")) as connect, \
            mock.patch("omni_coordinator.stage_client.time.sleep") as sleep:
        assert client._reconnect(max_retries=3, retry_interval=5.0) is False
    assert connect.call_count == 3
    assert sleep.call_count == 2
    client._ctx, client._socket = client._connect()  # let the fixture close a real socket


def test_close_succeeds_when_the_final_update_fails(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000)
    with mock.patch.object(client, "_send_event", side_effect=RuntimeError("boom")):
        client.close()
    assert client._closed


def test_heartbeat_loop_survives_a_failing_send(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000, heartbeat_interval=0.05)
    recv_json(sock)
    real_send = client._send_event
    calls = []

    def flaky(event_type: str) -> None:
        calls.append(event_type)
        if len(calls) == 1:
            raise zmq.ZMQError(zmq.EAGAIN, "first heartbeat fails")
        real_send(event_type)

    with mock.patch.object(client, "_send_event", side_effect=flaky):
        assert recv_json(sock)["event_type"] == "heartbeat"
    assert calls[:2] == ["heartbeat", "heartbeat"]


def test_heartbeats_carry_the_replicas_own_status(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000, heartbeat_interval=0.05)
    recv_json(sock)
    client.update_info(status=ReplicaStatus.ERROR)
    recv_json(sock)
    beat = recv_json(sock)
    assert (beat["event_type"], beat["status"]) == ("heartbeat", "error")


def test_heartbeat_interval_follows_the_coordinators_timeout(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000)
    assert client.heartbeat_interval == 5.0  # upstream's default until the coordinator says otherwise
    identity, _ = sock.recv_multipart()
    sock.send_multipart([identity, encode_registration_reply(RegistrationReply(heartbeat_timeout=0.6, epoch=42))])
    eventually(lambda: client.coordinator_epoch == 42, 5.0, "registration reply read")
    assert client.heartbeat_interval == pytest.approx(0.2)
    assert recv_json(sock)["event_type"] == "heartbeat"  # well before the old 5 s


def test_heartbeat_timeout_parameter_caps_the_interval(raw_router: Router, make_stage: MakeStage) -> None:
    client = make_stage(raw_router[1], 7000, heartbeat_interval=10.0, heartbeat_timeout=1.5)
    assert client.heartbeat_interval == pytest.approx(0.5)


def test_garbage_replies_are_ignored(raw_router: Router, make_stage: MakeStage) -> None:
    sock, addr = raw_router
    client = make_stage(addr, 7000, heartbeat_interval=0.05)
    identity, _ = sock.recv_multipart()
    sock.send_multipart([identity, b"\x00garbage"])
    assert recv_json(sock)["event_type"] == "heartbeat"
    assert client.coordinator_epoch is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input_addr": ""}, "input_addr"), ({"stage_id": -1}, "stage_id"), ({"heartbeat_interval": 0}, "interval"),
])
def test_constructor_validates(raw_router: Router, kwargs: dict, match: str) -> None:
    args = {"coord_zmq_addr": raw_router[1], "input_addr": "tcp://a:1", "output_addr": "tcp://a:2", "stage_id": 0}
    with pytest.raises(ValueError, match=match):
        OmniCoordClientForStage(**{**args, **kwargs})


def test_unparseable_address_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="cannot connect"):
        OmniCoordClientForStage("nonsense://", "tcp://a:1", "tcp://a:2", 0)


def test_queue_length_getter_feeds_heartbeats(raw_router: Router) -> None:
    sock, addr = raw_router
    values = iter([4, -2, "x", 6])

    def getter() -> int:
        value = next(values, 6)
        if value == "x":
            raise OSError("scheduler gone")
        return value

    client = create_stage_coord_client(coord_zmq_addr=addr, input_addr="tcp://a:1", output_addr="tcp://a:2",
                                       stage_id=0, queue_length_getter=getter, heartbeat_interval=0.05)
    try:
        recv_json(sock)
        beats = [recv_json(sock)["queue_length"] for _ in range(4)]
    finally:
        client.close()
    # a negative value and a raising getter are rejected: the previous value is sent instead
    assert beats == [4, 4, 4, 6]
    assert json.loads(sock.recv_multipart()[-1])["status"] == "down"
