"""Behaviours upstream's tests/distributed/omni_connectors/test_shm_connector.py (and friends) pin."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import SHM, session_entries

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_shm import names


def test_factory_creates_connector_by_name(namespace: str) -> None:
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": namespace}))
    try:
        assert type(connector).__name__ == "SharedMemoryConnector"
        assert connector.stage_id == -1
    finally:
        connector.close()


def test_put_then_key_based_get(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    ok, size, _ = producer.put("0", "1", "req-1", {"x": [1, 2, 3]})
    assert ok and size > 0
    assert producer.health()["pending"] == 1
    result = consumer.get("0", "1", "req-1", None)
    assert result == ({"x": [1, 2, 3]}, size)
    assert consumer.health()["gets"] == 1
    assert producer.reap_consumed() >= 1
    assert producer.health()["pending"] == 0


def test_metadata_is_a_handle_without_inline_bytes(make_connector) -> None:
    ok, size, metadata = make_connector().put("0", "1", "req-small", b"tiny")
    assert ok
    assert metadata == {"shm": {"name": "req-small", "size": size}, "size": size}
    assert "inline_bytes" not in metadata


@pytest.mark.parametrize("payload", [torch.arange(6, dtype=torch.float32), 0, {}, b""], ids=repr)
def test_consumed_payload_leaves_no_entry(make_connector, payload) -> None:
    connector = make_connector()
    assert connector.put("0", "1", "req", payload)[0]
    result = connector.get("0", "1", "req")
    assert result is not None
    if isinstance(payload, torch.Tensor):
        assert torch.equal(result[0], payload)
    else:
        assert result[0] == payload and type(result[0]) is type(payload)
    assert not os.path.lexists(os.path.join(SHM, names.key_entry_name(connector.settings.namespace, "req")))
    assert connector.get("0", "1", "req") is None


def test_missing_key_returns_none(make_connector) -> None:
    assert make_connector().get("0", "1", "never-put") is None


RDMA_STYLE = {"source_host": "10.0.0.1", "source_port": 5}


@pytest.mark.parametrize("metadata", [None, {}, {"unknown": 1}, "not-a-dict", RDMA_STYLE])
def test_unusable_metadata_falls_back_to_the_key(make_connector, metadata) -> None:
    producer, consumer = make_connector(), make_connector()
    assert consumer.get("0", "1", "absent", metadata) is None
    ok, size, _ = producer.put("0", "1", "present", [1])
    assert ok
    assert consumer.get("0", "1", "present", metadata) == ([1], size)


def test_shm_handle_and_wrapped_handle(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    _, _, metadata = producer.put("0", "1", "a", "alpha")
    assert consumer.get("0", "1", "a", metadata)[0] == "alpha"
    _, _, metadata = producer.put("0", "1", "b", "beta")
    assert consumer.get("0", "1", "b", {"b": metadata})[0] == "beta"


def test_handle_names_the_key_to_read(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    _, _, metadata = producer.put("0", "1", "real-key", "payload")
    assert consumer.get("0", "1", "other-key", metadata)[0] == "payload"


def test_not_yet_sized_segment_reads_as_absent(make_connector, namespace) -> None:
    """Upstream's "cannot mmap an empty file" race: a key whose segment exists but holds nothing yet."""
    consumer = make_connector()
    slab = names.slab_name(namespace)
    open(os.path.join(SHM, slab), "wb").close()  # an empty slab, as if its writer had not sized it yet
    entry = os.path.join(SHM, names.key_entry_name(namespace, "racy"))
    os.symlink(names.Location(slab, 0, 1).target(), entry)
    try:
        assert consumer.get("0", "1", "racy") is None
        assert not os.path.lexists(entry), "an entry that can never be read is removed"
    finally:
        os.unlink(os.path.join(SHM, slab))


def test_rank_aware_keys_are_independent(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    keys = [f"req-7_0_0_{src}_{dst}" for src in (0, 1) for dst in (0, 1)]
    for i, key in enumerate(keys):
        assert producer.put("0", "1", key, {"rank": i})[0]
    for i, key in reversed(list(enumerate(keys))):
        assert consumer.get("0", "1", key)[0] == {"rank": i}


def test_hetero_tp_two_senders_one_receiver(make_connector) -> None:
    senders, receiver = [make_connector(), make_connector()], make_connector()
    for rank, sender in enumerate(senders):
        assert sender.put("0", "1", f"req_0_0_{rank}_0", torch.full((4,), float(rank)))[0]
    parts = [receiver.get("0", "1", f"req_0_0_{rank}_0")[0] for rank in range(2)]
    assert torch.equal(torch.cat(parts), torch.tensor([0.0] * 4 + [1.0] * 4))


def test_hetero_tp_one_sender_two_receivers(make_connector) -> None:
    sender, receivers = make_connector(), [make_connector(), make_connector()]
    for rank in range(2):
        assert sender.put("0", "1", f"req_0_0_0_{rank}", {"half": rank})[0]
    assert [r.get("0", "1", f"req_0_0_0_{i}")[0] for i, r in enumerate(receivers)] == [{"half": 0}, {"half": 1}]


def test_cleanup_is_exact_key_only(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    for key in ("req_42", "cleanup_req_42", "omni_0_to_1_kv_cache_req_42", "req_42_0"):
        assert producer.put("0", "1", key, key)[0]
    producer.cleanup("req_42")
    assert consumer.get("0", "1", "req_42") is None
    for key in ("cleanup_req_42", "omni_0_to_1_kv_cache_req_42", "req_42_0"):
        assert consumer.get("0", "1", key)[0] == key
    producer.reap_consumed()
    assert producer.health()["pending"] == 0


def test_cleanup_after_consumption_is_a_noop(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    producer.put("0", "1", "k", 1)
    assert consumer.get("0", "1", "k")[0] == 1
    producer.cleanup("k")
    producer.cleanup("k")
    assert producer.health()["status"] == "healthy"


def test_close_removes_unconsumed_payloads(make_connector, namespace) -> None:
    producer, consumer = make_connector(), make_connector()
    for i in range(5):
        assert producer.put("0", "1", f"pending-{i}", torch.zeros(1000))[0]
    assert len(session_entries()) >= 6  # five key entries and at least one slab
    producer.close()
    assert not [n for n in session_entries() if n.startswith(f"omni-{namespace}-")]
    assert all(consumer.get("0", "1", f"pending-{i}") is None for i in range(5))


def test_health_counts(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    producer.put("0", "1", "a", b"12345")
    consumer.get("0", "1", "a")
    health, read = producer.health(), consumer.health()
    assert health["status"] == "healthy"
    assert (health["puts"], health["errors"], health["orphans_reclaimed"]) == (1, 0, 0)
    assert health["bytes_transferred"] == read["bytes_received"] > 5
    assert read["gets"] == 1
    producer.close()
    assert producer.health()["status"] == "unhealthy"


def test_closed_connector_refuses_put_and_get(make_connector) -> None:
    connector = make_connector()
    connector.close()
    with pytest.raises(RuntimeError, match="closed"):
        connector.put("0", "1", "k", 1)
    with pytest.raises(RuntimeError, match="closed"):
        connector.get("0", "1", "k")


@pytest.mark.parametrize("bad", ["a/b", "nul\x00", "k" * 201, "", 42])
def test_bad_keys_raise_naming_the_key(make_connector, bad) -> None:
    connector = make_connector()
    for call in (
        lambda: connector.put("0", "1", bad, 1),
        lambda: connector.get("0", "1", bad),
        lambda: connector.cleanup(bad),
    ):
        with pytest.raises(ValueError, match="key"):
            call()


def test_keys_too_long_for_a_file_name_still_work(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    key = "ключ-" * 40  # 200 characters, 360 bytes of UTF-8: more than a file name can hold
    assert producer.put("0", "1", key, "long")[0]
    assert consumer.get("0", "1", key)[0] == "long"


@pytest.mark.parametrize(
    "extra",
    [{"namespace": "has-dash"}, {"namespace": ""}, {"readers": 0}, {"shm_dir": "/no/such/dir"}, {"ttl_seconds": -1}],
)
def test_bad_config_is_rejected(namespace, extra) -> None:
    with pytest.raises(ValueError):
        OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": namespace, **extra}))
