"""Private copies in reused host memory: a block is reused only after every view of its copy is gone."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from omni_core import OmniSerializer, private_copy
from omni_core.host_copies import GRANULE, MIN_BYTES, HostCopies

MIB = 1 << 20


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def test_copy_is_private_and_writable() -> None:
    source = bytearray(range(256)) * (MIB // 256)
    copy = HostCopies(min_bytes=MIB).copy_of(source)
    assert copy.dtype == np.uint8 and copy.size == len(source) and copy.flags.writeable
    assert copy.tobytes() == bytes(source)
    source[0] ^= 0xFF
    copy[1] ^= 0xFF
    assert copy[0] == 0 and source[1] == 1, "the copy and its source share no memory"


def test_memory_is_reused_only_after_the_last_view_is_gone() -> None:
    copies = HostCopies(min_bytes=MIB)
    first = copies.copy_of(bytes(2 * MIB))
    view = torch.from_numpy(first)[MIB:]  # a view keeps the block leased
    where = address(first)
    del first
    gc.collect()
    second = copies.copy_of(b"\x07" * (2 * MIB))
    elsewhere = address(second)
    assert elsewhere != where and int(view[0]) == 0, "a block with a live view was reused"
    del view, second
    gc.collect()
    assert copies.idle_bytes == 4 * MIB
    third = copies.copy_of(b"\x09" * (2 * MIB - 5))
    assert address(third) in (where, elsewhere) and copies.idle_bytes == 2 * MIB
    assert bytes(third[:3]) == b"\x09\x09\x09"


def test_a_block_is_reused_only_for_similar_sizes() -> None:
    copies = HostCopies(min_bytes=MIB)
    copies.copy_of(bytes(8 * MIB))
    gc.collect()
    copies.copy_of(bytes(2 * MIB))  # 8 MiB is more than twice 2 MiB: a new block, the idle one stays
    gc.collect()
    assert copies.idle_bytes == 8 * MIB + 2 * MIB


def test_idle_memory_is_capped_and_expires() -> None:
    copies = HostCopies(idle_bytes=3 * MIB, idle_seconds=0.0, min_bytes=MIB)
    kept = [copies.copy_of(bytes(2 * MIB)) for _ in range(2)]
    del kept
    gc.collect()
    assert copies.idle_bytes == 2 * MIB, "only what fits under the cap stays idle"
    copies.copy_of(bytes(5 * MIB))  # finds nothing that fits; expiry (0 s) drops the idle block
    gc.collect()
    assert copies.idle_bytes <= 3 * MIB


def test_small_copies_use_plain_memory() -> None:
    copy = private_copy(b"abc" * 10)
    assert copy.base is None and copy.tobytes() == b"abc" * 10
    assert private_copy(bytes(MIN_BYTES - 1)).base is None


@pytest.mark.parametrize("nbytes", [MIB, MIN_BYTES + 3 * GRANULE + 8])
def test_decoded_tensors_and_arrays_own_their_memory(nbytes: int) -> None:
    tensor = torch.arange(nbytes // 2, dtype=torch.int16)
    array = np.arange(nbytes // 8, dtype=np.float64)
    frame = bytearray(OmniSerializer.serialize({"t": tensor, "a": array}))
    decoded = OmniSerializer.deserialize(frame)
    assert torch.equal(decoded["t"], tensor) and np.array_equal(decoded["a"], array)
    frame[:] = bytes(len(frame))  # the frame is reused by its owner: the decoded values must not change
    assert torch.equal(decoded["t"], tensor) and np.array_equal(decoded["a"], array)
    decoded["t"].add_(1)
    decoded["a"] += 1
