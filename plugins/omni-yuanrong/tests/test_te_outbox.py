"""The sender's outbox: read leases, deferred cleanup, TTL reclaim (with a fake clock)."""

from __future__ import annotations

import pytest
import torch

from omni_core import BufferAllocator, ManagedBuffer
from omni_yuanrong.te_outbox import READ_LEASE_S, SWEEP_INTERVAL_S, Outbox


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def allocator() -> BufferAllocator:
    return BufferAllocator(1 << 20)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def hold(outbox: Outbox, allocator: BufferAllocator, key: str, raw_key: str = "raw") -> ManagedBuffer:
    pool = torch.empty(allocator.total_size, dtype=torch.uint8)
    buffer = ManagedBuffer(allocator, allocator.alloc(100), 100, pool)
    outbox.add(key, raw_key, buffer, {"data_size": 100})
    return buffer


def test_a_claim_leases_the_payload_to_one_reader(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=0, clock=clock)
    buffer = hold(outbox, allocator, "k")
    assert outbox.claim("k") == {"data_size": 100}
    assert outbox.claim("k") is None  # leased
    assert outbox.finish("k") and buffer.released and allocator.used_bytes == 0
    assert outbox.claim("k") is None and not outbox.finish("k")


def test_an_expired_lease_offers_the_payload_again(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=0, clock=clock)
    hold(outbox, allocator, "k")
    assert outbox.claim("k") is not None
    clock.now += READ_LEASE_S + 1
    assert outbox.claim("k") is not None


def test_cleanup_during_a_read_waits_for_the_read(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=0, clock=clock)
    buffer = hold(outbox, allocator, "k@0_1", "k")
    outbox.claim("k@0_1")
    assert outbox.discard(lambda key, raw: raw == "k") == 0
    assert not buffer.released and outbox.claim("k@0_1") is None
    clock.now += READ_LEASE_S + SWEEP_INTERVAL_S + 1
    assert outbox.sweep() == 1 and buffer.released


def test_unclaimed_payloads_expire_after_the_ttl(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=5, clock=clock)
    old = hold(outbox, allocator, "old")
    clock.now += 4
    young = hold(outbox, allocator, "young")
    clock.now += 2
    assert outbox.sweep() == 1 and old.released and not young.released
    assert outbox.sweep() == 0  # throttled to one scan per SWEEP_INTERVAL_S


def test_ttl_zero_keeps_payloads(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=0, clock=clock)
    buffer = hold(outbox, allocator, "k")
    clock.now += 10**6
    assert outbox.sweep() == 0 and not buffer.released


def test_a_second_put_of_a_key_frees_the_first(allocator: BufferAllocator, clock: Clock) -> None:
    outbox = Outbox(ttl_s=0, clock=clock)
    first = hold(outbox, allocator, "k")
    second = hold(outbox, allocator, "k")
    assert first.released and not second.released and len(outbox) == 1
    outbox.clear()
    assert second.released and allocator.used_bytes == 0
