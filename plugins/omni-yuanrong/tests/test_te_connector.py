"""YuanrongTransferEngineConnector: the data path on FakeAscendTransferEngine, the rest on the real library."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import torch
import zmq
from fake_ascend_engine import FakeAscendTransferEngine

from omni_core import ConfigError, ConnectorSpec, EnvVarExpansionError, OmniConnectorFactory, resolve_host
from omni_yuanrong import te_connector
from omni_yuanrong.netutil import free_port
from omni_yuanrong.te_connector import YuanrongTransferEngineConnector
from omni_yuanrong.te_control import ACK_ERROR, CLEANUP_KEY, QUERY_INFO, encode_request
from omni_yuanrong.te_device import NPUUnavailableError
from omni_yuanrong.te_engine import TransferEngineError, real_engine
from omni_yuanrong.te_payload import RawPayloadBuffer

EDGE = ("0", "1")
HOST_POOL = {"host": "127.0.0.1", "memory_pool_device": "cpu", "memory_pool_size": 8 << 20}


def fake(config: dict[str, Any]) -> YuanrongTransferEngineConnector:
    return YuanrongTransferEngineConnector({**HOST_POOL, **config}, engine_factory=FakeAscendTransferEngine)


@pytest.fixture
def sender() -> Iterator[YuanrongTransferEngineConnector]:
    with fake({"role": "sender"}) as connector:
        yield connector


@pytest.fixture
def receiver(sender: YuanrongTransferEngineConnector) -> Iterator[YuanrongTransferEngineConnector]:
    config = {"role": "receiver", "sender_host": "127.0.0.1", "sender_zmq_port": sender.zmq_port}
    with fake(config) as connector:
        yield connector


def wait_until(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- the data path (fake engine) ---------------------------------------------------
def test_a_tensor_arrives_raw_with_dtype_and_shape(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector
) -> None:
    tensor = torch.randn(8, 16).to(torch.bfloat16)
    ok, size, metadata = sender.put(*EDGE, "t", tensor)
    assert ok and size == tensor.numel() * 2 and metadata is not None
    assert metadata["is_fast_path"] and metadata["dtype"] == "bfloat16" and metadata["shape"] == [8, 16]
    result = receiver.get(*EDGE, "t", metadata)
    assert result is not None
    buffer, got_size = result
    assert isinstance(buffer, RawPayloadBuffer) and got_size == size
    with buffer:
        assert buffer.view().data_ptr() == receiver.base_ptr + buffer.offset  # a view into the pool
        assert torch.equal(buffer.to_payload().view(torch.int16), tensor.view(torch.int16))
    assert receiver.allocator.used_bytes == 0 and sender.allocator.used_bytes == 0


def test_reads_consume_and_free_the_senders_copy(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector
) -> None:
    _, _, metadata = sender.put(*EDGE, "once", {"x": [1, 2, 3]})
    assert sender.health()["pending"] == 1
    assert receiver.get(*EDGE, "once", metadata) == ({"x": [1, 2, 3]}, metadata["data_size"])  # type: ignore[index]
    assert sender.health()["pending"] == 0 and sender.allocator.used_bytes == 0
    assert receiver.get(*EDGE, "once", metadata) is None


@pytest.mark.parametrize(
    "payload", [b"", torch.empty(0, 3), {}, "", None], ids=["bytes", "tensor", "dict", "str", "none"]
)
def test_empty_payloads_travel_as_frames(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector, payload: Any
) -> None:
    ok, size, metadata = sender.put(*EDGE, "empty", payload)
    assert ok and size > 0 and not metadata["is_fast_path"]  # type: ignore[index]
    result = receiver.get(*EDGE, "empty")
    assert result is not None and type(result[0]) is type(payload)


def test_the_receiver_needs_to_know_its_sender(sender: YuanrongTransferEngineConnector) -> None:
    sender.put(*EDGE, "k", b"data")
    with fake({"role": "receiver"}) as receiver:
        with pytest.raises(ValueError, match="update_sender_info"):
            receiver.get(*EDGE, "k")
        receiver.update_sender_info("127.0.0.1", sender.zmq_port)  # type: ignore[arg-type]
        result = receiver.get(*EDGE, "k")
        assert result is not None and result[0].to_payload() == b"data"
        result[0].release()


def test_a_receiver_does_not_put(receiver: YuanrongTransferEngineConnector) -> None:
    assert receiver.put(*EDGE, "k", b"x") == (False, 0, None)
    assert receiver.health()["errors"] == 1


def test_a_full_pool_refuses_puts_until_space_is_freed(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector
) -> None:
    chunk = torch.zeros(3 << 20, dtype=torch.uint8)
    assert sender.put(*EDGE, "a", chunk)[0] and sender.put(*EDGE, "b", chunk)[0]
    assert sender.put(*EDGE, "c", chunk) == (False, 0, None)
    result = receiver.get(*EDGE, "a")
    assert result is not None
    result[0].release()
    assert sender.put(*EDGE, "c", chunk)[0]


def test_cleanup_frees_every_edge_of_a_request(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector
) -> None:
    for edge in (("0", "1"), ("0", "2"), ("1", "2")):
        sender.put(*edge, "req", b"x")
    sender.put(*EDGE, "other", b"y")
    sender.cleanup("req", "0", "2")
    assert sender.health()["pending"] == 3
    sender.cleanup("req")
    assert sender.health()["pending"] == 1
    assert receiver.get(*EDGE, "req") is None


def test_a_free_the_sender_did_not_answer_is_asked_again_with_the_next_read(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = te_connector.request
    sender_cut_off = True

    def request(context: Any, endpoint: str, message: bytes, timeout_ms: int) -> bytes:
        if sender_cut_off and message.startswith(CLEANUP_KEY):
            raise TimeoutError(f"TransferEngine sender at {endpoint} did not answer within {timeout_ms} ms")
        return answered(context, endpoint, message, timeout_ms)

    monkeypatch.setattr(te_connector, "request", request)
    _, _, metadata = sender.put(*EDGE, "first", b"one")
    result = receiver.get(*EDGE, "first", metadata)
    assert result is not None and result[0].to_payload() == b"one"
    result[0].release()
    assert receiver.health()["unreleased"] == 1 and receiver.health()["timeouts"] == 1
    assert sender.health()["pending"] == 1  # leased to the reader, so no second reader gets it
    assert receiver.get(*EDGE, "first", metadata) is None
    sender_cut_off = False
    _, _, metadata = sender.put(*EDGE, "second", b"two")
    result = receiver.get(*EDGE, "second", metadata)
    assert result is not None and result[0].to_payload() == b"two"
    result[0].release()
    assert receiver.health()["unreleased"] == 0 and sender.health()["pending"] == 0


def test_unclaimed_payloads_are_reclaimed_after_the_ttl() -> None:
    with fake({"role": "sender", "buffer_ttl_seconds": 0.2}) as sender:
        sender.put(*EDGE, "forgotten", b"x" * 1000)
        assert wait_until(lambda: sender.health()["pending"] == 0)
        assert sender.allocator.used_bytes == 0


def test_a_dead_sender_is_a_timeout_not_a_miss(sender: YuanrongTransferEngineConnector) -> None:
    _, _, metadata = sender.put(*EDGE, "k", b"x")
    sender.close()
    with fake({"role": "receiver", "control_timeout_ms": 300}) as receiver:
        with pytest.raises(TimeoutError, match="300 ms"):
            receiver.get(*EDGE, "k", metadata)
        assert receiver.health()["timeouts"] == 1


def test_malformed_control_messages_are_answered_and_counted(
    sender: YuanrongTransferEngineConnector, receiver: YuanrongTransferEngineConnector
) -> None:
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"tcp://127.0.0.1:{sender.zmq_port}")
    bad = [b"garbage", QUERY_INFO + b"\xc1", QUERY_INFO + msgpack.packb({"request_id": "a/b"}), b"cleanup_key\x80"]
    replies = []
    for frame in bad:
        socket.send(frame)
        replies.append(socket.recv())
    socket.send(encode_request(b"cleanup_key", "never-put@0_1"))
    replies.append(socket.recv())
    socket.close()
    assert all(reply.startswith(ACK_ERROR) for reply in replies)
    health = sender.health()
    assert health["control_errors"] == len(bad) and health["status"] == "healthy"
    _, _, metadata = sender.put(*EDGE, "still-works", {"ok": True})
    assert receiver.get(*EDGE, "still-works", metadata) == ({"ok": True}, metadata["data_size"])  # type: ignore[index]


# -- configuration -------------------------------------------------------------------
def test_auto_ports_are_bound_and_advertised(sender: YuanrongTransferEngineConnector) -> None:
    info = sender.get_connection_info()
    assert info["role"] == "sender" and info["zmq_port"] > 0 and info["rpc_port"] > 0
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"tcp://127.0.0.1:{info['zmq_port']}")
    socket.send(encode_request(QUERY_INFO, "nothing@0_1"))
    assert socket.recv() == b"info_not_found"
    socket.close()


def test_values_expand_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("OMNI_TEST_TE_HOST", "127.0.0.1")
    monkeypatch.setenv("OMNI_TEST_TE_PORT", str(port))
    with fake({"host": "${OMNI_TEST_TE_HOST}", "zmq_port": "${OMNI_TEST_TE_PORT}"}) as connector:
        assert connector.get_connection_info()["zmq_port"] == port and connector.host == "127.0.0.1"
    with pytest.raises(EnvVarExpansionError, match="OMNI_TEST_TE_UNSET"):
        fake({"zmq_port": "${OMNI_TEST_TE_UNSET}"})


def test_auto_host_is_this_machines_address() -> None:
    with fake({"host": "auto", "role": "receiver"}) as connector:
        assert connector.host == resolve_host(None)


def test_a_taken_zmq_port_is_reported(sender: YuanrongTransferEngineConnector) -> None:
    with pytest.raises(OSError, match=f"127.0.0.1:{sender.zmq_port}"):
        fake({"role": "sender", "zmq_port": sender.zmq_port})


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"role": "both"}, "role"),
        ({"memory_pool_device": "cuda:0"}, "memory_pool_device"),
        ({"zmq_port": 0}, "1..65535"),
    ],
)
def test_bad_settings_are_rejected(extra: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fake(extra)


def test_unknown_keys_are_rejected_by_the_registration() -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        OmniConnectorFactory.create_connector(ConnectorSpec("YuanrongTransferEngineConnector", {"no_such_key": 1}))


def test_declared_capabilities_match_the_registration() -> None:
    registration = OmniConnectorFactory.registration("YuanrongTransferEngineConnector")
    assert registration is not None
    assert registration.capabilities == YuanrongTransferEngineConnector.capabilities
    assert YuanrongTransferEngineConnector.supports_raw_data


# -- the real library (no NPU here) --------------------------------------------------
no_npu = pytest.mark.skipif(
    importlib.util.find_spec("torch_npu") is not None, reason="these tests describe a host without an Ascend NPU"
)


@no_npu
def test_without_an_npu_the_default_config_says_what_hardware_is_needed() -> None:
    with pytest.raises(NPUUnavailableError, match="Ascend NPU") as info:
        OmniConnectorFactory.create_connector(ConnectorSpec("YuanrongTransferEngineConnector", {"host": "127.0.0.1"}))
    assert "torch_npu" in str(info.value)


def test_a_host_pool_needs_the_test_hook() -> None:
    with pytest.raises(ValueError, match="injected engine"):
        YuanrongTransferEngineConnector({**HOST_POOL, "role": "sender"})


@pytest.fixture
def real_sender() -> Iterator[YuanrongTransferEngineConnector]:
    config = {**HOST_POOL, "role": "sender", "device_name": "npu:0"}
    with YuanrongTransferEngineConnector(config, engine_factory=real_engine) as connector:
        yield connector


@no_npu
def test_real_engine_initializes_registers_and_serves_the_control_plane(
    real_sender: YuanrongTransferEngineConnector,
) -> None:
    assert real_sender.health()["status"] == "healthy" and real_sender.rpc_port > 0
    ok, _, metadata = real_sender.put(*EDGE, "k", torch.arange(1000, dtype=torch.float32))
    assert ok and metadata is not None and metadata["source_rpc_port"] == real_sender.rpc_port
    config = {**HOST_POOL, "role": "receiver", "device_name": "npu:1"}
    with YuanrongTransferEngineConnector(config, engine_factory=real_engine) as receiver:
        with pytest.raises(TransferEngineError, match="Ascend NPU") as info:
            receiver.get(*EDGE, "k", metadata)  # the query succeeds; the NPU-only read cannot
        assert "batch_transfer_sync_read" in str(info.value) and "libascendcl" in str(info.value)
        assert receiver.allocator.used_bytes == 0 and receiver.health()["errors"] == 1
    assert real_sender.health()["pending"] == 1  # leased, not lost: freed by its TTL or cleanup
    real_sender.cleanup("k")


def test_real_engine_reports_a_taken_rpc_port(real_sender: YuanrongTransferEngineConnector) -> None:
    config = {**HOST_POOL, "role": "receiver", "rpc_port": real_sender.rpc_port, "device_name": "npu:1"}
    with pytest.raises(TransferEngineError, match="bind failed"):
        YuanrongTransferEngineConnector(config, engine_factory=real_engine)
