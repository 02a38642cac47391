"""Payload kinds across processes, and slab reuse (no per-message segment churn)."""

from __future__ import annotations

import pytest
import torch
from children import Child

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.int8,
    torch.uint8,
    torch.int64,
    torch.bool,
    torch.complex64,
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tensor_dtypes_round_trip(make_connector, dtype) -> None:
    producer, consumer = make_connector(), make_connector()
    source = torch.randn(3, 5).to(dtype) if dtype is not torch.complex64 else torch.randn(3, 5, dtype=dtype)
    producer.put("0", "1", "t", {"tensor": source, "dims": (3, 5)})
    received = consumer.get("0", "1", "t")[0]
    assert received["tensor"].dtype == dtype and received["dims"] == (3, 5)
    assert torch.equal(received["tensor"].view(torch.uint8), source.view(torch.uint8))


@pytest.mark.parametrize("payload", [b"", {}, 0, None, [], torch.empty(0, 4)], ids=repr)
def test_empty_payloads(make_connector, payload) -> None:
    producer, consumer = make_connector(), make_connector()
    ok, size, _ = producer.put("0", "1", "empty", payload)
    assert ok and size > 0
    received, got_size = consumer.get("0", "1", "empty")
    assert got_size == size
    if isinstance(payload, torch.Tensor):
        assert received.shape == payload.shape
    else:
        assert received == payload and type(received) is type(payload)


def test_big_tensor_from_another_process(make_connector, namespace) -> None:
    consumer = make_connector()
    with Child({"namespace": namespace}) as writer:
        n = 16 << 20  # 64 MiB of float32
        assert writer.call({"op": "put", "key": "big", "payload": {"kind": "tensor", "n": n, "value": 2}})["ok"]
        tensor = consumer.get("0", "1", "big")[0]
        assert tensor.numel() == n and bool((tensor == 2).all())


def test_small_payloads_reuse_one_arena(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    for i in range(3000):
        producer.put("0", "1", f"small-{i}", {"i": i, "pad": b"x" * 1000})
        assert consumer.get("0", "1", f"small-{i}")[0]["i"] == i
    assert producer.health()["shm_bytes"] == producer.settings.arena_bytes


def test_big_payloads_reuse_their_slab(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    for i in range(10):
        producer.put("0", "1", f"big-{i}", torch.full((2 << 20,), float(i)))
        assert float(consumer.get("0", "1", f"big-{i}")[0][0]) == i
    assert producer.health()["shm_bytes"] == 9 << 20  # one 9 MiB slab, written ten times


def test_idle_slabs_beyond_the_budget_are_released(make_connector) -> None:
    producer, consumer = make_connector(keep_idle_bytes=0), make_connector()
    producer.put("0", "1", "big", torch.zeros(2 << 20))
    consumer.get("0", "1", "big")
    producer.reap_consumed()
    assert producer.health()["shm_bytes"] == 0


def test_many_producer_processes_one_consumer(make_connector, namespace) -> None:
    consumer = make_connector()
    writers = [Child({"namespace": namespace}) for _ in range(3)]
    try:
        for w, writer in enumerate(writers):
            for i in range(20):
                writer.send({"op": "put", "key": f"w{w}-{i}", "payload": {"kind": "dict", "n": 100 + i, "value": w}})
        for writer in writers:
            assert all(writer.read()["ok"] for _ in range(20))
        for w in range(3):
            for i in range(20):
                obj = consumer.get("0", "1", f"w{w}-{i}")[0]
                assert obj["value"] == w and obj["blob"] == bytes([w]) * (100 + i)
    finally:
        for writer in writers:
            writer.close()
