"""Tests for omni_core.memory_pool: BufferAllocator and ManagedBuffer."""

from __future__ import annotations

import gc
import itertools
import random
import threading
import warnings

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from omni_core.memory_pool import BufferAllocator, ManagedBuffer


def test_basic_alloc_free_reuse():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    first = allocator.alloc(512)
    second = allocator.alloc(512)
    assert (first, second) == (0, 512)
    allocator.free(first, 512)
    assert allocator.alloc(512) == 0


def test_alignment_rounds_sizes_up():
    allocator = BufferAllocator(total_size=4096, alignment=128)
    allocator.alloc(100)
    second = allocator.alloc(100)
    assert second == 128
    assert allocator.used_bytes == 256
    assert allocator.free_bytes == 4096 - 256


def test_default_alignment_and_introspection():
    allocator = BufferAllocator(total_size=3 * 4096)
    assert allocator.alignment == 4096
    assert allocator.total_size == 3 * 4096
    assert allocator.alloc(1) == 0
    assert allocator.alloc(4097) == 4096
    assert allocator.free_blocks == []
    assert allocator.largest_free_block == 0
    blocks = allocator.free_blocks
    blocks.append((0, 1))  # a copy: the allocator is unaffected
    assert allocator.free_blocks == []


@pytest.mark.parametrize("size", [0, -1])
def test_alloc_rejects_non_positive_size(size):
    with pytest.raises(ValueError):
        BufferAllocator(total_size=1024, alignment=64).alloc(size)


def test_exhaustion_then_recovery():
    allocator = BufferAllocator(total_size=1024, alignment=64)
    offset = allocator.alloc(1024)
    with pytest.raises(MemoryError, match=r"64 bytes.*0 of 1024 bytes free, largest free block 0"):
        allocator.alloc(64)
    allocator.free(offset, 1024)
    assert allocator.alloc(1024) == 0


def test_thread_safety_random_alloc_free():
    allocator = BufferAllocator(total_size=64 * 1024, alignment=64)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        live: list[tuple[int, int]] = []
        try:
            for _ in range(300):
                if live and rng.random() < 0.5:
                    allocator.free(*live.pop(rng.randrange(len(live))))
                else:
                    size = rng.randint(1, 2048)
                    try:
                        live.append((allocator.alloc(size), size))
                    except MemoryError:
                        pass
            for offset, size in live:
                allocator.free(offset, size)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert allocator.free_blocks == [(0, 64 * 1024)]


def test_exact_double_free_warns_and_is_ignored():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    offset = allocator.alloc(256)
    allocator.free(offset, 256)
    with pytest.warns(RuntimeWarning, match="double free"):
        allocator.free(offset, 256)
    assert allocator.free_blocks == [(0, 4096)]
    assert allocator.alloc(4096) == 0


def test_double_free_after_merge_warns():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    a = allocator.alloc(64)
    b = allocator.alloc(64)
    allocator.free(a, 64)
    allocator.free(b, 64)  # merges with a
    with pytest.warns(RuntimeWarning, match="double free"):
        allocator.free(a, 64)
    assert allocator.alloc(4096) == 0


def test_partial_overlap_raises_corruption():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    a = allocator.alloc(128)
    b = allocator.alloc(128)
    allocator.free(a, 128)  # [0, 128) free
    with pytest.raises(RuntimeError, match="memory corruption"):
        allocator.free(64, 128)  # [64, 192) straddles it
    with pytest.raises(RuntimeError, match="memory corruption"):
        allocator.free(0, 256)  # covers the free block and part of b
    allocator.free(b, 128)
    assert allocator.free_blocks == [(0, 4096)]


@pytest.mark.parametrize("offset", [-64, 32, 4096, 4032 + 64])
def test_free_rejects_misaligned_or_out_of_range(offset):
    allocator = BufferAllocator(total_size=4096, alignment=64)
    with pytest.raises(ValueError):
        allocator.free(offset, 64)


def test_free_rejects_range_past_the_end():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    with pytest.raises(ValueError):
        allocator.free(4032, 128)


def test_adjacent_blocks_merge():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    a, b, c = (allocator.alloc(64) for _ in range(3))
    allocator.free(b, 64)
    allocator.free(a, 64)
    allocator.free(c, 64)
    assert allocator.free_blocks == [(0, 4096)]
    assert allocator.alloc(192) == 0


def test_fragmentation_then_defrag():
    allocator = BufferAllocator(total_size=256, alignment=64)
    a, b, c, d = (allocator.alloc(64) for _ in range(4))
    allocator.free(b, 64)
    allocator.free(d, 64)
    assert allocator.free_blocks == [(64, 64), (192, 64)]
    assert allocator.largest_free_block == 64
    with pytest.raises(MemoryError):
        allocator.alloc(128)
    allocator.free(a, 64)
    allocator.free(c, 64)
    assert allocator.free_blocks == [(0, 256)]
    assert allocator.alloc(256) == 0


class AllocatorMachine(RuleBasedStateMachine):
    """Random alloc/free sequences keep the allocator's invariants."""

    @initialize(total_size=st.integers(1, 2048), alignment=st.sampled_from([1, 16, 64, 100]))
    def setup(self, total_size: int, alignment: int) -> None:
        self.allocator = BufferAllocator(total_size=total_size, alignment=alignment)
        self.live: dict[int, int] = {}  # offset -> requested size

    @rule(size=st.integers(1, 512))
    def alloc(self, size: int) -> None:
        try:
            offset = self.allocator.alloc(size)
        except MemoryError:
            aligned = -(-size // self.allocator.alignment) * self.allocator.alignment
            assert self.allocator.largest_free_block < aligned
            return
        assert offset % self.allocator.alignment == 0
        self.live[offset] = size

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from(sorted(self.live)))
        self.allocator.free(offset, self.live.pop(offset))

    @invariant()
    def consistent(self) -> None:
        allocator = self.allocator
        align = allocator.alignment
        spans = sorted((offset, -(-size // align) * align) for offset, size in self.live.items())
        for (offset, length), (next_offset, _) in itertools.pairwise(spans):
            assert offset + length <= next_offset, "live allocations overlap"
        used = sum(length for _, length in spans)
        assert allocator.used_bytes == used
        assert allocator.free_bytes + allocator.used_bytes == allocator.total_size
        blocks = allocator.free_blocks
        assert sum(length for _, length in blocks) == allocator.free_bytes
        for (offset, length), (next_offset, _) in itertools.pairwise(blocks):
            assert offset + length < next_offset, "free list unsorted, overlapping or not coalesced"
        for offset, length in blocks:
            assert length > 0
            for live_offset, live_length in spans:
                assert offset + length <= live_offset or live_offset + live_length <= offset


AllocatorMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestAllocatorMachine = AllocatorMachine.TestCase


@pytest.fixture
def pool():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    return allocator, torch.zeros(4096, dtype=torch.uint8)


def test_tensor_and_as_tensor_share_pool_memory(pool):
    allocator, pool_tensor = pool
    allocator.alloc(64)
    offset = allocator.alloc(64)
    buf = ManagedBuffer(allocator, offset, 64, pool_tensor)
    src = torch.arange(16, dtype=torch.float32)
    pool_tensor[offset : offset + 64] = src.view(torch.uint8)

    raw = buf.tensor
    assert raw.shape == (64,) and raw.dtype == torch.uint8
    typed = buf.as_tensor(torch.float32, (4, 4))
    assert typed.shape == (4, 4)
    assert torch.equal(typed.flatten(), src)
    assert buf.data_ptr == pool_tensor.data_ptr() + offset == typed.data_ptr()

    typed[0, 0] = 42.0  # writes through to the pool
    assert pool_tensor[offset : offset + 4].view(torch.float32).item() == 42.0
    raw[4:8] = 0
    assert typed[0, 1].item() == 0.0
    buf.release()


def test_as_tensor_validation(pool):
    allocator, pool_tensor = pool
    buf = ManagedBuffer(allocator, allocator.alloc(64), 64, pool_tensor)
    with pytest.raises(ValueError, match="negative"):
        buf.as_tensor(torch.float32, (-4, -4))
    with pytest.raises(ValueError, match="needs 32 bytes"):
        buf.as_tensor(torch.float32, (8,))
    buf.release()
    fine = BufferAllocator(total_size=64, alignment=2)
    fine.alloc(2)
    with ManagedBuffer(fine, fine.alloc(8), 8, pool_tensor) as misaligned:  # offset 2
        with pytest.raises(RuntimeError, match="itemsize"):
            misaligned.as_tensor(torch.float32, (2,))
        assert misaligned.as_tensor(torch.int16, (2, 2)).shape == (2, 2)


def test_context_manager_releases(pool):
    allocator, pool_tensor = pool
    offset = allocator.alloc(128)
    with ManagedBuffer(allocator, offset, 128, pool_tensor) as buf:
        assert not buf.released
    assert buf.released
    assert allocator.alloc(128) == offset
    with pytest.raises(RuntimeError, match="released"):
        _ = buf.tensor


def test_release_is_idempotent(pool):
    allocator, pool_tensor = pool
    buf = ManagedBuffer(allocator, allocator.alloc(100), 100, pool_tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second free would warn "double free"
        buf.release()
        buf.release()
    assert allocator.free_bytes == 4096


def test_concurrent_release_frees_once(pool):
    allocator, pool_tensor = pool
    buf = ManagedBuffer(allocator, allocator.alloc(64), 64, pool_tensor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=buf.release) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not caught
    assert allocator.free_blocks == [(0, 4096)]


def test_gc_of_unreleased_buffer_returns_space(pool):
    allocator, pool_tensor = pool

    def drop_unreleased() -> None:
        buf = ManagedBuffer(allocator, allocator.alloc(256), 256, pool_tensor)
        assert allocator.used_bytes == 256
        del buf
        gc.collect()

    with pytest.warns(ResourceWarning, match="garbage-collected without release"):
        drop_unreleased()
    assert allocator.free_blocks == [(0, 4096)]


def test_to_bytes_cpu_pool(pool):
    allocator, pool_tensor = pool
    expected = bytes(range(64))
    offset = allocator.alloc(len(expected))
    pool_tensor[offset : offset + 64] = torch.tensor(list(expected), dtype=torch.uint8)
    with ManagedBuffer(allocator, offset, len(expected), pool_tensor) as buf:
        assert buf.to_bytes() == expected
        assert (buf.offset, buf.size, buf.allocator) == (offset, 64, allocator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_bytes_cuda_pool():
    allocator = BufferAllocator(total_size=4096, alignment=64)
    pool_tensor = torch.zeros(4096, dtype=torch.uint8, device="cuda")
    expected = bytes(range(64))
    offset = allocator.alloc(64)
    pool_tensor[offset : offset + 64].copy_(torch.tensor(list(expected), dtype=torch.uint8))
    with ManagedBuffer(allocator, offset, 64, pool_tensor) as buf:
        assert buf.to_bytes() == expected
        assert buf.as_tensor(torch.int16, (32,)).is_cuda


def test_managed_buffer_rejects_bad_pool_or_range(pool):
    allocator, pool_tensor = pool
    with pytest.raises(ValueError, match="1-D uint8"):
        ManagedBuffer(allocator, 0, 64, torch.zeros(64, dtype=torch.float32))
    with pytest.raises(ValueError, match="does not fit"):
        ManagedBuffer(allocator, 4032, 128, pool_tensor)


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = (
        "import sys, omni_core, omni_core.memory_pool, omni_core.kv_pipe; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
