"""Broadcast (readers: N): every reader gets the payload once; it is freed after the last release or its TTL."""

from __future__ import annotations

import os
import time

import torch
from children import Child
from conftest import SHM

from omni_core import Delivery
from omni_shm import names


def test_broadcast_is_an_instance_capability(make_connector) -> None:
    broadcaster = make_connector(readers=3)
    assert broadcaster.capabilities.delivery is Delivery.BROADCAST
    assert type(broadcaster).capabilities.delivery is Delivery.CONSUME_ONCE
    assert make_connector().capabilities.delivery is Delivery.CONSUME_ONCE


def test_three_reader_processes_each_read_once(make_connector, namespace) -> None:
    producer = make_connector(readers=3)
    assert producer.put("0", "1", "fanout", torch.full((1000,), 5.0))[0]
    children = [Child({"namespace": namespace}) for _ in range(3)]
    try:
        for child in children:
            answer = child.call({"op": "get", "key": "fanout"})
            assert answer["found"] and answer["uniform"] and answer["value"] == 5.0
            assert not child.call({"op": "get", "key": "fanout", "timeout": 0})["found"], "each reader reads once"
    finally:
        for child in children:
            child.close()
    assert make_connector().get("0", "1", "fanout") is None, "a fourth reader finds nothing"
    assert not os.path.lexists(os.path.join(SHM, names.key_entry_name(namespace, "fanout")))
    producer.reap_consumed()
    assert producer.health()["pending"] == 0


def test_zero_copy_readers_hold_the_region_until_all_release(make_connector) -> None:
    producer = make_connector(readers=2)
    readers = [make_connector(zero_copy=True) for _ in range(2)]
    producer.put("0", "1", "shared", torch.arange(64))
    views = [reader.get("0", "1", "shared")[0] for reader in readers]
    assert all(torch.equal(view, torch.arange(64)) for view in views)
    views.pop()
    producer.reap_consumed()
    assert producer.health()["pending"] == 1
    views.pop()
    producer.reap_consumed()
    assert producer.health()["pending"] == 0


def test_unread_broadcast_expires(make_connector, namespace) -> None:
    producer = make_connector(readers=3, ttl_seconds=0.2)
    producer.put("0", "1", "partial", b"payload")
    for _ in range(2):
        assert make_connector().get("0", "1", "partial")[0] == b"payload"
    time.sleep(0.3)
    assert producer.reap_consumed() == 1
    health = producer.health()
    assert (health["pending"], health["expired"]) == (0, 1)
    assert not os.path.lexists(os.path.join(SHM, names.key_entry_name(namespace, "partial")))
    assert make_connector().get("0", "1", "partial") is None


def test_unread_payload_expires(make_connector) -> None:
    producer = make_connector(ttl_seconds=0.1)
    producer.put("0", "1", "forgotten", torch.zeros(10))
    time.sleep(0.2)
    producer.reap_consumed()
    assert producer.health()["expired"] == 1
    assert make_connector().get("0", "1", "forgotten") is None
