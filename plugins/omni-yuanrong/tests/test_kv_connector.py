"""YuanrongConnector against real datasystem workers on loopback."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from worker_support import CLIENT_TIMEOUTS, kv_extra, start_worker

from omni_core import ConfigError, ConnectorSpec, OmniConnectorFactory, SerializationError
from omni_core.testing import ChildConnector, assert_payload_equal, checksum, eventually, make_payload
from omni_yuanrong.kv_connector import ZERO_COPY_WRITE_BYTES, DatasystemUnavailableError, YuanrongConnector
from omni_yuanrong.netutil import free_port
from omni_yuanrong.testing import LocalDatasystemWorker

EDGE = ("0", "1")


def new_key(label: str = "k") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def connector(kv_spec: ConnectorSpec) -> Iterator[YuanrongConnector]:
    with OmniConnectorFactory.create_connector(kv_spec) as connector:
        assert isinstance(connector, YuanrongConnector)
        yield connector


@pytest.fixture
def raw_client(datasystem_worker: LocalDatasystemWorker) -> Any:
    """A bare KVClient on the session worker, to look behind the connector."""
    from yr.datasystem import KVClient

    client = KVClient(datasystem_worker.host, datasystem_worker.port, **CLIENT_TIMEOUTS)
    client.init()
    return client


def roundtrip(connector: YuanrongConnector, payload: Any) -> tuple[Any, int]:
    key = new_key()
    ok, size, metadata = connector.put(*EDGE, key, payload)
    assert ok and size > 0 and metadata is None
    result = connector.get(*EDGE, key)
    assert result is not None and result[1] == size
    return result


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.int64, torch.bool])
def test_tensors_keep_dtype_shape_and_bits(connector: YuanrongConnector, dtype: torch.dtype) -> None:
    tensor = (torch.randn(3, 5, 7) * 100).to(dtype)
    received, _ = roundtrip(connector, tensor)
    assert received.dtype == dtype and received.shape == tensor.shape
    assert torch.equal(received.view(torch.uint8), tensor.view(torch.uint8))


def test_bytes_and_dicts_of_tensors_roundtrip(connector: YuanrongConnector) -> None:
    payload = {
        "request_id": "req-1",
        "hidden": torch.randn(16, 64).to(torch.bfloat16),
        "kv": (torch.arange(12).reshape(3, 4), np.ones((2, 2), np.float16)),
        "blob": bytes(range(256)) * 3,
    }
    received, _ = roundtrip(connector, payload)
    assert_payload_equal(payload, received)
    assert roundtrip(connector, b"\x00raw bytes\xff")[0] == b"\x00raw bytes\xff"


def test_64_mib_payload_arrives_intact(connector: YuanrongConnector) -> None:
    tensor = torch.randint(0, 256, (64 << 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    digest = hashlib.sha256(tensor.numpy()).hexdigest()
    key = new_key("big")
    ok, size, _ = connector.put(*EDGE, key, tensor)
    assert ok and size > 64 << 20
    result = connector.get(*EDGE, key)
    assert result is not None
    assert hashlib.sha256(result[0].numpy()).hexdigest() == digest
    connector.cleanup(key)


@pytest.mark.parametrize("payload", [b"", torch.empty(0, 4), {}, "", 0], ids=["bytes", "tensor", "dict", "str", "zero"])
def test_zero_length_payloads_are_stored_as_non_empty_values(
    connector: YuanrongConnector, raw_client: Any, payload: Any
) -> None:
    key = new_key("empty")
    ok, size, _ = connector.put(*EDGE, key, payload)
    assert ok
    assert len(raw_client.get([f"{key}:0_1"])[0]) == size > 0  # the worker rejects empty values
    result = connector.get(*EDGE, key)
    assert result is not None
    assert checksum(result[0]) == checksum(payload)


def test_a_key_can_be_rewritten_across_the_inline_and_zero_copy_paths(connector: YuanrongConnector) -> None:
    key = new_key("rewrite")
    small, large = b"s" * 10, torch.ones(ZERO_COPY_WRITE_BYTES, dtype=torch.uint8)
    for payload in (small, large, small, large):  # the worker refuses such rewrites unless the old value goes first
        assert connector.put(*EDGE, key, payload)[0]
        assert checksum(connector.get(*EDGE, key)[0]) == checksum(payload)  # type: ignore[index]


def test_upstream_key_layout_on_the_worker(connector: YuanrongConnector, raw_client: Any) -> None:
    key = new_key("req")
    connector.put("2", "3", key, {"x": 1})
    assert raw_client.exist([f"{key}:2_3", f"{key}:3_2"]) == [True, False]


def test_keys_outside_the_worker_alphabet_roundtrip_without_colliding(connector: YuanrongConnector) -> None:
    base = new_key("odd")
    keys = [f"{base}.1", f"{base} 1", f"{base}%2E1", f"{base}é", f"{base}:0_1"]
    for index, key in enumerate(keys):
        assert connector.put(*EDGE, key, index)[0]
    assert [connector.get(*EDGE, key)[0] for key in keys] == list(range(len(keys)))  # type: ignore[index]


def test_a_key_too_long_for_the_worker_is_rejected(connector: YuanrongConnector) -> None:
    with pytest.raises(ValueError, match="255"):
        connector.put(*EDGE, "." * 150, b"x")


def test_missing_key_waits_then_returns_none(connector: YuanrongConnector) -> None:
    assert connector.get(*EDGE, new_key("missing")) is None
    assert connector.health()["misses"] == 1


def test_blocking_get_is_woken_by_a_late_producer_in_another_process(kv_spec: ConnectorSpec) -> None:
    key = new_key("late")
    consumer = YuanrongConnector({**kv_spec.extra, "get_sub_timeout_ms": 30_000})
    events: list[str] = []
    with ChildConnector(kv_spec) as producer:

        def put_late() -> None:
            time.sleep(0.5)
            events.append("put")
            assert producer.call({"op": "put", "from": "0", "to": "1", "key": key, "kind": "tensor_1mib"})["ok"]

        thread = threading.Thread(target=put_late)
        events.append("get")
        thread.start()  # runs while the get below blocks: the connector waits in GIL-releasing slices
        result = consumer.get(*EDGE, key)
        events.append("got")
        thread.join()
    assert events == ["get", "put", "got"]
    assert result is not None and checksum(result[0]) == checksum(make_payload("tensor_1mib"))
    consumer.close()


def test_concurrent_clients_in_several_processes(kv_spec: ConnectorSpec, connector: YuanrongConnector) -> None:
    writers = 3
    keys = [[new_key(f"w{w}r{r}") for r in range(4)] for w in range(writers)]
    kinds = ["tensor_1mib", "request_dict", "tensor_in_dict", "bytes"]
    children = [ChildConnector(kv_spec) for _ in range(writers)]
    try:

        def put_then_read_neighbour(index: int) -> list[dict[str, Any]]:
            child = children[index]
            for key, kind in zip(keys[index], kinds, strict=True):
                assert child.call({"op": "put", "from": "0", "to": "1", "key": key, "kind": kind})["ok"]
            neighbour = keys[(index + 1) % writers]
            return [child.call({"op": "get", "from": "0", "to": "1", "key": k, "timeout": 30}) for k in neighbour]

        with ThreadPoolExecutor(writers) as pool:
            answers = list(pool.map(put_then_read_neighbour, range(writers)))
    finally:
        for child in children:
            child.close()
    expected = [checksum(make_payload(kind)) for kind in kinds]
    assert [[a["checksum"] for a in answer] for answer in answers] == [expected] * writers
    for writer_keys in keys:
        got = [connector.get(*EDGE, key) for key in writer_keys]
        assert [checksum(r[0]) for r in got if r is not None] == expected


def test_cleanup_deletes_from_the_worker(connector: YuanrongConnector, kv_spec: ConnectorSpec, raw_client: Any) -> None:
    mine, theirs = new_key("mine"), new_key("theirs")
    connector.put(*EDGE, mine, b"1")
    connector.put(*EDGE, theirs, b"2")
    connector.cleanup(mine)  # a key this instance put
    with YuanrongConnector(kv_spec.extra) as other:
        other.cleanup(theirs, *EDGE)  # any instance, given the edge
    assert raw_client.exist([f"{mine}:0_1", f"{theirs}:0_1"]) == [False, False]
    assert connector.get(*EDGE, mine) is None


def test_a_consumer_can_clean_up_what_it_read(connector: YuanrongConnector, kv_spec: ConnectorSpec) -> None:
    key = new_key()
    connector.put(*EDGE, key, {"x": 1})
    with YuanrongConnector(kv_spec.extra) as consumer:
        assert consumer.get(*EDGE, key) is not None
        consumer.cleanup(key)
    assert connector.get(*EDGE, key) is None


def test_zero_copy_get_returns_views_into_worker_memory(kv_spec: ConnectorSpec) -> None:
    array = np.arange(1 << 18, dtype=np.float32)
    with YuanrongConnector({**kv_spec.extra, "zero_copy": True}) as connector:
        key = new_key("view")
        connector.put(*EDGE, key, {"t": torch.from_numpy(array), "a": array})
        result = connector.get(*EDGE, key)
        assert result is not None
        received = result[0]
        assert not received["a"].flags.writeable and not received["a"].flags.owndata
        connector.cleanup(key)  # the views keep the value's memory alive
        assert np.array_equal(received["a"], array) and torch.equal(received["t"], torch.from_numpy(array))


def test_a_value_not_written_by_the_connector_fails_to_decode(connector: YuanrongConnector, raw_client: Any) -> None:
    key = new_key("foreign")
    raw_client.set(f"{key}:0_1", b"not an omni frame")
    with pytest.raises(SerializationError):
        connector.get(*EDGE, key)
    assert connector.health()["errors"] == 1


def test_health_probes_the_worker(connector: YuanrongConnector) -> None:
    health = connector.health()
    assert health["status"] == "healthy" and health["port"] == connector.port
    connector.close()
    assert connector.health()["status"] == "unhealthy"
    with pytest.raises(RuntimeError, match="closed"):
        connector.put(*EDGE, new_key(), b"x")


@pytest.mark.timeout(120)
def test_worker_killed_mid_run_gives_a_clear_error(disposable_worker: LocalDatasystemWorker) -> None:
    connector = YuanrongConnector(kv_extra(disposable_worker, connect_timeout_ms=2000, req_timeout_ms=2000))
    key = new_key()
    assert connector.put(*EDGE, key, {"before": True})[0]
    disposable_worker.kill()
    assert connector.put(*EDGE, new_key(), b"after") == (False, 0, None)
    health = connector.health()
    assert health["status"] == "unhealthy" and disposable_worker.endpoint in health["reason"]
    assert "req_timeout_ms=2000" in health["last_error"] and "RPC unavailable" in health["last_error"]
    with pytest.raises(DatasystemUnavailableError, match=f"{disposable_worker.endpoint}.*req_timeout_ms=2000"):
        connector.get(*EDGE, key)
    assert connector.health()["timeouts"] == 2
    connector.close()


@pytest.mark.timeout(180)
def test_written_through_values_survive_a_worker_restart() -> None:
    """``write_mode: write_through`` on a worker with a second-level cache (and a metastore that outlives it, as
    etcd or a cluster's head does): every value is read back intact after the worker is SIGKILLed and restarted,
    through the same connector.  Evictable values (the default mode) are gone."""
    head = start_worker(shared_memory_mb=64)  # the cluster's metastore
    member = LocalDatasystemWorker.start(shared_memory_mb=256, metastore=head.metastore_address, l2_cache=True)
    kept = YuanrongConnector(kv_extra(member, write_mode="write_through"))
    evictable = YuanrongConnector(kv_extra(member))
    try:
        payloads = {new_key("kept"): make_payload(kind) for kind in ("tensor_bfloat16", "request_dict", "bytes")}
        payloads[new_key("kept-large")] = torch.arange(ZERO_COPY_WRITE_BYTES, dtype=torch.uint8)  # zero-copy path
        for key, payload in payloads.items():
            assert kept.put(*EDGE, key, payload)[0]
        gone = new_key("evictable")
        assert evictable.put(*EDGE, gone, b"in memory only")[0]
        member.kill()
        member.restart()
        for key, payload in payloads.items():
            result = kept.get_with_deadline(*EDGE, key, deadline=time.monotonic() + 10)
            assert result is not None, f"{key} was lost"
            assert checksum(result[0]) == checksum(payload), key
            kept.cleanup(key)
            assert kept.get(*EDGE, key) is None
        assert evictable.get(*EDGE, gone) is None
        assert kept.health()["status"] == "healthy" and kept.health()["quarantined_bytes"] == 0
    finally:
        kept.close()
        evictable.close()
        member.stop()
        head.stop()


def test_written_through_without_a_second_level_cache_is_refused(kv_spec: ConnectorSpec) -> None:
    with YuanrongConnector({**kv_spec.extra, "write_mode": "write_through"}) as through:
        assert through.put(*EDGE, new_key(), b"x") == (False, 0, None)
        assert "L2" in through.health()["last_error"], through.health()


def test_values_expire_after_ttl_seconds(kv_spec: ConnectorSpec) -> None:
    with YuanrongConnector({**kv_spec.extra, "ttl_seconds": 1}) as short_lived:
        key = new_key("ttl")
        assert short_lived.put(*EDGE, key, {"expires": True})[0]
        assert short_lived.get(*EDGE, key) is not None
        assert eventually(lambda: short_lived.get(*EDGE, key) is None, 10, "the value expired")


def test_host_auto_is_the_worker_on_this_hosts_address(
    datasystem_worker: LocalDatasystemWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_HOST_IP", datasystem_worker.host)  # the session worker listens on loopback
    with YuanrongConnector(kv_extra(datasystem_worker, host="auto")) as connector:
        assert connector.host == datasystem_worker.host and connector.health()["status"] == "healthy"


def test_no_worker_at_the_address_fails_at_construction() -> None:
    port = free_port()
    with pytest.raises(DatasystemUnavailableError, match=f"127.0.0.1:{port} within connect_timeout_ms=1000"):
        YuanrongConnector({"host": "127.0.0.1", "port": port, "connect_timeout_ms": 1000})


def test_config_values_expand_environment_variables(
    datasystem_worker: LocalDatasystemWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_TEST_YR_PORT", str(datasystem_worker.port))
    spec = ConnectorSpec("YuanrongConnector", {**kv_extra(datasystem_worker), "port": "${OMNI_TEST_YR_PORT}"})
    with OmniConnectorFactory.create_connector(spec) as connector:
        assert connector.port == datasystem_worker.port  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        ({"port": 70000}, ValueError, "1..65535"),
        ({"port": "${OMNI_TEST_UNSET_VAR}"}, ConfigError, "OMNI_TEST_UNSET_VAR"),
        ({"req_timeout_ms": 0}, ValueError, "req_timeout_ms"),
        ({"zero_copy": "yes"}, ConfigError, "zero_copy"),
        ({"write_mode": "sometimes"}, ValueError, "write_mode must be one of evict, memory, write_through"),
        ({"ttl_seconds": -1}, ValueError, "ttl_seconds must be >= 0"),
        ({"no_such_key": 1}, ConfigError, "no_such_key"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(extra: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        OmniConnectorFactory.create_connector(ConnectorSpec("YuanrongConnector", extra))


def test_missing_library_raises_import_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("yr", "yr.datasystem", "datasystem"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install omni-yuanrong") as info:
        YuanrongConnector({})
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(ImportError, match="pip install omni-yuanrong"):
        OmniConnectorFactory.create_connector(ConnectorSpec("YuanrongConnector", {}))
